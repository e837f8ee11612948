"""`python -m ml train-segmenter`: a U-Net on the MobileNetV2 alpha 0.35 encoder (TensorFlow).

    python -m ml train-segmenter --images DIR --masks DIR --out DIR [--epochs N --size HxW]
                                 [--metadata CSV] [--split CSV] [--limit N] [--export-only]

- Split: exactly the classifier's lesion-level split (the served bundle's split.csv, as
  `python -m ml segment-report` reads it): train on `train`, pick the epoch by `val` Dice, and
  `test` is only ever scored at export.
- Input: ml.preprocessing.preprocess, the one preprocessing function inference uses, at a
  height x width that keeps the 4:3 aspect and is divisible by 32; colour step shades of gray
  (colour constancy across dermatoscopes; CLAHE sharpens skin texture the mask must ignore).
- Augmentation, identical on the image and its mask: horizontal and vertical flips (90-degree
  turns would change a 4:3 shape); on the image only, light brightness / contrast / saturation /
  hue jitter, and sometimes a Gaussian blur or pixel noise. Images are resized once (ml.preprocessing.resize) and cached in memory; the
  flips commute with the resize, so the cache loses nothing.
- Loss: binary cross-entropy + soft Dice. The encoder's BatchNorm stays in inference mode
  (fine-tuning it on batch 16 collapses the features); the decoder's BatchNorm trains.
- Every epoch writes `last.weights.h5` and `state.json` (epoch, history, best); the best epoch by
  validation Dice also `best.weights.h5`. Running the same command again resumes after the last
  finished epoch (the learning rate follows the epoch's place on the schedule; Adam's moments
  restart). At the end (or with --export-only, e.g. to stop early on the best so far) the best
  weights are exported to ONNX with a parity check, scored with the serving code against the
  classical baseline, and packaged as a bundle (ml/training/segmentation_bundle.py).
TensorFlow is imported only here, lazily from ml/__main__.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import cv2
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from ml.data import Record, load_metadata, read_split_csv, records_in
from ml.preprocessing import PreprocessConfig, preprocess, resize

ENCODER_ALPHA = 0.35
# Encoder outputs the decoder joins, from 1/2 to 1/16 of the input; the bottleneck is 1/32.
SKIP_LAYERS: tuple[str, ...] = ("block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu",
                                "block_13_expand_relu")
BOTTLENECK_LAYER = "block_16_project"
DECODER_FILTERS: tuple[int, ...] = (64, 48, 32, 24)  # at 1/16, 1/8, 1/4, 1/2 of the input
TRAIN_FROM = "block_6_"  # encoder layers from here on train; the earlier ones stay frozen
DEFAULT_SIZE = (128, 160)
DEFAULT_COLOUR = "shades_of_gray"
OUTPUT_NAME = "probability"
THRESHOLD = 0.5  # provisional: packaging chooses it on validation (segmentation_bundle.select_threshold)
BATCH = 16
BLUR_P, NOISE_P = 0.15, 0.3  # from epoch 3 of seg-mnv2-ham10000-v1 on (see blur_or_noise)


def parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH, got {text!r}") from exc
    if height % 32 or width % 32 or height < 32 or width < 32:
        raise argparse.ArgumentTypeError(f"{text}: height and width must be multiples of 32")
    return height, width


# --- Data ---------------------------------------------------------------------------------

def mask_path(masks_dir: str, image_id: str) -> str:
    return os.path.join(masks_dir, f"{image_id}_segmentation.png")


def load_pairs(records: Sequence[Record], masks_dir: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 N x H x W x 3 at the model size, masks float32 N x H x W x 1 in [0, 1]).

    Both go through ml.preprocessing.resize, so a mask follows its image exactly (a portrait
    image is turned, and its mask with it)."""
    from ml.preprocessing import read_image

    images = np.empty((len(records), *size, 3), np.uint8)
    masks = np.empty((len(records), *size, 1), np.float32)
    for i, record in enumerate(records):
        image = read_image(record.path)
        mask = cv2.imread(mask_path(masks_dir, record.image_id), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise FileNotFoundError(f"no mask for {record.image_id} in {masks_dir}")
        if mask.shape != image.shape[:2]:
            mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
        images[i] = resize(image, size)
        masks[i, ..., 0] = resize(np.repeat(mask[..., None], 3, axis=2), size)[..., 0] / 255.0
    return images, masks


def jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light brightness / contrast / saturation / hue jitter (image only; the mask is unchanged)."""
    from ml.training.augment import colour_jitter

    return colour_jitter(img, rng, brightness=0.15, contrast=0.15, saturation=0.15, hue=5)


def blur_or_noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sometimes a defocused view (Gaussian blur) or sensor noise: lesions are found by their
    colour region, not only by their texture (a smooth, evenly coloured lesion is still one)."""
    if rng.random() < BLUR_P:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(1.0, 3.0)))
    if rng.random() < NOISE_P:
        noise = rng.normal(0.0, float(rng.uniform(2.0, 10.0)), img.shape)
        img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return img


