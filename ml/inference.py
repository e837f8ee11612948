"""The inference interface the portal and the CLIs use: onnxruntime + NumPy + OpenCV, no TensorFlow.

    from ml.inference import get_classifier
    prediction = get_classifier().predict(image_bytes)

One onnxruntime session per process, created on first use and checked against the bundle's
manifest (sha256, classes, input name and shape, the three outputs, the screening statistics);
any mismatch raises ModelIntegrityError and nothing is served. One run of the graph gives the
logits, the pooled features and the class activation map; a prediction carries the
probabilities, the screening warnings (ml.screening) and the map (ml.explain draws it). The caller passes the bundle folder, the variant and the thread count
(the portal reads them from its Django settings: SKINPORTAL_MODEL_DIR, SKINPORTAL_MODEL_VARIANT,
SKINPORTAL_ORT_THREADS); ml reads no Django. Defaults, for the CLIs and notebooks: the bundle of
ml.manifest.default_model_dir() ($SKINPORTAL_MODEL_DIR, else ml/models/<CURRENT>), fp32, and
min(4, cores) onnxruntime intra-op threads.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort

from ml.classes import CLASSES
from ml.context import ClinicalContext, ContextPrior
from ml.cpu import int8_kernel_class
from ml.errors import InvalidImageError, ModelIntegrityError
from ml.field_of_view import FieldOfView
from ml.manifest import OUTPUTS, VARIANTS, default_model_dir, load_manifest, variant_file
from ml.preprocessing import DEFAULT_MAX_PIXELS, ModelView, PreprocessConfig, decode_image, model_input, model_view
from ml.scores import class_bias_vector, malignancy_scores, softmax, suggested_classes
from ml.screening.screen import Screening, ScreeningResult, load_screening

logger = logging.getLogger(__name__)

# Image bytes, a decoded RGB uint8 array, or one already reduced to the model (Classifier.view).
ImageInput = bytes | bytearray | memoryview | np.ndarray | ModelView


@dataclass(frozen=True)
class Prediction:
    probabilities: dict[str, float]  # every class, in CLASSES order
    top_class: str  # the suggested class: the argmax, or melanoma at the bundle's operating point (ml.scores)
    malignancy_score: float  # P(mel) + P(bcc) + P(akiec), calibrated
    malignant: bool  # malignancy_score >= threshold
    threshold: float
    model_version: str
    variant: str
    # Codes from ml.screening.WARNING_CODES, most fundamental first; empty when none.
    warnings: tuple[str, ...] = ()
    # The measures behind them: quality, margin, entropy, feature_distance.
    screening: dict[str, float | None] = field(default_factory=dict)
    # Class activation map (h, w, classes) in the model input's orientation, and the decoded
    # image's (height, width) that ml.explain.heat_map maps it back onto.
    cam: np.ndarray | None = field(default=None, repr=False, compare=False)
    image_size: tuple[int, int] | None = None
    # The crop to the dermatoscope's field of view the map lies in (a bundle that crops, and an
    # image with a frame); None: the map covers the whole image.
    field_of_view: FieldOfView | None = None
    # The clinical context that moved the answer (ml.context): field -> value used (the age as
    # its band); empty when none was given or the bundle has no context table.
    context: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["warnings"] = list(self.warnings)
        data["cam"] = None if self.cam is None else np.round(self.cam, 5).tolist()
        data["field_of_view"] = None if self.field_of_view is None else self.field_of_view.to_dict()
        return data


@dataclass(frozen=True)
class _Prepared:
    tensor: np.ndarray  # the model input
    view: ModelView  # the same image at the input geometry before the colour step, and where it came from


class Classifier:
    """A loaded, verified model bundle."""

    def __init__(self, model_dir: str | None = None, *, variant: str = "fp32", threads: int | None = None) -> None:
        self.model_dir = os.path.abspath(model_dir or default_model_dir())
        self.manifest = load_manifest(self.model_dir)
        self.variant = variant
        self.path = variant_file(self.model_dir, self.manifest, variant)
        entry = self.manifest["variants"][variant]
        self.temperature = float(entry["temperature"])
        self.threshold = float(entry["malignancy_threshold"])
        self.context_prior, self.context_threshold = _context_table(self.manifest, variant)
        try:
            # The operating point of the suggested class (ml.training.operating_point); None: argmax.
            self.class_bias = class_bias_vector(self.manifest.get("decision"))
        except ValueError as exc:
            raise ModelIntegrityError(f"{self.model_dir}: manifest {exc}") from exc
        self.config = PreprocessConfig.from_dict(self.manifest["preprocessing"])
        self.max_pixels = int(self.manifest.get("max_pixels", DEFAULT_MAX_PIXELS))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        # Spinning threads double latency when the web or another worker holds a core.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.screening: Screening = load_screening(self.model_dir, self.manifest)
        try:
            self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors on a bad file
            raise ModelIntegrityError(f"onnxruntime cannot load {self.path}: {exc}") from exc
        self._check_session()
        if variant == "int8":
            self._warn_about_int8_on_this_cpu()

    def _warn_about_int8_on_this_cpu(self) -> None:
        """int8 kernels differ by CPU class (ml/cpu.py): say so when this class's measured
        agreement with fp32 is below the bundle's own gate, or was never measured."""
        check = self.manifest.get("checks", {}).get("int8", {})
        cpu_class = int8_kernel_class()
        measured = check.get("agreement_by_cpu", {}).get(cpu_class)
        required = float(check.get("required_agreement", 0.0))
        if measured is None:
            logger.warning(
                "int8 variant: its agreement with fp32 was not measured on this CPU class (%s); "
                "run `python -m ml int8-check --record` or serve fp32",
                cpu_class,
            )
        elif measured < required:
            logger.warning(
                "int8 variant: on this CPU class (%s) it agrees with fp32 on only %.3f of validation images "
                "(bundle gate %.2f): serve fp32 (SKINPORTAL_MODEL_VARIANT=fp32)",
                cpu_class,
                measured,
                required,
            )

    @property
    def model_version(self) -> str:
        return str(self.manifest["version"])

    def _check_session(self) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        expected_name = self.manifest["input"]["name"]
        if len(inputs) != 1 or inputs[0].name != expected_name:
            raise ModelIntegrityError(f"{self.path}: expected one input named {expected_name!r}, got {[i.name for i in inputs]}")
        shape = list(inputs[0].shape)
        height, width = self.config.height_width
        if len(shape) != 4 or shape[1:] != [height, width, 3]:
            raise ModelIntegrityError(
                f"{self.path}: input shape {shape} does not match the manifest's {height}x{width}x3"
            )
        self._input_name = inputs[0].name
        declared = self.manifest["outputs"]
        by_name = {o.name: list(o.shape) for o in outputs}
        self._output_names = [declared[role]["name"] for role in OUTPUTS]
        missing = [name for name in self._output_names if name not in by_name]
        if missing:
            raise ModelIntegrityError(f"{self.path}: output(s) {missing} named in the manifest are not in the graph ({sorted(by_name)})")
        logits, features, cam = (by_name[name] for name in self._output_names)
        n_classes, n_features = len(CLASSES), self.screening.distance.width
        if len(logits) != 2 or logits[-1] != n_classes:
            raise ModelIntegrityError(f"{self.path}: logits shape {logits} does not give {n_classes} classes")
        if len(features) != 2 or features[-1] != n_features:
            raise ModelIntegrityError(f"{self.path}: features shape {features} does not match the screening statistics' {n_features}")
        if len(cam) != 4 or cam[-1] != n_classes:
            raise ModelIntegrityError(f"{self.path}: class activation map shape {cam} is not (N, h, w, {n_classes})")

    def view(self, image: bytes | np.ndarray) -> ModelView:
        """Image bytes or an RGB uint8 array reduced to the model input's geometry (cropped to the
        field of view when the bundle says so): all predict needs of a large upload."""
        if isinstance(image, (bytes, bytearray, memoryview)):
            image = decode_image(bytes(image), max_pixels=self.max_pixels)
        elif not isinstance(image, np.ndarray):
            raise InvalidImageError(f"expected image bytes or an RGB array, got {type(image).__name__}")
        return model_view(image, self.config)

    def _prepare(self, image: ImageInput) -> _Prepared:
        view = image if isinstance(image, ModelView) else self.view(image)
        if view.image.shape[:2] != self.config.height_width:
            raise InvalidImageError(f"a view of {view.image.shape[:2]} is not this model's {self.config.describe()}")
        return _Prepared(tensor=model_input(view, self.config), view=view)

    def prepare(self, image: ImageInput) -> np.ndarray:
        """Image bytes or an RGB uint8 array -> the model's input tensor for one image."""
        return self._prepare(image).tensor

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(calibrated probabilities, pooled features, class activation maps) of a preprocessed
        (N, height, width, 3) batch: one run of the graph."""
        logits, features, cam = self.session.run(
            self._output_names, {self._input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return softmax(logits, self.temperature), features, cam

    def probabilities(self, batch: np.ndarray, contexts: Sequence[ClinicalContext | None] | None = None) -> np.ndarray:
        """Calibrated class probabilities for a preprocessed (N, height, width, 3) batch, with
        each image's clinical context taken into account when given and the bundle has a table."""
        return self.probabilities_with_context(self.run(batch)[0], contexts)

    def probabilities_with_context(self, probs: np.ndarray,
                                   contexts: Sequence[ClinicalContext | None] | None) -> np.ndarray:
        """Calibrated image-only probabilities moved by each image's context (unchanged without a
        table or without contexts)."""
        if self.context_prior is None or contexts is None:
            return probs
        if len(contexts) != len(probs):
            raise ValueError(f"{len(contexts)} contexts for {len(probs)} images")
        return self.context_prior.apply(probs, contexts)

    def threshold_for(self, context: ClinicalContext | None) -> float:
        """The malignancy threshold fitted for answers with context when any field was used."""
        return float(self.thresholds_for([context])[0])

    def thresholds_for(self, contexts: Sequence[ClinicalContext | None]) -> np.ndarray:
        """Each answer's malignancy threshold (ContextPrior.thresholds: the rule packaging measures by)."""
        if self.context_prior is None:
            return np.full(len(contexts), self.threshold, dtype=np.float64)
        return self.context_prior.thresholds(contexts, with_context=self.context_threshold, image_only=self.threshold)

    def context_used(self, context: ClinicalContext | None) -> dict[str, str]:
        return self.context_prior.used(context) if self.context_prior is not None else {}

    def _to_prediction(self, probs: np.ndarray, cam: np.ndarray, prepared: _Prepared, screened: ScreeningResult,
                       context: ClinicalContext | None) -> Prediction:
        score = float(malignancy_scores(probs))
        threshold = self.threshold_for(context)
        return Prediction(
            probabilities={c: float(p) for c, p in zip(CLASSES, probs)},
            top_class=CLASSES[int(suggested_classes(probs, self.class_bias))],
            malignancy_score=score,
            malignant=score >= threshold,
            threshold=threshold,
            model_version=self.model_version,
            variant=self.variant,
            warnings=screened.warnings,
            screening=screened.measures,
            cam=np.asarray(cam, dtype=np.float32),
            image_size=prepared.view.size,
            field_of_view=prepared.view.field_of_view,
            context=self.context_used(context),
        )

    def predict(self, image: ImageInput, context: ClinicalContext | None = None) -> Prediction:
        return self.predict_batch([image], contexts=[context])[0]

    def predict_batch(self, images: Sequence[ImageInput], *, contexts: Sequence[ClinicalContext | None] | None = None,
                      batch_size: int = 32) -> list[Prediction]:
        """Predictions in input order; the first undecodable image raises InvalidImageError.
        Images are decoded and reduced to the model's size one at a time, so a batch holds
        model-sized pixels only. `contexts`: each image's clinical context (ml.context), or None.
        Screening judges the image alone; the context then moves the probabilities."""
        contexts = list(contexts) if contexts is not None else [None] * len(images)
        if len(contexts) != len(images):
            raise ValueError(f"{len(contexts)} contexts for {len(images)} images")
        results: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            prepared = [self._prepare(image) for image in images[start : start + batch_size]]
            chunk = contexts[start : start + batch_size]
            probs, features, cams = self.run(np.stack([p.tensor for p in prepared]))
            screened = self.screening.screen_batch([p.view.image for p in prepared], probs, features)
            results.extend(map(self._to_prediction, self.probabilities_with_context(probs, chunk), cams, prepared,
                               screened, chunk))
        return results


