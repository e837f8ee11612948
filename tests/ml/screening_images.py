"""Generated images for the screening tests: sharp textures and near-flat colours."""

import cv2
import numpy as np


def textured(seed: int, side: int = 224) -> np.ndarray:
    """A sharp, mid-grey, well-exposed RGB uint8 image: 8-pixel blocks of random colours."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(70, 190, (side // 8, side // 8, 3)).astype(np.uint8)
    return cv2.resize(cells, (side, side), interpolation=cv2.INTER_NEAREST)


def flat(colour: tuple[int, int, int], size: int = 64, seed: int = 0) -> np.ndarray:
    """A near-uniform image of one colour with a little texture (so it is neither flat nor noisy)."""
    rng = np.random.default_rng(seed)
    image = np.array(colour, np.int16) + rng.integers(-6, 7, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)
