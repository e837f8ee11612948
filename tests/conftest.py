"""Shared test helpers: where the HAM10000 copy is (if any), and generated images."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAM_DIR = os.environ.get("SKINPORTAL_HAM10000_DIR") or os.path.join(REPO, "..", "shared", "data", "ham10000")
HAM_METADATA = os.path.join(HAM_DIR, "HAM10000_metadata.csv")
HAM_IMAGES = os.path.join(HAM_DIR, "images")
WEIGHTS_DIR = os.environ.get("SKINPORTAL_WEIGHTS_DIR") or os.path.join(REPO, "..", "shared", "data", "weights")

needs_ham10000 = pytest.mark.skipif(
    not os.path.isfile(HAM_METADATA),
    reason=f"HAM10000 copy not found at {HAM_DIR} (../shared is absent on a fresh clone; CI has it)",
)


def make_image(width: int = 64, height: int = 48, seed: int = 0) -> np.ndarray:
    """A smooth random RGB uint8 image that survives JPEG."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def encode(image_rgb: np.ndarray, ext: str = ".jpg") -> bytes:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()
