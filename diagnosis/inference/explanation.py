"""Heatmaps: a stored activation map drawn over the image (ml.explain)."""

from __future__ import annotations

from diagnosis.inference.opencv import use_one_opencv_thread
from ml.classes import CLASSES

HEATMAP_MAX_SIDE = 1024  # the overlay is a picture to look at, not a copy of the upload


def heatmap_overlay(rgb, activation_map: list, class_code: str, field_of_view: dict | None = None):
    """An RGB uint8 array: `rgb` with one class's activation map blended over it; the map lies in
    the stored crop to the dermatoscope's field of view when there is one (`rgb` may be a smaller
    copy of the image). Raises ValueError for an unknown class, a malformed map or crop box."""
    use_one_opencv_thread()
    import numpy as np

    from ml.explain import heat_map, overlay
    from ml.field_of_view import FieldOfView

    if class_code not in CLASSES:
        raise ValueError(f"unknown class {class_code!r}; expected one of {', '.join(CLASSES)}")
    cam = np.asarray(activation_map, dtype=np.float32)
    if cam.ndim != 3 or cam.shape[2] != len(CLASSES):
        raise ValueError(f"activation map of shape {cam.shape} is not (rows, columns, {len(CLASSES)})")
    box = None if field_of_view is None else FieldOfView.from_dict(field_of_view)
    return overlay(rgb, heat_map(cam, CLASSES.index(class_code), rgb.shape[:2], field_of_view=box))


def stored_field_of_view(data) -> dict[str, int] | None:
    """A result's stored crop box as the API shows it, or None: none stored, or one that is not a
    box (the heatmap endpoint says so in its 404; a result's other fields stay readable)."""
    from ml.field_of_view import FieldOfView

    if data is None:
        return None
    try:
        return FieldOfView.from_dict(data).to_dict()
    except ValueError:
        return None


def heatmap_png(image_data: bytes, activation_map: list, class_code: str, field_of_view: dict | None = None) -> bytes:
    """PNG of the stored image with one class's activation map blended over it (at most
    HEATMAP_MAX_SIDE pixels on the long side). Raises InvalidImageError for an unreadable image
    and ValueError for an unknown class, a malformed map or crop box."""
    cv2 = use_one_opencv_thread()
    from ml.explain import encode_png
    from ml.preprocessing import decode_image

    rgb = decode_image(image_data)
    height, width = rgb.shape[:2]
    scale = min(1.0, HEATMAP_MAX_SIDE / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return encode_png(heatmap_overlay(rgb, activation_map, class_code, field_of_view))
