"""Tiny, TensorFlow-free model bundles for tests: a real ONNX graph and a real manifest.

The graph has the served bundles' shape: a coarse "feature map" (the image average-pooled to a
g x g grid of colours), pooled "features" (the three channel means), a class activation map
(the feature map times a 3x7 matrix at every cell) and logits (the features times the same
matrix), so mean_hw(cam) = logits, as in the real export. Its answers depend on the image, so
tests check real behaviour (batch equals single, sha256 and shape checks, warnings, heatmaps)
in milliseconds. The screening statistics are chosen by the caller.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ml.classes import CLASSES, MALIGNANT_CLASSES
from ml.manifest import FORMAT_VERSION, sha256_file, write_manifest
from ml.screening import SCREENING_FILE

WEIGHTS = np.array(
    [
        [2.0, -1.0, 0.5, 0.0, 1.5, -0.5, 1.0],
        [-1.0, 2.0, 0.0, 0.5, -0.5, 1.5, 0.0],
        [0.5, 0.0, -1.0, 2.0, 0.0, -1.0, 1.5],
    ],
    dtype=np.float32,
)

# Screening limits that warn about nothing (for tests about something else).
PERMISSIVE_QUALITY = {"min_brightness": 0.0, "max_brightness": 255.0, "max_saturated": 1.0, "min_contrast": 0.0,
                      "min_sharpness": 0.0, "percentile": 0.0}
PERMISSIVE_CONFIDENCE = {"min_margin": 0.0, "max_entropy": 1.0, "accuracy_below_margin": None,
                         "flagged_validation_rate": 0.0}


def grid_for(size: int) -> int:
    """Cells per side of the coarse feature map: 7 like MobileNetV2 at 224 when it divides."""
    return next(g for g in (7, 4, 2, 1) if size % g == 0)


def tiny_onnx(size: int, weights: np.ndarray = WEIGHTS, *, busy: bool = False, width: int | None = None,
              grid: tuple[int, int] | None = None) -> onnx.ModelProto:
    """input (N, size, size, 3) -> logits (N, 7), features (N, 3), cam (N, g, g, 7).

    `width` makes the input (N, size, width, 3) and `grid` the map's (rows, columns) (default:
    cells of size // grid_for(size) pixels a side, so a non-square input gets a non-square grid).
    `busy` adds two convolutions whose result is multiplied by zero: the same answers, about
    50 ms an image at 224, so a worker can be killed mid-batch."""
    width = width or size
    if grid is None:
        side = size // grid_for(size)
        grid = (size // side, width // side)
    if size % grid[0] or width % grid[1]:
        raise ValueError(f"a {grid[0]}x{grid[1]} grid does not divide a {size}x{width} input")
    cell = [size // grid[0], width // grid[1]]
    initializers = [numpy_helper.from_array(np.asarray(weights, np.float32), "weights"),
                    numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "hw_axes")]
    nodes = [
        helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("AveragePool", ["nchw"], ["pooled_nchw"], kernel_shape=cell, strides=cell),
        helper.make_node("Transpose", ["pooled_nchw"], ["feature_map"], perm=[0, 2, 3, 1]),
        helper.make_node("ReduceMean", ["feature_map", "hw_axes"], ["features"], keepdims=0),
        helper.make_node("MatMul", ["feature_map", "weights"], ["cam"]),
    ]
    if busy:
        rng = np.random.default_rng(0)
        initializers += [
            numpy_helper.from_array(rng.standard_normal((32, 3, 7, 7)).astype(np.float32), "k1"),
            numpy_helper.from_array(rng.standard_normal((32, 32, 3, 3)).astype(np.float32), "k2"),
            numpy_helper.from_array(np.zeros((1,), dtype=np.float32), "zero"),
            numpy_helper.from_array(np.array([1, 2, 3], dtype=np.int64), "chw_axes"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        ]
        nodes += [
            helper.make_node("MatMul", ["features", "weights"], ["base_logits"]),
            helper.make_node("Conv", ["nchw", "k1"], ["c1"], pads=[3, 3, 3, 3]),
            helper.make_node("Conv", ["c1", "k2"], ["c2"], pads=[1, 1, 1, 1]),
            helper.make_node("ReduceMean", ["c2", "chw_axes"], ["busy"], keepdims=0),
            helper.make_node("Unsqueeze", ["busy", "axis1"], ["busy_col"]),
            helper.make_node("Mul", ["busy_col", "zero"], ["nothing"]),
            helper.make_node("Add", ["base_logits", "nothing"], ["logits"]),
        ]
    else:
        nodes.append(helper.make_node("MatMul", ["features", "weights"], ["logits"]))
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(CLASSES)]),
        helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3]),
        helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["batch", "h", "w", len(CLASSES)]),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", size, width, 3])],
                              outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="skinportal-tests")
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
    width: int | None = None,
    dermoscopic_colours: Sequence[tuple[int, int, int]] | None = None,
    ood_threshold: float = 100.0,
    quality: dict | None = None,
    confidence: dict | None = None,
    field_of_view: bool = False,
) -> str:
    """Write ``model`` as model.onnx with screening.npz and a real manifest.json into ``folder``.

    Screening: the feature-distance check measures the plain Euclidean distance (whitening = I)
    of an image's channel means, scaled like the model input, to the nearest of
    `dermoscopic_colours` (default: the origin), flagging beyond `ood_threshold`; `quality` and
    `confidence` override the limits (default: warn about nothing). ``int8_copy`` lists the same
    file as the 'int8' variant too, for tests that switch variants. ``width`` declares a
    non-square (size x width) input, as ``tiny_onnx(size, width=...)`` builds; ``field_of_view``
    makes the bundle crop to a dermatoscope's field of view (ml.field_of_view).
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    model_path = os.path.join(folder, "model.onnx")
    onnx.save(model, model_path)
    colours = np.array(dermoscopic_colours or [(127.5, 127.5, 127.5)], dtype=np.float32)
    means = np.resize(colours / 127.5 - 1.0, (len(CLASSES), 3))  # one "class mean" per class, cycling
    screening_path = os.path.join(folder, SCREENING_FILE)
    np.savez(screening_path, ood_class_means=means.astype(np.float32), ood_whitening=np.eye(3, dtype=np.float32))
    variant = {"file": "model.onnx", "sha256": sha256_file(model_path), "temperature": 1.0, "malignancy_threshold": threshold}
    manifest = {
        "format": FORMAT_VERSION,
        "name": "test-model",
        "version": version,
        "classes": list(CLASSES),
        "malignant_classes": sorted(MALIGNANT_CLASSES),
        "input": {"name": "input", "shape": [None, size, width or size, 3], "layout": "NHWC", "dtype": "float32"},
        "outputs": {"logits": {"name": "logits"}, "features": {"name": "features"}, "cam": {"name": "cam"}},
        "preprocessing": {"size": size, "colour": "none", "scale": 1 / 127.5, "offset": -1.0, "colour_order": "RGB",
                          **({"width": width} if width else {}), **({"field_of_view": True} if field_of_view else {})},
        "variants": {"fp32": variant, **({"int8": dict(variant)} if int8_copy else {})},
        "screening": {
            "file": SCREENING_FILE,
            "sha256": sha256_file(screening_path),
            "ood": {"threshold": ood_threshold},
            "quality": quality or PERMISSIVE_QUALITY,
            "confidence": confidence or PERMISSIVE_CONFIDENCE,
        },
    }
    write_manifest(folder, manifest)
    return folder


def write_tiny_bundle(folder: str, *, size: int = 32, version: str = "tiny-test-1", threshold: float = 0.5,
                      width: int | None = None, grid: tuple[int, int] | None = None, **screening) -> str:
    """The channel-mean model above as a bundle (fp32 and an identical 'int8' copy); `width` and
    `grid` as for tiny_onnx."""
    return write_bundle(folder, tiny_onnx(size, width=width, grid=grid), size=size, version=version,
                        threshold=threshold, width=width, **screening)
