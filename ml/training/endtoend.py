"""End-to-end fine-tuning of the whole MobileNetV2 on freshly augmented images.

Every layer trains (BatchNorm statistics stay frozen: batches of 32 from an imbalanced set
would wreck the ImageNet statistics); each epoch draws a new random view of every image in a
thread pool (OpenCV releases the GIL, so both cores stay busy beside TensorFlow). Two AdamW
optimizers give the backbone a lower learning rate than the head; both warm up linearly, then
follow a cosine decay. An exponential moving average (EMA) of the weights is kept, and each
epoch both the raw and the averaged weights are scored on validation; the best by the selection
rule (balanced accuracy, or balanced accuracy plus malignant ROC AUC) is kept, with early stopping.
Optional mixup blends image pairs within a batch, their targets and loss weights by the same share.

Class imbalance is handled in two halves: images are drawn with per-class probability
proportional to sqrt(class count), and each image's loss is weighted by 1/sqrt(class count)
(normalised), so every class weighs the same in expectation with less gradient noise than
either extreme alone. What goes into a batch (draws, views, targets, weights, mixup) is
`ml/training/batching.py`; this module is the model, the loop and its checkpoints.

Resumable: after every epoch the weights, both optimizers' state, the EMA weights and the loop
state are written atomically; the data order and augmentation of epoch e are a pure function
of (seed, e), and the dropout generator's state is part of the saved variables. Re-running the
same command continues at the next epoch, in the same process or a fresh one days later.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace

import cv2
import keras
import numpy as np

from ml.classes import CLASSES
from ml.data import Record
from ml.metrics import balanced_accuracy, malignant_auc, softmax
from ml.preprocessing import PreprocessConfig, preprocess, read_image
from ml.training import steps
from ml.training.augment import AUGMENTATIONS, MASKED_AUGMENTATIONS, with_mask
from ml.training.batching import batches, confirmation_weights, epoch_order, loss_weights
from ml.training.steps import Batch

SAMPLINGS: tuple[str, ...] = ("natural", "sqrt", "balanced")
# What picks the kept epoch on validation: balanced accuracy alone, or balanced accuracy plus the
# malignant ROC AUC (the runs so far peaked on balanced accuracy at epoch 8 while the AUC of the
# averaged weights went on rising for several epochs; the sum weighs both).
SELECTIONS: tuple[str, ...] = ("balanced_accuracy", "balanced_accuracy+auc")
KEPT_WEIGHTS: tuple[str, ...] = ("ema", "raw")


@dataclass(frozen=True)
class EndToEndConfig:
    epochs: int = 30
    warmup_epochs: int = 1
    head_lr: float = 1e-3
    backbone_lr: float = 1e-4
    weight_decay: float = 1e-2
    batch_size: int = 32
    dropout: float = 0.3
    label_smoothing: float = 0.0
    sampling: str = "sqrt"
    # How far the loss weights take the drawn class mix toward balanced: 1 = all the way (equal
    # class weight in expectation), 0 = no loss weights (the drawn mix as it is; the class-prior
    # adjustment after training can then correct the rest).
    balance: float = 1.0
    ema_decay: float = 0.999
    patience: int = 6
    seed: int = 20261125
    # Beta(alpha, alpha) mixup of image pairs within a batch (targets and loss weights mixed alike);
    # 0 = off. Meant against the rare classes being memorised under oversampling.
    mixup: float = 0.0
    selection: str = "balanced_accuracy"
    # Loss weight of an image whose diagnosis was not confirmed by histopathology (dx_type other
    # than "histo"), relative to a confirmed one of the same class; each class's mean weight is
    # kept, so the class balance is unchanged. 1 = all images alike.
    unconfirmed_weight: float = 1.0
    # Version of the trained bundle whose weights the run starts from (a second, shorter run over
    # an end-to-end model: a lower rate and the weight average, as in SWA); None = the ImageNet
    # backbone and a fresh head. Part of the config so a checkpoint is never resumed onto another start.
    init_from: str | None = None
    # The training views (ml.training.augment.AUGMENTATIONS): "full" (random resized crop, warps,
    # cutout, ...) or "light" (flips, turns, a little colour jitter), e.g. for a short last run
    # from a trained bundle on views closer to what the model sees at inference.
    augmentation: str = "full"
    # Distillation: the version of a trained bundle (the teacher) whose calibrated answers, averaged
    # over each training image and its mirror image, make up `distill_weight` of every target
    # (the label the rest). 0 = the labels alone.
    distill_from: str | None = None
    distill_weight: float = 0.0
    # Auxiliary lesion-mask target: a 1x1 convolution on the last feature map learns, from the
    # HAM10000 segmentation masks, which cells of the grid hold the lesion (binary cross-entropy on
    # each cell's lesion fraction), weighted `mask_weight` against the diagnosis loss; the head is
    # used only in training, the exported network is unchanged. 0 = off.
    mask_weight: float = 0.0
    # A second term of the training loss: the binary cross-entropy of malignant vs benign (the
    # softmax's mass on mel, bcc and akiec against the target's), weighted `malignant_weight`
    # against the diagnosis loss; aimed at the malignancy flag's ranking. 0 = off.
    malignant_weight: float = 0.0
    # A fixed epoch instead of the best one on validation: 0 = pick on validation; N = train the
    # `epochs`-long schedule up to epoch N and keep that epoch's `keep_weights` (the averaged or the
    # raw ones). For a run with no validation images, e.g. the final network of a cross-fit, whose
    # folds said which epoch their runs of the same recipe kept.
    keep_epoch: int = 0
    keep_weights: str = "ema"

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self.mixup < 0:
            raise ValueError(f"mixup must be >= 0, got {self.mixup}")
        if not 0 < self.unconfirmed_weight <= 1:
            raise ValueError(f"unconfirmed_weight must be in (0, 1], got {self.unconfirmed_weight}")
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {tuple(AUGMENTATIONS)}, got {self.augmentation!r}")
        if not 0 <= self.distill_weight <= 1 or (self.distill_weight > 0) != (self.distill_from is not None):
            raise ValueError(f"distill_weight must be in (0, 1] with a teacher and 0 without one, got "
                             f"{self.distill_weight} with teacher {self.distill_from!r}")
        if self.malignant_weight < 0:
            raise ValueError(f"malignant_weight must be >= 0, got {self.malignant_weight}")
        if not 0 <= self.keep_epoch <= self.epochs or self.keep_weights not in KEPT_WEIGHTS:
            raise ValueError(f"keep_epoch must be between 0 and epochs ({self.epochs}) and keep_weights one of "
                             f"{KEPT_WEIGHTS}; got {self.keep_epoch} and {self.keep_weights!r}")
        if self.mask_weight < 0 or (self.mask_weight > 0 and self.augmentation not in MASKED_AUGMENTATIONS):
            raise ValueError(f"mask_weight must be >= 0, and a lesion-mask target needs views a mask can follow "
                             f"{MASKED_AUGMENTATIONS}; got {self.mask_weight} with {self.augmentation!r}")


# --- The model -----------------------------------------------------------------------------


def build_model(base: keras.Model, *, dropout: float, seed: int, n_classes: int = len(CLASSES)) -> keras.Model:
    """Image -> logits: the whole backbone (BatchNorm frozen), pooling, dropout, dense."""
    for layer in base.layers:
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
    image = keras.Input(shape=base.input.shape[1:], name="input")
    x = base(image)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(x)
    logits = keras.layers.Dense(n_classes, name="logits")(x)
    return keras.Model(image, logits, name="skinportal_mobilenetv2")


def with_lesion_head(model: keras.Model) -> keras.Model:
    """The training graph of a lesion-mask target: image -> (logits, lesion logits per cell of the
    last feature map), sharing every layer with `model`. The head's kernel starts at zero, so its
    first gradients leave the trained backbone alone until it has learnt something."""
    features = model.get_layer("pool").input
    lesion = keras.layers.Conv2D(1, 1, kernel_initializer="zeros", name="lesion_mask")(features)
    return keras.Model(model.input, [model.output, lesion], name="skinportal_mobilenetv2_with_lesion_mask")


def load_initial_weights(
    model: keras.Model, bundle_dir: str, config: PreprocessConfig, *, other_size: bool = False
) -> None:
    """Copy a trained bundle's weights (its model.keras) into the freshly built `model`. Refuses (ValueError) a bundle whose preprocessing or layer shapes differ:
    weights learned on other inputs would start the run from the wrong place without a word.

    `other_size` lets the bundle's input size differ (colour, scaling and order must still match):
    the network is convolutional up to its global pooling, so the weights fit any size, and a
    fine-tune at the new size adapts them to the scale at which lesions now appear (FixRes,
    Touvron et al. 2019). A run that crops to the field of view may start from one that did not.
    """
    from ml.manifest import load_manifest

    manifest = load_manifest(bundle_dir)
    trained_on = PreprocessConfig.from_dict(manifest["preprocessing"])
    if other_size:
        trained_on = replace(trained_on, size=config.size, width=config.width)
    if config.field_of_view:
        # A run may add the crop to its start's preprocessing: it changes framed images only,
        # which the start never saw cropped and the run is there to learn.
        trained_on = replace(trained_on, field_of_view=True)
    if trained_on != config:
        raise ValueError(f"{bundle_dir} was trained on {manifest['preprocessing']}, this run uses {config.to_dict()}")
    trained = keras.models.load_model(os.path.join(bundle_dir, "model.keras"), compile=False)
    shapes = [tuple(w.shape) for w in model.get_weights()]
    trained_shapes = [tuple(w.shape) for w in trained.get_weights()]
    if shapes != trained_shapes:
        raise ValueError(f"{bundle_dir}'s model.keras does not match this architecture "
                         f"({len(trained_shapes)} weight arrays vs {len(shapes)}, or other shapes)")
    model.set_weights(trained.get_weights())


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ~0 to `peak` over `warmup_steps`, then cosine decay to 0 at `total_steps`."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int) -> None:
        self.peak, self.warmup_steps, self.total_steps = float(peak), int(warmup_steps), int(total_steps)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warm = self.peak * (step + 1.0) / float(max(1, self.warmup_steps))
        progress = (step - self.warmup_steps) / float(max(1, self.total_steps - self.warmup_steps))
        cosine = 0.5 * self.peak * (1.0 + keras.ops.cos(math.pi * keras.ops.clip(progress, 0.0, 1.0)))
        return keras.ops.where(step < self.warmup_steps, warm, cosine)

    def get_config(self) -> dict:
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


# --- Checkpoints ---------------------------------------------------------------------------


def save_arrays(path: str, arrays: Sequence[np.ndarray]) -> None:
    tmp = path + ".tmp.npz"
    np.savez(tmp, *arrays)
    os.replace(tmp, path)


def load_arrays(path: str) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def _write_json(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)


# --- The loop ------------------------------------------------------------------------------


class Trainer:
    """Owns the model, optimizers, EMA and checkpoints of one end-to-end run; the gradient step
    itself is the Keras backend's (ml.training.steps)."""

    def __init__(self, model: keras.Model, base: keras.Model, cfg: EndToEndConfig, *, steps_per_epoch: int,
                 class_weights: np.ndarray) -> None:
        self.model, self.cfg = model, cfg
        # What the step trains: the model itself, or the model with its lesion-mask head.
        self.train_model = with_lesion_head(model) if cfg.mask_weight > 0 else model
        base_ids = {id(v) for v in base.trainable_variables}
        self.backbone_vars = [v for v in self.train_model.trainable_variables if id(v) in base_ids]
        self.head_vars = [v for v in self.train_model.trainable_variables if id(v) not in base_ids]
        warmup, total = cfg.warmup_epochs * steps_per_epoch, cfg.epochs * steps_per_epoch
        self.backbone_opt = keras.optimizers.AdamW(WarmupCosine(cfg.backbone_lr, warmup, total), weight_decay=cfg.weight_decay)
        self.head_opt = keras.optimizers.AdamW(WarmupCosine(cfg.head_lr, warmup, total), weight_decay=cfg.weight_decay)
        self.backbone_opt.build(self.backbone_vars)
        self.head_opt.build(self.head_vars)
        self.trainable = self.backbone_vars + self.head_vars
        # Copies of the values: under TensorFlow `v.value` is the tf.Variable itself, and a
        # keras.Variable made from it is that same variable (an "average" that is the live weights).
        self.ema = [keras.Variable(np.array(keras.ops.convert_to_numpy(v.value)), trainable=False, name=f"ema_{i}")
                    for i, v in enumerate(self.trainable)]
        self.step = keras.Variable(np.int32(0), dtype="int32", trainable=False, name="ema_step")
        self.class_weights = np.asarray(class_weights, dtype=np.float32)
        # The (height, width) of the lesion-mask target: the last feature map's grid.
        self.mask_grid = tuple(self.train_model.outputs[1].shape[1:3]) if cfg.mask_weight > 0 else None
        self._run_epoch = steps.epoch_runner(self)

    def train_epoch(self, batch_iter: Iterator[Batch]) -> float:
        return float(np.mean(self._run_epoch(batch_iter)))

    def logits(self, x: np.ndarray, batch: int = 64) -> np.ndarray:
        return np.asarray(self.model.predict(x, batch_size=batch, verbose=0))

    def swap_ema(self) -> None:
        """Exchange the live weights and the averaged ones (call twice to undo)."""
        for average, v in zip(self.ema, self.trainable):
            live = keras.ops.convert_to_numpy(v.value)
            v.assign(average.value)
            average.assign(live)

    def _state_variables(self) -> list:
        """Everything a resumed run needs, in a fixed order."""
        return [*self.train_model.variables, *self.backbone_opt.variables, *self.head_opt.variables, *self.ema, self.step]

    def state_arrays(self) -> list[np.ndarray]:
        return [np.asarray(keras.ops.convert_to_numpy(v.value)) for v in self._state_variables()]

    def restore(self, arrays: list[np.ndarray]) -> None:
        variables = self._state_variables()
        if len(arrays) != len(variables):
            raise ValueError(f"checkpoint holds {len(arrays)} arrays, this model needs {len(variables)}")
        for v, value in zip(variables, arrays):
            v.assign(np.asarray(value).astype(v.dtype))  # checkpoints before JAX kept the step as int64


