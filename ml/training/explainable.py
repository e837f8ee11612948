"""The served graph: one image in, three outputs out, so inference explains itself for free.

  logits    (N, 7)        what the classifier was trained to give
  features  (N, K)        the pooled last-layer features the logits are a linear map of, after
                          the pooled output of a middle layer for end-to-end models
                          (SCREENING_MIDDLE_LAYER); the out-of-distribution screen
                          (ml/screening/ood.py) measures distances here, block by block
  cam       (N, h, w, 7)  the class activation map: the dense layer applied at every position of
                          the last convolutional feature map, before pooling. The classifier is
                          global average pooling then a dense layer, so mean_hw(cam[..., c]) + b_c
                          is exactly logit c (Zhou et al. 2016): the map needs no gradients and
                          costs one small matrix product. The export checks that identity.

An ensemble or test-time views (`python -m ml ensemble`, ml/training/finalize.py) average over
(member, view) pairs: the logits and the maps are averaged (each view's map flipped back onto the
image first), the bias is the members' mean, and the features are the members' pooled features,
each averaged over the views, side by side. The trained model keeps one output (model.keras is
unchanged); only the exported graph has three.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np


class NotExplainable(ValueError):
    """The model is not a backbone -> pooling -> dense graph that this module knows how to open."""


# A middle layer of MobileNetV2 whose pooled output joins the last layer's in `features`: the last
# layer of a fine-tuned network knows lesions and little else, the middle one still describes
# images in general (ml/screening/ood.py).
SCREENING_MIDDLE_LAYER = "block_13_expand_relu"


def _parts(model: keras.Model) -> tuple[Callable, keras.layers.Layer, tuple[str, ...]]:
    """(image -> feature maps, dense layer, the maps' layer names) of the two layouts `ml train`
    writes: end to end (input -> backbone -> pool -> dropout -> logits; maps: the middle layer's
    and the last) and the cached scheme (input -> lower -> head[features -> noise? -> upper -> pool
    -> dropout -> logits]; map: the last). The last map is the one the dense layer reads, pooled."""
    names = {layer.name for layer in model.layers}
    if {"pool", "logits"} <= names:
        backbones = [layer for layer in model.layers if isinstance(layer, keras.Model)]
        backbone = backbones[0] if len(backbones) == 1 else None
        if backbone is not None and SCREENING_MIDDLE_LAYER in {layer.name for layer in backbone.layers} \
                and tuple(model.get_layer("pool").input.shape) == tuple(backbone.output.shape):
            both = keras.Model(backbone.input, [backbone.get_layer(SCREENING_MIDDLE_LAYER).output, backbone.output])
            return (lambda x: list(both(x, training=False))), model.get_layer("logits"), \
                (SCREENING_MIDDLE_LAYER, backbone.layers[-1].name)
        feature_model = keras.Model(model.inputs, model.get_layer("pool").input)
        return (lambda x: [feature_model(x, training=False)]), model.get_layer("logits"), ("pool input",)
    if {"lower", "head"} <= names:
        lower, head = model.get_layer("lower"), model.get_layer("head")
        upper = head.get_layer("upper")
        return (lambda x: [upper(lower(x, training=False), training=False)]), head.get_layer("logits"), (upper.name,)
    raise NotExplainable(
        f"model {model.name!r} is not one backbone -> pooling -> dense (layers: {sorted(names)}); class activation "
        "maps and feature screening need that layout (an ensemble is explained from its members: "
        "explainable_ensemble)"
    )


def _flip(x, view: str):
    from ml.training.ensemble import FLIP_VIEWS

    for axis in FLIP_VIEWS[view]:
        x = keras.ops.flip(x, axis=axis)
    return x


def _explained_member(member: keras.Model, input_shape: tuple[int, int, int],
                      index: int) -> tuple[keras.Model, np.ndarray, list[tuple[str, int]]]:
    """image -> (pooled features, logits, cam) of one member, as its own sub-model, so that members
    whose layers share names ("logits", ...) can sit in one graph; the member's bias; and the
    (layer, width) blocks its features are made of."""
    maps_of, dense, layer_names = _parts(member)
    image = keras.Input(shape=input_shape)
    maps = maps_of(image)
    feature_map = maps[-1]
    pooled_maps = [keras.layers.GlobalAveragePooling2D()(m) for m in maps]
    pooled = pooled_maps[-1]
    features = pooled if len(maps) == 1 else keras.layers.Concatenate()(pooled_maps)
    kernel = np.asarray(dense.kernel.numpy())
    cam_layer = keras.layers.Dense(kernel.shape[1], use_bias=False)
    cam = cam_layer(feature_map)  # a Dense on a 4-D tensor maps the channel axis at every position
    cam_layer.set_weights([kernel])
    explained = keras.Model(image, [features, dense(pooled), cam], name=f"explained_member_{index}")
    blocks = [(name, int(m.shape[-1])) for name, m in zip(layer_names, maps)]
    return explained, np.asarray(dense.bias.numpy()), blocks


def explainable_ensemble(members: Sequence[keras.Model], input_shape: tuple[int, int, int],
                         views: Sequence[str] = ("none",)) -> tuple[keras.Model, np.ndarray, list[tuple[str, int]]]:
    """(image -> (logits, features, cam), the bias the map averages to the logits with, the
    (layer, width) blocks of the features output) for the mean over `members` and test-time flip
    `views` (a single model: one member, view "none")."""
    image = keras.Input(shape=input_shape, name="input")
    logits, features, cams, biases, blocks = [], [], [], [], []
    for index, member in enumerate(members):
        explained, bias, member_blocks = _explained_member(member, tuple(input_shape), index)
        blocks.extend((f"member {index}: {name}" if len(members) > 1 else name, width) for name, width in member_blocks)
        pooled_views = []
        for view in views:
            pooled, member_logits, cam = explained(_flip(image, view))
            pooled_views.append(pooled)
            logits.append(member_logits)
            cams.append(_flip(cam, view))  # back onto the image: each cell over the part it saw
        features.append(pooled_views[0] if len(views) == 1 else keras.layers.Average()(pooled_views))
        biases.append(bias)

    def mean(tensors, name):
        return keras.layers.Identity(name=name)(tensors[0]) if len(tensors) == 1 else keras.layers.Average(name=name)(tensors)

    joined = features[0] if len(features) == 1 else keras.layers.Concatenate()(features)
    outputs = [mean(logits, "logits"), keras.layers.Identity(name="features")(joined), mean(cams, "cam")]
    return keras.Model(image, outputs, name="skinportal_explainable"), np.mean(biases, axis=0), blocks


def explainable_model(model: keras.Model) -> keras.Model:
    """Image -> (logits, pooled features, class activation map), sharing `model`'s weights."""
    return explainable_ensemble([model], tuple(model.input.shape[1:]))[0]


def dense_bias(model: keras.Model) -> np.ndarray:
    return np.asarray(_parts(model)[1].bias.numpy())
