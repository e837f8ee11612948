"""The Keras row of `python -m ml bench`: the bundle's model.keras through a tf.function."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np


def keras_runner(
    path: str, height_width: tuple[int, int], threads: int
) -> tuple[Callable[[np.ndarray], np.ndarray] | None, str, str | None]:
    """(runner, reason, TensorFlow version) for `python -m ml bench`'s Keras row; without TensorFlow
    installed, no runner and the reason. TensorFlow is imported here, under ml/training, only."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        import tensorflow as tf
    except ImportError:
        return None, "TensorFlow is not installed (pip install '.[train]')", None
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TensorFlow already initialised in this process: keep its settings
    try:
        import keras

        model = keras.saving.load_model(path, compile=False)
        call = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([None, *height_width, 3], tf.float32)],
        )
    except Exception as exc:  # a file Keras cannot read: report it in the row
        return None, f"Keras could not load {os.path.basename(path)}: {str(exc).splitlines()[0][:120]}", tf.__version__
    return (lambda batch: np.asarray(call(tf.constant(batch)))), "", tf.__version__
