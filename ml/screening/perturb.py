"""Altered copies of dermatoscopic images: poor captures, and other dermatoscopes' looks.

Degradations (blur, under- and over-exposure, low contrast) have levels from mild to severe,
applied to the full-size RGB image before the upload path sees it, as a poor capture would be:
what the quality checks catch is reported per degradation and level in the model card.

Other-dermatoscope views (a round field of view in a black frame, another magnification,
another white balance, harder JPEG) are dermatoscopic images all the same: the feature-distance
statistics are fitted on them too (`dermatoscope_view`, random parameters), so the
not_dermoscopic check does not mistake another dermatoscope for "not a dermatoscopic image",
and its rate on them is reported (fixed parameters, on test images).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np


def blurred(image: np.ndarray, sigma_fraction: float) -> np.ndarray:
    """Gaussian blur with sigma as a fraction of the shorter side (a camera out of focus)."""
    sigma = max(0.3, sigma_fraction * min(image.shape[:2]))
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma)


def darkened(image: np.ndarray, gain: float) -> np.ndarray:
    """Exposure cut: every pixel times `gain` < 1 (under-exposure, no flash)."""
    return np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def over_exposed(image: np.ndarray, gain: float) -> np.ndarray:
    """Exposure raised: every pixel times `gain` > 1, clipped at white."""
    return np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def low_contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """Contrast squeezed towards the mean by `factor` < 1 (fog, glare on the glass)."""
    img = image.astype(np.float32)
    mean = img.mean(axis=(0, 1), keepdims=True)
    return np.clip(mean + (img - mean) * factor, 0, 255).astype(np.uint8)


# name -> (function, expected warning, levels from mild to severe)
DEGRADATIONS: dict[str, tuple[Callable[[np.ndarray, float], np.ndarray], str, tuple[float, ...]]] = {
    "blurred": (blurred, "blurred", (0.01, 0.02, 0.03, 0.05)),
    "darkened": (darkened, "too_dark", (0.5, 0.35, 0.25, 0.15)),
    "over_exposed": (over_exposed, "too_bright", (1.5, 2.0, 2.5, 3.0)),
    "low_contrast": (low_contrast, "low_contrast", (0.5, 0.35, 0.25, 0.15)),
}


# --- Other dermatoscopes ------------------------------------------------------------------
# Dermatoscopic images from other sources look different without being out of distribution:
# a round field of view in a black frame, another magnification, another white balance, harder
# JPEG compression. The not_dermoscopic check must leave them alone; these stand-ins measure
# how often it does not (there is no other dermatoscopic data set here to measure it on).


def round_field_of_view(image: np.ndarray, radius_fraction: float = 0.5) -> np.ndarray:
    """A square crop with everything outside a centred circle black (contact dermatoscopes)."""
    h, w = image.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    square = image[y0 : y0 + side, x0 : x0 + side].copy()
    yy, xx = np.mgrid[:side, :side]
    centre = (side - 1) / 2
    outside = (yy - centre) ** 2 + (xx - centre) ** 2 > (radius_fraction * side) ** 2
    square[outside] = 0
    return square


def framed(image: np.ndarray, canvas_scale: float = 1.0, radius_scale: float = 1.0) -> np.ndarray:
    """The whole image centred on a black canvas `canvas_scale` times its size, black outside the
    circle of `radius_scale` x half the canvas's shorter side: a round field of view that cuts
    the image's corners (1.0 / 1.15), or one the image sits inside (1.5 / 1.0)."""
    h, w = image.shape[:2]
    height, width = int(h * canvas_scale), int(w * canvas_scale)
    canvas = np.zeros((height, width, 3), np.uint8)
    top, left = (height - h) // 2, (width - w) // 2
    canvas[top : top + h, left : left + w] = image
    yy, xx = np.mgrid[:height, :width]
    radius = min(height, width) / 2 * radius_scale
    canvas[(yy - height / 2) ** 2 + (xx - width / 2) ** 2 > radius * radius] = 0
    return canvas


def zoomed(image: np.ndarray, crop_fraction: float = 0.6) -> np.ndarray:
    """The centre `crop_fraction` of each side: a higher magnification."""
    h, w = image.shape[:2]
    ch, cw = int(h * crop_fraction), int(w * crop_fraction)
    return image[(h - ch) // 2 : (h - ch) // 2 + ch, (w - cw) // 2 : (w - cw) // 2 + cw]


def colour_cast(image: np.ndarray, gains: tuple[float, float, float] = (0.85, 1.0, 1.15)) -> np.ndarray:
    """Per-channel gains: another light source or white balance."""
    return np.clip(image.astype(np.float32) * np.array(gains, np.float32), 0, 255).astype(np.uint8)


def jpeg_compressed(image: np.ndarray, quality: int = 30) -> np.ndarray:
    _, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def dermatoscope_view(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random other-dermatoscope look: one or two of the alterations above, random strength,
    and any quarter turn."""
    out = np.ascontiguousarray(np.rot90(image, int(rng.integers(0, 4))))
    for kind in rng.choice(4, size=int(rng.integers(1, 3)), replace=False):
        if kind == 0:
            out = round_field_of_view(out, float(rng.uniform(0.42, 0.62)))
        elif kind == 1:
            out = zoomed(out, float(rng.uniform(0.45, 0.85)))
        elif kind == 2:
            out = colour_cast(out, tuple(float(g) for g in rng.uniform(0.75, 1.25, 3)))
        else:
            out = jpeg_compressed(out, int(rng.integers(15, 60)))
    return out


DERMATOSCOPE_SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "round_field_of_view": round_field_of_view,
    "zoomed": zoomed,
    "warm_cast": lambda img: colour_cast(img, (1.15, 1.0, 0.85)),
    "cool_cast": lambda img: colour_cast(img, (0.85, 1.0, 1.15)),
    "jpeg_q30": jpeg_compressed,
}