PRIOR_TAUS: tuple[float, ...] = tuple(k / 10 for k in range(-10, 11))


def prior_bias(train_labels: np.ndarray, tau: float) -> np.ndarray:
    """Logit shift -tau * log(training class frequency): tau > 0 favours the rare classes."""
    counts = np.bincount(train_labels, minlength=len(CLASSES)).astype(np.float64)
    return (-tau * np.log(np.maximum(counts, 1) / counts.sum())).astype(np.float32)


def evaluate(trainer: Trainer, val_x: np.ndarray, val_y: np.ndarray, train_y: np.ndarray) -> dict:
    """Validation figures; `selection` is what picks the best epoch. When training stopped short of
    balanced (balance < 1), that is the balanced accuracy after the best class-prior shift, the
    adjustment finalize applies, so an epoch is not judged by a bias that will be corrected."""
    logits = trainer.logits(val_x)
    probs = softmax(logits)
    result = {
        "balanced_accuracy": balanced_accuracy(val_y, probs.argmax(1)),
        "malignant_auc": malignant_auc(val_y, probs),
    }
    judged = result["balanced_accuracy"]
    if trainer.cfg.balance < 1.0:
        judged = result["balanced_accuracy_prior_adjusted"] = max(
            balanced_accuracy(val_y, (logits + prior_bias(train_y, tau)).argmax(1)) for tau in PRIOR_TAUS)
    result["selection"] = judged
    if trainer.cfg.selection == "balanced_accuracy+auc":
        result["selection"] = judged + (result["malignant_auc"] or 0.0)
    return result


