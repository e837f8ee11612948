"""The model page: what the served model is for, how it was tested, and on what data, for the
clinicians who read its results (GET /api/v1/model/ says the same to programs)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from diagnosis import inference
from diagnosis.interpretation import percent

# metric -> (what the page calls it, how it is written: shares as percentages, scores as decimals)
METRIC_LABELS: dict[str, tuple[str, str]] = {
    "balanced_accuracy": ("Balanced accuracy (the mean of the seven classes' recall)", "percent"),
    "malignant_auc": ("Malignant vs benign: ROC AUC", "decimal"),
    "malignant_sensitivity": ("Sensitivity of the flag: malignant images flagged", "percent"),
    "malignant_specificity": ("Specificity of the flag: benign images not flagged", "percent"),
    "ece": ("Calibration error (ECE; 0 = the probabilities mean what they say)", "decimal"),
}


def _written(value: float, style: str) -> str:
    return percent(value) if style == "percent" else f"{value:.3f}"


def _figure(test: inference.HeldOutFigures, metric: str) -> str:
    """A test figure with its 95% interval where one was measured."""
    style = METRIC_LABELS[metric][1]
    text = _written(getattr(test, metric), style)
    if metric in test.intervals:
        low, high = test.intervals[metric]
        text += f" ({_written(low, style)}–{_written(high, style)})"
    return text


@login_required
@require_GET
def model_page(request: HttpRequest) -> HttpResponse:
    model = inference.served_model()
    tests = model.test if model else ()
    return render(
        request,
        "diagnosis/model.html",
        {
            "model": model,
            "status": None if model else inference.model_check(),  # why it cannot be described
            "tests": tests,
            "metric_rows": [(label, [_figure(test, metric) for test in tests])
                            for metric, (label, _) in METRIC_LABELS.items()],
            "threshold_row": [percent(test.threshold) for test in tests],
            "class_rows": [
                (inference.display_name(code), bool(model) and code in model.malignant_classes,
                 model.test_images_per_class.get(code, "–") if model else "–",
                 [percent(test.recall[code]) if code in test.recall else "–" for test in tests])
                for code in inference.CLASSES
            ],
        },
    )
