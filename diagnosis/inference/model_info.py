"""What the portal says about the served model: the readiness check, the measured performance
from its manifest (per model version and variant), the version a new classification gets, and
the model described for people (the model page and GET /api/v1/model/)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from django.conf import settings

from diagnosis.inference.classifier import configured_model_dir
from ml.classes import CLASSES, MALIGNANT_CLASSES
from ml.errors import MLError

T = TypeVar("T")


@dataclass(frozen=True)
class ModelStatus:
    ok: bool
    version: str
    detail: str


_check_lock = threading.Lock()


_check_cache: dict[tuple, ModelStatus] = {}


def model_check() -> ModelStatus:
    """Is the configured model bundle present and intact? (manifest and the variant's sha256)

    Cheap enough for a readiness probe: no onnxruntime session is created, and the sha256 is
    computed again only when the file's size or modification time changes.
    """
    from ml.manifest import load_manifest

    variant = settings.SKINPORTAL_MODEL_VARIANT
    try:
        bundle = configured_model_dir()
        manifest = load_manifest(bundle)
        entry = manifest["variants"].get(variant)
        if entry is None:
            return ModelStatus(False, str(manifest.get("version", "")), f"the bundle has no {variant} variant")
        path = os.path.join(bundle, entry["file"])
        stat = os.stat(path)
    except MLError as exc:
        return ModelStatus(False, "", str(exc))
    except OSError as exc:
        return ModelStatus(False, "", f"model file unreadable: {exc}")
    key = (path, variant, stat.st_size, stat.st_mtime_ns, entry["sha256"])
    with _check_lock:
        cached = _check_cache.get(key)
    if cached is not None:
        return cached
    from ml.manifest import variant_file

    try:
        variant_file(bundle, manifest, variant)
        status = ModelStatus(True, str(manifest["version"]), f"{manifest['version']} ({variant})")
    except (MLError, OSError) as exc:
        status = ModelStatus(False, str(manifest.get("version", "")), str(exc))
    with _check_lock:
        _check_cache.clear()
        _check_cache[key] = status
    return status


@dataclass(frozen=True)
class ModelPerformance:
    """How the model did on held-out images, shown beside every result so the clinician knows how
    far to trust it: the flag's sensitivity and specificity at the model's own threshold, with
    95% intervals over lesions, on the bundle's test split (HAM10000, never used for any choice)."""

    model_version: str
    threshold: float
    sensitivity: float
    sensitivity_interval: tuple[float, float] | None
    specificity: float
    specificity_interval: tuple[float, float] | None
    balanced_accuracy: float
    test_images: int
    evaluated_on: str


_manifest_lock = threading.Lock()


_manifest_cache: dict[tuple, dict | None] = {}


def _served_manifest() -> dict | None:
    """The configured bundle's manifest, read again only when the file changes (results pages
    ask for it once per result shown); None when it cannot be read."""
    from ml.manifest import MANIFEST_NAME, load_manifest

    try:
        bundle = configured_model_dir()
        key = (bundle, os.stat(os.path.join(bundle, MANIFEST_NAME)).st_mtime_ns)
    except (MLError, OSError):
        return None
    with _manifest_lock:
        if key in _manifest_cache:
            return _manifest_cache[key]
    try:
        manifest = load_manifest(bundle)
    except MLError:
        manifest = None
    with _manifest_lock:
        _manifest_cache.clear()
        _manifest_cache[key] = manifest
    return manifest


def _held_out(manifest: dict, variant: str, *, with_context: bool) -> tuple[dict | None, float | None]:
    """A bundle's test metrics for `variant` (of the answers that weighed the clinical context, or
    of the image alone) and the malignancy threshold those answers are flagged at; None for
    either where the manifest has none. The model page and every result's performance line read
    them here."""
    test = manifest.get("metrics", {}).get("test_with_context" if with_context else "test", {}).get(variant)
    entry = manifest["variants"].get(variant)
    if not entry:
        return test, None
    if with_context:
        return test, manifest.get("context", {}).get("malignancy_threshold", {}).get(variant)
    return test, entry["malignancy_threshold"]


def model_performance(model_version: str, variant: str = "fp32", *, with_context: bool = False
                      ) -> ModelPerformance | None:
    """The configured bundle's measured test figures when it is the bundle that gave
    `model_version`'s results (None for an older model, or a bundle without them); with_context:
    those of answers that weighed the clinical context, at the threshold fitted for them."""
    manifest = _served_manifest()
    if manifest is None or manifest["version"] != model_version:
        return None
    test, threshold = _held_out(manifest, variant or "fp32", with_context=with_context)
    if not test or threshold is None:
        return None
    intervals = test.get("intervals_95", {})
    splits = manifest.get("training_data", {})

    def interval(key: str) -> tuple[float, float] | None:
        return tuple(intervals[key]) if key in intervals else None

    return ModelPerformance(
        model_version=model_version,
        threshold=float(threshold),
        sensitivity=float(test["malignant_sensitivity"]),
        sensitivity_interval=interval("malignant_sensitivity"),
        specificity=float(test["malignant_specificity"]),
        specificity_interval=interval("malignant_specificity"),
        balanced_accuracy=float(test["balanced_accuracy"]),
        test_images=int(test["n_images"]),
        evaluated_on=f"{test['n_images']:,} held-out test images of {splits.get('name', 'the training data set')}"
        + (" with their age, sex and body site" if with_context else ""),
    )


def context_table_values(model_version: str) -> dict[str, set[str]] | None:
    """The values each clinical-context field can take in the served bundle's table, when that
    bundle gave `model_version`'s results and has one; None otherwise."""
    manifest = _served_manifest()
    if manifest is None or manifest["version"] != model_version or "context" not in manifest:
        return None
    return {field: set(values) for field, values in manifest["context"].get("log_ratios", {}).items()}


def current_model_version() -> str:
    """Version of the configured bundle, from its manifest (no session). Raises MLError."""
    from ml.manifest import load_manifest

    return str(load_manifest(configured_model_dir())["version"])


# --- The served model described (the model page and GET /api/v1/model/) ----------------------------

# The test figures a description carries, in the order the page lists them.
HEADLINE_METRICS = ("balanced_accuracy", "malignant_auc", "malignant_sensitivity", "malignant_specificity", "ece")


@dataclass(frozen=True)
class HeldOutFigures:
    """How one way of answering (the image alone, or with the clinical context) did on the
    bundle's held-out test split: the headline figures, each class's recall, 95% intervals over
    lesions where they were measured, and the malignancy threshold those answers are flagged at."""

    answers: str  # "image alone" | "with clinical context"
    images: int
    threshold: float
    balanced_accuracy: float
    malignant_auc: float
    malignant_sensitivity: float
    malignant_specificity: float
    ece: float
    recall: dict[str, float]
    intervals: dict[str, tuple[float, float]]


@dataclass(frozen=True)
class ServedModel:
    """What a clinician or an integrator should know about the model that answers now, from its
    manifest: what it is for, what it looks at, how it was tested, and on what data."""

    version: str
    variant: str
    created: str
    intended_use: str
    input_height: int | None  # None: not stated in a readable form
    input_width: int | None
    malignant_classes: tuple[str, ...]
    context_fields: tuple[str, ...]  # the clinical context it can weigh (empty: the image alone)
    favoured_class: str | None  # suggested whenever its probability is at least this share of the top one
    favoured_when_at_least: float | None
    training_data: str
    training_data_licence: str
    citation: str
    model_licence: str
    test: tuple[HeldOutFigures, ...]  # image alone first; empty when the bundle has no test figures
    test_images_per_class: dict[str, int]  # how many test images each recall is over ({} when not stated)


_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def _test_figures(metrics: dict | None, threshold: float | None, *, answers: str) -> HeldOutFigures | None:
    """One metrics block as HeldOutFigures (None where there is none; a malformed one raises)."""
    if not isinstance(metrics, dict) or threshold is None:
        return None
    return HeldOutFigures(
        answers=answers,
        images=int(metrics["n_images"]),
        threshold=float(threshold),
        **{key: float(metrics[key]) for key in HEADLINE_METRICS},
        recall={str(code): float(value) for code, value in metrics.get("recall", {}).items()},
        intervals={str(key): (float(low), float(high)) for key, (low, high) in metrics.get("intervals_95", {}).items()},
    )


def _favoured(decision: dict) -> tuple[str | None, float | None]:
    """The class the operating point favours and the share of the top class's probability at
    which it is suggested; (None, None) when the suggested class is simply the most probable."""
    favoured = decision.get("favoured_class")
    return (str(favoured), float(decision["favoured_when_at_least"])) if favoured else (None, None)


def _input_size(manifest: dict) -> tuple[int | None, int | None]:
    """(height, width) from the manifest's NHWC input shape."""
    shape = manifest["input"]["shape"]
    if not (isinstance(shape, list) and len(shape) == 4):
        raise ValueError(f"input shape {shape!r} is not NHWC")
    return int(shape[1]), int(shape[2])


def _part(read: Callable[[], T], default: T) -> T:
    """One descriptive part of a manifest, or `default` where the loader accepted the manifest
    but this part is malformed: the page then leaves the part out instead of failing."""
    try:
        return read()
    except _MALFORMED:
        return default


def served_model() -> ServedModel | None:
    """The configured bundle described for people (None when its manifest cannot be read;
    model_check says why)."""
    manifest = _served_manifest()
    if manifest is None:
        return None
    variant = settings.SKINPORTAL_MODEL_VARIANT
    context, decision, data, licence = (
        value if isinstance(value, dict) else {}
        for value in (manifest.get(key) for key in ("context", "decision", "training_data", "licence"))
    )
    blocks = (
        _part(lambda: _test_figures(*_held_out(manifest, variant, with_context=False), answers="image alone"), None),
        _part(lambda: _test_figures(*_held_out(manifest, variant, with_context=True), answers="with clinical context"),
              None),
    )
    favoured = _part(lambda: _favoured(decision), (None, None))
    height, width = _part(lambda: _input_size(manifest), (None, None))
    malignant = set(manifest.get("malignant_classes") or MALIGNANT_CLASSES)
    return ServedModel(
        version=str(manifest["version"]),
        variant=variant,
        created=str(manifest.get("created", "")),
        intended_use=str(manifest.get("intended_use", "")),
        input_height=height,
        input_width=width,
        malignant_classes=tuple(code for code in CLASSES if code in malignant),
        context_fields=_part(lambda: tuple(str(field) for field in context.get("fields", ())), ()),
        favoured_class=favoured[0],
        favoured_when_at_least=favoured[1],
        training_data=str(data.get("name", "")),
        training_data_licence=str(data.get("licence", "")),
        citation=str(data.get("citation", "")),
        model_licence=str(licence.get("model", "")),
        test=tuple(block for block in blocks if block is not None),
        test_images_per_class=_part(
            lambda: {str(code): int(n) for code, n in data["splits"]["test"]["classes"].items()}, {}
        ),
    )
