"""The training step of `ml.training.endtoend`, for the Keras backend it runs under.

The loop, data, checkpoints and selection are backend-neutral; only taking gradients is not.
TensorFlow (the default, and what CI runs) uses a `tf.function` around a `GradientTape`; JAX
(`KERAS_BACKEND=jax`, for a lent GPU machine that has JAX but no TensorFlow) uses a jitted
stateless step. Both compute the same thing: a weighted soft-target cross-entropy (plus the
malignant-vs-benign term when the config weighs it, and, under TensorFlow only, the lesion-mask
term), one AdamW update each for the backbone and the head, and the EMA update. The weights and
checkpoints they write are interchangeable, so a run trained under JAX is packaged under TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import keras
import numpy as np

from ml.classes import BENIGN_INDICES, MALIGNANT_INDICES

if TYPE_CHECKING:
    from ml.training.endtoend import Trainer

# (views, soft targets, per-image loss weights[, lesion targets per feature-map cell])
Batch = tuple[np.ndarray, ...]
EpochRunner = Callable[[Iterable[Batch]], list[float]]


def weighted_loss(logits, target, weight, malignant_weight: float = 0.0):
    """Mean over the batch of each image's soft-target cross-entropy times its loss weight; with
    `malignant_weight` > 0, plus that share of the binary cross-entropy of malignant vs benign (the
    softmax's malignant mass against the target's), the question the malignancy flag answers."""
    log_probs = keras.ops.log_softmax(logits, axis=-1)
    per_image = -keras.ops.sum(target * log_probs, axis=-1)
    if malignant_weight > 0:
        malignant, benign = list(MALIGNANT_INDICES), list(BENIGN_INDICES)
        log_malignant = keras.ops.logsumexp(keras.ops.take(log_probs, malignant, axis=-1), axis=-1)
        log_benign = keras.ops.logsumexp(keras.ops.take(log_probs, benign, axis=-1), axis=-1)
        target_malignant = keras.ops.sum(keras.ops.take(target, malignant, axis=-1), axis=-1)
        per_image = per_image - malignant_weight * (target_malignant * log_malignant
                                                    + (1.0 - target_malignant) * log_benign)
    return keras.ops.mean(per_image * weight)


def lesion_loss(lesion_logits, lesion_target):
    """Mean binary cross-entropy of the lesion head's cells against each cell's lesion share."""
    return keras.ops.mean(keras.ops.binary_crossentropy(lesion_target, lesion_logits, from_logits=True))


def ema_decay_at(step, decay: float):
    """The EMA's decay at `step`, with a short warm-up so early averages are not the init's."""
    step = keras.ops.cast(step, "float32")
    return keras.ops.minimum(decay, (1.0 + step) / (10.0 + step))


def epoch_runner(trainer: Trainer) -> EpochRunner:
    """A function that trains one epoch of batches and returns the per-batch losses."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow_runner(trainer)
    if backend == "jax":
        return _jax_runner(trainer)
    raise RuntimeError(f"end-to-end training runs under the tensorflow or jax Keras backend, not {backend!r}")


def _tensorflow_runner(trainer: Trainer) -> EpochRunner:
    import tensorflow as tf

    n_backbone = len(trainer.backbone_vars)
    malignant_weight = trainer.cfg.malignant_weight

    @tf.function
    def step(x, target, weight, lesion=None):
        with tf.GradientTape() as tape:
            if lesion is None:
                loss = weighted_loss(trainer.model(x, training=True), target, weight, malignant_weight)
            else:
                logits, lesion_logits = trainer.train_model(x, training=True)
                loss = weighted_loss(logits, target, weight, malignant_weight) + trainer.cfg.mask_weight * lesion_loss(lesion_logits, lesion)
        grads = tape.gradient(loss, trainer.trainable)
        trainer.backbone_opt.apply(grads[:n_backbone], trainer.backbone_vars)
        trainer.head_opt.apply(grads[n_backbone:], trainer.head_vars)
        decay = ema_decay_at(trainer.step.value, trainer.cfg.ema_decay)
        for average, v in zip(trainer.ema, trainer.trainable):
            average.assign(decay * average.value + (1.0 - decay) * v.value)
        trainer.step.assign(trainer.step.value + 1)
        return loss

    def run(batches: Iterable[Batch]) -> list[float]:
        return [float(step(*(tf.constant(part) for part in batch))) for batch in batches]

    return run


def _jax_runner(trainer: Trainer) -> EpochRunner:
    import jax

    if trainer.train_model is not trainer.model:
        raise RuntimeError("the lesion-mask target (mask_weight > 0) trains under the tensorflow Keras backend only")

    model = trainer.model
    trainable = model.trainable_variables
    position = {id(v): i for i, v in enumerate(trainable)}
    backbone_at = [position[id(v)] for v in trainer.backbone_vars]
    head_at = [position[id(v)] for v in trainer.head_vars]
    trainer_order = backbone_at + head_at  # the order of trainer.trainable and trainer.ema
    decay_limit = trainer.cfg.ema_decay
    malignant_weight = trainer.cfg.malignant_weight

    def step(values, non_trainable, backbone_opt, head_opt, ema, count, x, target, weight):
        def loss_of(values):
            logits, updated = model.stateless_call(values, non_trainable, x, training=True)
            return weighted_loss(logits, target, weight, malignant_weight), updated

        (loss, non_trainable), grads = jax.value_and_grad(loss_of, has_aux=True)(values)
        new_backbone, backbone_opt = trainer.backbone_opt.stateless_apply(
            backbone_opt, [grads[i] for i in backbone_at], [values[i] for i in backbone_at])
        new_head, head_opt = trainer.head_opt.stateless_apply(
            head_opt, [grads[i] for i in head_at], [values[i] for i in head_at])
        values = list(values)
        for i, value in zip(trainer_order, [*new_backbone, *new_head]):
            values[i] = value
        decay = ema_decay_at(count, decay_limit)
        ema = [decay * average + (1.0 - decay) * values[i] for average, i in zip(ema, trainer_order)]
        return loss, values, non_trainable, backbone_opt, head_opt, ema, count + 1

    jitted = jax.jit(step)
    groups = (trainable, model.non_trainable_variables, trainer.backbone_opt.variables, trainer.head_opt.variables,
              trainer.ema)

    def run(batches: Iterable[Batch]) -> list[float]:
        state = [[v.value for v in group] for group in groups] + [trainer.step.value]
        losses = []  # kept on the device: reading each one would wait for its step
        for x, t, w in batches:
            loss, *state = jitted(*state, x, t, w)
            losses.append(loss)
        for group, values in zip(groups, state[:-1]):
            for variable, value in zip(group, values):
                variable.assign(value)
        trainer.step.assign(state[-1])
        return [float(loss) for loss in losses]

    return run
