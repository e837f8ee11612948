"""The words and blocks of a report: the details table, the visits summary, and each visit's
result (reading, warnings, probabilities, model and its measured performance) and reviews.

The reading's level, headline and details come from diagnosis.interpretation.read_result, the
same words as the pages and the API: a result with any warning is never shown as reassuring.
Every text from the database is escaped (ReportLab paragraphs read a little markup).
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from django.utils import timezone
from reportlab.graphics.shapes import Drawing, Line, Rect
from reportlab.lib.units import mm
from reportlab.platypus import Flowable, Paragraph, Table, TableStyle

from diagnosis.inference import MALIGNANT_CLASSES
from diagnosis.interpretation import FLAGGED, REASSURING, UNCERTAIN, UNRELIABLE, context_sentence, percent
from diagnosis.models import ClinicianReview
from diagnosis.reports.content import IMAGE, ReportContent, Visit
from diagnosis.reports.styles import FLAG, INK, LEVEL_COLOURS, LINE, MUTED, OK, STYLES

NOT_A_DIAGNOSIS = "Decision support, not a diagnosis."
NOT_A_DIAGNOSIS_DETAIL = (
    "SkinPortal is research and education software and not a certified medical device. The model only knows "
    "7 classes from HAM10000 dermatoscopic images; interpret its output with your clinical judgement."
)
LEVEL_LABELS: dict[str, str] = {
    UNRELIABLE: "Image in doubt: this result is not reliable",
    FLAGGED: "Flagged: malignancy score at or above the threshold",
    UNCERTAIN: "Below the threshold, but uncertain: not a reassurance",
    REASSURING: "Below the threshold",
}
SHORT_LEVEL_LABELS: dict[str, str] = {
    UNRELIABLE: "Image in doubt",
    FLAGGED: "Flagged",
    UNCERTAIN: "Uncertain, not a reassurance",
    REASSURING: "Below threshold",
}
MALIGNANT_GROUP = "melanoma + basal cell carcinoma + actinic keratosis"


def _when(value) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M") if value else "–"


def details_rows(content: ReportContent) -> list[tuple[str, str]]:
    """(label, value as paragraph markup) of the patient, the lesion and the report itself, in
    pairs that belong side by side; the lesion's notes are a row of their own (lesion_notes)."""
    patient, lesion = content.patient, content.lesion
    if content.kind == IMAGE:
        image = content.visits[0].image
        what = ("Image", f"#{image.pk}, captured {image.captured_at.isoformat()}")
    else:
        what = ("Visits", _visits_span(content.visits))
    generated = content.generated_at.strftime("%Y-%m-%d %H:%M %Z")
    return [
        ("Patient", escape(patient.name)),
        ("Patient identifier", f"<b>{escape(patient.external_id)}</b>"),
        ("Lesion", f"<b>{escape(lesion.label)}</b>"),
        ("Body site", escape(lesion.side_and_site)),
        what,
        ("Follow-up", _follow_up(content)),
        ("Organisation", escape(content.organisation.name)),
        ("Generated", f"{generated} by {escape(content.generated_by)}"),
    ]


def _follow_up(content: ReportContent) -> str:
    """Closed with its outcome (and the outcome's note), the planned follow-up date (and whether
    it is due), or none planned."""
    lesion = content.lesion
    if lesion.closed_on is not None:
        outcome = f": {escape(lesion.get_outcome_display())}" if lesion.outcome else ""
        note = f"<br/>{escape(lesion.outcome_note)}" if lesion.outcome_note else ""
        return f"<b>Closed {lesion.closed_on.isoformat()}</b>{outcome}{note}"
    if lesion.follow_up_on is None:
        return "None planned"
    state = f" <b>({content.follow_up_state})</b>" if content.follow_up_state else ""
    return lesion.follow_up_on.isoformat() + state


def lesion_notes(content: ReportContent) -> str:
    return escape(content.lesion.notes).replace("\n", "<br/>")


def _visits_span(visits: list[Visit]) -> str:
    if not visits:
        return "none yet"
    first, last = visits[0].image.captured_at, visits[-1].image.captured_at
    images = f"{len(visits)} image{'s' if len(visits) != 1 else ''}"
    return f"{images}, {first.isoformat()}" + (f" to {last.isoformat()}" if last != first else "")


