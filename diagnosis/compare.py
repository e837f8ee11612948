"""Two visits of one lesion compared: the measured change between them, in plain Python (no Django,
no NumPy), so the figures are easy to test and the page and the API show the same ones.

A visit is an image with its capture date, its malignancy score and its stored segmentation
(diagnosis.inference.segment_image: area, diameter, asymmetry, border, colours, centroid and
bounding box). The change in each is relative to the earlier visit. The area is compared in mm²
when both images have a scale, else in pixels, and then the summary says that a different zoom
alone changes it. A measured change is decision support, not a diagnosis.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

NOTICE = (
    "Measured change between two images, for decision support: not a diagnosis. The outline is found "
    "automatically and may miss part of the lesion; compare the images themselves."
)
# A lesion fills this share of its aligned square's side (its larger bounding-box side), so both
# visits' lesions are shown at the same size with some skin around them.
LESION_SHARE_OF_VIEW = 0.5


class CompareError(ValueError):
    """The two images asked for cannot be compared (not two images of this lesion)."""


@dataclass(frozen=True)
class Visit:
    image_id: int
    captured_at: dt.date
    malignancy_score: float | None = None
    model_version: str = ""
    segmentation: dict[str, Any] | None = None  # as stored; a fallback one is kept out of the figures
    pixels_per_mm: float | None = None

    @property
    def outline_found(self) -> bool:
        return bool(self.segmentation) and not self.segmentation.get("fallback", False)

    def measure(self, key: str) -> float | None:
        if not self.outline_found:
            return None
        value = self.segmentation.get(key)
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


@dataclass(frozen=True)
class Change:
    key: str
    label: str
    before: float | None
    after: float | None
    unit: str = ""
    digits: int = 2  # decimals shown

    @property
    def absolute(self) -> float | None:
        if self.before is None or self.after is None:
            return None
        return self.after - self.before

    @property
    def relative(self) -> float | None:
        return relative_change(self.before, self.after)

    @property
    def relative_text(self) -> str:
        return percent_change_text(self.relative)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "unit": self.unit, "before": self.before, "after": self.after,
                "absolute_change": self.absolute, "relative_change": self.relative}


@dataclass(frozen=True)
class ViewBox:
    """The square of an image (in its own pixels) shown so that the lesion is centred and its
    bounding box has the same displayed size in both visits; the whole image when no outline."""

    x: float
    y: float
    width: float
    height: float

    def __str__(self) -> str:
        return f"{self.x:g} {self.y:g} {self.width:g} {self.height:g}"


@dataclass(frozen=True)
class Comparison:
    before: Visit
    after: Visit
    days: int
    interval: str
    area: Change
    area_in_pixels: bool
    changes: list[Change]
    score: Change
    notes: list[str] = field(default_factory=list)
    summary: str = ""


def parse_image_id(value: str | None, name: str) -> int | None:
    """A query parameter naming an image: None when absent or empty; CompareError otherwise."""
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise CompareError(f"'{name}' must be the id of an image of this lesion.")
    return int(text)


def relative_change(before: float | None, after: float | None) -> float | None:
    """(after - before) / before; None when either is missing or `before` is 0."""
    if before is None or after is None or before == 0:
        return None
    return (after - before) / abs(before)


def percent_change_text(relative: float | None) -> str:
    """+38%, −12%, no change (under half a percent), or n/a."""
    if relative is None:
        return "n/a"
    percent = relative * 100
    if abs(percent) < 0.5:
        return "no change"
    return f"+{percent:.0f}%" if percent > 0 else f"\u2212{abs(percent):.0f}%"


def interval_words(days: int) -> str:
    """The time between two visits in words: 5 days, 3 weeks, 6 months, 1 year 2 months."""
    days = abs(int(days))
    if days == 0:
        return "the same day"
    if days < 14:
        return f"{days} day{'s' if days != 1 else ''}"
    if days < 61:
        weeks = round(days / 7)
        return f"{weeks} weeks"
    months = round(days / 30.4375)
    if months < 12:
        return f"{months} months"
    years, months = divmod(months, 12)
    text = f"{years} year{'s' if years != 1 else ''}"
    return f"{text} {months} month{'s' if months != 1 else ''}" if months else text


def view_box(segmentation: dict[str, Any] | None, width: int, height: int) -> ViewBox:
    """The aligned square around the lesion (see ViewBox); the whole image without an outline."""
    if not segmentation or segmentation.get("fallback") or not segmentation.get("bbox") \
            or not segmentation.get("centroid"):
        return ViewBox(0, 0, float(width), float(height))
    _, _, box_w, box_h = (float(v) for v in segmentation["bbox"])
    cx, cy = (float(v) for v in segmentation["centroid"])
    side = max(box_w, box_h, 1.0) / LESION_SHARE_OF_VIEW
    return ViewBox(round(cx - side / 2, 1), round(cy - side / 2, 1), round(side, 1), round(side, 1))


_DESCRIPTORS = (  # key, label, unit, decimals
    ("asymmetry", "Asymmetry (0 symmetric, 1 none)", "", 3),
    ("border_irregularity", "Border irregularity (1 = a circle)", "", 2),
    ("solidity", "Solidity (1 = convex)", "", 3),
    ("colours", "Dermoscopic colours", "", 0),
)


def compare_visits(first: Visit, second: Visit) -> Comparison:
    """The change from the earlier visit to the later one (ordered by capture date, then image id)."""
    if first.image_id == second.image_id:
        raise CompareError("Choose two different images of the lesion.")
    before, after = sorted((first, second), key=lambda v: (v.captured_at, v.image_id))
    days = (after.captured_at - before.captured_at).days
    in_mm = before.measure("area_mm2") is not None and after.measure("area_mm2") is not None
    if in_mm:
        area = Change("area", "Area", before.measure("area_mm2"), after.measure("area_mm2"), "mm²", 1)
        diameter = Change("diameter", "Largest diameter", before.measure("diameter_mm"), after.measure("diameter_mm"),
                          "mm", 1)
    else:
        area = Change("area", "Area", before.measure("area_px"), after.measure("area_px"), "px", 0)
        diameter = Change("diameter", "Largest diameter", before.measure("diameter_px"),
                          after.measure("diameter_px"), "px", 0)
    changes = [area, diameter] + [
        Change(key, label, before.measure(key), after.measure(key), unit, digits) for key, label, unit, digits in _DESCRIPTORS
    ]
    score = Change("malignancy_score", "Malignancy score", before.malignancy_score, after.malignancy_score, "", 2)
    notes = _notes(before, after, in_mm)
    return Comparison(before=before, after=after, days=days, interval=interval_words(days), area=area,
                      area_in_pixels=not in_mm, changes=changes, score=score, notes=notes,
                      summary=_summary(before, after, days, area, score, in_mm))


def _notes(before: Visit, after: Visit, in_mm: bool) -> list[str]:
    notes = []
    for name, visit in (("earlier", before), ("later", after)):
        if not visit.segmentation:
            notes.append(f"The {name} image has no outline (classified before outlines were stored, or the "
                         "outline failed): classify it again to measure it.")
        elif not visit.outline_found:
            notes.append(f"No lesion outline was found on the {name} image: its measurements are left out.")
        if visit.malignancy_score is None:
            notes.append(f"The {name} image has no successful classification: no malignancy score.")
    if not in_mm and before.outline_found and after.outline_found:
        notes.append("The images have no scale (pixels per mm), so the area and diameter are in pixels: a "
                     "different zoom or distance alone changes them.")
    if before.model_version and after.model_version and before.model_version != after.model_version:
        notes.append(f"The scores come from different model versions ({before.model_version}, "
                     f"{after.model_version}) and are not strictly comparable.")
    return notes


def _summary(before: Visit, after: Visit, days: int, area: Change, score: Change, in_mm: bool) -> str:
    """E.g. "Area +38% in 6 months; malignancy score 0.21 → 0.34 (2026-01-10 to 2026-07-10)." """
    span = f"in {interval_words(days)}" if days else "on the same day"
    parts = []
    if area.relative is not None:
        parts.append(f"area {area.relative_text} {span}" + ("" if in_mm else " (in pixels: the images have no scale)"))
    if score.before is not None and score.after is not None:
        parts.append(f"malignancy score {score.before:.2f} \u2192 {score.after:.2f}"
                     + ("" if parts else f" {span}"))
    text = "; ".join(parts) if parts else f"nothing could be measured on both images ({span})"
    return (f"{text[0].upper()}{text[1:]} ({before.captured_at:%Y-%m-%d} to {after.captured_at:%Y-%m-%d}). "
            "Measured change, decision support: not a diagnosis.")
