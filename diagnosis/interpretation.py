"""What a result means, in words that do not contradict each other: one place for the page, the
API, the PDF report, the dashboard and the lesion chart.

The level decides the colour everywhere:
  unreliable  the image itself is in doubt (not dermatoscopic, blurred, too dark or bright, low
              contrast): the warning leads, and no figure is a reassurance
  flagged     the malignancy score is at or above the threshold
  uncertain   below the threshold, but the model's top classes are close (low_confidence)
  reassuring  below the threshold with nothing to doubt: the only green result
"""

from __future__ import annotations

from dataclasses import dataclass, field

from diagnosis.inference import IMAGE_WARNINGS, clinical_context, context_table_values, display_name
from diagnosis.models import Classification

UNRELIABLE, FLAGGED, UNCERTAIN, REASSURING = "unreliable", "flagged", "uncertain", "reassuring"
LEVELS: tuple[str, ...] = (UNRELIABLE, FLAGGED, UNCERTAIN, REASSURING)


@dataclass(frozen=True)
class Reading:
    level: str
    headline: str
    details: list[str] = field(default_factory=list)

    @property
    def reassuring(self) -> bool:
        return self.level == REASSURING


def level_of(*, malignant: bool, warnings: list[str] | tuple[str, ...] | None) -> str:
    """The level of a succeeded result from the two facts that decide it (lists that hold only
    these columns use this; read_result does too, so the rule is written once)."""
    codes = list(warnings or [])
    if any(code in IMAGE_WARNINGS for code in codes):
        return UNRELIABLE
    if malignant:
        return FLAGGED
    return UNCERTAIN if "low_confidence" in codes else REASSURING


def percent(value: float | None, digits: int = 1) -> str:
    """0.2732 -> '27.3%': the one way pages, the API's words, the chart and the PDF write a share."""
    return "–" if value is None else f"{float(value) * 100:.{int(digits)}f}%"


def context_words(context: dict | None) -> str:
    """Clinical context fields in words: 'age 60-69, female, back' ('' when none)."""
    context = context or {}
    return ", ".join(([f"age {context['age']}"] if "age" in context else [])
                     + [context[key] for key in ("sex", "site") if key in context])


def context_sentence(context: dict | None) -> str:
    """What a result weighed besides the image, as the result page and the report say it."""
    words = context_words(context)
    if not words:
        return "Read from the image alone (no age, sex or body site recorded, or a model that does not use them)."
    return f"Weighed with the image: {words} (the answer moves with them; the heatmap shows the image's part)."


def context_now(classification: Classification) -> dict[str, str] | None:
    """The clinical context the records give today, when it is not what this result weighed and
    the model that gave it weighs context (the served one): classify again to use it. None when
    nothing changed, or nothing can be said (a failed result, another model version)."""
    from diagnosis.selectors import image_clinical_record  # selectors import this module

    table = context_table_values(classification.model_version) if classification.succeeded else None
    if table is None:
        return None
    known = clinical_context(**image_clinical_record(image=classification.image)).known()
    now = {field: value for field, value in known.items() if value in table.get(field, ())}
    return now if now != (classification.context or {}) else None


def favoured_reason(classification: Classification) -> list[str]:
    """Why the suggested class is not the most probable one (the model's melanoma operating
    point), as one sentence; empty when it is the most probable."""
    if not classification.favoured_over_most_likely:
        return []
    _, most_probable, p_top = classification.ranked_probabilities()[0]
    p_suggested = float(classification.probabilities.get(classification.top_class, 0.0))
    reason = (f"{display_name(classification.top_class)} is suggested although {most_probable} is more probable "
              f"({percent(p_top)} against {percent(p_suggested)}): at this model's operating point melanoma is "
              "suggested whenever its probability comes close to the top class's, so that fewer melanomas are "
              "missed, at the cost of more second looks at naevi.")
    return [reason]


def read_result(classification: Classification) -> Reading | None:
    """The reading of a successful classification (None for any other state)."""
    if not classification.succeeded:
        return None
    warnings = list(classification.warnings or [])
    score, threshold = classification.malignancy_score, classification.threshold
    above = classification.malignant
    position = (f"The malignancy score {percent(score)} is {'at or above' if above else 'below'} "
                f"the threshold of {percent(threshold)}.")
    details: list[str] = favoured_reason(classification)
    if classification.malignant_group_decides:
        details.append(
            f"The single most likely class is {display_name(classification.top_class)}, which is benign, "
            f"but the malignant classes together (melanoma, basal cell carcinoma, actinic keratosis) reach "
            f"{percent(score)}, at or above the threshold: the flag follows the malignant group, not the top class."
        )
    runner_up = classification.runner_up
    margin = classification.margin
    if runner_up is not None and margin is not None:
        details.append(f"Second most likely: {runner_up[1]} at {percent(runner_up[2])} "
                       f"(top-two margin {percent(margin)}).")
    level = level_of(malignant=above, warnings=warnings)
    if level == UNRELIABLE:
        messages = dict(classification.warning_messages)
        headline = " ".join(messages[code] for code in warnings if code in IMAGE_WARNINGS)
        return Reading(UNRELIABLE, headline, [position, *details])
    if level == UNCERTAIN:
        return Reading(UNCERTAIN, position + " But the model is unsure: its top classes are close, so this is not "
                       "a reassurance.", details)
    return Reading(level, position, details)
