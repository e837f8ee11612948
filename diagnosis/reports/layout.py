"""The PDF itself, drawn with ReportLab from a ReportContent: no query, no file read, no network
(only the PDF standard fonts, which every viewer has; nothing is fetched).

Every page carries the patient's identifier and the lesion in its header, and the "decision
support, not a diagnosis" note with "page N of M" in its footer, so a page printed on its own
still says whose it is and what it is not.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from xml.sax.saxutils import escape

from reportlab import rl_config
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfgen import canvas
from reportlab.platypus import Flowable, Image, KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from diagnosis.reports.content import LESION, ReportContent, Visit
from diagnosis.reports.pictures import PrintImage
from diagnosis.reports.sections import (
    NOT_A_DIAGNOSIS,
    NOT_A_DIAGNOSIS_DETAIL,
    details_rows,
    lesion_notes,
    probabilities_table,
    result_flowables,
    reviews_flowables,
    summary_rows,
    visit_caption,
)
from diagnosis.reports.styles import FONT, FONT_BOLD, INK, LINE, MUTED, STYLES

# Pictures go into the PDF as binary JPEG streams, not ASCII85 text: a fifth smaller, and ReportLab's
# pure-Python ASCII85 encoder was the largest single cost of a long report. (ReportLab's own global
# setting; nothing else in the portal draws PDFs.)
rl_config.useA85 = 0

PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN = 15 * mm
FRAME_WIDTH = PAGE_WIDTH - 2 * MARGIN
PICTURE_BOX = (54 * mm, 41 * mm)  # width, height of each of the two pictures side by side
PROBABILITIES_WIDTH = FRAME_WIDTH - 2 * (PICTURE_BOX[0] + 3 * mm)  # the table beside them


def render_report(content: ReportContent) -> bytes:
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN + 6 * mm,  # room for the running header
        bottomMargin=MARGIN + 6 * mm,  # and the footer
        title=content.title,  # the metadata name no patient: a file list may show it
        author="SkinPortal",
        subject="Decision support, not a diagnosis",
        creator="SkinPortal",
        pageCompression=1,
    )
    header = f"{content.title} · patient {content.patient.external_id} · {content.lesion.label}"
    document.build(
        list(_story(content)),
        onFirstPage=lambda page, doc: _running_header(page, header),
        onLaterPages=lambda page, doc: _running_header(page, header),
        canvasmaker=_NumberedCanvas,
    )
    return buffer.getvalue()


def _story(content: ReportContent) -> Iterable[Flowable]:
    yield Paragraph(escape(content.title), STYLES["title"])
    yield _note_box()
    yield Spacer(1, 4 * mm)
    yield _details_grid(content)
    if content.kind == LESION and len(content.visits) > 1:
        yield Paragraph("Visits at a glance", STYLES["h2"])
        yield _summary_table(content.visits)
    if not content.visits:
        yield Paragraph("Visits", STYLES["h2"])
        yield Paragraph("No images yet: there is nothing to report for this lesion.", STYLES["body"])
    elif not any(visit.reading for visit in content.visits):
        yield Paragraph("No image of this lesion has a successful classification yet.", STYLES["body"])
    total = len(content.visits)
    for visit in content.visits:
        yield from _visit(visit, total=total)


def _note_box() -> Table:
    note = Paragraph(f"<b>{NOT_A_DIAGNOSIS}</b> {NOT_A_DIAGNOSIS_DETAIL}", STYLES["note"])
    box = Table([[note]], colWidths=[FRAME_WIDTH])
    box.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#fff6dc")),
                ("BOX", (0, 0), (-1, -1), 0.8, colors.HexColor("#e8b35a")),
                ("LEFTPADDING", (0, 0), (-1, -1), 3 * mm),
                ("RIGHTPADDING", (0, 0), (-1, -1), 3 * mm),
                ("TOPPADDING", (0, 0), (-1, -1), 2 * mm),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2 * mm),
            ]
        )
    )
    return box


def _details_grid(content: ReportContent) -> Table:
    """Label and value pairs two to a row, then the lesion's notes across the page."""
    cells = [
        [Paragraph(escape(label), STYLES["label"]), Paragraph(value, STYLES["body"])]
        for label, value in details_rows(content)
    ]
    rows = [cells[i] + (cells[i + 1] if i + 1 < len(cells) else ["", ""]) for i in range(0, len(cells), 2)]
    spans = []
    if content.lesion.notes:
        rows.append([Paragraph("Lesion notes", STYLES["label"]), Paragraph(lesion_notes(content), STYLES["body"])])
        spans.append(("SPAN", (1, len(rows) - 1), (3, len(rows) - 1)))
    label, value = 30 * mm, FRAME_WIDTH / 2 - 30 * mm
    table = Table(rows, colWidths=[label, value, label, value], hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("TOPPADDING", (0, 0), (-1, -1), 1),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
                *spans,
            ]
        )
    )
    return table