def summary_rows(visits: list[Visit]) -> list[list[str]]:
    """A header and one row per visit: number, capture date, top class, score, reading."""
    rows = [["#", "Captured", "Most likely", "Score / threshold", "Reading"]]
    for visit in visits:
        c, reading = visit.classification, visit.reading
        if reading is None:
            status = "Not classified yet" if c is None else f"Classification {c.get_status_display().lower()}"
            rows.append([str(visit.number), visit.image.captured_at.isoformat(), status, "–", "–"])
            continue
        warnings = len(c.warnings or [])
        level = SHORT_LEVEL_LABELS[reading.level] + (f" · {warnings} warning{'s' * (warnings > 1)}" if warnings else "")
        score = f"{percent(c.malignancy_score)} / {percent(c.threshold)}"
        rows.append([str(visit.number), visit.image.captured_at.isoformat(), escape(c.top_class_name), score, level])
    return rows


def visit_caption(visit: Visit) -> str:
    image = visit.image
    return f"Image #{image.pk} · {image.width}×{image.height} px · uploaded {_when(image.uploaded_at)}"


def result_flowables(visit: Visit, *, frame_width: float) -> list[Flowable]:
    """The model's result for one visit, in words, figures and its model's measured performance."""
    c = visit.classification
    if c is None:
        return [Paragraph("Not classified yet: the classification is pending.", STYLES["body"])]
    if c.failed:
        return [Paragraph(f"<b>Classification failed.</b> {escape(c.error_message)}", STYLES["body"])]
    if visit.reading is None:
        return [Paragraph(f"Classification {escape(c.get_status_display().lower())}.", STYLES["body"])]
    return [_reading_box(visit, frame_width=frame_width), _model_line(visit)]


def _reading_box(visit: Visit, *, frame_width: float) -> Table:
    c, reading = visit.classification, visit.reading
    parts: list[Flowable] = [Paragraph(LEVEL_LABELS[reading.level], STYLES["level"])]
    parts.append(Paragraph(f"{c.top_class_label}: <b>{escape(c.top_class_name)}</b>", STYLES["body"]))
    parts.append(Paragraph(escape(context_sentence(c.context)), STYLES["small"]))
    # An unreliable reading's headline is its image warnings, listed one by one just below.
    if reading.level != UNRELIABLE:
        parts.append(Paragraph(escape(reading.headline), STYLES["body"]))
    if c.warnings:
        parts.append(Paragraph(f"Warning{'s' * (len(c.warnings) > 1)}:", STYLES["small_bold"]))
        parts += [Paragraph(escape(text), STYLES["bullet"], bulletText="•") for _, text in c.warning_messages]
    parts += [Paragraph(escape(detail), STYLES["body"]) for detail in reading.details]
    if c.field_of_view_note:
        parts.append(Paragraph(escape(c.field_of_view_note), STYLES["small"]))
    parts.append(_gauge(c.malignancy_score, c.threshold, level=reading.level))
    parts.append(
        Paragraph(
            f"Bar: the malignancy score ({MALIGNANT_GROUP}) from 0 to 100%; the line marks the threshold.",
            STYLES["small"],
        )
    )
    background, border = LEVEL_COLOURS[reading.level]
    box = Table([[parts]], colWidths=[frame_width])
    box.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, -1), background),
                ("BOX", (0, 0), (-1, -1), 0.8, border),
                ("LINEBEFORE", (0, 0), (0, -1), 3, border),
                ("LEFTPADDING", (0, 0), (-1, -1), 3 * mm),
                ("RIGHTPADDING", (0, 0), (-1, -1), 3 * mm),
                ("TOPPADDING", (0, 0), (-1, -1), 2 * mm),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2 * mm),
            ]
        )
    )
    return box


def _gauge(score: float, threshold: float, *, level: str) -> Drawing:
    """The score as a bar on 0-100% with the threshold marked, as on the result page; grey when
    the image is in doubt or the model unsure (red is a flag, green only a reassurance)."""
    width, height = 120 * mm, 3.2 * mm
    drawing = Drawing(width, height + 2 * mm)
    drawing.add(Rect(0, 1 * mm, width, height, fillColor=LINE, strokeColor=None))
    fill = {FLAGGED: FLAG, REASSURING: OK}.get(level, MUTED)
    drawing.add(Rect(0, 1 * mm, max(0.5, width * min(1.0, score)), height, fillColor=fill, strokeColor=None))
    x = width * min(1.0, threshold)
    drawing.add(Line(x, 0, x, height + 2 * mm, strokeColor=INK, strokeWidth=1.2))
    return drawing