def evaluate_both(trainer: Trainer, val_x: np.ndarray | None, val_y: np.ndarray,
                  train_y: np.ndarray) -> tuple[dict | None, dict | None]:
    """Validation figures of the raw and of the averaged (EMA) weights; (None, None) without validation."""
    if val_x is None:
        return None, None
    raw = evaluate(trainer, val_x, val_y, train_y)
    trainer.swap_ema()
    averaged = evaluate(trainer, val_x, val_y, train_y)
    trainer.swap_ema()
    return raw, averaged


def _best_score(best: dict) -> float:
    # Checkpoints written before `score` existed kept the balanced accuracy they were chosen by.
    return best.get("score", best["balanced_accuracy"])


def load_images(records: Sequence[Record], log: Callable[[str], None], masks_dir: str | None = None) -> list[np.ndarray]:
    """The training images (RGB uint8); with `masks_dir`, each with its lesion mask as a fourth channel."""
    from ml.training.segmentation import mask_path

    started = time.time()
    images = [read_image(r.path) for r in records]
    if masks_dir is not None:
        for i, record in enumerate(records):
            mask = cv2.imread(mask_path(masks_dir, record.image_id), cv2.IMREAD_GRAYSCALE)
            if mask is None:
                raise FileNotFoundError(f"no lesion mask for {record.image_id} in {masks_dir}")
            images[i] = with_mask(images[i], mask)
    log(f"decoded {len(images)} images{' and their lesion masks' if masks_dir else ''} in {time.time() - started:.0f}s")
    return images


