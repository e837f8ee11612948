"""The served graph: one image in, three outputs out, so inference explains itself for free.

  logits    (N, 7)        what the classifier was trained to give
  features  (N, K)        the pooled last-layer features the logits are a linear map of; the
                          out-of-distribution screen (ml/screening/ood.py) measures distances here
  cam       (N, h, w, 7)  the class activation map: the dense layer applied at every position of
                          the last convolutional feature map, before pooling. The classifier is
                          global average pooling then a dense layer, so mean_hw(cam[..., c]) + b_c
                          is exactly logit c (Zhou et al. 2016): the map needs no gradients and
                          costs one small matrix product. The export checks that identity.

The trained model keeps one output (model.keras is unchanged); only the exported graph has three.
"""

from __future__ import annotations

import keras
import numpy as np

OUTPUT_NAMES: tuple[str, str, str] = ("logits", "features", "cam")


class NotExplainable(ValueError):
    """The model is not a single backbone -> pooling -> dense graph (e.g. an ensemble)."""


def _feature_map_and_head(model: keras.Model) -> tuple[keras.KerasTensor, keras.KerasTensor, keras.layers.Layer]:
    """(image input, last feature map, dense layer) of the two layouts `ml train` writes:
    end to end (input -> backbone -> pool -> dropout -> logits) and the cached scheme
    (input -> lower -> head[features -> noise? -> upper -> pool -> dropout -> logits])."""
    names = {layer.name for layer in model.layers}
    if {"pool", "logits"} <= names:
        return model.input, model.get_layer("pool").input, model.get_layer("logits")
    if {"lower", "head"} <= names:
        head = model.get_layer("head")
        image = keras.Input(shape=model.input.shape[1:], name="input")
        feature_map = head.get_layer("upper")(model.get_layer("lower")(image, training=False), training=False)
        return image, feature_map, head.get_layer("logits")
    raise NotExplainable(
        f"model {model.name!r} is not one backbone -> pooling -> dense (layers: {sorted(names)}); "
        "class activation maps and feature screening need that layout"
    )


def explainable_model(model: keras.Model) -> keras.Model:
    """Image -> (logits, pooled features, class activation map), sharing `model`'s weights."""
    image, feature_map, dense = _feature_map_and_head(model)
    features = keras.layers.GlobalAveragePooling2D(name="features")(feature_map)
    logits = dense(features)
    kernel = np.asarray(dense.kernel.numpy())
    cam_layer = keras.layers.Dense(kernel.shape[1], use_bias=False, name="cam")
    cam = cam_layer(feature_map)  # a Dense on a 4-D tensor maps the channel axis at every position
    cam_layer.set_weights([kernel])
    return keras.Model(image, [logits, features, cam], name=f"{model.name}_explainable")


def dense_bias(model: keras.Model) -> np.ndarray:
    _, _, dense = _feature_map_and_head(model)
    return np.asarray(dense.bias.numpy())
