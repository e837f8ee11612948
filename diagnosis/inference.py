"""The portal's one door into the ml package.

Everything diagnosis/ needs from ml/ passes through this module, so the boundary stays visible:
the class vocabulary, the image checks used at upload, and the classifier. Only ml.inference,
ml.preprocessing, ml.classes and ml.errors are imported (onnxruntime, NumPy, OpenCV):
never ml.training, which pulls in TensorFlow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2

from ml.classes import CLASS_NAMES, CLASSES, MALIGNANT_CLASSES, display_name
from ml.errors import ImageTooLargeError, InvalidImageError, MLError, ModelIntegrityError
from ml.preprocessing import check_image_header, decode_image

__all__ = [
    "ACCEPTED_UPLOAD_FORMATS",
    "CLASSES",
    "CLASS_NAMES",
    "MALIGNANT_CLASSES",
    "ImageTooLargeError",
    "InvalidImageError",
    "MLError",
    "ModelIntegrityError",
    "PortalPrediction",
    "ReencodedImage",
    "classify_image_bytes",
    "display_name",
    "reencode_upload",
]

# Formats a clinician may upload, judged from the bytes, never from the file name.
ACCEPTED_UPLOAD_FORMATS = frozenset({"JPEG", "PNG"})


@dataclass(frozen=True)
class ReencodedImage:
    png_bytes: bytes
    source_format: str
    width: int
    height: int


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


def reencode_upload(data: bytes) -> ReencodedImage:
    """Check an upload's header, decode its pixels and re-encode them as PNG.

    Re-encoding drops EXIF (GPS, device, dates), ICC and text chunks: only pixels survive.
    PNG is lossless, so the stored file classifies exactly as the upload's decoded pixels.
    Raises InvalidImageError (ImageTooLargeError for decompression bombs).
    """
    source_format, _, _ = check_image_header(data)
    if source_format not in ACCEPTED_UPLOAD_FORMATS:
        raise InvalidImageError(f"unsupported image format {source_format}: upload a JPEG or PNG file")
    rgb = decode_image(data)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise InvalidImageError("the image could not be re-encoded")
    height, width = rgb.shape[:2]
    return ReencodedImage(png_bytes=encoded.tobytes(), source_format=source_format, width=width, height=height)


def loaded_model_version() -> str:
    """Version of the model this process serves (loads it on first use)."""
    from ml.inference import get_classifier

    return get_classifier().model_version


def classify_image_bytes(data: bytes) -> PortalPrediction:
    """Run the process-wide classifier on one image. Raises MLError subclasses on failure."""
    from ml.inference import get_classifier  # imported on use: the model loads on first classification

    classifier = get_classifier()
    started = time.perf_counter()
    prediction = classifier.predict(data)
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    return PortalPrediction(
        probabilities=dict(prediction.probabilities),
        top_class=prediction.top_class,
        malignancy_score=float(prediction.malignancy_score),
        malignant=bool(prediction.malignant),
        threshold=float(prediction.threshold),
        model_version=prediction.model_version,
        variant=prediction.variant,
        inference_ms=elapsed_ms,
    )
