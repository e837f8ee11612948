"""The trained lesion segmenter: a U-Net bundle run by onnxruntime (NumPy + OpenCV, no TensorFlow).

    segmenter = TrainedSegmenter("ml/models/seg-mnv2-ham10000-v1")
    mask = segmenter.segment(image_rgb)              # uint8 0/255 at the image's own size
    result = segmenter.analyse(image_rgb)            # Segmentation (mask + descriptors)

The bundle (trained by `python -m ml train-segmenter`, ml/training/segmentation.py) is checked at
load and the load fails closed (ModelIntegrityError): its manifest must say task "segmentation"
in this code's format, model.onnx must have the manifest's sha256, and the graph's input and
output must have the manifest's names and shapes. One session per segmenter; get_segmenter()
(segmenter.py) keeps one per process.

segment(): ml.preprocessing.preprocess (the function training used, with the bundle's settings)
-> the graph -> the probability map turned back when preprocessing turned the image (a portrait
image on a landscape input) and enlarged to the image's own size -> threshold -> the central /
largest component with its holes filled (the classical module's pick_component). Nothing above
the threshold, or a flat image (nothing to segment: the graph would still draw something) ->
the classical module's flagged fallback ellipse.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import onnxruntime as ort

from ml.errors import ModelIntegrityError
from ml.manifest import load_segmentation_manifest, verified_file
from ml.preprocessing import PreprocessConfig, input_is_turned, preprocess
from ml.segmentation.classical import MIN_CONTRAST, fallback_mask, pick_component
from ml.segmentation.descriptors import describe

# Milder than the classical segmenter's 8: the network rarely marks a second blob, and a lesion
# photographed off centre should not lose to a small central one.
CENTRE_WEIGHT = 4.0


def is_flat(image_rgb: np.ndarray) -> bool:
    """An image with no contrast to segment (blank, or one colour): its grey 1st-99th percentile
    spread is under the classical segmenter's MIN_CONTRAST."""
    gray = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
    step = max(1, int(np.sqrt(gray.size / 40_000)))  # percentiles of ~40k pixels are plenty
    low, high = np.percentile(gray[::step, ::step], [1, 99])
    return float(high - low) < MIN_CONTRAST


def mask_from_probability(prob: np.ndarray | None, shape: tuple[int, int], threshold: float) -> tuple[np.ndarray, bool]:
    """(uint8 0/255 mask, fallback) from a probability map at the image's size (None: nothing to
    segment): above the threshold, the central / largest component with its holes filled."""
    chosen = None
    if prob is not None:
        binary = prob > threshold
        if binary.any():
            chosen = pick_component(binary, np.ones(shape, bool), CENTRE_WEIGHT)
    if chosen is None:
        return fallback_mask(shape).astype(np.uint8) * 255, True
    return chosen.astype(np.uint8) * 255, False


class TrainedSegmenter:
    """A loaded, verified segmentation bundle; `method` is the bundle's version."""

    def __init__(self, model_dir: str, *, threads: int | None = None) -> None:
        from ml.segmentation.segmenter import Segmentation  # here: segmenter.py imports this module

        self._segmentation = Segmentation
        self.model_dir = os.path.abspath(model_dir)
        self.manifest = load_segmentation_manifest(self.model_dir)
        self.method: str = str(self.manifest["version"])
        self.path = verified_file(self.model_dir, self.manifest["files"]["model"], "segmentation model file")
        self.config = PreprocessConfig.from_dict(self.manifest["preprocessing"])
        if self.config.field_of_view:  # its mask is mapped back onto the whole image
            raise ModelIntegrityError(f"{self.model_dir}: a segmentation bundle may not crop to the field of view")
        self.threshold = float(self.manifest["output"]["threshold"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or min(2, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        # Spinning threads double latency when the web or another worker holds a core.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors on a bad file
            raise ModelIntegrityError(f"onnxruntime cannot load {self.path}: {exc}") from exc
        self._check_session()

    def _check_session(self) -> None:
        height, width = self.config.height_width
        expected_in = [height, width, 3]
        expected_out = [height, width, 1]
        declared_in, declared_out = self.manifest["input"], self.manifest["output"]
        if list(declared_in["shape"][1:]) != expected_in:
            raise ModelIntegrityError(f"{self.model_dir}: manifest input shape {declared_in['shape']} does not match "
                                      f"its preprocessing ({height}x{width})")
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or inputs[0].name != declared_in["name"] or list(inputs[0].shape[1:]) != expected_in:
            raise ModelIntegrityError(
                f"{self.path}: graph input {[(i.name, i.shape) for i in inputs]} is not "
                f"{declared_in['name']!r} (N, {height}, {width}, 3)")
        found = {o.name: o.shape for o in outputs}
        if declared_out["name"] not in found or list(found[declared_out["name"]][1:]) != expected_out:
            raise ModelIntegrityError(
                f"{self.path}: graph outputs {found} lack {declared_out['name']!r} (N, {height}, {width}, 1)")
        self._input_name, self._output_name = inputs[0].name, declared_out["name"]

    def probability(self, image_rgb: np.ndarray) -> np.ndarray:
        """float32 lesion probability at the image's own (height, width)."""
        x = preprocess(image_rgb, self.config)[None]  # also refuses what is not HxWx3 uint8
        prob = self.session.run([self._output_name], {self._input_name: x})[0][0, ..., 0]
        h, w = image_rgb.shape[:2]
        if input_is_turned((h, w), self.config.height_width):
            prob = np.rot90(prob, k=-1)  # preprocessing turned with np.rot90(k=1)
        return cv2.resize(np.ascontiguousarray(prob, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)

    def run(self, image_rgb: np.ndarray) -> tuple[np.ndarray, bool]:
        """(uint8 0/255 mask at the image's size, fallback)."""
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image_rgb.shape} {image_rgb.dtype}")
        if is_flat(image_rgb):
            return mask_from_probability(None, image_rgb.shape[:2], self.threshold)
        return mask_from_probability(self.probability(image_rgb), image_rgb.shape[:2], self.threshold)

    def segment(self, image_rgb: np.ndarray) -> np.ndarray:
        return self.run(image_rgb)[0]

    def analyse(self, image_rgb: np.ndarray, *, pixels_per_mm: float | None = None):
        mask, fallback = self.run(image_rgb)
        return self._segmentation(mask=mask, descriptors=describe(image_rgb, mask, pixels_per_mm=pixels_per_mm),
                                  method=self.method, fallback=fallback)
