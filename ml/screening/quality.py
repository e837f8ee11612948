"""Image-quality measures of an upload, taken where the model looks at it.

Each measure is computed on the image resized to the bundle's input geometry (the same
`ml.preprocessing.resize` the model's input goes through) but *before* the colour step: CLAHE
would hide exactly the darkness and flatness these checks are for. The thresholds are not
constants of this code: they are fitted per bundle from its training images (percentiles, see
`fit_quality_thresholds`) and stored in the bundle, so "too dark" means darker than almost every
image the model learnt from.

  brightness  mean luma (0-255)                           too_dark below, too_bright above
  saturated   share of pixels at luma >= 250              too_bright above
  contrast    standard deviation of luma (0-255)          low_contrast below
  sharpness   steepest edges: the 99.9th percentile of the luma gradient (Scharr, per pixel)
              over the luma range (1st to 99th percentile)    blurred below. Dividing by the
              range makes it blind to contrast and exposure, so a dark but sharp image is not
              called blurred; the top percentile ignores the rounding noise that makes a
              Laplacian-energy measure call a smooth blurred image sharp.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

QUALITY_MEASURES: tuple[str, ...] = ("brightness", "saturated", "contrast", "sharpness")


def luma(image_rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)


def quality_measures(image_rgb: np.ndarray) -> dict[str, float]:
    """The four measures of one resized RGB uint8 image."""
    y = luma(image_rgb)
    low, high = np.percentile(y, (1, 99))
    luma_range = float(high - low)
    # Scharr weights sum to 16 per direction: /16 gives luma levels per pixel.
    gradient = cv2.magnitude(cv2.Scharr(y, cv2.CV_32F, 1, 0), cv2.Scharr(y, cv2.CV_32F, 0, 1)) / 16.0
    return {
        "brightness": float(y.mean()),
        "saturated": float((y >= 250).mean()),
        "contrast": float(y.std()),
        # A flat image has no edges to judge; call it sharp and let low_contrast speak.
        "sharpness": float(np.percentile(gradient, 99.9)) / luma_range if luma_range >= 1.0 else float("inf"),
    }


@dataclass(frozen=True)
class QualityThresholds:
    """Limits beyond which an image is unlike the training images (fitted per bundle)."""

    min_brightness: float
    max_brightness: float
    max_saturated: float
    min_contrast: float
    min_sharpness: float
    # The training percentile each limit sits at, for the model card.
    percentile: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> QualityThresholds:
        return cls(**{k: float(data[k]) for k in cls.__dataclass_fields__})

    def warnings(self, measures: dict[str, float]) -> list[str]:
        """Warning codes in a fixed order (see ml.screening.WARNING_CODES)."""
        found = []
        if measures["sharpness"] < self.min_sharpness:
            found.append("blurred")
        if measures["brightness"] < self.min_brightness:
            found.append("too_dark")
        if measures["brightness"] > self.max_brightness or measures["saturated"] > self.max_saturated:
            found.append("too_bright")
        if measures["contrast"] < self.min_contrast:
            found.append("low_contrast")
        return found


def fit_quality_thresholds(measures: list[dict[str, float]], *, percentile: float = 0.5) -> QualityThresholds:
    """Limits at the `percentile`-th (and 100 - `percentile`-th) percentile of training images."""
    table = {k: np.array([m[k] for m in measures], dtype=np.float64) for k in QUALITY_MEASURES}
    low, high = percentile, 100.0 - percentile
    finite_sharpness = table["sharpness"][np.isfinite(table["sharpness"])]
    return QualityThresholds(
        min_brightness=float(np.percentile(table["brightness"], low)),
        max_brightness=float(np.percentile(table["brightness"], high)),
        max_saturated=float(max(np.percentile(table["saturated"], high), 0.01)),
        min_contrast=float(np.percentile(table["contrast"], low)),
        min_sharpness=float(np.percentile(finite_sharpness, low)),
        percentile=float(percentile),
    )
