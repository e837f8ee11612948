"""Template filters for the stored lesion outline (diagnosis/outlines.py)."""

from __future__ import annotations

from django import template

from diagnosis.outlines import OutlineDisplay, outline_display

register = template.Library()


@register.filter
def outline(classification) -> OutlineDisplay | None:
    """The outline and descriptors of a succeeded classification; None without them."""
    return outline_display(classification)
