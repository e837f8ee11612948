"""Fonts, colours and paragraph styles of the PDF reports (the portal's own palette,
static/css/portal.css). Only the PDF standard fonts: nothing to embed, nothing to fetch."""

from __future__ import annotations

from reportlab.lib import colors
from reportlab.lib.styles import ParagraphStyle

from diagnosis.interpretation import FLAGGED, REASSURING, UNCERTAIN, UNRELIABLE

FONT, FONT_BOLD = "Helvetica", "Helvetica-Bold"

INK = colors.HexColor("#1d2430")
MUTED = colors.HexColor("#5d6675")
LINE = colors.HexColor("#dde1e7")
ACCENT = colors.HexColor("#1f5fa8")
FLAG = colors.HexColor("#b3261e")
OK = colors.HexColor("#1e7b4d")

# Reading level -> (background, border): only "reassuring" is green, as on the pages.
LEVEL_COLOURS: dict[str, tuple[colors.Color, colors.Color]] = {
    UNRELIABLE: (colors.HexColor("#fdecc8"), colors.HexColor("#e8b35a")),
    FLAGGED: (colors.HexColor("#fbe9e7"), colors.HexColor("#f2b8b5")),
    UNCERTAIN: (colors.HexColor("#fff6dc"), colors.HexColor("#f0dc9c")),
    REASSURING: (colors.HexColor("#e5f4ec"), colors.HexColor("#b7e0c9")),
}


def _style(name: str, **overrides) -> ParagraphStyle:
    base = {"fontName": FONT, "fontSize": 9, "leading": 12, "textColor": INK}
    return ParagraphStyle(name, **{**base, **overrides})


STYLES: dict[str, ParagraphStyle] = {
    "title": _style("title", fontName=FONT_BOLD, fontSize=17, leading=21, spaceAfter=3),
    "h2": _style("h2", fontName=FONT_BOLD, fontSize=12, leading=15, spaceBefore=5, spaceAfter=2),
    "h3": _style("h3", fontName=FONT_BOLD, fontSize=9.5, leading=12, spaceBefore=5, spaceAfter=1),
    "body": _style("body"),
    "label": _style("label", textColor=MUTED),
    "note": _style("note", fontSize=9.5, leading=12.5),
    "level": _style("level", fontName=FONT_BOLD, fontSize=10, leading=13, spaceAfter=1),
    "bullet": _style("bullet", leftIndent=9, bulletIndent=1),
    "small": _style("small", fontSize=8, leading=10, textColor=MUTED),
    "small_bold": _style("small_bold", fontName=FONT_BOLD, fontSize=8, leading=10),
    "caption": _style("caption", fontSize=7.5, leading=9.5, textColor=MUTED),
    "table": _style("table", fontSize=7.5, leading=9),
    "table_number": _style("table_number", fontSize=7.5, leading=9, alignment=2),  # right-aligned
}
