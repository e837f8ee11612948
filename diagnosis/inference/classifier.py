"""The classifier: one onnxruntime session per process (ml.inference), the model chosen by the
settings; many images in one run, each with its warnings and activation map; the worker's warm-up."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.conf import settings

from ml.errors import InvalidImageError

if TYPE_CHECKING:
    from ml.context import ClinicalContext
    from ml.inference import Classifier
from diagnosis.inference.opencv import use_one_opencv_thread


@dataclass(frozen=True)
class PortalPrediction:
    probabilities: dict[str, float]
    top_class: str
    malignancy_score: float
    malignant: bool
    threshold: float
    model_version: str
    variant: str
    inference_ms: float
    warnings: tuple[str, ...] = ()  # ml.screening.WARNING_CODES, most fundamental first
    screening: dict[str, float | None] = field(default_factory=dict)  # the measures behind them
    activation_map: list | None = None  # [row][column][class], rounded; drawn by heatmap_png
    # The crop to the dermatoscope's field of view the map lies in (ml.field_of_view.FieldOfView
    # as a dict); None when the model read the whole image.
    field_of_view: dict[str, int] | None = None
    context: dict[str, str] = field(default_factory=dict)  # the clinical context that moved the answer


def configured_model_dir() -> str:
    """The configured bundle folder: settings.SKINPORTAL_MODEL_DIR, else ml/models/<CURRENT>.
    Raises ModelIntegrityError when neither is there."""
    from ml.manifest import shipped_model_dir

    return settings.SKINPORTAL_MODEL_DIR or shipped_model_dir()


def get_classifier() -> Classifier:
    """This process's classifier, loaded and verified on first use with the settings' bundle,
    variant and threads (after changing them, ml.inference.reset_classifier() loads it again).
    Raises MLError for a model problem."""
    use_one_opencv_thread()  # ml.inference loads OpenCV (preprocessing)
    from ml import inference as ml_inference

    return ml_inference.get_classifier(
        model_dir=configured_model_dir(),
        variant=settings.SKINPORTAL_MODEL_VARIANT,
        threads=settings.SKINPORTAL_ORT_THREADS,
    )


def loaded_model_version() -> str:
    """Version of the model this process serves (loads it on first use)."""
    return get_classifier().model_version


def clinical_context(*, age: float | None, sex: str, site: str) -> ClinicalContext:
    """The clinical context the classifier may weigh beside an image (ml.context: the patient's
    age and sex, the lesion's body site; anything unknown is ignored). Imported on first use:
    ml.context needs NumPy."""
    from ml.context import ClinicalContext

    return ClinicalContext(age=age, sex=sex, site=site)


ImageSource = bytes | Callable[[], bytes]  # the bytes, or a reader called when the image's turn comes


def classify_many(
    images: Sequence[ImageSource], contexts: Sequence[ClinicalContext | None] | None = None
) -> list[PortalPrediction | InvalidImageError | OSError]:
    """Classify images in one onnxruntime call per 32 (a micro-batch; one image is a list of one),
    each with its clinical context (patient age and sex, body site; ml.context) when given.

    Each image is read (a reader is called only when its turn comes), decoded and at once
    reduced to the model's input size, before the next: a micro-batch holds one full-size image
    at a time and model-sized ones otherwise (16 decoded 36 MP images were 1.7 GB). The
    reduction (crop to the field of view where the bundle says so, resize) is the one
    preprocess_views applies, so the results are the same.
    Returns one entry per input, in order: a prediction, or the InvalidImageError of an image
    that could not be decoded, or the OSError of one that could not be read (the others still
    get their results). Raises MLError for a model problem. `inference_ms` is the image's
    decode time plus its share of the batched model time.
    """
    use_one_opencv_thread()
    import numpy as np

    from ml.preprocessing import decode_image

    classifier = get_classifier()
    results: list[PortalPrediction | InvalidImageError | OSError | None] = [None] * len(images)
    reduced, positions, decode_ms = [], [], []
    for index, source in enumerate(images):
        started = time.perf_counter()
        try:
            data = source() if callable(source) else source
            rgb = decode_image(bytes(data), max_pixels=classifier.max_pixels)
        except (InvalidImageError, OSError) as exc:
            results[index] = exc
            continue
        del data
        reduced.append(classifier.view(rgb))
        del rgb  # before the next image is decoded
        positions.append(index)
        decode_ms.append((time.perf_counter() - started) * 1000.0)
    if reduced:
        started = time.perf_counter()
        chosen = [contexts[i] for i in positions] if contexts is not None else None
        predictions = classifier.predict_batch(reduced, contexts=chosen)
        share_ms = (time.perf_counter() - started) * 1000.0 / len(reduced)
        for index, prediction, own_ms in zip(positions, predictions, decode_ms):
            results[index] = PortalPrediction(
                probabilities=dict(prediction.probabilities),
                top_class=prediction.top_class,
                malignancy_score=float(prediction.malignancy_score),
                malignant=bool(prediction.malignant),
                threshold=float(prediction.threshold),
                model_version=prediction.model_version,
                variant=prediction.variant,
                inference_ms=own_ms + share_ms,
                warnings=tuple(prediction.warnings),
                screening=dict(prediction.screening),
                # Four decimals of a logit contribution are far below what a colour shows.
                activation_map=None if prediction.cam is None else np.round(prediction.cam, 4).tolist(),
                context=dict(prediction.context),
                field_of_view=None if prediction.field_of_view is None else prediction.field_of_view.to_dict(),
            )
    return results  # type: ignore[return-value]


def warm_up() -> None:
    """Load and verify the model now (a worker process at start), logging instead of raising:
    a missing model is reported on each image's result, and by /readyz."""
    import logging

    try:
        loaded_model_version()
    except Exception as exc:  # noqa: BLE001 - the worker starts anyway; each result and /readyz say why
        logging.getLogger(__name__).error("model not loaded at worker start: %s", exc)
