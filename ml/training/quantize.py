"""int8 variant: onnxruntime static quantization (QDQ, per-channel weights) on real images.

Dynamic quantization is slower than fp32 for convolutions on these CPUs (stack facts), so
static it is. Calibration uses un-augmented training images; the candidate calibration
methods are tried in order and the first whose validation argmaxes agree with fp32 on at
least 99% of images is kept (otherwise the best one is returned and packaging refuses it).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from ml.training.onnx_export import onnx_logits

MIN_AGREEMENT = 0.99


class ArrayReader(CalibrationDataReader):
    def __init__(self, input_name: str, images: np.ndarray, batch_size: int = 32) -> None:
        self._batches = iter([images[i : i + batch_size] for i in range(0, len(images), batch_size)])
        self._name = input_name

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {self._name: batch}


def quantize_int8(
    fp32_path: str,
    int8_path: str,
    calibration_images: np.ndarray,
    check_images: np.ndarray,
    fp32_logits: np.ndarray,
    *,
    log: Callable[[str], None] = print,
) -> dict:
    """Write ``int8_path``; return the method used and its argmax agreement with fp32."""
    input_name = ort.InferenceSession(fp32_path, providers=["CPUExecutionProvider"]).get_inputs()[0].name
    best: dict | None = None
    with tempfile.TemporaryDirectory() as tmp:
        prepared = os.path.join(tmp, "prepared.onnx")
        quant_pre_process(fp32_path, prepared)
        for method in (CalibrationMethod.MinMax, CalibrationMethod.Percentile):
            candidate = os.path.join(tmp, f"int8_{method.name}.onnx")
            quantize_static(
                prepared,
                candidate,
                ArrayReader(input_name, calibration_images),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=method,
            )
            agreement = float((onnx_logits(candidate, check_images).argmax(1) == fp32_logits.argmax(1)).mean())
            log(f"int8 ({method.name} calibration, {len(calibration_images)} images): "
                f"argmax agreement with fp32 on {len(check_images)} validation images = {agreement:.4f}")
            if best is None or agreement > best["agreement"]:
                best = {"method": method.name, "agreement": agreement, "path": candidate}
            if agreement >= MIN_AGREEMENT:
                break
        assert best is not None
        os.replace(best.pop("path"), int8_path)
    return best | {
        "format": "QDQ",
        "weights": "int8 per-channel",
        "activations": "uint8",
        "calibration_images": int(len(calibration_images)),
        "checked_on_validation_images": int(len(check_images)),
    }
