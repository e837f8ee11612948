"""The trained segmenter's bundle (`python -m ml train-segmenter`, after training or with
--export-only): the best weights exported to ONNX with a parity check, the mask threshold chosen on
validation exactly as serving applies it, the trained model and the classical baseline scored with
segment-report's code, and manifest.json / metrics.json written beside model.onnx.

Training itself (data, augmentation, the U-Net, the resumable loop) is ml/training/segmentation.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from ml.data import Record
from ml.preprocessing import PreprocessConfig
from ml.training.segmentation import (
    BATCH,
    BLUR_P,
    BOTTLENECK_LAYER,
    DECODER_FILTERS,
    ENCODER_ALPHA,
    NOISE_P,
    OUTPUT_NAME,
    SKIP_LAYERS,
    THRESHOLD,
    TRAIN_FROM,
    batch_inputs,
    build_model,
)


def export_onnx(model, path: str, config: PreprocessConfig, sample: np.ndarray) -> float:
    """Write the ONNX graph (output renamed to OUTPUT_NAME) and return the largest |Keras - ONNX|
    probability difference on `sample` (uint8 images at the model size)."""
    import onnx

    from ml.training.onnx_export import keras_to_onnx, training_session

    proto = onnx.load_from_string(keras_to_onnx(model))
    old = proto.graph.output[0].name
    if old != OUTPUT_NAME:
        for node in proto.graph.node:
            node.output[:] = [OUTPUT_NAME if o == old else o for o in node.output]
        proto.graph.output[0].name = OUTPUT_NAME
    onnx.checker.check_model(proto)
    with open(path, "wb") as fh:
        fh.write(proto.SerializeToString())
    x = batch_inputs(sample, config)
    session = training_session(path)
    onnx_prob = session.run([OUTPUT_NAME], {session.get_inputs()[0].name: x})[0]
    keras_prob = model(x, training=False).numpy()
    return float(np.abs(onnx_prob - keras_prob).max())


def package_bundle(*, bundle: str, version: str, config: PreprocessConfig, state: dict,
                   weights_path: str, parity_images: np.ndarray, split_path: str, records_by_split: dict,
                   masks_dir: str, command: str, train_count: int, skip_scores: bool = False, log=print) -> dict:
    """Export the best weights to `bundle` (model.onnx, manifest.json, metrics.json) and return the manifest."""
    from ml.manifest import SEGMENTATION_FORMAT, sha256_file, write_manifest

    model = build_model(config.height_width, None)
    model.load_weights(weights_path)
    os.makedirs(bundle, exist_ok=True)
    onnx_path = os.path.join(bundle, "model.onnx")
    parity = export_onnx(model, onnx_path, config, parity_images)
    log(f"ONNX parity: max |keras - onnx| = {parity:.2e}")
    if parity > 1e-3:
        raise RuntimeError(f"ONNX and Keras disagree by {parity:.2e}: not packaging")
    height, width = config.height_width
    metrics: dict = {"note": "segment-report figures at the image's own size, after post-processing"}
    manifest = {
        "format": SEGMENTATION_FORMAT,
        "task": "segmentation",
        "version": version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "architecture": (f"U-Net: MobileNetV2 alpha {ENCODER_ALPHA} encoder (ImageNet init, BatchNorm frozen, layers before "
                         f"{TRAIN_FROM}* frozen), skips "
                         f"{list(SKIP_LAYERS)}, bottleneck {BOTTLENECK_LAYER}, decoder filters {list(DECODER_FILTERS)}, "
                         "bilinear upsampling, prediction at 1/2 resolution enlarged bilinearly, sigmoid output"),
        "input": {"name": "input", "shape": [None, height, width, 3], "layout": "NHWC", "dtype": "float32",
                  "colour_order": config.colour_order},
        "preprocessing": {**config.to_dict(), "function": "ml.preprocessing.preprocess",
                          "steps": "decode (OpenCV) -> RGB -> resize whole image to height x width (an image whose "
                                   "long side runs the other way is first turned by 90 degrees) -> colour step -> "
                                   "x * scale + offset"},
        "output": {"name": OUTPUT_NAME, "shape": [None, height, width, 1], "kind": "lesion probability (sigmoid)",
                   "threshold": THRESHOLD,
                   "apply": "resize to the (turned-back) image size, > threshold, central component, holes filled"},
        "files": {"model": {"file": "model.onnx", "sha256": sha256_file(onnx_path),
                            "bytes": os.path.getsize(onnx_path)}},
        "parity": {"max_abs_probability_difference_keras_vs_onnx": parity, "images": len(parity_images)},
        "training": {
            "command": command,
            "split": f"the classifier's lesion-level split ({os.path.basename(os.path.dirname(split_path))}/split.csv): "
                     f"train {train_count}, " + ", ".join(f"{k} {len(v)}" for k, v in records_by_split.items())
                     + " images",
            "epochs_run": state["epochs_done"], "best_epoch": state["best_epoch"],
            "best_val_dice_model_size": state["best_val_dice"],
            "selection": "epoch with the highest mean validation Dice at the model's input size",
            "loss": "binary cross-entropy + soft Dice", "optimizer": "Adam, 1 warm-up epoch, cosine", "batch": BATCH,
            "augmentation": "horizontal / vertical flips (image and mask), light brightness/contrast/saturation/hue "
                            f"jitter (image), Gaussian blur sigma 1-3 (p {BLUR_P}) and pixel noise sigma 2-10 "
                            f"(p {NOISE_P}) (image)",
            "history": state["history"],
        },
        "training_data": {
            "name": "HAM10000 (images) and its lesion segmentation masks",
            "citation": "Tschandl P., Rosendahl C., Kittler H. The HAM10000 dataset, a large collection of "
                        "multi-source dermatoscopic images of common pigmented skin lesions. Sci. Data 5, 180161 "
                        "(2018). Masks: Tschandl P. et al. Human-computer collaboration for skin cancer recognition. "
                        "Nat. Med. 26, 1229-1234 (2020).",
            "licence": "CC BY-NC-SA 4.0 (ISIC Archive): non-commercial use, share alike",
        },
        "metrics": metrics,
    }
    write_manifest(bundle, manifest)
    if "val" in records_by_split:
        chosen, by_threshold = select_threshold(bundle, records_by_split["val"], masks_dir, log=log)
        manifest["output"]["threshold"] = chosen
        manifest["output"]["threshold_selection"] = {
            "split": "val", "images": len(threshold_sample(records_by_split["val"])),
            "by_threshold_dice_mean": by_threshold,
            "rule": "the grid value with the highest mean validation Dice at the image's own size"}
        write_manifest(bundle, manifest)
    if not skip_scores:
        metrics.update(score_bundle(bundle, records_by_split, masks_dir, log=log))
        write_manifest(bundle, manifest)
    with open(os.path.join(bundle, "metrics.json"), "w") as fh:
        json.dump(metrics, fh, indent=2)
        fh.write("\n")
    return manifest


THRESHOLDS: tuple[float, ...] = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55)
THRESHOLD_IMAGES = 500


def threshold_sample(records: Sequence[Record]) -> list[Record]:
    from ml.segmentation.report import sample

    return sample(records, THRESHOLD_IMAGES)


def select_threshold(bundle: str, records: Sequence[Record], masks_dir: str, log=print) -> tuple[float, dict]:
    """The threshold of THRESHOLDS with the highest mean Dice on (a spread sample of) the
    validation split, scored exactly as serving does (the image's own size, post-processed)."""
    from ml.preprocessing import read_image
    from ml.segmentation.report import dice, read_truth
    from ml.segmentation.trained import TrainedSegmenter, is_flat, mask_from_probability

    segmenter = TrainedSegmenter(bundle)
    scores: dict[float, list[float]] = {t: [] for t in THRESHOLDS}
    for record in threshold_sample(records):
        image = read_image(record.path)
        truth = read_truth(masks_dir, record.image_id, image.shape[:2])
        if truth is None:
            continue
        prob = None if is_flat(image) else segmenter.probability(image)
        for t in THRESHOLDS:
            scores[t].append(dice(mask_from_probability(prob, image.shape[:2], t)[0] > 127, truth))
    by_threshold = {f"{t:g}": round(float(np.mean(v)), 4) for t, v in scores.items()}
    chosen = max(THRESHOLDS, key=lambda t: (np.mean(scores[t]), -abs(t - 0.5)))
    log(f"threshold by validation Dice: {by_threshold} -> {chosen:g}")
    return float(chosen), by_threshold


def score_bundle(bundle: str, records_by_split: dict, masks_dir: str, log=print) -> dict:
    """segment-report's figures for the trained bundle and the classical baseline on val and test."""
    from ml.segmentation.classical import ClassicalConfig
    from ml.segmentation.report import classical, score, trained
    from ml.segmentation.trained import TrainedSegmenter

    segmenter = TrainedSegmenter(bundle)
    results: dict = {}
    for split in ("val", "test"):
        if split not in records_by_split:
            continue
        for name, run in (("trained", trained(segmenter)), ("classical", classical(ClassicalConfig()))):
            results.setdefault(name, {})[split] = score(records_by_split[split], masks_dir, run)
            log(f"{name} {split}: {results[name][split]}")
    return results
