"""Cheap comparisons on the validation split: colour preprocessing and backbone width.

Each candidate is scored by a linear probe: the frozen ImageNet backbone's pooled features
(un-augmented), a class-balanced logistic regression fitted on the training split, and the
balanced accuracy and malignant AUC on the validation split. It ranks inputs, not final
models; it costs about a minute per candidate on two cores.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import keras
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from ml.data import Record
from ml.metrics import balanced_accuracy, malignant_auc
from ml.preprocessing import PreprocessConfig
from ml.training.backbone import build_backbone
from ml.training.features import cache_features
from ml.training.onnx_export import keras_to_onnx, training_session


def pooled_backbone_session(alpha: float, size: int, weights: str | None):
    base = build_backbone(alpha, size, weights)
    pooled = keras.Model(base.input, keras.layers.GlobalAveragePooling2D()(base.output))
    return training_session(keras_to_onnx(pooled))


def linear_probe(train_x, train_y, val_x, val_y, seed: int) -> dict:
    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000, random_state=seed)
    clf.fit(scaler.transform(train_x), train_y)
    probs = np.zeros((len(val_y), 7))
    probs[:, clf.classes_] = clf.predict_proba(scaler.transform(val_x))
    return {
        "val_balanced_accuracy": round(balanced_accuracy(val_y, probs.argmax(1)), 4),
        "val_malignant_auc": round(malignant_auc(val_y, probs) or 0.0, 4),
    }


def run_probe(
    *,
    candidates: Sequence[tuple[float, str]],
    weights_for: Callable[[float], str | None],
    train: Sequence[Record],
    val: Sequence[Record],
    size: int,
    work_dir: str,
    seed: int,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """One row per (alpha, colour) candidate, cached in work_dir/probe.json."""
    path = os.path.join(work_dir, "probe.json")
    rows: list[dict] = []
    if os.path.exists(path):
        with open(path) as fh:
            rows = json.load(fh)
    for alpha, colour in candidates:
        if any(r["alpha"] == alpha and r["colour"] == colour and r["size"] == size for r in rows):
            continue
        config = PreprocessConfig(size=size, colour=colour)
        session = pooled_backbone_session(alpha, size, weights_for(alpha))
        feats = {}
        for name, records in (("train", train), ("val", val)):
            cache = os.path.join(work_dir, f"probe_a{alpha}_{colour}_{size}_{name}.npy")
            f = cache_features(session, records, config, path=cache, views=1, augmented=False, seed=seed, log=log)
            feats[name] = np.asarray(f, dtype=np.float32).reshape(len(records), -1)
        row = {"alpha": alpha, "colour": colour, "size": size}
        row.update(
            linear_probe(
                feats["train"], np.array([r.label for r in train]), feats["val"], np.array([r.label for r in val]), seed
            )
        )
        log(f"probe alpha={alpha} colour={colour}: {row}")
        rows.append(row)
        with open(path, "w") as fh:
            json.dump(rows, fh, indent=2)
    return rows
