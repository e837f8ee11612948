"""Print copies of a visit's picture and of its heatmap overlay: small JPEGs, so a lesion followed
over 30 visits still gives a report of a few MB, made in about a second.

Stored images may be many megapixels; a report prints each at about 54 mm, where PRINT_MAX_SIDE
pixels are about 190 dpi. ReportLab embeds a JPEG as it is (no decode, no re-compression).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from diagnosis import inference
from diagnosis.models import Classification, LesionImage

PRINT_MAX_SIDE = 400
JPEG_QUALITY = 80

NO_FILE = "The image file is missing or unreadable."
NO_RESULT = "No heatmap: the image has no successful classification."
NO_MAP = "No heatmap: this result has no activation map (results of older model bundles have none)."
MAP_UNREADABLE = "No heatmap: the stored activation map could not be drawn."


@dataclass(frozen=True)
class PrintImage:
    jpeg: bytes
    width: int
    height: int


@dataclass(frozen=True)
class Pictures:
    photo: PrintImage | None
    heatmap: PrintImage | None
    photo_note: str  # why there is no photo ("" when there is one)
    heatmap_note: str  # whose evidence the heatmap shows, or why there is none


def visit_pictures(*, image: LesionImage, classification: Classification | None) -> Pictures:
    """The image and its top class's heatmap, or words saying why either is missing."""
    try:
        with image.file.open("rb") as handle:
            small = _downscaled(handle.read())
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError):
        return Pictures(None, None, NO_FILE, "")
    photo = _print_jpeg(small)
    if classification is None or not classification.succeeded:
        return Pictures(photo, None, "", NO_RESULT)
    if not classification.activation_map:
        return Pictures(photo, None, "", NO_MAP)
    try:
        # The map is drawn over the print copy, not the stored file: it is scaled to whatever
        # image it is given, and decoding a large upload a second time would cost far more.
        drawn = inference.heatmap_overlay(np.asarray(small), classification.activation_map, classification.top_class,
                                          classification.field_of_view)
        heatmap = _print_jpeg(Image.fromarray(drawn))
    except ValueError:
        return Pictures(photo, None, "", MAP_UNREADABLE)
    return Pictures(photo, heatmap, "", f"Heatmap for {classification.top_class_name}")


def _downscaled(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as picture:
        picture.draft("RGB", (PRINT_MAX_SIDE, PRINT_MAX_SIDE))  # a JPEG decodes at 1/2, 1/4 or 1/8 scale
        # A stored JPEG may keep its EXIF orientation (inference.sanitise_upload): turned upright
        # as the browser and OpenCV turn it, so the heatmap drawn over it lines up.
        rgb = ImageOps.exif_transpose(picture).convert("RGB")
    rgb.thumbnail((PRINT_MAX_SIDE, PRINT_MAX_SIDE), Image.Resampling.LANCZOS)
    return rgb


def _print_jpeg(picture: Image.Image) -> PrintImage:
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return PrintImage(jpeg=buffer.getvalue(), width=picture.width, height=picture.height)
