"""What one end-to-end training batch holds: which images an epoch draws (class-balanced
sampling), each image's augmented view, its soft target and loss weight, and mixup within the
batch; built ahead of the gradient step in a thread pool. Every draw and view is a pure function
of (seed, epoch, position), so a resumed run sees the batches it would have seen.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ml.classes import CLASSES
from ml.preprocessing import PreprocessConfig, preprocess, resize
from ml.training.augment import AUGMENTATIONS
from ml.training.steps import Batch

if TYPE_CHECKING:  # the config's module imports this one
    from ml.training.endtoend import EndToEndConfig


# Each class's share of the draws goes as (class count) ** power.
SAMPLING_POWERS: dict[str, float] = {"natural": 1.0, "sqrt": 0.5, "balanced": 0.0}


def sampling_probabilities(labels: np.ndarray, sampling: str) -> np.ndarray:
    """Per-image draw probabilities: class mass proportional to n_c (natural), sqrt(n_c) or 1."""
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(np.float64)
    power = SAMPLING_POWERS[sampling]
    class_mass = np.where(counts > 0, counts**power, 0.0)
    per_image = class_mass[labels] / counts[labels]
    return per_image / per_image.sum()


def loss_weights(labels: np.ndarray, sampling: str, balance: float = 1.0) -> np.ndarray:
    """Per-class loss weights that take the sampled class mix `balance` of the way to equal class
    weight in expectation (1: all the way), normalised so the average drawn image weighs 1."""
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(np.float64)
    power = SAMPLING_POWERS[sampling]
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts[present] ** (-power * balance)
    drawn_mass = np.where(present, counts**power, 0.0)
    weights *= drawn_mass.sum() / (weights * drawn_mass).sum()
    return weights.astype(np.float32)


def confirmation_weights(labels: np.ndarray, dx_types: Sequence[str], unconfirmed_weight: float) -> np.ndarray:
    """Per-image factor: 1 for a histopathology-confirmed diagnosis, `unconfirmed_weight` for any
    other, rescaled within each class to a mean of 1 so the class weights keep their meaning."""
    factors = np.where(np.asarray(dx_types) == "histo", 1.0, unconfirmed_weight).astype(np.float64)
    for label in np.unique(labels):
        in_class = labels == label
        factors[in_class] /= factors[in_class].mean()
    return factors.astype(np.float32)


def epoch_order(labels: np.ndarray, cfg: EndToEndConfig, epoch: int) -> np.ndarray:
    """The images drawn in `epoch` (as many as there are images), a pure function of (seed, epoch)."""
    rng = np.random.default_rng([cfg.seed, epoch])
    if cfg.sampling == "natural":
        return rng.permutation(len(labels))
    return rng.choice(len(labels), size=len(labels), replace=True, p=sampling_probabilities(labels, cfg.sampling))


def training_view(image: np.ndarray, config: PreprocessConfig, seed: Sequence[int],
                  augmentation: str = "full") -> np.ndarray:
    """One augmented, preprocessed view; the same `seed` always gives the same view."""
    return preprocess(AUGMENTATIONS[augmentation](image, np.random.default_rng(list(seed))), config)


def masked_training_view(image: np.ndarray, config: PreprocessConfig, seed: Sequence[int], augmentation: str,
                         grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(view, lesion target) of an image carrying its mask as a fourth channel: the view is
    `training_view`'s for the same seed; the target is the lesion's share of each cell of the
    (height, width) `grid`, float32 in [0, 1], after the view's flips and turns and the model's resize."""
    view = AUGMENTATIONS[augmentation](image, np.random.default_rng(list(seed)))
    mask = resize(np.ascontiguousarray(view[..., 3]), config.height_width)
    cells = cv2.resize(mask.astype(np.float32) / 255.0, (grid[1], grid[0]), interpolation=cv2.INTER_AREA)
    return preprocess(np.ascontiguousarray(view[..., :3]), config), cells[..., None]


def batch_targets(
    views: np.ndarray, labels: np.ndarray, *, weights: np.ndarray, cfg: EndToEndConfig, seed: Sequence[int],
    n_classes: int = len(CLASSES), teacher: np.ndarray | None = None, masks: np.ndarray | None = None,
) -> Batch:
    """Soft targets (label smoothing; with `teacher`, the teacher's probabilities for these images
    blended in at `cfg.distill_weight`) and the images' loss `weights` for one batch, then mixup when
    `cfg.mixup` > 0: each image blended with another of the batch, its target and weight blended by
    the same share. With `masks` (lesion targets), the batch carries them as a fourth part, mixed alike."""
    targets = np.eye(n_classes, dtype=np.float32)[labels] * (1.0 - cfg.label_smoothing) + cfg.label_smoothing / n_classes
    if cfg.distill_weight > 0:
        if teacher is None:
            raise ValueError(f"distillation from {cfg.distill_from} needs the teacher's answers")
        targets = (1.0 - cfg.distill_weight) * targets + cfg.distill_weight * np.asarray(teacher, dtype=np.float32)
    weights = np.asarray(weights, dtype=np.float32)
    if cfg.mixup > 0:
        rng = np.random.default_rng(list(seed))
        share = rng.beta(cfg.mixup, cfg.mixup)
        share = np.float32(max(share, 1.0 - share))  # the first image stays the larger part
        partner = rng.permutation(len(labels))
        views = share * views + (1.0 - share) * views[partner]
        if masks is not None:
            masks = share * masks + (1.0 - share) * masks[partner]
        targets = share * targets + (1.0 - share) * targets[partner]
        weights = share * weights + (1.0 - share) * weights[partner]
    batch = views.astype(np.float32), targets.astype(np.float32), weights.astype(np.float32)
    return batch if masks is None else (*batch, np.asarray(masks, dtype=np.float32))


def batches(
    images: Sequence[np.ndarray],
    labels: np.ndarray,
    order: np.ndarray,
    *,
    config: PreprocessConfig,
    cfg: EndToEndConfig,
    image_weights: np.ndarray,
    epoch: int,
    teacher: np.ndarray | None = None,
    mask_grid: tuple[int, int] | None = None,
    pool: ThreadPoolExecutor,
    prefetch: int = 3,
) -> Iterator[Batch]:
    """Full batches in `order`, built `prefetch` batches ahead in `pool`; `image_weights` is each
    training image's loss weight (class weight times confirmation factor); `teacher`, when distilling,
    each training image's teacher probabilities; `mask_grid`, with a lesion-mask target (the images
    carry their masks), the (height, width) grid of the lesion targets."""
    n_batches = len(order) // cfg.batch_size

    def build(b: int) -> Batch:
        chosen = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        seeds = [(cfg.seed, epoch, b * cfg.batch_size + k) for k in range(len(chosen))]
        masks = None
        if mask_grid is None:
            views = np.stack([training_view(images[i], config, seed, cfg.augmentation) for i, seed in zip(chosen, seeds)])
        else:
            pairs = [masked_training_view(images[i], config, seed, cfg.augmentation, mask_grid)
                     for i, seed in zip(chosen, seeds)]
            views, masks = np.stack([view for view, _ in pairs]), np.stack([cells for _, cells in pairs])
        return batch_targets(views, labels[chosen], weights=image_weights[chosen], cfg=cfg,
                             seed=(cfg.seed, epoch, b, 1), teacher=None if teacher is None else teacher[chosen],
                             masks=masks)

    pending: deque = deque()
    for b in range(n_batches):
        pending.append(pool.submit(build, b))
        if len(pending) > prefetch:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
