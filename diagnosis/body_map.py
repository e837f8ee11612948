"""The body map: a front and a back drawing of the body (templates/diagnosis/_body_map.html) on
which a lesion is placed at (map_x, map_y), each 0-1 across and down its drawing. This module turns
those places into drawing units and markers; the lesion form places one, the patient page shows all.

The drawings share one viewBox, WIDTH x HEIGHT units; static/js/body_map.js reads it from the SVG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from django.urls import reverse

from diagnosis.interpretation import level_of
from diagnosis.models import Lesion, MapView

WIDTH, HEIGHT = 100, 220
# A lesion with no result yet: grey on the map (the four reading levels have their colours).
UNCLASSIFIED = "unclassified"
LEVEL_WORDS = {
    "unreliable": "image in doubt",
    "flagged": "flagged",
    "uncertain": "uncertain",
    "reassuring": "reassuring",
    UNCLASSIFIED: "no result yet",
}


@dataclass(frozen=True)
class Marker:
    cx: float
    cy: float
    level: str = ""
    url: str = ""
    title: str = ""


def in_drawing(x: float, y: float) -> tuple[float, float]:
    """0-1 coordinates to drawing units (attributes of the SVG: no inline style under the CSP)."""
    return round(x * WIDTH, 2), round(y * HEIGHT, 2)


def lesion_level(lesion: Lesion) -> str:
    """The latest result's level, from the annotations of selectors.with_latest_warnings."""
    if not getattr(lesion, "latest_top_class", None):
        return UNCLASSIFIED
    return level_of(malignant=bool(lesion.latest_malignant), warnings=lesion.latest_warnings)


def _views(markers: dict[str, list[Marker]]) -> list[dict[str, Any]]:
    return [{"code": code, "label": label, "markers": markers.get(code, [])} for code, label in MapView.choices]


def patient_map(lesions: list[Lesion]) -> dict[str, Any]:
    """Markers for every placed lesion, on its drawing; the others listed as not placed."""
    markers: dict[str, list[Marker]] = {}
    unplaced: list[Lesion] = []
    for lesion in lesions:
        if not lesion.placed_on_map:
            unplaced.append(lesion)
            continue
        level = lesion_level(lesion)
        cx, cy = in_drawing(lesion.map_x, lesion.map_y)
        title = f"{lesion.label} · {lesion.side_and_site} · {LEVEL_WORDS[level]}"
        url = reverse("lesion-detail", kwargs={"lesion_id": lesion.pk})
        markers.setdefault(lesion.map_view, []).append(Marker(cx=cx, cy=cy, level=level, url=url, title=title))
    return {"views": _views(markers), "unplaced": unplaced, "legend": list(LEVEL_WORDS.items())}


def _coordinate(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and 0.0 <= number <= 1.0 else None


def form_map(form: Any) -> dict[str, Any]:
    """The lesion form's drawings with its marker where the form's fields (as sent, or as stored
    when editing) place it; none when they do not hold a whole, valid place."""
    view = form["map_view"].value()
    x, y = _coordinate(form["map_x"].value()), _coordinate(form["map_y"].value())
    markers: dict[str, list[Marker]] = {}
    if view in MapView.values and x is not None and y is not None:
        cx, cy = in_drawing(x, y)
        markers[view] = [Marker(cx=cx, cy=cy)]
    return {"views": _views(markers), "placing": True}
