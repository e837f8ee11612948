"""`python -m ml compare`: candidate bundles side by side on one split, with a paired bootstrap.

    python -m ml compare --models ml/models/A ml/models/B [--split val|test|select] [--images DIR]

Every bundle must carry the same split.csv (the same lesion-level split), and each is run
through its own preprocessing and calibration (ml.inference.Classifier, fp32). The first
model is the baseline: for each other one the table gives the difference in balanced accuracy
and malignant AUC and the fraction of paired bootstrap resamples of the split's lesions in
which it is higher, so a choice between models rests on more than one noisy figure (validation
holds 14 df and 25 vasc images: one image moves balanced accuracy by about 0.01). Choose on
validation, or on the second selection set of a split carved by `ml carve-selection`; the test
split is for reporting only.

By default the networks are compared: the image alone, the plain argmax. `--as-served` judges
the answers each bundle serves: moved by the clinical context of each image's metadata row
(where the bundle has a context table) and the suggested class taken at the bundle's own
operating point (its manifest's melanoma bias), as `ml evaluate` and the portal do. The last
column is each bundle's malignant sensitivity and specificity at its own threshold (with context,
each answer's threshold, as served), the figures a threshold rule is judged by.

A candidate may be a cross-fit, its fold bundles joined by "+" (`A+B`, each trained with
`ml fold-validation` on the baseline's split): every image of the split is answered by the one
fold bundle that kept it out of training (its own calibration, context and operating point), and
the pooled answers are judged as one model; the table adds the specificity at the single
threshold that gives the pooled scores 0.91 sensitivity, the threshold the cross-fit's final
network would be packaged with.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from ml.classes import CLASSES
from ml.data import Record, load_metadata, read_split_csv, records_in
from ml.inference import Classifier
from ml.metrics import (
    balanced_accuracy,
    bootstrap_resamples,
    confusion_matrix,
    is_malignant,
    malignancy_scores,
    malignant_auc,
    per_class_report,
    sensitivity_specificity,
    threshold_for_sensitivity,
)
from ml.scores import suggested_classes

DEFAULT_IMAGES = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "ham10000", "images")
)
DEFAULT_METADATA = os.path.join(os.path.dirname(DEFAULT_IMAGES), "HAM10000_metadata.csv")
CROSS_FIT_JOIN = "+"
# The sensitivity packaging fits the served threshold for (docs/model.md, v3m.4's margin).
POOLED_TARGET_SENSITIVITY = 0.91


def split_records(model_dir: str, metadata: str, images: str, split: str) -> list[Record]:
    """The records of one split of the bundle's split.csv."""
    split_of = read_split_csv(os.path.join(model_dir, "split.csv"))
    return records_in(load_metadata(metadata, [images]), split_of, split)


def probabilities(model_dir: str, paths: Sequence[str], batch: int = 64) -> np.ndarray:
    """The bundle's calibrated image-only probabilities (fp32) for each image file."""
    return answers(model_dir, paths, batch=batch).probabilities


class Answers(NamedTuple):
    probabilities: np.ndarray
    class_bias: np.ndarray | None  # one bias for every row, or one per row (pooled cross-fit answers)
    thresholds: np.ndarray  # each answer's malignancy threshold


def prepared_batches(classifier: Classifier, paths: Sequence[str], batch: int = 64) -> Iterator[np.ndarray]:
    """The image files, `batch` at a time, decoded and preprocessed as the bundle serves them."""
    for start in range(0, len(paths), batch):
        chunk = []
        for path in paths[start : start + batch]:
            with open(path, "rb") as fh:
                chunk.append(classifier.prepare(fh.read()))
        yield np.stack(chunk)


def answers(model_dir: str, paths: Sequence[str], contexts: Sequence | None = None, batch: int = 64) -> Answers:
    """The bundle's answers; with `contexts`, the probabilities are moved by each image's clinical
    context, and judged by each one's threshold, as the bundle serves them."""
    classifier = Classifier(model_dir, variant="fp32")
    probs = np.concatenate([classifier.probabilities(x) for x in prepared_batches(classifier, paths, batch)])
    thresholds = (classifier.thresholds_for(contexts) if contexts is not None
                  else np.full(len(probs), classifier.threshold))
    return Answers(classifier.probabilities_with_context(probs, contexts), classifier.class_bias, thresholds)


