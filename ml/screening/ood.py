"""Is this a dermatoscopic image at all? A distance in the model's own feature space.

The classifier always answers with one of seven lesion classes, whatever it is shown. Before
its answer is trusted, the image's pooled last-layer features are compared with those of the
training images: the Mahalanobis distance to the nearest class mean under one covariance shared
by all classes (Lee et al., NeurIPS 2018), fitted when the bundle is packaged and stored in it.
A photo of an invoice or a drawn landscape lands far from every lesion class; a dermatoscopic
image of a kind the model learnt lands near one. The alarm threshold is chosen on validation
images (at most a stated share of dermatoscopic images flagged), never on the test split.

A bundle may measure the distance in several layers at once (Lee et al.'s feature ensemble):
the exported `features` output is then the pooled outputs of those layers side by side, each
block of columns has its own class means and whitening, each block's distance is divided by its
own scale (its 95th percentile on validation) and the image's score is the largest of them. A
fine-tuned last layer knows lesions well and little else: on v3c's generated non-dermatoscopic
corpus the last layer alone caught 94%, with the middle block beside it 100%, at the same false
alarms on dermatoscopic validation images. `LayeredDistance` holds one block or several.

The covariance is estimated with shrinkage toward its mean variance (Ledoit-Wolf style, with a
fixed floor), because 1,280 feature dimensions from a few thousand images give a singular
sample covariance. The statistics are stored as float32 arrays: class means and the whitening
matrix W with precision = W W^T, so the score is one matrix product per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class FeatureDistance:
    class_means: np.ndarray  # (C, K)
    whitening: np.ndarray  # (K, K): ||(f - mu) @ whitening||^2 is the squared Mahalanobis distance
    threshold: float  # distance above which an image is flagged not_dermoscopic

    @cached_property
    def _centres(self) -> np.ndarray:
        """The class means in whitened space (C, K): fixed, so computed once, not per image."""
        return self.class_means @ self.whitening

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance (not squared) of each row to the nearest class mean."""
        f = np.asarray(features, dtype=np.float32)
        projected = f @ self.whitening  # (N, K)
        centres = self._centres
        squared = (projected**2).sum(1)[:, None] - 2 * projected @ centres.T + (centres**2).sum(1)[None, :]
        return np.sqrt(np.maximum(squared.min(axis=1), 0.0))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"ood_class_means": self.class_means.astype(np.float32), "ood_whitening": self.whitening.astype(np.float32)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], threshold: float) -> FeatureDistance:
        return cls(class_means=np.asarray(arrays["ood_class_means"], np.float32),
                   whitening=np.asarray(arrays["ood_whitening"], np.float32), threshold=float(threshold))


@dataclass(frozen=True)
class LayeredDistance:
    """The not_dermoscopic score over one or more blocks of feature columns: the largest of the
    blocks' distances, each divided by its scale. Read from a bundle with `from_arrays`."""

    parts: tuple[FeatureDistance, ...]
    columns: tuple[tuple[int, int], ...]  # each block's [start, end) in the features output
    scales: tuple[float, ...]
    threshold: float
    layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (len(self.parts) == len(self.columns) == len(self.scales)) or not self.parts:
            raise ValueError("screening blocks: parts, columns and scales differ in number")
        for part, (start, end), scale in zip(self.parts, self.columns, self.scales):
            if part.whitening.ndim != 2 or part.class_means.ndim != 2 or part.whitening.shape[0] != part.class_means.shape[1]:
                raise ValueError("screening statistics: whitening and class means disagree in size")
            if end - start != part.class_means.shape[1] or start < 0:
                raise ValueError(f"screening statistics: columns {start}:{end} and class means of width "
                                 f"{part.class_means.shape[1]} disagree in size")
            if not scale > 0:
                raise ValueError(f"screening block scale {scale} is not positive")

    @property
    def width(self) -> int:
        return max(end for _, end in self.columns)

    def block_distances(self, features: np.ndarray) -> np.ndarray:
        """(N, blocks): each block's distance over its scale."""
        f = np.asarray(features, dtype=np.float32)
        if f.shape[1] != self.width:
            raise ValueError(f"features have {f.shape[1]} columns, the screening statistics {self.width}")
        return np.stack([part.distances(f[:, start:end]) / scale
                         for part, (start, end), scale in zip(self.parts, self.columns, self.scales)], axis=1)

    def distances(self, features: np.ndarray) -> np.ndarray:
        return self.block_distances(features).max(axis=1)

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"{name}_{i}": value for i, part in enumerate(self.parts) for name, value in part.arrays().items()}

    def blocks(self) -> list[dict]:
        """The manifest's description of the blocks (beside the arrays in screening.npz)."""
        return [{"layer": layer, "columns": [start, end], "scale": scale}
                for layer, (start, end), scale in zip(self.layers or ("",) * len(self.parts), self.columns, self.scales)]

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], ood: dict) -> LayeredDistance:
        """From screening.npz and the manifest's "ood" section. A section without "blocks" is a
        bundle from before blocks (one block, unscaled, arrays without a suffix)."""
        blocks = ood.get("blocks")
        if blocks is None:
            part = FeatureDistance.from_arrays(arrays, 0.0)
            return cls(parts=(part,), columns=((0, part.class_means.shape[-1]),), scales=(1.0,),
                       threshold=float(ood["threshold"]))
        parts = tuple(FeatureDistance.from_arrays({"ood_class_means": arrays[f"ood_class_means_{i}"],
                                                   "ood_whitening": arrays[f"ood_whitening_{i}"]}, 0.0)
                      for i in range(len(blocks)))
        return cls(parts=parts, columns=tuple((int(b["columns"][0]), int(b["columns"][1])) for b in blocks),
                   scales=tuple(float(b["scale"]) for b in blocks), threshold=float(ood["threshold"]),
                   layers=tuple(str(b.get("layer", "")) for b in blocks))


def shrunk_covariance(centred: np.ndarray, shrinkage: float) -> np.ndarray:
    """(1 - s) * sample covariance + s * mean variance * I."""
    sample = centred.T @ centred / max(1, len(centred) - 1)
    target = np.trace(sample) / sample.shape[0]
    return (1.0 - shrinkage) * sample + shrinkage * target * np.eye(sample.shape[0])


def fit_feature_distance(features: np.ndarray, labels: np.ndarray, n_classes: int, *,
                         shrinkage: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(class means, whitening matrix) from training features and labels."""
    f = np.asarray(features, dtype=np.float64)
    means = np.stack([f[labels == c].mean(0) if np.any(labels == c) else f.mean(0) for c in range(n_classes)])
    covariance = shrunk_covariance(f - means[labels], shrinkage)
    # precision = V diag(1/e) V^T = W W^T with W = V diag(1/sqrt(e)).
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    whitening = eigenvectors / np.sqrt(np.maximum(eigenvalues, 1e-12))[None, :]
    return means.astype(np.float32), whitening.astype(np.float32)


def threshold_for_false_alarms(distances: np.ndarray, max_false_alarm_rate: float) -> float:
    """The smallest threshold that flags at most `max_false_alarm_rate` of in-distribution images."""
    return float(np.quantile(np.asarray(distances, dtype=np.float64), 1.0 - max_false_alarm_rate, method="higher"))
