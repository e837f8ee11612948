"""A tiny, TensorFlow-free model bundle for tests: a real ONNX graph and a real manifest.

The graph averages each colour channel and maps the three means to 7 logits with a fixed
matrix, so its answers depend on the image and the tests can check real behaviour (batch
equals single, sha256 and shape checks, error handling) in milliseconds.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ml.classes import CLASSES, MALIGNANT_CLASSES
from ml.manifest import FORMAT_VERSION, sha256_file, write_manifest

WEIGHTS = np.array(
    [
        [2.0, -1.0, 0.5, 0.0, 1.5, -0.5, 1.0],
        [-1.0, 2.0, 0.0, 0.5, -0.5, 1.5, 0.0],
        [0.5, 0.0, -1.0, 2.0, 0.0, -1.0, 1.5],
    ],
    dtype=np.float32,
)


def tiny_onnx(size: int) -> onnx.ModelProto:
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", size, size, 3])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(CLASSES)])
    axes = numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes")
    weights = numpy_helper.from_array(WEIGHTS, "weights")
    nodes = [
        helper.make_node("ReduceMean", ["input", "axes"], ["means"], keepdims=0),
        helper.make_node("MatMul", ["means", "weights"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "tiny", [inp], [out], initializer=[axes, weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def write_bundle(
    folder: str | os.PathLike,
    model: onnx.ModelProto,
    *,
    size: int,
    version: str,
    threshold: float = 0.5,
    int8_copy: bool = True,
) -> str:
    """Write ``model`` as model.onnx with a real manifest.json into ``folder``; returns the folder.

    ``int8_copy`` lists the same file as the 'int8' variant too, for tests that switch variants.
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    model_path = os.path.join(folder, "model.onnx")
    onnx.save(model, model_path)
    variant = {"file": "model.onnx", "sha256": sha256_file(model_path), "temperature": 1.0, "malignancy_threshold": threshold}
    manifest = {
        "format": FORMAT_VERSION,
        "name": "test-model",
        "version": version,
        "classes": list(CLASSES),
        "malignant_classes": sorted(MALIGNANT_CLASSES),
        "input": {"name": "input", "shape": [None, size, size, 3], "layout": "NHWC", "dtype": "float32"},
        "output": {"name": "logits", "kind": "logits"},
        "preprocessing": {"size": size, "colour": "none", "scale": 1 / 127.5, "offset": -1.0, "colour_order": "RGB"},
        "variants": {"fp32": variant, **({"int8": dict(variant)} if int8_copy else {})},
    }
    write_manifest(folder, manifest)
    return folder


def write_tiny_bundle(folder: str, *, size: int = 32, version: str = "tiny-test-1", threshold: float = 0.5) -> str:
    """The channel-mean model above as a bundle (fp32 and an identical 'int8' copy)."""
    return write_bundle(folder, tiny_onnx(size), size=size, version=version, threshold=threshold)