def augment_pair(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if rng.random() < 0.5:
        img, mask = img[:, ::-1], mask[:, ::-1]
    if rng.random() < 0.5:
        img, mask = img[::-1], mask[::-1]
    return blur_or_noise(jitter(np.ascontiguousarray(img), rng), rng), np.ascontiguousarray(mask)


def batch_inputs(images: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    return np.stack([preprocess(img, config) for img in images])


# --- Model --------------------------------------------------------------------------------

def build_model(size: tuple[int, int], weights: str | None, *, train_from: str | None = TRAIN_FROM):
    """Image (N, H, W, 3) in [-1, 1] -> lesion probability (N, H, W, 1).

    The decoder joins the encoder's 1/16, 1/8, 1/4 and 1/2 outputs and predicts at half the input
    resolution; a last bilinear enlargement gives the input size (a lesion's outline is smooth at
    that scale, and a full-resolution convolution cost half of a training step on a 2-core CPU).
    Encoder layers before `train_from` stay frozen (their backward pass is the expensive one, at
    high resolution); None trains them all."""
    import keras

    from ml.training.backbone import build_backbone

    base = build_backbone(ENCODER_ALPHA, size, weights)
    encoder = keras.Model(base.input, [base.get_layer(n).output for n in (*SKIP_LAYERS, BOTTLENECK_LAYER)],
                          name="encoder")
    trainable = train_from is None
    for layer in encoder.layers:
        trainable = trainable or layer.name.startswith(train_from or "")
        layer.trainable = trainable and not isinstance(layer, keras.layers.BatchNormalization)
    image = keras.Input(shape=(*size, 3), name="input")
    *skips, x = encoder(image, training=False)  # BatchNorm in inference mode (see module doc)
    for i, (filters, skip) in enumerate(zip(DECODER_FILTERS, reversed(skips))):
        x = keras.layers.UpSampling2D(interpolation="bilinear", name=f"up{i}")(x)
        x = keras.layers.Concatenate(name=f"join{i}")([x, skip])
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"dec{i}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"dec{i}_bn")(x)
        x = keras.layers.ReLU(name=f"dec{i}_relu")(x)
    x = keras.layers.Conv2D(1, 1, name="logit")(x)
    x = keras.layers.UpSampling2D(interpolation="bilinear", name="to_input_size")(x)
    probability = keras.layers.Activation("sigmoid", name=OUTPUT_NAME)(x)
    return keras.Model(image, probability, name="skinportal_seg_unet_mnv2")


def bce_dice_loss(y_true, y_pred):
    from keras import ops

    eps = 1e-6
    y_pred = ops.clip(y_pred, eps, 1 - eps)
    bce = -ops.mean(y_true * ops.log(y_pred) + (1 - y_true) * ops.log(1 - y_pred), axis=(1, 2, 3))
    inter = ops.sum(y_true * y_pred, axis=(1, 2, 3))
    soft_dice = (2 * inter + 1) / (ops.sum(y_true, axis=(1, 2, 3)) + ops.sum(y_pred, axis=(1, 2, 3)) + 1)
    return bce + (1 - soft_dice)


def dice_scores(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image Dice of bool masks (N, H, W[, 1]); 1 where both are empty."""
    p, t = pred.reshape(len(pred), -1), truth.reshape(len(truth), -1)
    inter, total = (p & t).sum(1), p.sum(1) + t.sum(1)
    return np.where(total == 0, 1.0, 2 * inter / np.maximum(total, 1))


def predict(model, images: np.ndarray, config: PreprocessConfig, batch: int = 32) -> np.ndarray:
    out = [np.asarray(model.predict_on_batch(batch_inputs(images[i : i + batch], config)))
           for i in range(0, len(images), batch)]
    return np.concatenate(out)


def learning_rate(epoch: int, epochs: int, peak: float) -> float:
    """One warm-up epoch at peak / 3, then cosine from `peak` to peak / 50."""
    if epoch == 0:
        return peak / 3
    progress = (epoch - 1) / max(1, epochs - 1)
    return float(peak / 50 + (peak - peak / 50) * 0.5 * (1 + np.cos(np.pi * progress)))


# --- Training -----------------------------------------------------------------------------

def configure_threads(intra: int, inter: int = 1) -> None:
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        pass  # already initialised (tests): keep its settings
    cv2.setNumThreads(1)


def read_state(out: str) -> dict:
    path = os.path.join(out, "state.json")
    if os.path.isfile(path):
        with open(path) as fh:
            return json.load(fh)
    return {"epochs_done": 0, "history": [], "best_epoch": None, "best_val_dice": -1.0}


def write_state(out: str, state: dict) -> None:
    tmp = os.path.join(out, "state.json.tmp")
    with open(tmp, "w") as fh:
        json.dump(state, fh, indent=2)
    os.replace(tmp, os.path.join(out, "state.json"))  # atomic: a killed run leaves a whole file


def train(*, train_images: np.ndarray, train_masks: np.ndarray, val_images: np.ndarray, val_masks: np.ndarray,
          config: PreprocessConfig, out: str, epochs: int, weights: str | None, peak_lr: float = 1e-3,
          seed: int = 0, steps: int | None = None, log=print) -> dict:
    """Train (resuming from `out` when it holds a run) and return the state."""
    import keras

    os.makedirs(out, exist_ok=True)
    state = read_state(out)
    model = build_model(config.height_width, weights)
    if state["epochs_done"] and os.path.isfile(os.path.join(out, "last.weights.h5")):
        model.load_weights(os.path.join(out, "last.weights.h5"))
        log(f"resuming after epoch {state['epochs_done']} (best val Dice {state['best_val_dice']:.4f} "
            f"at epoch {state['best_epoch']})")
    optimizer = keras.optimizers.Adam(learning_rate=peak_lr)
    model.compile(optimizer=optimizer, loss=bce_dice_loss)
    val_truth = val_masks > 0.5
    n = len(train_images)
    steps = steps or int(np.ceil(n / BATCH))
    for epoch in range(state["epochs_done"], epochs):
        rng = np.random.default_rng(seed * 1000 + epoch)
        lr = learning_rate(epoch, epochs, peak_lr)
        optimizer.learning_rate.assign(lr)
        order = rng.permutation(n)
        started, losses = time.time(), []
        for step in range(steps):
            idx = order[(step * BATCH) % n:][:BATCH]
            pairs = [augment_pair(train_images[i], train_masks[i], rng) for i in idx]
            x = batch_inputs(np.stack([p[0] for p in pairs]), config)
            y = np.stack([p[1] for p in pairs]).astype(np.float32)
            losses.append(float(model.train_on_batch(x, y)))
            if step % 50 == 0:
                log(f"epoch {epoch + 1} step {step}/{steps} loss {np.mean(losses[-50:]):.4f} "
                    f"{(step + 1) * BATCH / (time.time() - started):.1f} img/s")
        train_seconds = time.time() - started
        prob = predict(model, val_images, config)
        val_dice = dice_scores(prob > THRESHOLD, val_truth)
        row = {"epoch": epoch + 1, "lr": lr, "loss": round(float(np.mean(losses)), 5),
               "val_dice_mean": round(float(val_dice.mean()), 4),
               "val_dice_median": round(float(np.median(val_dice)), 4),
               "train_seconds": round(train_seconds, 1), "val_seconds": round(time.time() - started - train_seconds, 1),
               "images_per_second": round(steps * BATCH / train_seconds, 1)}
        model.save_weights(os.path.join(out, "last.weights.h5"))
        if row["val_dice_mean"] > state["best_val_dice"]:
            model.save_weights(os.path.join(out, "best.weights.h5"))
            state["best_val_dice"], state["best_epoch"] = row["val_dice_mean"], epoch + 1
        state["history"].append(row)
        state["epochs_done"] = epoch + 1
        write_state(out, state)
        log(f"epoch {epoch + 1}/{epochs}: {row}; best {state['best_val_dice']:.4f} at epoch {state['best_epoch']}")
    return state


# --- CLI ----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    from ml.segmentation.report import DEFAULT_IMAGES, DEFAULT_MASKS, DEFAULT_METADATA, sample

    parser = argparse.ArgumentParser(prog="python -m ml train-segmenter", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=DEFAULT_IMAGES)
    parser.add_argument("--masks", default=DEFAULT_MASKS)
    parser.add_argument("--metadata", default=DEFAULT_METADATA)
    parser.add_argument("--out", required=True, help="run folder (checkpoints, state.json); re-run to resume")
    parser.add_argument("--bundle", help="bundle folder to write (default: OUT/bundle)")
    parser.add_argument("--version", default="seg-mnv2-ham10000-v1")
    parser.add_argument("--split", help="split.csv to follow (default: the served classifier bundle's)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--size", type=parse_size, default=DEFAULT_SIZE, help="HEIGHTxWIDTH, multiples of 32")
    parser.add_argument("--colour", default=DEFAULT_COLOUR)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--limit", type=int, help="at most N training (and N/4 validation) images (probes)")
    parser.add_argument("--steps", type=int, help="steps per epoch (default: one pass over the training images)")
    parser.add_argument("--weights", help="encoder ImageNet weights (default: ../shared/data/weights); 'none' = random")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--export-only", action="store_true", help="package the best checkpoint now (stop early)")
    parser.add_argument("--no-export", action="store_true")
    parser.add_argument("--skip-scores", action="store_true", help="package without the segment-report figures")
    args = parser.parse_args(argv)

    from ml.manifest import default_model_dir
    from ml.training.backbone import default_weights_path
    from ml.training.segmentation_bundle import package_bundle

    def log(message: str) -> None:
        print(f"{datetime.now(UTC):%H:%M:%S} {message}", flush=True)

    configure_threads(args.threads)
    config = PreprocessConfig(size=args.size[0], width=args.size[1], colour=args.colour)
    split_path = args.split or os.path.join(default_model_dir(), "split.csv")
    split_of = read_split_csv(split_path)
    records = [r for r in load_metadata(args.metadata, [args.images]) if r.image_id in split_of]
    by_split = {s: sorted(records_in(records, split_of, s), key=lambda r: r.image_id) for s in ("train", "val", "test")}
    if args.limit:
        by_split = {"train": sample(by_split["train"], args.limit), "val": sample(by_split["val"], max(8, args.limit // 4)),
                    "test": sample(by_split["test"], max(8, args.limit // 4))}
    weights = None if args.weights == "none" else (args.weights or default_weights_path(ENCODER_ALPHA))
    if args.weights != "none" and not weights:
        print("error: ImageNet MobileNetV2 alpha 0.35 weights not found; pass --weights PATH or --weights none",
              file=sys.stderr)
        return 2
    log(f"split {split_path}: " + ", ".join(f"{k} {len(v)}" for k, v in by_split.items())
        + f"; input {config.describe()}, colour {config.colour}")
    started = time.time()
    val_images, val_masks = load_pairs(by_split["val"], args.masks, config.height_width)
    state = read_state(args.out)
    if not args.export_only:
        train_images, train_masks = load_pairs(by_split["train"], args.masks, config.height_width)
        log(f"loaded {len(train_images)} + {len(val_images)} images in {time.time() - started:.0f} s")
        state = train(train_images=train_images, train_masks=train_masks, val_images=val_images, val_masks=val_masks,
                      config=config, out=args.out, epochs=args.epochs, weights=weights, peak_lr=args.lr,
                      steps=args.steps, log=log)
    if args.no_export:
        return 0
    best = os.path.join(args.out, "best.weights.h5")
    if not os.path.isfile(best):
        print(f"error: no checkpoint in {args.out}", file=sys.stderr)
        return 2
    command = ("python -m ml train-segmenter --out RUN --epochs "
               f"{args.epochs} --size {config.describe()} --colour {config.colour} --lr {args.lr:g}"
               + (f" --steps {args.steps}" if args.steps else "")
               + (f" --limit {args.limit}" if args.limit else ""))
    package_bundle(bundle=args.bundle or os.path.join(args.out, "bundle"), version=args.version,
                   config=config, state=state, weights_path=best, parity_images=val_images[:16],
                   split_path=split_path, records_by_split={k: v for k, v in by_split.items() if k != "train"},
                   masks_dir=args.masks, command=command, train_count=len(by_split["train"]),
                   skip_scores=args.skip_scores, log=log)
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