def pooled_answers(members: Sequence[str], records: Sequence[Record], split: str,
                   contexts: Sequence | None = None) -> Answers:
    """A cross-fit's answers: each record answered by the one member whose split.csv puts it in
    `split` (the fold that member kept out of training). Raises ValueError unless the members'
    `split` parts partition `records` exactly."""
    index = {r.image_id: i for i, r in enumerate(records)}
    probs = np.zeros((len(records), len(CLASSES)))
    biases, thresholds = np.zeros_like(probs), np.zeros(len(records))
    answered = np.zeros(len(records), dtype=int)
    for member in members:
        kept = sorted(i for i, part in read_split_csv(os.path.join(member, "split.csv")).items() if part == split)
        outside = [i for i in kept if i not in index]
        if outside:
            raise ValueError(f"{member} holds {split} images the baseline's split does not (e.g. {outside[0]})")
        rows = [index[i] for i in kept]
        got = answers(member, [records[k].path for k in rows], [contexts[k] for k in rows] if contexts else None)
        probs[rows], thresholds[rows] = got.probabilities, got.thresholds
        biases[rows] = 0.0 if got.class_bias is None else got.class_bias
        answered[rows] += 1
    if not (answered == 1).all():
        raise ValueError(f"the cross-fit's {split} parts answer {int((answered == 0).sum())} of the baseline's "
                         f"images not at all and {int((answered > 1).sum())} more than once: not one fold each")
    return Answers(probs, biases, thresholds)


def display_name(model: str) -> str:
    """A bundle's folder name; a cross-fit's, joined by '+'."""
    return CROSS_FIT_JOIN.join(os.path.basename(m.rstrip("/")) for m in model.split(CROSS_FIT_JOIN))


