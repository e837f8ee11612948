"""Should this answer be trusted? Checks on every image the classifier sees (NumPy + OpenCV).

Three families, each fitted per bundle when it is packaged and stored in it, so a new model
brings its own limits (see ml/screening/fit.py; nothing here is tuned on the test split):

  not_dermoscopic   the image's features are far from every lesion class the model learnt
                    (ml/screening/ood.py): the classification is not reliable at all
  blurred, too_dark, too_bright, low_contrast
                    the image is of a quality the model rarely saw (ml/screening/quality.py)
  low_confidence    the top two classes are close, or the probabilities spread thin
                    (ml/screening/confidence.py)

A result with any warning is still stored and shown, led by the warning, and is never
presented as a reassurance.

This module holds only the vocabulary (no NumPy or OpenCV), so the portal's light imports can
name the warnings; the checks themselves are in ml.screening.screen.
"""

from __future__ import annotations

# In the order they are shown: the most fundamental doubt first.
WARNING_CODES: tuple[str, ...] = (
    "not_dermoscopic", "blurred", "too_dark", "too_bright", "low_contrast", "low_confidence",
)
WARNING_TEXT: dict[str, str] = {
    "not_dermoscopic": "This does not look like a dermatoscopic image: the classification is not reliable.",
    "blurred": "The image is blurred: fine structures the model relies on may be lost.",
    "too_dark": "The image is too dark: colours and structures may be misread.",
    "too_bright": "The image is over-exposed: colours and structures may be washed out.",
    "low_contrast": "The image has very low contrast: structures may be misread.",
    "low_confidence": "The model is unsure: its top classes are close, so its first choice is as likely wrong as right.",
}
# A few words per warning, for badges; the sentence above is their tooltip.
WARNING_LABELS: dict[str, str] = {
    "not_dermoscopic": "not dermatoscopic",
    "blurred": "blurred",
    "too_dark": "too dark",
    "too_bright": "over-exposed",
    "low_contrast": "low contrast",
    "low_confidence": "uncertain",
}
# Image warnings: the picture itself is in doubt, so every figure computed from it is.
IMAGE_WARNINGS: frozenset[str] = frozenset(WARNING_CODES) - {"low_confidence"}

# Refused at upload: the models' inputs are 150 to 240 pixels a side, so below 100 pixels the
# model would see mostly interpolated pixels rather than the lesion's structures.
MIN_IMAGE_SIDE = 100
SCREENING_FILE = "screening.npz"


def warning_text(code: str) -> str:
    return WARNING_TEXT.get(code, code)


def warning_label(code: str) -> str:
    return WARNING_LABELS.get(code, code)


def check_minimum_size(width: int, height: int) -> str | None:
    """Why an image is too small to classify, or None when it is large enough."""
    if min(width, height) < MIN_IMAGE_SIDE:
        return (f"The image is {width}x{height} pixels: too small to classify "
                f"(at least {MIN_IMAGE_SIDE} pixels on each side).")
    return None


