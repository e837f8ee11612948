"""Server-side SVG geometry for the malignancy-over-visits plot (no JavaScript, no CDN).

Every visit is a marker; how far to trust it decides its shape (diagnosis/interpretation.py):
a filled dot for a clear result, a hollow one when the model is unsure (low_confidence), and a
grey hollow one with a cross when the image itself is in doubt. Only visits without an image
warning are joined into the trend line: a score from a bad picture is not a step of the trend.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from diagnosis.interpretation import UNRELIABLE, level_of, percent
from diagnosis.progress import warning_badges
from diagnosis.selectors import TimelinePoint

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 16, 40
# The room a date label ("2024-01-05" at 11px, about 60 units) takes with a little space: labels
# that would print over another are left out.
LABEL_WIDTH = 64
CROSS = 3.5  # half the arm of the cross on a marker of an image in doubt


@dataclass(frozen=True)
class PlotPoint:
    x: float
    y: float
    score: float
    captured_at: dt.date
    image_id: int
    flagged: bool
    level: str  # interpretation.LEVELS
    unsure: bool  # low_confidence: the top classes are close (flagged or not)
    tooltip: str  # date, score, top class, top-two margin, warnings

    @property
    def reliable(self) -> bool:
        """No image warning: part of the trend line."""
        return self.level != UNRELIABLE

    @property
    def marker(self) -> str:
        """The marker's CSS classes: `dot` and its kind (uncertain: hollow; unreliable: grey, crossed)."""
        if self.level == UNRELIABLE:
            return "dot unreliable"
        classes = ["dot"]
        if self.flagged:
            classes.append("flagged")
        if self.unsure:
            classes.append("uncertain")
        return " ".join(classes)

    @property
    def cross(self) -> str:
        """The path of the cross drawn over an unreliable marker."""
        x, y, d = self.x, self.y, CROSS
        return f"M{x - d:g},{y - d:g} L{x + d:g},{y + d:g} M{x - d:g},{y + d:g} L{x + d:g},{y - d:g}"


@dataclass(frozen=True)
class DateLabel:
    x: float
    text: str
    anchor: str  # SVG text-anchor: start, middle or end (the first and last stay inside the plot)


@dataclass(frozen=True)
class PlotGeometry:
    width: int
    height: int
    points: list[PlotPoint]
    polyline: str  # the reliable visits only; empty when fewer than two
    threshold: float | None
    threshold_y: float | None
    y_ticks: list[tuple[float, str]]  # (y, label)
    x_labels: list[DateLabel]
    x_left: int
    x_right: int
    y_top: int
    y_bottom: int


def _y(score: float) -> float:
    return TOP + (1.0 - score) * (HEIGHT - TOP - BOTTOM)


def _tooltip(point: TimelinePoint, level: str) -> str:
    c = point.classification
    score = float(c.malignancy_score)
    position = "at or above" if c.malignant else "below"
    parts = [f"{point.image.captured_at:%Y-%m-%d}", f"score {percent(score)} ({position} the threshold)"]
    if c.top_class_name:
        parts.append(f"top class {c.top_class_name}")
    if c.margin is not None:
        parts.append(f"top-two margin {percent(c.margin)}")
    if c.warnings:
        parts.append("warnings: " + ", ".join(badge.label for badge in warning_badges(c.warnings)))
    if level == UNRELIABLE:
        parts.append("image in doubt: not joined to the trend")
    return " · ".join(parts)


def _date_label(point: PlotPoint) -> DateLabel:
    # Centred under its visit, unless that would run out of the drawing: then anchored at an end.
    half = LABEL_WIDTH / 2
    anchor = "end" if point.x + half > WIDTH else "start" if point.x - half < 0 else "middle"
    return DateLabel(x=point.x, text=f"{point.captured_at:%Y-%m-%d}", anchor=anchor)


def _extent(label: DateLabel) -> tuple[float, float]:
    left = {"start": label.x, "middle": label.x - LABEL_WIDTH / 2, "end": label.x - LABEL_WIDTH}[label.anchor]
    return left, left + LABEL_WIDTH


def _date_labels(points: list[PlotPoint]) -> list[DateLabel]:
    """One label per distinct date, left to right, leaving out any that would print over the one
    before; the last visit's date is always kept (it replaces those it would overlap)."""
    kept: list[DateLabel] = []
    for label in (_date_label(point) for point in points):
        if kept and kept[-1].text == label.text:
            continue
        if not kept or _extent(label)[0] >= _extent(kept[-1])[1]:
            kept.append(label)
    if points:
        last = _date_label(points[-1])
        if kept[-1].text != last.text:
            while kept and _extent(kept[-1])[1] > _extent(last)[0]:
                kept.pop()
            kept.append(last)
    return kept


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
        level = level_of(malignant=classification.malignant, warnings=classification.warnings)
        points.append(
            PlotPoint(
                x=round(LEFT + fraction * plot_width, 1),
                y=round(_y(float(classification.malignancy_score)), 1),
                score=float(classification.malignancy_score),
                captured_at=point.image.captured_at,
                image_id=point.image.pk,
                flagged=classification.malignant,
                level=level,
                unsure="low_confidence" in (classification.warnings or []),
                tooltip=_tooltip(point, level),
            )
        )
    reliable = [p for p in points if p.reliable]
    threshold = scored[-1].classification.threshold
    return PlotGeometry(
        width=WIDTH,
        height=HEIGHT,
        points=points,
        polyline=" ".join(f"{p.x},{p.y}" for p in reliable) if len(reliable) >= 2 else "",
        threshold=threshold,
        threshold_y=round(_y(threshold), 1) if threshold is not None else None,
        y_ticks=[(round(_y(v), 1), f"{v:.0%}") for v in (0.0, 0.25, 0.5, 0.75, 1.0)],
        x_labels=_date_labels(points),
        x_left=LEFT,
        x_right=WIDTH - RIGHT,
        y_top=TOP,
        y_bottom=HEIGHT - BOTTOM,
    )