def probabilities_table(visit: Visit, *, width: float) -> Table | None:
    """All seven probabilities, most likely first, the malignant group in bold (None without a
    successful result)."""
    if visit.reading is None:
        return None
    rows: list[list] = [[Paragraph("Class", STYLES["small_bold"]), Paragraph("Probability", STYLES["small_bold"]), ""]]
    for code, name, probability in visit.classification.ranked_probabilities():
        malignant = code in MALIGNANT_CLASSES
        rows.append(
            [
                Paragraph(f"<b>{escape(name)}</b>" if malignant else escape(name), STYLES["table"]),
                Paragraph(percent(probability), STYLES["table_number"]),
                _bar(probability, width=12 * mm),
            ]
        )
    legend = Paragraph("Bold: the malignant group, summed in the malignancy score.", STYLES["caption"])
    rows.append([legend, "", ""])
    table = Table(rows, colWidths=[width - 25 * mm, 12 * mm, 13 * mm], hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("LINEBELOW", (0, 0), (-1, 0), 0.6, INK),
                ("LINEBELOW", (0, 1), (-1, -2), 0.25, LINE),
                ("SPAN", (1, 0), (2, 0)),
                ("SPAN", (0, -1), (-1, -1)),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ("LEFTPADDING", (0, 0), (-1, -1), 1),
                ("RIGHTPADDING", (0, 0), (-1, -1), 1),
                ("TOPPADDING", (0, 0), (-1, -1), 1),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
            ]
        )
    )
    return table


def _bar(probability: float, *, width: float) -> Drawing:
    height = 2.4 * mm
    drawing = Drawing(width, height)
    drawing.add(Rect(0, 0, width, height, fillColor=LINE, strokeColor=None))
    drawing.add(Rect(0, 0, max(0.4, width * min(1.0, probability)), height, fillColor=INK, strokeColor=None))
    return drawing


def _model_line(visit: Visit) -> Paragraph:
    c, performance = visit.classification, visit.performance
    variant = f" ({escape(c.model_variant)})" if c.model_variant else ""
    text = f"Model <b>{escape(c.model_version)}</b>{variant}, classified {_when(c.finished_at or c.updated_at)}. "
    if performance is None:
        text += "The measured performance of this model version is not available here (it is not the model now served)."
    else:
        text += (
            f"On {escape(performance.evaluated_on)}: sensitivity {percent(performance.sensitivity)}"
            f"{_interval(performance.sensitivity_interval, prefix='95% CI ')}, specificity "
            f"{percent(performance.specificity)}{_interval(performance.specificity_interval)} at threshold "
            f"{percent(performance.threshold)}. Images from other dermatoscopes, skin types or clinics may fare worse."
        )
    return Paragraph(text, STYLES["small"])


def _interval(interval: tuple[float, float] | None, *, prefix: str = "") -> str:
    return f" ({prefix}{percent(interval[0])}–{percent(interval[1])})" if interval else ""


def reviews_flowables(visit: Visit) -> list[Flowable]:
    """The heading, then each review (newest first, as on the result page), or "No review yet."."""
    heading = Paragraph("Clinician reviews", STYLES["h3"])
    if not visit.reviews:
        return [heading, Paragraph("No review yet.", STYLES["small"])]
    return [heading, *(_review(review) for review in visit.reviews)]


def _review(review: ClinicianReview) -> Paragraph:
    author = escape(review.author.get_username()) if review.author else "former user"
    confirmed = " · histopathology confirmed" if review.histopathology_confirmed else " · not histopathology-confirmed"
    text = f"<b>{escape(review.get_diagnosis_display())}</b>{confirmed} · {author} · {_when(review.created_at)}"
    if review.comment:
        text += "<br/>" + escape(review.comment).replace("\n", "<br/>")
    return Paragraph(text, STYLES["bullet"], bulletText="•")
