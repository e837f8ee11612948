"""Fitting a bundle's screening limits when it is packaged (onnxruntime + NumPy, no TensorFlow).

From the training split: the feature-space statistics of the not_dermoscopic check (class means
and the whitening matrix, from each image as it is and from `views` other-dermatoscope views of
it, ml.screening.perturb.dermatoscope_view) and the quality limits (percentiles of the training
images' own measures). From the validation split: the not_dermoscopic alarm threshold (at most
`max_false_alarm_rate` of dermatoscopic validation images flagged, each image as it is and one
other-dermatoscope view of it) and the low_confidence limits. The test split is never used. Arrays go to screening.npz; the limits and the file's
sha256 go to the manifest's "screening" section.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from itertools import accumulate

import numpy as np
import onnxruntime as ort

from ml.classes import CLASSES
from ml.manifest import sha256_file
from ml.preprocessing import PreprocessConfig, preprocess_views
from ml.scores import softmax
from ml.screening import SCREENING_FILE
from ml.screening.confidence import fit_confidence_limits
from ml.screening.ood import FeatureDistance, LayeredDistance, fit_feature_distance, threshold_for_false_alarms
from ml.screening.perturb import dermatoscope_view
from ml.screening.quality import fit_quality_thresholds, quality_measures

MAX_FALSE_ALARM_RATE = 0.05
COVARIANCE_SHRINKAGE = 0.1
QUALITY_PERCENTILE = 0.5
TRAINING_VIEWS = 2  # other-dermatoscope views per training image, beside the image itself
# Each block's distance is divided by this quantile of its validation distances, so that blocks
# of different widths and spreads weigh alike in the maximum.
BLOCK_SCALE_QUANTILE = 0.95


def with_views(images: Iterable[np.ndarray], views: int, seed: int) -> Iterator[np.ndarray]:
    """Each image, then `views` random other-dermatoscope views of it."""
    rng = np.random.default_rng(seed)
    for image in images:
        yield image
        for _ in range(views):
            yield dermatoscope_view(image, rng)


def run_images(session: ort.InferenceSession, output_names: list[str], images: Iterable[np.ndarray],
               config: PreprocessConfig, *, measure_every: int | None = 1,
               batch: int = 32) -> Iterator[tuple[np.ndarray, np.ndarray, list[dict]]]:
    """(logits, features, quality measures) per batch of RGB uint8 images; the quality of every
    `measure_every`-th image only (the images as they are, not their views), none when None."""
    input_name = session.get_inputs()[0].name
    pending: list[np.ndarray] = []
    measures: list[dict] = []

    def flush():
        tensors = np.stack(pending)
        logits, features = session.run(output_names[:2], {input_name: tensors})
        done = (logits, features, list(measures))
        pending.clear()
        measures.clear()
        return done

    for index, image in enumerate(images):
        tensor, resized = preprocess_views(image, config)
        pending.append(tensor)
        if measure_every and index % measure_every == 0:
            measures.append(quality_measures(resized))
        if len(pending) == batch:
            yield flush()
    if pending:
        yield flush()


def collect(session, output_names, images, config, *, measure_every: int | None = 1) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    logits, features, measures = [], [], []
    for lg, ft, ms in run_images(session, output_names, images, config, measure_every=measure_every):
        logits.append(lg)
        features.append(ft)
        measures.extend(ms)
    return np.concatenate(logits), np.concatenate(features), measures


def fit_screening(
    *,
    onnx_path: str,
    output_names: list[str],
    config: PreprocessConfig,
    temperature: float,
    train_images: Iterable[np.ndarray],
    train_labels: np.ndarray,
    val_images: Iterable[np.ndarray],
    val_labels: np.ndarray,
    out_dir: str,
    max_false_alarm_rate: float = MAX_FALSE_ALARM_RATE,
    shrinkage: float = COVARIANCE_SHRINKAGE,
    quality_percentile: float = QUALITY_PERCENTILE,
    views: int = TRAINING_VIEWS,
    seed: int = 20261202,
    feature_blocks: Sequence[tuple[str, int]] | None = None,
) -> dict:
    """Write `out_dir`/screening.npz and return the manifest's "screening" section.

    `feature_blocks`: (layer, width) of each block of the features output, in order
    (ml.training.explainable.explainable_ensemble says); None = one block of every column."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])

    # Quality limits come from the images as they are, the first of each 1 + views.
    _, train_features, train_measures = collect(session, output_names, with_views(train_images, views, seed), config,
                                                measure_every=1 + views)
    train_labels = np.asarray(train_labels)
    if len(train_features) != len(train_labels) * (1 + views):
        raise ValueError(f"{len(train_features) // (1 + views)} training images but {len(train_labels)} labels")
    blocks = list(feature_blocks or [("features", train_features.shape[1])])
    if sum(width for _, width in blocks) != train_features.shape[1]:
        raise ValueError(f"feature blocks {blocks} do not add up to the {train_features.shape[1]} feature columns")
    ends = list(accumulate(width for _, width in blocks))
    bounds = list(zip([0, *ends[:-1]], ends))
    repeated_labels = np.repeat(train_labels, 1 + views)
    parts = tuple(FeatureDistance(*fit_feature_distance(train_features[:, a:b], repeated_labels, len(CLASSES),
                                                        shrinkage=shrinkage), 0.0) for a, b in bounds)

    val_logits, val_features, _ = collect(session, output_names, with_views(val_images, 1, seed + 1), config,
                                          measure_every=None)
    scales = tuple(float(np.quantile(part.distances(val_features[:, a:b]), BLOCK_SCALE_QUANTILE))
                   for part, (a, b) in zip(parts, bounds))
    unthresholded = LayeredDistance(parts=parts, columns=tuple(bounds), scales=scales, threshold=0.0,
                                    layers=tuple(name for name, _ in blocks))
    val_distances = unthresholded.distances(val_features)
    threshold = threshold_for_false_alarms(val_distances, max_false_alarm_rate)
    distance = replace(unthresholded, threshold=threshold)
    confidence = fit_confidence_limits(softmax(val_logits[::2], temperature), np.asarray(val_labels))
    quality = fit_quality_thresholds(train_measures, percentile=quality_percentile)

    path = os.path.join(out_dir, SCREENING_FILE)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **distance.arrays())
    os.replace(tmp, path)
    return {
        "file": SCREENING_FILE,
        "sha256": sha256_file(path),
        "ood": {
            "method": "Mahalanobis distance of the pooled features to the nearest class mean, one shared "
                      f"covariance shrunk {shrinkage:g} toward its mean variance (Lee et al. 2018)"
                      + (f"; in {len(blocks)} layers ({', '.join(name for name, _ in blocks)}), each distance over "
                         f"its validation {BLOCK_SCALE_QUANTILE:g} quantile, the largest counting"
                         if len(blocks) > 1 else ""),
            "blocks": distance.blocks(),
            "fitted_on": f"training split ({len(train_labels)} images, each as it is and {views} "
                         "other-dermatoscope views of it)",
            "threshold": threshold,
            "threshold_chosen_on": f"validation split ({len(val_labels)} images, each as it is and one "
                                   "other-dermatoscope view of it)",
            "max_false_alarm_rate": max_false_alarm_rate,
            "validation_false_alarm_rate": float((val_distances[::2] > threshold).mean()),
            "validation_views_false_alarm_rate": float((val_distances[1::2] > threshold).mean()),
            "feature_dimensions": int(train_features.shape[1]),
        },
        "quality": quality.to_dict() | {"fitted_on": f"training split ({len(train_labels)} images)"},
        "confidence": confidence.to_dict() | {"fitted_on": f"validation split ({len(val_labels)} images)"},
    }
