"""The lesion outline stored with a classification (diagnosis.inference.segment_image), as the
pages and the API show it: its descriptors in words, its polygon for an SVG over the picture, and
its mask as a PNG."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from django.http import Http404, HttpResponse

from diagnosis import selectors
from diagnosis.models import Classification, LesionImage

COLOUR_NAMES = {
    "white": "white", "red": "red", "light_brown": "light brown", "dark_brown": "dark brown",
    "blue_grey": "blue-grey", "black": "black",
}
COLOUR_MIN_SHARE = 0.05  # as ml.segmentation.descriptors counts a colour (at least 5% of the lesion)


@dataclass(frozen=True)
class OutlineDisplay:
    width: int  # the image's own pixels: the SVG's viewBox
    height: int
    points: str  # SVG polygon points; empty for a fallback (no lesion found)
    fallback: bool
    rows: list[tuple[str, str]]  # (label, value) of each descriptor, in words
    method: str
    has_scale: bool


def _number(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def descriptor_rows(segmentation: dict) -> list[tuple[str, str]]:
    """The descriptors in words, area first (mm² beside pixels when the image has a scale)."""
    area = f"{_number(segmentation.get('area_px'), 0)} px"
    if segmentation.get("area_mm2") is not None:
        area = f"{_number(segmentation['area_mm2'], 1)} mm² ({area})"
    diameter = f"{_number(segmentation.get('diameter_px'), 0)} px"
    if segmentation.get("diameter_mm") is not None:
        diameter = f"{_number(segmentation['diameter_mm'], 1)} mm ({diameter})"
    shares = segmentation.get("colour_shares") or {}
    colours = [COLOUR_NAMES.get(name, name) for name, share in shares.items() if (share or 0) >= COLOUR_MIN_SHARE]
    return [
        ("Area", area),
        ("Largest diameter", diameter),
        ("Asymmetry (0 symmetric, 1 none)", _number(segmentation.get("asymmetry"), 3)),
        ("Border irregularity (1 = a circle)", _number(segmentation.get("border_irregularity"), 2)),
        ("Solidity (1 = convex)", _number(segmentation.get("solidity"), 3)),
        ("Dermoscopic colours", f"{segmentation.get('colours', 0)}" + (f" ({', '.join(colours)})" if colours else "")),
    ]


def outline_display(classification: Classification | None) -> OutlineDisplay | None:
    """What the result page shows of a succeeded classification's outline; None without one
    (results from before outlines were stored, or a segmentation that failed)."""
    if classification is None or not classification.succeeded or not classification.segmentation:
        return None
    seg = classification.segmentation
    fallback = bool(seg.get("fallback"))
    points = "" if fallback else " ".join(f"{x:g},{y:g}" for x, y in seg.get("outline") or [])
    return OutlineDisplay(
        width=int(seg.get("width") or classification.image.width),
        height=int(seg.get("height") or classification.image.height),
        points=points,
        fallback=fallback,
        rows=[] if fallback else descriptor_rows(seg),
        method=str(seg.get("method", "")),
        has_scale=seg.get("pixels_per_mm") is not None,
    )


class MaskUnavailable(Http404):
    """The image's current result has no stored outline."""


def mask_png_response(image: LesionImage) -> HttpResponse:
    """The lesion mask (PNG, 0 background / 255 lesion) of the image's current successful
    classification, at the size it was measured (the image reduced to at most 1024 px on its long
    side; same aspect). 404 when there is none."""
    shown = selectors.image_latest_classification(image=image)
    seg = shown.segmentation if shown is not None and shown.succeeded else None
    if not seg or not seg.get("mask_png_base64"):
        raise MaskUnavailable(
            "No outline for this image: its result has no stored segmentation (results from before outlines "
            "were stored, or the segmentation failed: classify it again)."
        )
    try:
        png = base64.b64decode(seg["mask_png_base64"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MaskUnavailable("The stored outline is unreadable: classify the image again.") from exc
    return HttpResponse(png, content_type="image/png")
