from __future__ import annotations

from django import template

from diagnosis.body_map import form_map, patient_map
from diagnosis.inference import CLASSES, ModelPerformance, display_name, model_performance, warning_label, warning_text
from diagnosis.interpretation import Reading, context_sentence, context_words, level_of, percent, read_result

register = template.Library()


@register.filter
def class_name(code: str) -> str:
    """'mel' -> 'Melanoma (mel)'; anything unknown is shown as is."""
    return display_name(code) if code in CLASSES else (code or "")


register.filter("percent", percent)


@register.filter
def bar_width(value: float | None) -> str:
    """A bar's length on a 0-100 SVG scale (an attribute, not an inline style: the Content
    Security Policy allows no inline styles), never shorter than a visible sliver."""
    if value is None:
        return "0"
    return f"{max(0.5, min(100.0, float(value) * 100)):.1f}"


@register.filter
def reading(classification) -> Reading | None:
    """The words and level of a result (diagnosis/interpretation.py); None unless it succeeded."""
    return read_result(classification) if classification is not None else None


@register.filter
def performance(classification) -> ModelPerformance | None:
    """The served model's measured test figures, when it gave this result."""
    if classification is None or not classification.succeeded:
        return None
    return model_performance(classification.model_version, classification.model_variant or "fp32",
                             with_context=bool(classification.context))


# What a result weighed besides the image, in words (the PDF report says it the same way).
register.filter("context_sentence", context_sentence)
register.filter("context_words", context_words)


@register.filter
def warning_words(code: str) -> str:
    """'not_dermoscopic' -> 'not dermatoscopic': a badge's few words."""
    return warning_label(code)


@register.filter
def warning_sentence(code: str) -> str:
    """The warning's full sentence (a badge's tooltip)."""
    return warning_text(code)


@register.filter
def level_of_latest(lesion) -> str:
    """Reading level of a lesion's latest result from the annotations of selectors.with_latest_warnings."""
    return level_of(malignant=bool(lesion.latest_malignant), warnings=lesion.latest_warnings)


@register.inclusion_tag("diagnosis/_body_map.html")
def body_map(lesions) -> dict:
    """The patient page's body map: a marker per placed lesion, coloured by its latest result."""
    return patient_map(list(lesions))


@register.inclusion_tag("diagnosis/_body_map.html")
def body_map_input(form) -> dict:
    """The lesion form's body map, with the marker body_map.js moves when the drawing is clicked."""
    return form_map(form)
