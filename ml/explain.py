"""Class activation maps as pictures: where in the image the evidence for a class lies.

The bundle's graph returns, beside the logits, the class activation map CAM_c = sum_k w_kc A_k
over its last feature map (ml/training/explainable.py): one value per position of a coarse grid
(for example 5x7 for a 150x200 input) for each class. This module turns one class's grid into a
map at the image's own height x width in [0, 1], and blends it over the image. NumPy + OpenCV.

Only positive evidence is shown (negative values are evidence *against* the class): the map is
max(CAM_c, 0) divided by its maximum, so it says where, not how much; a class with no positive
evidence anywhere gives an all-zero map.
"""

from __future__ import annotations

import cv2
import numpy as np

from ml.field_of_view import FieldOfView
from ml.preprocessing import input_is_turned

OVERLAY_ALPHA = 0.45


def heat_grid(cam: np.ndarray, class_index: int) -> np.ndarray:
    """(h, w) positive evidence of one class, scaled to [0, 1]."""
    grid = np.maximum(np.asarray(cam, dtype=np.float32)[..., class_index], 0.0)
    peak = float(grid.max())
    return grid / peak if peak > 0 else grid


def heat_map(cam: np.ndarray, class_index: int, image_shape: tuple[int, int],
             input_shape: tuple[int, int] | None = None, field_of_view: FieldOfView | None = None) -> np.ndarray:
    """float32 (H, W) map in [0, 1] for an image of `image_shape` = (H, W).

    The grid has the model input's orientation (a 150x200 input gives a 5x7 grid): when
    preprocessing turned the image by 90 degrees to fit a non-square input, the map is enlarged
    to the turned shape and turned back. Whether it did is judged from `input_shape`, the model
    input's (height, width), when given; else from the grid's own shape, which is not enough
    when rounding made the grid square for a non-square input (MobileNetV2 gives a 2x2 grid for
    48x64 and a 4x4 one for 112x128): pass it when the classifier is at hand
    (Classifier.config.height_width).

    `field_of_view`: the crop the model read (Prediction.field_of_view), when its bundle crops
    to a dermatoscope's field of view; the map then fills that box (scaled to `image_shape`,
    which may be a smaller copy of the image) and is zero on the frame around it.
    """
    if field_of_view is not None:
        rows, columns = field_of_view.on(image_shape)
        full = np.zeros(image_shape, dtype=np.float32)
        full[rows, columns] = heat_map(cam, class_index, (rows.stop - rows.start, columns.stop - columns.start),
                                       input_shape)
        return full
    height, width = image_shape
    grid = heat_grid(cam, class_index)
    turned = input_is_turned((height, width), tuple(input_shape) if input_shape is not None else grid.shape[:2])
    target_h, target_w = (width, height) if turned else (height, width)
    # Bicubic over a coarse grid overshoots a little: clip back into [0, 1].
    enlarged = np.clip(cv2.resize(grid, (target_w, target_h), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)
    if turned:
        enlarged = np.rot90(enlarged, k=-1)  # preprocessing turned with np.rot90(k=1)
    return np.ascontiguousarray(enlarged, dtype=np.float32)


def colourise(heat: np.ndarray) -> np.ndarray:
    """RGB uint8 colours of a [0, 1] map (OpenCV's perceptually ordered 'turbo' scale)."""
    scaled = np.clip(heat * 255.0, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(scaled, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)


def overlay(image_rgb: np.ndarray, heat: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """The image with the coloured map blended over it, more opaque where the evidence is."""
    weight = (alpha * np.clip(heat, 0.0, 1.0))[..., None]
    blended = image_rgb.astype(np.float32) * (1.0 - weight) + colourise(heat).astype(np.float32) * weight
    return np.clip(blended, 0, 255).astype(np.uint8)


def encode_png(image_rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("OpenCV could not encode the overlay as PNG")
    return data.tobytes()