def _summary_table(visits: list[Visit]) -> Table:
    header, *rows = summary_rows(visits)
    cells = [[Paragraph(text, STYLES["small_bold"]) for text in header]]
    cells += [[Paragraph(text, STYLES["small"]) for text in row] for row in rows]
    widths = [10 * mm, 22 * mm, 70 * mm, 30 * mm, FRAME_WIDTH - 132 * mm]
    table = Table(cells, colWidths=widths, repeatRows=1, hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("LINEBELOW", (0, 0), (-1, 0), 0.6, INK),
                ("LINEBELOW", (0, 1), (-1, -1), 0.25, LINE),
                ("LEFTPADDING", (0, 0), (0, -1), 1),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("TOPPADDING", (0, 0), (-1, -1), 1.5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
            ]
        )
    )
    return table


def _visit(visit: Visit, *, total: int) -> Iterable[Flowable]:
    heading = f"Visit {visit.number} of {total} · captured {visit.image.captured_at.isoformat()}"
    opening = [
        Spacer(1, 3 * mm),
        Paragraph(escape(heading), STYLES["h2"]),
        Paragraph(visit_caption(visit), STYLES["small"]),
        Spacer(1, 2 * mm),
        _pictures(visit),
    ]
    # A visit's pictures, result and first review stay on one page (a new page when they do not fit
    # below the previous visit); further reviews may flow on.
    reviews = reviews_flowables(visit)
    yield KeepTogether([*opening, *result_flowables(visit, frame_width=FRAME_WIDTH), *reviews[:2]])
    yield from reviews[2:]


def _pictures(visit: Visit) -> Table:
    """The image and its heatmap side by side, and the seven probabilities beside them."""
    pictures = visit.pictures
    photo = _picture(pictures.photo) or Paragraph(escape(pictures.photo_note), STYLES["body"])
    heatmap = _picture(pictures.heatmap) or Paragraph(escape(pictures.heatmap_note), STYLES["body"])
    captions = [
        "Image as stored" if pictures.photo else "",
        escape(pictures.heatmap_note) if pictures.heatmap else "",
    ]
    probabilities = probabilities_table(visit, width=PROBABILITIES_WIDTH) or ""
    picture_column = PICTURE_BOX[0] + 3 * mm
    table = Table(
        [[photo, heatmap, probabilities], [*(Paragraph(text, STYLES["caption"]) for text in captions), ""]],
        colWidths=[picture_column, picture_column, PROBABILITIES_WIDTH],
        hAlign="LEFT",
    )
    table.setStyle(
        TableStyle(
            [
                ("SPAN", (2, 0), (2, 1)),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("VALIGN", (0, 0), (1, 0), "BOTTOM"),  # a wide picture sits on its caption
                ("ALIGN", (0, 0), (-1, -1), "LEFT"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("RIGHTPADDING", (0, 0), (-1, -1), 0),
                ("TOPPADDING", (0, 0), (-1, -1), 0),
            ]
        )
    )
    return table


def _picture(picture: PrintImage | None) -> Image | None:
    if picture is None:
        return None
    box_width, box_height = PICTURE_BOX
    scale = min(box_width / picture.width, box_height / picture.height)
    return Image(io.BytesIO(picture.jpeg), width=picture.width * scale, height=picture.height * scale)


def _running_header(page: canvas.Canvas, header: str) -> None:
    page.saveState()
    page.setFont(FONT, 7.5)
    page.setFillColor(MUTED)
    page.drawString(MARGIN, PAGE_HEIGHT - MARGIN, _fit(page, header, FRAME_WIDTH, FONT, 7.5))
    page.setStrokeColor(LINE)
    page.line(MARGIN, PAGE_HEIGHT - MARGIN - 2 * mm, PAGE_WIDTH - MARGIN, PAGE_HEIGHT - MARGIN - 2 * mm)
    page.restoreState()


def _fit(page: canvas.Canvas, text: str, width: float, font: str, size: float) -> str:
    """`text` cut with an ellipsis to fit `width` on one line (a long lesion label)."""
    if page.stringWidth(text, font, size) <= width:
        return text
    while text and page.stringWidth(text + "…", font, size) > width:
        text = text[:-1]
    return text + "…"


class _NumberedCanvas(canvas.Canvas):
    """Draws the footer once the page count is known ("page N of M"): ReportLab's usual recipe of
    keeping each page's state until save."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pages: list[dict] = []

    def showPage(self) -> None:  # ReportLab's name
        self._pages.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        for state in self._pages:
            self.__dict__.update(state)
            self._footer(len(self._pages))
            super().showPage()
        super().save()

    def _footer(self, total: int) -> None:
        self.saveState()
        y = MARGIN
        self.setStrokeColor(LINE)
        self.line(MARGIN, y + 3.5 * mm, PAGE_WIDTH - MARGIN, y + 3.5 * mm)
        self.setFont(FONT_BOLD, 7.5)
        self.setFillColor(INK)
        self.drawString(MARGIN, y, NOT_A_DIAGNOSIS)
        offset = self.stringWidth(NOT_A_DIAGNOSIS + " ", FONT_BOLD, 7.5)
        self.setFont(FONT, 7.5)
        self.setFillColor(MUTED)
        self.drawString(MARGIN + offset, y, "SkinPortal is research and education software, not a medical device.")
        self.drawRightString(PAGE_WIDTH - MARGIN, y, f"Page {self._pageNumber} of {total}")
        self.restoreState()