def _context_table(manifest: dict, variant: str) -> tuple[ContextPrior | None, float]:
    """The bundle's clinical-context table and its malignancy threshold for `variant`; (None, nan)
    for a bundle without one (the answer is then the image's alone)."""
    section = manifest.get("context")
    if section is None:
        return None, float("nan")
    prior = ContextPrior.from_dict(section)
    try:
        threshold = float(section["malignancy_threshold"][variant])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelIntegrityError(f"manifest context has no malignancy threshold for {variant}") from exc
    return prior, threshold


_lock = threading.Lock()
_classifier: Classifier | None = None


def get_classifier(model_dir: str | None = None, *, variant: str = "fp32", threads: int | None = None) -> Classifier:
    """The process-wide classifier, loaded once on first use with these arguments (later calls
    get the same one; reset_classifier() to load another). The caller passes its settings in:
    the portal its Django settings (diagnosis/inference/); the defaults are ml's own, as for
    Classifier (model_dir: ml.manifest.default_model_dir(); threads: min(4, cores))."""
    global _classifier
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if _classifier is None:
        with _lock:
            if _classifier is None:
                _classifier = Classifier(model_dir, variant=variant, threads=threads)
    return _classifier


def reset_classifier() -> None:
    """Forget the loaded classifier (tests, or after changing the settings)."""
    global _classifier
    with _lock:
        _classifier = None
