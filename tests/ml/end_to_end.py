"""The tiny non-square end-to-end network the end-to-end test modules share (TensorFlow: import this
after `pytest.importorskip("tensorflow")`)."""

import os

import keras
import numpy as np

from ml.preprocessing import PreprocessConfig
from ml.training import endtoend

CONFIG = PreprocessConfig(size=48, width=64, colour="clahe")


def best_model(checkpoint_dir) -> keras.Model:
    """A run's best.npz loaded into a fresh tiny non-square model (alpha 0.35, 48x64)."""
    base = keras.applications.MobileNetV2(alpha=0.35, include_top=False, weights=None, input_shape=(48, 64, 3))
    model = endtoend.build_model(base, dropout=0.3, seed=20261125)
    with np.load(os.path.join(checkpoint_dir, "best.npz")) as arrays:
        for variable, name in zip(model.variables, sorted(arrays.files, key=lambda n: int(n.split("_")[1]))):
            variable.assign(arrays[name])
    return model
