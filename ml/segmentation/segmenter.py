"""The segmentation interface the portal and the CLIs use (NumPy + OpenCV, no TensorFlow).

    from ml.segmentation.segmenter import get_segmenter
    result = get_segmenter().analyse(image_rgb, pixels_per_mm=None)   # Segmentation
    mask = get_segmenter().segment(image_rgb)                          # uint8 0/255, image size

Like ml.inference's get_classifier(): one segmenter per process, made on first use. When a
segmentation bundle is named ($SKINPORTAL_SEGMENTER_DIR, else ml/models/SEGMENTER; see
ml.manifest.named_segmenter_dir) it is the trained segmenter (trained.py), loaded and checked
from that bundle: a named bundle that fails its checks raises ModelIntegrityError, it never
falls back silently. Only when no bundle is named is it the classical segmenter (classical.py).
`method` says which one produced a stored result.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np

from ml.segmentation import CLASSICAL_METHOD
from ml.segmentation.classical import ClassicalConfig, segment_classical
from ml.segmentation.descriptors import Descriptors, describe


@dataclass(frozen=True)
class Segmentation:
    mask: np.ndarray = field(repr=False, compare=False)  # uint8 0/255 at the image's own height x width
    descriptors: Descriptors
    method: str  # which segmenter, e.g. "classical-otsu-v1"
    fallback: bool  # no lesion found: the mask is a centred guess and the descriptors mean nothing

    def mask_png(self) -> bytes:
        ok, buffer = cv2.imencode(".png", self.mask)
        if not ok:
            raise ValueError("the mask could not be encoded as PNG")
        return buffer.tobytes()

    def to_dict(self, *, with_mask: bool = False) -> dict[str, Any]:
        """JSON-ready: method, fallback, image size and descriptors; the PNG mask (base64) on request."""
        data: dict[str, Any] = {"method": self.method, "fallback": self.fallback,
                                "height": int(self.mask.shape[0]), "width": int(self.mask.shape[1]),
                                **self.descriptors.to_dict()}
        if with_mask:
            data["mask_png_base64"] = base64.b64encode(self.mask_png()).decode("ascii")
        return data


class Segmenter(Protocol):
    method: str

    def segment(self, image_rgb: np.ndarray) -> np.ndarray: ...

    def analyse(self, image_rgb: np.ndarray, *, pixels_per_mm: float | None = None) -> Segmentation: ...


class ClassicalSegmenter:
    """Otsu thresholding with field-of-view, hair and morphology steps (see classical.py)."""

    method = CLASSICAL_METHOD

    def __init__(self, config: ClassicalConfig | None = None) -> None:
        self.config = config or ClassicalConfig()

    def segment(self, image_rgb: np.ndarray) -> np.ndarray:
        return segment_classical(image_rgb, self.config).mask

    def analyse(self, image_rgb: np.ndarray, *, pixels_per_mm: float | None = None) -> Segmentation:
        result = segment_classical(image_rgb, self.config)
        return Segmentation(mask=result.mask, descriptors=describe(image_rgb, result.mask, pixels_per_mm=pixels_per_mm),
                            method=self.method, fallback=result.fallback)


_lock = threading.Lock()
_segmenter: Segmenter | None = None
_segmenter_key: tuple[str | None, int | None] | None = None  # the arguments it was made with


def make_segmenter(model_dir: str | None = None, *, threads: int | None = None) -> Segmenter:
    """A new segmenter: the trained one from `model_dir`, else from the named bundle, else the
    classical one when none is named ("classical" names none on purpose). `threads`: onnxruntime
    intra-op threads of a trained segmenter (None: its default)."""
    from ml.manifest import named_segmenter_dir

    if model_dir == "classical":
        return ClassicalSegmenter()
    model_dir = model_dir or named_segmenter_dir()
    if model_dir is None:
        return ClassicalSegmenter()
    from ml.segmentation.trained import TrainedSegmenter

    return TrainedSegmenter(model_dir, threads=threads)


def get_segmenter(*, model_dir: str | None = None, threads: int | None = None) -> Segmenter:
    """The process-wide segmenter (see make_segmenter), made once on first use and again only when
    asked for another bundle or thread count (the portal passes its settings, as it does for the
    classifier); a named bundle that fails its checks raises ModelIntegrityError here, and again
    on the next call."""
    global _segmenter, _segmenter_key
    key = (model_dir, threads)
    if _segmenter is None or _segmenter_key != key:
        with _lock:
            if _segmenter is None or _segmenter_key != key:
                _segmenter = make_segmenter(model_dir, threads=threads)
                _segmenter_key = key
    return _segmenter


def reset_segmenter() -> None:
    """Forget the process-wide segmenter (tests that change $SKINPORTAL_SEGMENTER_DIR)."""
    global _segmenter, _segmenter_key
    with _lock:
        _segmenter, _segmenter_key = None, None


def segment(image_rgb: np.ndarray) -> np.ndarray:
    """The lesion mask of an RGB uint8 image: uint8 0/255 at the image's own size."""
    return get_segmenter().segment(image_rgb)


def analyse(image_rgb: np.ndarray, *, pixels_per_mm: float | None = None) -> Segmentation:
    """Mask and descriptors of an RGB uint8 image."""
    return get_segmenter().analyse(image_rgb, pixels_per_mm=pixels_per_mm)