def _rows_of(bias: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
    return bias[idx] if bias is not None and np.ndim(bias) == 2 else bias


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def figures(labels: np.ndarray, probs: np.ndarray, class_bias: np.ndarray | None = None) -> dict[str, float]:
    """Balanced accuracy and melanoma recall of the suggested class (plain argmax without a
    bias), malignant ROC AUC of the probabilities."""
    predicted = suggested_classes(probs, class_bias)
    return {"balanced_accuracy": balanced_accuracy(labels, predicted),
            "malignant_auc": malignant_auc(labels, probs) or 0.0,
            "melanoma_recall": per_class_report(confusion_matrix(labels, predicted))["mel"]["recall"] or 0.0}


def share_of_resamples(share: float) -> str:
    """A bootstrap share in tenths of a percent, rounded down: rules ask for "at least 90%", so a
    printed share never exceeds the true one (0.896 and 0.8995 are not 90%)."""
    per_mille = math.floor(round(share * 1000, 6))  # round() first: 0.29 * 1000 is 289.99999999999997
    return f"{per_mille / 10:.1f}%"


def paired_bootstrap(labels: np.ndarray, groups: Sequence[str], base: np.ndarray, other: np.ndarray,
                     *, n_resamples: int, seed: int, base_bias: np.ndarray | None = None,
                     other_bias: np.ndarray | None = None) -> dict[str, float]:
    """Fraction of lesion resamples in which `other` beats `base` on each of `figures`."""
    wins = dict.fromkeys(("balanced_accuracy", "malignant_auc", "melanoma_recall"), 0)
    for idx in bootstrap_resamples(len(labels), groups=groups, n_resamples=n_resamples, seed=seed):
        base_figures = figures(labels[idx], base[idx], _rows_of(base_bias, idx))
        for key, value in figures(labels[idx], other[idx], _rows_of(other_bias, idx)).items():
            wins[key] += value > base_figures[key]
    return {k: v / n_resamples for k, v in wins.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", required=True,
                        help="bundle folders; the first is the baseline; a cross-fit's fold bundles joined by '+'")
    parser.add_argument("--split", default="val", choices=["val", "test", "select"],
                        help="select: the second selection set of a split made by `ml carve-selection`")
    parser.add_argument("--metadata", default=DEFAULT_METADATA)
    parser.add_argument("--images", default=DEFAULT_IMAGES)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--as-served", action="store_true",
                        help="judge the answers as served: each image's clinical context and each bundle's operating point")
    args = parser.parse_args(argv)
    if CROSS_FIT_JOIN in args.models[0]:
        parser.error("the baseline must be one bundle: its split says which images are compared")
    missing = [m for model in args.models for m in model.split(CROSS_FIT_JOIN)
               if not os.path.isfile(os.path.join(m, "split.csv"))]
    if missing:
        parser.error(f"not a bundle folder with a split.csv: {missing[0]!r}")
    splits = set()
    for model in args.models:
        if CROSS_FIT_JOIN in model:  # its folds' splits differ from the baseline's by construction
            continue
        with open(os.path.join(model, "split.csv"), "rb") as fh:
            splits.add(fh.read())
    if len(splits) != 1:
        parser.error("the bundles were trained on different splits: their figures cannot be compared")
    records = split_records(args.models[0], args.metadata, args.images, args.split)
    if not records:
        parser.error(f"the bundles' split has no {args.split} images")
    labels, groups = np.array([r.label for r in records]), [r.lesion_id for r in records]
    contexts = [r.context for r in records] if args.as_served else None
    served = []
    for model in args.models:
        try:
            served.append(pooled_answers(model.split(CROSS_FIT_JOIN), records, args.split, contexts)
                          if CROSS_FIT_JOIN in model else answers(model, [r.path for r in records], contexts))
        except ValueError as exc:
            parser.error(str(exc))
    biases = [s.class_bias if args.as_served else None for s in served]
    judged = ("as served (clinical context, each bundle's operating point)" if args.as_served
              else "the image alone, plain argmax")
    print(f"{args.split} split: {len(labels)} images, {len(set(groups))} lesions; baseline {args.models[0]}; {judged}\n")
    print("| model | balanced accuracy | malignant AUC | melanoma recall | bal. acc. higher than baseline in "
          "| AUC higher in | melanoma recall higher in | sensitivity / specificity at its threshold |")
    print("|---|---|---|---|---|---|---|---|")
    for i, (model, answered, bias) in enumerate(zip(args.models, served, biases)):
        f = figures(labels, answered.probabilities, bias)
        sensitivity, specificity = sensitivity_specificity(
            is_malignant(labels), malignancy_scores(answered.probabilities) >= answered.thresholds)
        name = display_name(model)
        row = f"| {name}{' (baseline)' if i == 0 else ''} | {f['balanced_accuracy']:.4f} | " \
              f"{f['malignant_auc']:.4f} | {f['melanoma_recall']:.4f} |"
        operating = f" {_fmt(sensitivity)} / {_fmt(specificity)} |"
        if i == 0:
            print(row + " | | |" + operating)
            continue
        wins = paired_bootstrap(labels, groups, served[0].probabilities, answered.probabilities,
                                n_resamples=args.bootstrap, seed=args.seed, base_bias=biases[0], other_bias=bias)
        print(row + f" {share_of_resamples(wins['balanced_accuracy'])} of resamples | "
                    f"{share_of_resamples(wins['malignant_auc'])} | {share_of_resamples(wins['melanoma_recall'])} |"
                    + operating)
    for model, answered in zip(args.models, served):
        if CROSS_FIT_JOIN in model:
            malignant, scores = is_malignant(labels), malignancy_scores(answered.probabilities)
            threshold = threshold_for_sensitivity(scores, malignant, POOLED_TARGET_SENSITIVITY)
            sensitivity, specificity = sensitivity_specificity(malignant, scores >= threshold)
            print(f"\n{display_name(model)}: one threshold on the pooled answers for "
                  f"{POOLED_TARGET_SENSITIVITY:.2f} sensitivity ({threshold:.4f}) flags {_fmt(sensitivity)} "
                  f"of the malignant images at specificity {_fmt(specificity)}")
    return 0
