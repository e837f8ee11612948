"""Keras -> ONNX with tf2onnx, and onnxruntime sessions for the training-side work."""

from __future__ import annotations

import os

import keras
import numpy as np
import onnxruntime as ort
import tensorflow as tf
import tf2onnx

# tf2onnx 1.17 converts Keras 3 models at opsets 13-18 (20 fails); 17 is what we validated.
OPSET = 17


def keras_to_onnx(model: keras.Model, *, input_name: str = "input") -> bytes:
    """Serialized ONNX model with a dynamic batch dimension."""
    shape = (None, *model.input.shape[1:])
    signature = (tf.TensorSpec(shape, tf.float32, name=input_name),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=OPSET)
    return proto.SerializeToString()


def training_session(model_bytes: bytes | str, threads: int | None = None) -> ort.InferenceSession:
    """A session for feature extraction: CUDA when onnxruntime-gpu sees a GPU, else all CPU cores."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or (os.cpu_count() or 1)
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    return ort.InferenceSession(model_bytes, options, providers=providers)


def onnx_outputs(path_or_bytes: bytes | str, batch: np.ndarray, *, chunk: int = 64) -> list[np.ndarray]:
    """Every output of the model for a preprocessed batch, run ``chunk`` images at a time."""
    session = training_session(path_or_bytes)
    name = session.get_inputs()[0].name
    runs = [session.run(None, {name: batch[i : i + chunk]}) for i in range(0, len(batch), chunk)]
    return [np.concatenate(parts) for parts in zip(*runs)]


def onnx_logits(path_or_bytes: bytes | str, batch: np.ndarray, *, chunk: int = 64) -> np.ndarray:
    """The model's first output (the logits) for a preprocessed batch."""
    return onnx_outputs(path_or_bytes, batch, chunk=chunk)[0]