def train_end_to_end(
    model: keras.Model,
    base: keras.Model,
    *,
    train: Sequence[Record],
    val: Sequence[Record],
    config: PreprocessConfig,
    cfg: EndToEndConfig,
    checkpoint_dir: str,
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
    finish_now: bool = False,
    workers: int = 2,
    teacher_answers: Callable[[], np.ndarray] | None = None,
    masks_dir: str | None = None,
) -> dict:
    """Train `model` in place; leave the best epoch's weights in it and return the loop state.

    `teacher_answers` (when distilling) gives each training image's teacher probabilities; it is
    called only when an epoch is left to train.
    `masks_dir` holds the training images' lesion masks (`<image_id>_segmentation.png`), needed
    when `cfg.mask_weight` > 0.

    `stop_after` ends this call after that many epochs (the checkpoint is written as usual):
    it is how the tests interrupt a run. `finish_now` ends a resumed run where it stands, as an
    early stop would: no further epoch, the best epoch so far is the result (recorded in the
    state as `ended_by_operator_after`).
    """
    cv2.setNumThreads(1)  # parallelism comes from the worker threads, one image each
    os.makedirs(checkpoint_dir, exist_ok=True)
    state_path = os.path.join(checkpoint_dir, "state.json")
    last_path = os.path.join(checkpoint_dir, "last.npz")
    best_path = os.path.join(checkpoint_dir, "best.npz")

    train_y = np.array([r.label for r in train])
    val_y = np.array([r.label for r in val])
    steps = len(train) // cfg.batch_size
    if steps < 1:
        raise ValueError(f"{len(train)} training images do not fill one batch of {cfg.batch_size}")
    class_weights = loss_weights(train_y, cfg.sampling, cfg.balance)
    image_weights = class_weights[train_y] * confirmation_weights(train_y, [r.dx_type for r in train],
                                                                   cfg.unconfirmed_weight)
    trainer = Trainer(model, base, cfg, steps_per_epoch=steps, class_weights=class_weights)

    state = {"next_epoch": 0, "best": None, "bad_epochs": 0, "history": [], "config": asdict(cfg),
             "preprocessing": config.to_dict()}
    if os.path.exists(state_path) and (os.path.exists(last_path) or os.path.exists(best_path)):
        with open(state_path) as fh:
            saved = json.load(fh)
        saved_config = checkpoint_config(saved)
        # A run trained on another machine (a lent GPU) comes back as state.json and best.npz
        # alone: without last.npz it can be packaged (finished, or ended with --finish-now), not continued.
        done = saved["next_epoch"] >= (cfg.keep_epoch or cfg.epochs) or (
            not cfg.keep_epoch and saved["bad_epochs"] >= cfg.patience)
        if saved_config != asdict(cfg) or saved.get("preprocessing") != config.to_dict():
            log("checkpoint found for other settings: starting afresh")
        elif os.path.exists(last_path) or done or finish_now:
            saved["config"] = saved_config
            if os.path.exists(last_path):
                trainer.restore(load_arrays(last_path))
            state = saved
            log(f"resuming end-to-end training at epoch {state['next_epoch'] + 1}")
        else:  # starting afresh would overwrite the only copy of its best epoch
            raise ValueError(f"{checkpoint_dir} holds an unfinished run without last.npz (trained elsewhere?): it "
                             "cannot be continued here; package its best epoch with --finish-now")

    if not finish_now:
        state.pop("ended_by_operator_after", None)  # run again without it: training goes on
    if finish_now:
        if state["best"] is None:
            raise ValueError("--finish-now needs at least one finished epoch to keep")
        state.setdefault("ended_by_operator_after", state["next_epoch"])
        log(f"ending the run after epoch {state['next_epoch']} as asked (--finish-now)")
        stop_after = 0
    if cfg.mask_weight > 0 and masks_dir is None:
        raise ValueError("a lesion-mask target (mask_weight > 0) needs the masks' folder")
    images = load_images(train, log, masks_dir if cfg.mask_weight > 0 else None)
    teacher = None
    if cfg.distill_weight > 0 and not run_finished(state, cfg) and (stop_after is None or stop_after > 0):
        if teacher_answers is None:
            raise ValueError(f"distillation from {cfg.distill_from} needs the teacher's answers")
        teacher = teacher_answers()
        if teacher.shape != (len(train), len(CLASSES)):
            raise ValueError(f"the teacher answered {teacher.shape}, not one row per training image")
    if not val and not cfg.keep_epoch:
        raise ValueError("no validation images to pick the best epoch on: give a fixed epoch (keep_epoch)")
    val_x = np.stack([preprocess(read_image(r.path), config) for r in val]) if val else None
    run_epochs = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while not run_finished(state, cfg):
            if stop_after is not None and run_epochs >= stop_after:
                break
            epoch = state["next_epoch"]
            started = time.time()
            order = epoch_order(train_y, cfg, epoch)
            loss = trainer.train_epoch(batches(images, train_y, order, config=config, cfg=cfg,
                                               image_weights=image_weights, epoch=epoch, pool=pool,
                                               teacher=teacher, mask_grid=trainer.mask_grid))
            train_seconds = time.time() - started
            raw, averaged = evaluate_both(trainer, val_x, val_y, train_y)
            row = {"epoch": epoch + 1, "loss": loss, "val_raw": raw, "val_ema": averaged,
                   "train_seconds": round(train_seconds, 1),
                   "train_images_per_second": round(steps * cfg.batch_size / train_seconds, 1),
                   "seconds": round(time.time() - started, 1)}
            if cfg.keep_epoch:  # the epoch and weights were chosen before the run
                kind, score = cfg.keep_weights, None
                improved = epoch + 1 == cfg.keep_epoch
            else:
                kind, score = max((("raw", raw["selection"]), ("ema", averaged["selection"])), key=lambda t: t[1])
                improved = state["best"] is None or score > _best_score(state["best"])
            if improved:
                if kind == "ema":
                    trainer.swap_ema()
                save_arrays(best_path, [keras.ops.convert_to_numpy(v.value) for v in model.variables])
                if kind == "ema":
                    trainer.swap_ema()
                chosen = (raw if kind == "raw" else averaged) or {}
                state["best"] = {"epoch": epoch + 1, "weights": kind, "score": score,
                                 "selection": f"fixed epoch {cfg.keep_epoch}" if cfg.keep_epoch else cfg.selection,
                                 "balanced_accuracy": chosen.get("balanced_accuracy"),
                                 "malignant_auc": chosen.get("malignant_auc")}
                state["bad_epochs"] = 0
            elif epoch >= cfg.warmup_epochs:
                state["bad_epochs"] += 1
            figures = (f" val_bacc raw={raw['balanced_accuracy']:.4f} ema={averaged['balanced_accuracy']:.4f} "
                       f"val_auc raw={raw['malignant_auc'] or 0:.4f} ema={averaged['malignant_auc'] or 0:.4f}"
                       if raw else " (no validation images)")
            marker = "" if not improved else f" *kept ({kind}, fixed epoch)" if cfg.keep_epoch else f" *best ({kind})"
            log(f"epoch {epoch + 1}/{cfg.epochs} loss={loss:.4f}{figures} {row['train_images_per_second']:.1f} img/s "
                f"{row['seconds']:.0f}s{marker}")
            state["history"].append(row)
            state["next_epoch"] = epoch + 1
            save_arrays(last_path, trainer.state_arrays())
            _write_json(state_path, state)
            run_epochs += 1
    if os.path.exists(best_path):
        for v, value in zip(model.variables, load_arrays(best_path)):
            v.assign(value)
    if state["best"]:
        best = state["best"]
        figures = (f": val balanced accuracy {best['balanced_accuracy']:.4f}, malignant AUC "
                   f"{best.get('malignant_auc') or 0:.4f}" if best.get("balanced_accuracy") is not None else "")
        log(f"best epoch {best['epoch']} ({best['weights']} weights, by {best.get('selection', 'balanced_accuracy')})"
            f"{figures}")
    state["finished"] = run_finished(state, cfg)
    return state


def checkpoint_config(state: dict) -> dict:
    """A saved loop state's settings; settings added after it was written count as their defaults."""
    return asdict(EndToEndConfig()) | state.get("config", {})


def run_finished(state: dict, cfg: EndToEndConfig) -> bool:
    """Whether a run's loop state needs no further epoch: its planned end (its fixed epoch, if it
    keeps one), early stopping, or --finish-now."""
    if cfg.keep_epoch:
        return state["next_epoch"] >= cfg.keep_epoch or "ended_by_operator_after" in state
    return (state["next_epoch"] >= cfg.epochs or state["bad_epochs"] >= cfg.patience
            or "ended_by_operator_after" in state)
