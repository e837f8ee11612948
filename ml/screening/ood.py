"""Is this a dermatoscopic image at all? A distance in the model's own feature space.

The classifier always answers with one of seven lesion classes, whatever it is shown. Before
its answer is trusted, the image's pooled last-layer features are compared with those of the
training images: the Mahalanobis distance to the nearest class mean under one covariance shared
by all classes (Lee et al., NeurIPS 2018), fitted when the bundle is packaged and stored in it.
A photo of an invoice or a drawn landscape lands far from every lesion class; a dermatoscopic
image of a kind the model learnt lands near one. The alarm threshold is chosen on validation
images (at most a stated share of dermatoscopic images flagged), never on the test split.

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
