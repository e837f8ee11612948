"""Plain helpers of the portal tests (no fixtures: those are in conftest.py): the stand-in model
bundle, generated images, and the names every test module shares.

The stand-in model averages the image's R, G and B and maps them to logits: red images ->
melanoma (flagged), green -> melanocytic nevus (not flagged), blue -> vascular.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ml.classes import CLASSES
from tests.tinymodel import write_bundle

STAND_IN_VERSION = "stand-in-test-1"
STAND_IN_THRESHOLD = 0.5
PASSWORD = "correct-horse-battery-staple"
REPO_ROOT = Path(__file__).resolve().parents[2]


def build_stand_in_bundle(folder: Path, *, version: str = STAND_IN_VERSION) -> Path:
    """input float32 [N,224,224,3] -> ReduceMean(H, W) -> MatMul(3x7) -> logits [N,7]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.zeros((3, len(CLASSES)), dtype=np.float32)
    weights[0, CLASSES.index("mel")] = 4.0  # red
    weights[1, CLASSES.index("nv")] = 4.0  # green
    weights[2, CLASSES.index("vasc")] = 4.0  # blue
    graph = helper.make_graph(
        nodes=[
            helper.make_node("ReduceMean", ["input"], ["mean_rgb"], axes=[1, 2], keepdims=0),
            helper.make_node("MatMul", ["mean_rgb", "weights"], ["logits"]),
        ],
        name="stand_in",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 224, 224, 3])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", len(CLASSES)])],
        initializer=[numpy_helper.from_array(weights, name="weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="skinportal-tests")
    model.ir_version = 8  # what every onnxruntime of the last years reads
    onnx.checker.check_model(model)
    write_bundle(folder, model, size=224, version=version, threshold=STAND_IN_THRESHOLD, int8_copy=False)
    return folder


# --- Images --------------------------------------------------------------------------------


def image_bytes(
    colour: tuple[int, int, int] = (220, 30, 30), *, size: tuple[int, int] = (96, 64), fmt: str = "png"
) -> bytes:
    """A solid RGB image with a little noise, encoded as PNG or JPEG."""
    width, height = size
    rng = np.random.default_rng(0)
    rgb = np.clip(np.array(colour, dtype=np.int16) + rng.integers(-8, 9, (height, width, 3)), 0, 255).astype(np.uint8)
    ok, data = cv2.imencode(f".{fmt}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


RED = (220, 30, 30)  # stand-in model: melanoma, flagged
GREEN = (30, 200, 40)  # stand-in model: melanocytic nevus, not flagged
