"""`python -m ml compare`: candidate bundles side by side on one split, with a paired bootstrap.

    python -m ml compare --models ml/models/A ml/models/B [--split val] [--images DIR]

Every bundle must carry the same split.csv (the same lesion-level split), and each is run
through its own preprocessing and calibration (ml.inference.Classifier, fp32). The first
model is the baseline: for each other one the table gives the difference in balanced accuracy
and malignant AUC and the fraction of paired bootstrap resamples of the split's lesions in
which it is higher, so a choice between models rests on more than one noisy figure (validation
holds 14 df and 25 vasc images: one image moves balanced accuracy by about 0.01). Choose on
validation; the test split is for reporting only.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import numpy as np

from ml.data import load_metadata, read_split_csv, records_in
from ml.inference import Classifier
from ml.metrics import balanced_accuracy, bootstrap_resamples, is_malignant, malignancy_scores, roc_auc

DEFAULT_IMAGES = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "ham10000", "images")
)
DEFAULT_METADATA = os.path.join(os.path.dirname(DEFAULT_IMAGES), "HAM10000_metadata.csv")


def split_records(model_dir: str, metadata: str, images: str, split: str) -> tuple[list[str], np.ndarray, list[str]]:
    """(image paths, labels, lesion ids) of one split of the bundle's split.csv."""
    split_of = read_split_csv(os.path.join(model_dir, "split.csv"))
    records = records_in(load_metadata(metadata, [images]), split_of, split)
    return [r.path for r in records], np.array([r.label for r in records]), [r.lesion_id for r in records]


def probabilities(model_dir: str, paths: Sequence[str], batch: int = 64) -> np.ndarray:
    classifier = Classifier(model_dir, variant="fp32")
    out = []
    for start in range(0, len(paths), batch):
        chunk = []
        for path in paths[start : start + batch]:
            with open(path, "rb") as fh:
                chunk.append(classifier.prepare(fh.read()))
        out.append(classifier.probabilities(np.stack(chunk)))
    return np.concatenate(out)


def paired_bootstrap(labels: np.ndarray, groups: Sequence[str], base: np.ndarray, other: np.ndarray,
                     *, n_resamples: int, seed: int) -> dict[str, float]:
    """Fraction of lesion resamples in which `other` beats `base` on each metric."""
    malignant = is_malignant(labels)
    wins = {"balanced_accuracy": 0, "malignant_auc": 0}
    for idx in bootstrap_resamples(len(labels), groups=groups, n_resamples=n_resamples, seed=seed):
        y = labels[idx]
        wins["balanced_accuracy"] += balanced_accuracy(y, other[idx].argmax(1)) > balanced_accuracy(y, base[idx].argmax(1))
        wins["malignant_auc"] += (roc_auc(malignant[idx], malignancy_scores(other[idx])) or 0) > (
            roc_auc(malignant[idx], malignancy_scores(base[idx])) or 0)
    return {k: v / n_resamples for k, v in wins.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="bundle folders; the first is the baseline")
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--metadata", default=DEFAULT_METADATA)
    parser.add_argument("--images", default=DEFAULT_IMAGES)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=20261125)
    args = parser.parse_args(argv)
    splits = set()
    for model in args.models:
        with open(os.path.join(model, "split.csv"), "rb") as fh:
            splits.add(fh.read())
    if len(splits) != 1:
        parser.error("the bundles were trained on different splits: their figures cannot be compared")
    paths, labels, groups = split_records(args.models[0], args.metadata, args.images, args.split)
    probs = [probabilities(m, paths) for m in args.models]
    malignant = is_malignant(labels)
    print(f"{args.split} split: {len(labels)} images, {len(set(groups))} lesions; baseline {args.models[0]}\n")
    print("| model | balanced accuracy | malignant AUC | bal. acc. higher than baseline in | AUC higher in |")
    print("|---|---|---|---|---|")
    for model, p in zip(args.models, probs):
        bacc = balanced_accuracy(labels, p.argmax(1))
        auc = roc_auc(malignant, malignancy_scores(p)) or 0.0
        if p is probs[0]:
            print(f"| {os.path.basename(model.rstrip('/'))} (baseline) | {bacc:.4f} | {auc:.4f} | | |")
            continue
        wins = paired_bootstrap(labels, groups, probs[0], p, n_resamples=args.bootstrap, seed=args.seed)
        print(f"| {os.path.basename(model.rstrip('/'))} | {bacc:.4f} | {auc:.4f} | "
              f"{wins['balanced_accuracy']:.0%} of resamples | {wins['malignant_auc']:.0%} |")
    return 0
