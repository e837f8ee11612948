"""Running a bundle's screening on one image (see ml/screening/__init__.py for what each check means)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml.errors import ModelIntegrityError
from ml.manifest import verified_file
from ml.screening import WARNING_CODES
from ml.screening.confidence import ConfidenceLimits, margins, normalised_entropy
from ml.screening.ood import LayeredDistance
from ml.screening.quality import QualityThresholds, quality_measures


@dataclass(frozen=True)
class ScreeningResult:
    warnings: tuple[str, ...]
    measures: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Screening:
    """A bundle's screening limits, loaded once with the classifier."""

    quality: QualityThresholds
    confidence: ConfidenceLimits
    distance: LayeredDistance

    def screen(self, resized_rgb: np.ndarray, probs: np.ndarray, features: np.ndarray) -> ScreeningResult:
        """Warnings for one image: `resized_rgb` at the model's input geometry before the colour
        step, its calibrated probabilities and its pooled features."""
        return self.screen_batch([resized_rgb], probs[None], features[None])[0]

    def screen_batch(self, resized_rgb: Sequence[np.ndarray], probs: np.ndarray,
                     features: np.ndarray) -> list[ScreeningResult]:
        """`screen` for a batch: the feature distances are one matrix product for all rows."""
        distances = self.distance.distances(features)
        margin, entropy = margins(probs), normalised_entropy(probs)
        return [self._screen_one(image, float(m), float(e), float(d))
                for image, m, e, d in zip(resized_rgb, margin, entropy, distances)]

    def _screen_one(self, resized_rgb: np.ndarray, margin: float, entropy: float, distance: float) -> ScreeningResult:
        measures = quality_measures(resized_rgb) | {"margin": margin, "entropy": entropy, "feature_distance": distance}
        found = set(self.quality.warnings(measures))
        if distance > self.distance.threshold:
            found.add("not_dermoscopic")
        if self.confidence.is_low(margin, entropy):
            found.add("low_confidence")
        rounded = {k: round(v, 4) if np.isfinite(v) else None for k, v in measures.items()}
        return ScreeningResult(warnings=tuple(c for c in WARNING_CODES if c in found), measures=rounded)


def load_screening(model_dir: str, manifest: dict[str, Any]) -> Screening:
    """The bundle's screening limits, checked against the manifest's sha256: fail closed."""
    section = manifest.get("screening")
    if not section:
        raise ModelIntegrityError(f"model {manifest.get('version')} has no screening statistics")
    if not isinstance(section, dict) or not isinstance(section.get("file"), str) or "sha256" not in section:
        raise ModelIntegrityError(f"model {manifest.get('version')}: its screening section names no file and sha256")
    path = verified_file(model_dir, section, "screening statistics")
    # A malformed section or file is a model problem like any other (ModelIntegrityError, which
    # the portal and the CLIs report), not a KeyError from deep inside.
    try:
        with np.load(path) as arrays:
            distance = LayeredDistance.from_arrays(dict(arrays), section["ood"])
        screening = Screening(
            quality=QualityThresholds.from_dict(section["quality"]),
            confidence=ConfidenceLimits.from_dict(section["confidence"]),
            distance=distance,
        )
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise ModelIntegrityError(f"screening statistics of model {manifest.get('version')} are malformed: "
                                  f"{type(exc).__name__}: {exc}") from exc
    return screening
