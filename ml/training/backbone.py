"""MobileNetV2 construction and its split into a frozen lower part and a trainable upper part.

The lower blocks stay frozen, so their outputs can be computed once per augmented view
(with onnxruntime, about 4x faster than Keras on a CPU) and cached; only the upper blocks and
the head are trained. BatchNorm layers stay in inference mode throughout: fine-tuning them on
a small, imbalanced data set collapses the features (measured in ../shared/data/README.md).
"""

from __future__ import annotations

import os

import keras

WEIGHT_FILES: dict[float, str] = {
    0.35: "mobilenet_v2_0.35_224_no_top.weights.h5",
    1.0: "mobilenet_v2_1.0_224_no_top_dequantized.weights.h5",
}
WEIGHT_DESCRIPTIONS: dict[float, str] = {
    0.35: "ImageNet MobileNetV2 alpha 0.35 (float original)",
    1.0: "ImageNet MobileNetV2 alpha 1.0, dequantized from Google's uint8 TFLite model",
}


def default_weights_path(alpha: float) -> str | None:
    """$SKINPORTAL_WEIGHTS_DIR, else ../shared/data/weights beside the repository."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    folder = os.environ.get("SKINPORTAL_WEIGHTS_DIR") or os.path.join(repo, "..", "shared", "data", "weights")
    path = os.path.normpath(os.path.join(folder, WEIGHT_FILES[alpha]))
    return path if os.path.isfile(path) else None


def build_backbone(alpha: float, size: int | tuple[int, int], weights: str | None) -> keras.Model:
    """ImageNet-initialised MobileNetV2 without top for a square `size` or (height, width);
    ``weights=None`` gives a random init (tests). Convolution weights do not depend on the input
    size, so the 224x224 ImageNet weights load at any size."""
    height, width = (size, size) if isinstance(size, int) else size
    return keras.applications.MobileNetV2(
        alpha=alpha, include_top=False, weights=weights, input_shape=(height, width, 3)
    )


def split_backbone(base: keras.Model, cut_layer: str) -> tuple[keras.Model, keras.Model]:
    """(lower, upper) sharing the base's layers: lower = input..cut, upper = cut..out_relu."""
    cut = base.get_layer(cut_layer).output
    lower = keras.Model(base.input, cut, name="lower")
    upper = keras.Model(cut, base.output, name="upper")
    return lower, upper


def build_head_model(
    upper: keras.Model, *, dropout: float, n_classes: int, seed: int, feature_noise: float = 0.0
) -> keras.Model:
    """Cached features -> logits: upper blocks (BatchNorm in inference mode), pooling, dense.

    ``feature_noise`` adds Gaussian noise to the cached features while training only: it keeps
    decisions away from knife edges, so small input changes (JPEG, another camera, int8
    rounding) do not flip the predicted class.
    """
    features = keras.Input(shape=upper.input.shape[1:], name="features")
    x = keras.layers.GaussianNoise(feature_noise, seed=seed, name="feature_noise")(features) if feature_noise else features
    x = upper(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(x)
    logits = keras.layers.Dense(n_classes, name="logits")(x)
    return keras.Model(features, logits, name="head")


def build_inference_model(lower: keras.Model, head: keras.Model) -> keras.Model:
    """Image -> logits, the graph that is exported to ONNX."""
    image = keras.Input(shape=lower.input.shape[1:], name="input")
    logits = head(lower(image, training=False), training=False)
    return keras.Model(image, logits, name="skinportal_mobilenetv2")


def set_upper_trainable(upper: keras.Model, trainable: bool) -> None:
    """Unfreeze the upper convolutions; BatchNorm stays frozen either way."""
    upper.trainable = True
    for layer in upper.layers:
        layer.trainable = trainable and not isinstance(layer, keras.layers.BatchNormalization)
