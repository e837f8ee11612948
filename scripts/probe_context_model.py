"""Exploratory, validation only: does a joint model of the clinical context beat the shipped
naive-Bayes table (ml.context)? A multinomial logistic regression of the diagnosis on age band, sex
and body site (optionally with their pairwise interactions), fitted on the training split's metadata
alone, gives log p(class | context) - log p(class); each is added to a bundle's image-only
calibrated answers at weights 0.25-1, as the table is, and scored on the validation split.

    .venv/bin/python -m ml evaluate --model ml/models/<bundle> --images <images> --labels <val rows CSV> \\
        --image-only --predictions /tmp/val_image.csv --no-plots
    .venv/bin/python scripts/probe_context_model.py --predictions /tmp/val_image.csv \\
        --split-csv ml/models/<bundle>/split.csv --metadata ../shared/data/ham10000/HAM10000_metadata.csv

Prints a table: balanced accuracy (plain argmax), malignant AUC, sensitivity at specificity 0.75,
and the share of paired lesion resamples in which each answer's AUC beats the shipped table at 0.5.
Needs scikit-learn (the test extra).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ml.classes import CLASSES
from ml.compare import share_of_resamples
from ml.context import AGE_BANDS, SEXES, SITES, ClinicalContext, fit_context_prior, shifted
from ml.data import row_context
from ml.metrics import balanced_accuracy, bootstrap_resamples, is_malignant, malignancy_scores, roc_auc

WEIGHTS = (0.25, 0.5, 0.75, 1.0)


def one_hot(context: ClinicalContext, interactions: bool) -> np.ndarray:
    known = context.known()
    age = [known.get("age") == band for band in AGE_BANDS]
    sex = [known.get("sex") == value for value in SEXES]
    site = [known.get("site") == value for value in SITES]
    columns = age + sex + site
    if interactions:
        columns += [a and s for a in age for s in site] + [x and s for x in sex for s in site]
        columns += [a and x for a in age for x in sex]
    return np.array(columns, dtype=float)


def sensitivity_at(scores: np.ndarray, malignant: np.ndarray, specificity: float = 0.75) -> float:
    benign = np.sort(scores[~malignant])
    threshold = benign[int(np.ceil(specificity * len(benign))) - 1]
    return float((scores[malignant] > threshold).mean())


def main() -> int:
    from sklearn.linear_model import LogisticRegression

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictions", required=True, help="`ml evaluate --image-only --predictions` on validation")
    parser.add_argument("--split-csv", required=True)
    parser.add_argument("--metadata", required=True)
    args = parser.parse_args()

    with open(args.split_csv) as fh:
        split = {row["image_id"]: row["split"] for row in csv.DictReader(fh)}
    with open(args.metadata) as fh:
        rows = list(csv.DictReader(fh))
    with open(args.predictions) as fh:
        predictions = {row["image_id"]: row for row in csv.DictReader(fh)}
    train = [r for r in rows if split.get(r["image_id"]) == "train"]
    val = [r for r in rows if split.get(r["image_id"]) == "val"]
    probs = np.array([[float(predictions[r["image_id"]][f"p_{c}"]) for c in CLASSES] for r in val])
    y = np.array([CLASSES.index(r["dx"]) for r in val])
    train_y = np.array([CLASSES.index(r["dx"]) for r in train])
    train_contexts, val_contexts = [row_context(r) for r in train], [row_context(r) for r in val]
    prior = np.bincount(train_y, minlength=len(CLASSES)) / len(train_y)

    offsets = {"naive Bayes (shipped)": np.stack([fit_context_prior(train_contexts, train_y).offsets(c)
                                                  for c in val_contexts])}
    for interactions in (False, True):
        for c in (0.1, 1.0):
            model = LogisticRegression(C=c, max_iter=5000).fit(
                np.stack([one_hot(x, interactions) for x in train_contexts]), train_y)
            log_p = model.predict_log_proba(np.stack([one_hot(x, interactions) for x in val_contexts]))
            offsets[f"logistic{' + pairs' if interactions else ''} C={c:g}"] = log_p - np.log(prior)

    malignant = is_malignant(y)
    answers = {"image alone": probs} | {f"{name}, w={w:g}": shifted(probs, w * off)
                                        for name, off in offsets.items() for w in WEIGHTS}
    reference = malignancy_scores(answers["naive Bayes (shipped), w=0.5"])
    resamples = list(bootstrap_resamples(len(y), groups=[r["lesion_id"] for r in val], n_resamples=500, seed=1))
    print("| answer | bal. acc. | malignant AUC | sens. at spec. 0.75 | AUC above the shipped table in |")
    print("|---|---|---|---|---|")
    for name, answer in answers.items():
        scores = malignancy_scores(answer)
        wins = np.mean([roc_auc(malignant[i], scores[i]) > roc_auc(malignant[i], reference[i]) for i in resamples])
        print(f"| {name} | {balanced_accuracy(y, answer.argmax(1)):.3f} | {roc_auc(malignant, scores):.3f} | "
              f"{sensitivity_at(scores, malignant):.3f} | {share_of_resamples(wins)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
