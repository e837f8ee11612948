"""Plain helpers of the portal tests (no fixtures: those are in conftest.py): the stand-in model
bundle, generated images, and the names every test module shares.

The stand-in model averages the image's R, G and B and maps them to logits: red images ->
melanoma (flagged), green -> melanocytic nevus (not flagged), blue -> vascular.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ml.classes import CLASSES
from tests.tinymodel import tiny_onnx, write_bundle

STAND_IN_VERSION = "stand-in-test-1"
STAND_IN_THRESHOLD = 0.5
PASSWORD = "correct-horse-battery-staple"
REPO_ROOT = Path(__file__).resolve().parents[2]

RED = (220, 30, 30)  # stand-in model: melanoma, flagged
GREEN = (30, 200, 40)  # stand-in model: melanocytic nevus, not flagged
BLUE = (30, 40, 210)  # stand-in model: vascular lesion, far from both: not_dermoscopic


def stand_in_weights() -> np.ndarray:
    """Channel means -> logits: red -> melanoma, green -> nevus, blue -> vascular."""
    weights = np.zeros((3, len(CLASSES)), dtype=np.float32)
    weights[0, CLASSES.index("mel")] = 4.0  # red
    weights[1, CLASSES.index("nv")] = 4.0  # green
    weights[2, CLASSES.index("vasc")] = 4.0  # blue
    return weights


# The stand-in's screening: images near the red or green test colours are "dermatoscopic";
# blue, grey or white ones are far from both and get not_dermoscopic. Darker than luma 40 is
# too_dark; a top-two margin under 0.1 is low_confidence.
STAND_IN_SCREENING = {
    "dermoscopic_colours": [RED, GREEN],
    "ood_threshold": 0.5,
    "quality": {"min_brightness": 40.0, "max_brightness": 250.0, "max_saturated": 0.5, "min_contrast": 0.0,
                "min_sharpness": 0.0, "percentile": 0.5},
    "confidence": {"min_margin": 0.1, "max_entropy": 0.95, "accuracy_below_margin": 0.4,
                   "flagged_validation_rate": 0.1},
}


def build_stand_in_bundle(folder: Path, *, version: str = STAND_IN_VERSION, busy: bool = False,
                          field_of_view: bool = False) -> Path:
    """input float32 [N,224,224,3] -> channel means (features), their 7x7 grid times a 3x7
    matrix (cam) and the means times it (logits); `busy` makes each image cost ~50 ms;
    `field_of_view` makes it crop to a dermatoscope's field of view (ml.field_of_view)."""
    write_bundle(folder, tiny_onnx(224, stand_in_weights(), busy=busy), size=224, version=version,
                 threshold=STAND_IN_THRESHOLD, int8_copy=False, field_of_view=field_of_view, **STAND_IN_SCREENING)
    return folder


# --- Images --------------------------------------------------------------------------------


def image_bytes(
    colour: tuple[int, int, int] = (220, 30, 30),
    *,
    size: tuple[int, int] = (128, 100),
    fmt: str = "png",
    seed: int = 0,
) -> bytes:
    """A solid RGB image with a little noise, encoded as PNG or JPEG. Another `seed`: another
    file of the same colour (a lesion refuses a file it already has)."""
    width, height = size
    rng = np.random.default_rng(seed)
    rgb = np.clip(np.array(colour, dtype=np.int16) + rng.integers(-8, 9, (height, width, 3)), 0, 255).astype(np.uint8)
    ok, data = cv2.imencode(f".{fmt}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


