"""Training of the upper blocks and head on cached lower-block features.

Two stages: the new head alone (upper blocks frozen), then the upper convolutions too with
AdamW and a cosine learning rate, BatchNorm frozen. Each epoch draws one of the cached
augmented views per training image. Class imbalance: inverse-frequency class weights, since
the selection metric (balanced accuracy) weighs every class equally. Early stopping on
validation balanced accuracy. After every epoch the weights and the loop state are saved,
so a killed job resumes at the next epoch (optimizer moments restart).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import keras
import numpy as np

from ml.classes import CLASSES
from ml.metrics import balanced_accuracy, malignant_auc, softmax
from ml.training.backbone import set_upper_trainable


@dataclass(frozen=True)
class FitConfig:
    head_epochs: int = 3
    head_lr: float = 1e-3
    finetune_epochs: int = 30
    finetune_lr: float = 5e-5
    weight_decay: float = 1e-4
    patience: int = 6
    batch_size: int = 32
    dropout: float = 0.3
    feature_noise: float = 0.0
    class_weighting: str = "inverse"
    seed: int = 20261125


CLASS_WEIGHTINGS: tuple[str, ...] = ("inverse", "sqrt", "none")


def class_weights(labels: np.ndarray, kind: str = "inverse") -> dict[int, float]:
    """Per-class loss weights, scaled so the average training example weighs 1.

    inverse: 1/frequency (every class counts equally, the balanced-accuracy view);
    sqrt: 1/sqrt(frequency), a gentler push with less noisy gradients from the rare classes.
    """
    if kind not in CLASS_WEIGHTINGS:
        raise ValueError(f"class weighting must be one of {CLASS_WEIGHTINGS}, got {kind!r}")
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(np.float64)
    present = counts > 0
    power = {"inverse": 1.0, "sqrt": 0.5, "none": 0.0}[kind]
    weights = np.zeros_like(counts)
    weights[present] = counts[present] ** -power
    weights *= counts.sum() / (weights * counts).sum()
    return {i: float(w) for i, w in enumerate(weights) if w > 0}


def _learning_rate(cfg: FitConfig, epoch: int) -> float:
    if epoch < cfg.head_epochs:
        return cfg.head_lr
    k = epoch - cfg.head_epochs
    return 0.5 * cfg.finetune_lr * (1 + math.cos(math.pi * k / max(1, cfg.finetune_epochs)))


def _compile(head: keras.Model, upper: keras.Model, cfg: FitConfig, epoch: int) -> None:
    set_upper_trainable(upper, trainable=epoch >= cfg.head_epochs)
    head.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=_learning_rate(cfg, epoch), weight_decay=cfg.weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def fit(
    head: keras.Model,
    upper: keras.Model,
    *,
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    val_labels: np.ndarray,
    cfg: FitConfig,
    checkpoint_dir: str,
    log: Callable[[str], None] = print,
) -> dict:
    """Train ``head`` in place, leave the best epoch's weights in it, return the history."""
    os.makedirs(checkpoint_dir, exist_ok=True)
    state_path = os.path.join(checkpoint_dir, "state.json")
    last_path = os.path.join(checkpoint_dir, "last.weights.h5")
    best_path = os.path.join(checkpoint_dir, "best.weights.h5")
    state = {"next_epoch": 0, "best_bacc": -1.0, "best_epoch": -1, "bad_epochs": 0, "history": [], "config": asdict(cfg)}
    if os.path.exists(state_path) and os.path.exists(last_path):
        with open(state_path) as fh:
            saved = json.load(fh)
        # Settings added after a checkpoint was written count as their defaults.
        saved_config = {k: v for k, v in asdict(FitConfig()).items() if k not in saved.get("config", {})}
        saved_config.update(saved.get("config", {}))
        if saved_config == asdict(cfg):
            state = saved
            head.load_weights(last_path)
            log(f"resuming training at epoch {state['next_epoch'] + 1}")
    total = cfg.head_epochs + cfg.finetune_epochs
    weights = class_weights(train_labels, cfg.class_weighting)
    val_x = np.asarray(val_features[:, 0], dtype=np.float32)
    n, views = train_features.shape[:2]
    compiled_for: str | None = None
    epoch = state["next_epoch"]
    while epoch < total and not (epoch >= cfg.head_epochs and state["bad_epochs"] >= cfg.patience):
        stage = "head" if epoch < cfg.head_epochs else "finetune"
        if compiled_for != stage:
            _compile(head, upper, cfg, epoch)
            compiled_for = stage
        lr = _learning_rate(cfg, epoch)
        head.optimizer.learning_rate.assign(lr)
        keras.utils.set_random_seed(cfg.seed + epoch)
        chosen = np.random.default_rng([cfg.seed, epoch]).integers(0, views, n)
        train_x = np.asarray(train_features[np.arange(n), chosen], dtype=np.float32)
        started = time.time()
        result = head.fit(
            train_x, train_labels, batch_size=cfg.batch_size, epochs=1, shuffle=True, class_weight=weights, verbose=0
        )
        del train_x
        val_logits = head.predict(val_x, batch_size=128, verbose=0)
        probs = softmax(val_logits)
        bacc = balanced_accuracy(val_labels, probs.argmax(1))
        auc = malignant_auc(val_labels, probs)
        row = {
            "epoch": epoch + 1,
            "stage": stage,
            "lr": lr,
            "loss": float(result.history["loss"][-1]),
            "train_accuracy": float(result.history["accuracy"][-1]),
            "val_balanced_accuracy": bacc,
            "val_malignant_auc": auc,
            "seconds": round(time.time() - started, 1),
        }
        improved = bacc > state["best_bacc"]
        if improved:
            state.update(best_bacc=bacc, best_epoch=epoch + 1, bad_epochs=0)
            head.save_weights(best_path)
        elif stage == "finetune":
            state["bad_epochs"] += 1
        log(
            f"epoch {epoch + 1}/{total} [{stage}] lr={lr:.2e} loss={row['loss']:.4f} "
            f"train_acc={row['train_accuracy']:.3f} val_bacc={bacc:.4f} val_auc={auc or 0:.4f} "
            f"{row['seconds']:.0f}s{' *best' if improved else ''}"
        )
        state["history"].append(row)
        epoch += 1
        state["next_epoch"] = epoch
        head.save_weights(last_path)
        with open(state_path, "w") as fh:
            json.dump(state, fh, indent=2)
    head.load_weights(best_path)
    log(f"best epoch {state['best_epoch']}: val balanced accuracy {state['best_bacc']:.4f}")
    return state
