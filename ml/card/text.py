"""Number formatting shared by the model card's sections."""

from __future__ import annotations


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def with_interval(metrics: dict, key: str) -> str:
    interval = metrics.get("intervals_95", {}).get(key)
    text = fmt(metrics.get(key))
    return f"{text} ({fmt(interval[0])}–{fmt(interval[1])})" if interval else text
