"""Server-side SVG geometry for the malignancy-over-visits plot (no JavaScript, no CDN)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from diagnosis.selectors import TimelinePoint

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 16, 40


@dataclass(frozen=True)
class PlotPoint:
    x: float
    y: float
    score: float
    captured_at: dt.date
    image_id: int
    flagged: bool


@dataclass(frozen=True)
class PlotGeometry:
    width: int
    height: int
    points: list[PlotPoint]
    polyline: str
    threshold: float | None
    threshold_y: float | None
    y_ticks: list[tuple[float, str]]  # (y, label)
    x_left: int
    x_right: int
    y_top: int
    y_bottom: int


def _y(score: float) -> float:
    return TOP + (1.0 - score) * (HEIGHT - TOP - BOTTOM)


def malignancy_plot(timeline: list[TimelinePoint]) -> PlotGeometry | None:
    """Malignancy score per visit against the capture date; None when nothing is classified yet."""
    scored = [
        point
        for point in timeline
        if point.classification is not None
        and point.classification.succeeded
        and point.classification.malignancy_score is not None
    ]
    if not scored:
        return None
    first, last = scored[0].image.captured_at, scored[-1].image.captured_at
    span_days = (last - first).days
    plot_width = WIDTH - LEFT - RIGHT
    points: list[PlotPoint] = []
    for index, point in enumerate(scored):
        if span_days > 0:
            fraction = (point.image.captured_at - first).days / span_days
        else:  # every image from the same day: spread them evenly
            fraction = index / (len(scored) - 1) if len(scored) > 1 else 0.5
        classification = point.classification
        points.append(
            PlotPoint(
                x=round(LEFT + fraction * plot_width, 1),
                y=round(_y(float(classification.malignancy_score)), 1),
                score=float(classification.malignancy_score),
                captured_at=point.image.captured_at,
                image_id=point.image.pk,
                flagged=classification.malignant,
            )
        )
    threshold = scored[-1].classification.threshold
    return PlotGeometry(
        width=WIDTH,
        height=HEIGHT,
        points=points,
        polyline=" ".join(f"{p.x},{p.y}" for p in points),
        threshold=threshold,
        threshold_y=round(_y(threshold), 1) if threshold is not None else None,
        y_ticks=[(round(_y(v), 1), f"{v:.0%}") for v in (0.0, 0.25, 0.5, 0.75, 1.0)],
        x_left=LEFT,
        x_right=WIDTH - RIGHT,
        y_top=TOP,
        y_bottom=HEIGHT - BOTTOM,
    )
