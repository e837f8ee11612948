"""Classification metrics, calibration and the malignancy operating point (NumPy + SciPy).

Shared by training (model selection, temperature, threshold), the evaluation CLI and the
model card, so every figure the project reports is computed one way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from scipy.optimize import minimize_scalar

from ml.classes import CLASSES
from ml.scores import is_malignant, malignancy_scores, softmax, suggested_classes

__all__ = ["is_malignant", "malignancy_scores", "softmax"]  # re-exported: training and evaluation import them here


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, n_classes: int = len(CLASSES)) -> np.ndarray:
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=int), np.asarray(preds, dtype=int)), 1)
    return cm


def per_class_report(cm: np.ndarray) -> dict[str, dict[str, float | int | None]]:
    report: dict[str, dict[str, float | int | None]] = {}
    for i, name in enumerate(CLASSES):
        tp = cm[i, i]
        support = int(cm[i].sum())
        predicted = int(cm[:, i].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else None
        if recall is None:
            f1 = None
        else:
            f1 = 2 * precision * recall / (precision + recall) if (precision + recall) else 0.0
        report[name] = {
            "precision": float(precision),
            "recall": None if recall is None else float(recall),
            "f1": None if f1 is None else float(f1),
            "support": support,
        }
    return report


def balanced_accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``labels`` (ISIC 2018 Task 3 metric)."""
    cm = confusion_matrix(labels, preds)
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney with ties); None when one group is empty."""
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    from scipy.stats import rankdata

    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def malignant_auc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """ROC AUC of the malignancy score (the malignant classes' summed probability) for telling the
    malignant group from the rest: the ranking behind the malignancy flag. None when one group is empty."""
    return roc_auc(is_malignant(labels), malignancy_scores(probs))


def roc_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold, from (0, 0) to (1, 1).

    Tied scores form one point (all flagged or none), so the trapezoidal area under the
    curve equals :func:`roc_auc`.
    """
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # The last position of each run of equal scores: flagging "score >= s" takes the whole run.
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1] if len(s) else np.array([], dtype=int)
    tp = np.concatenate([[0], np.cumsum(y)[ends]])
    fp = np.concatenate([[0], np.cumsum(~y)[ends]])
    return fp / max(1, (~y).sum()), tp / max(1, y.sum())


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins."""
    probs = np.asarray(probs)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def sensitivity_specificity(y_true: np.ndarray, flagged: np.ndarray) -> tuple[float | None, float | None]:
    y = np.asarray(y_true, dtype=bool)
    f = np.asarray(flagged, dtype=bool)
    sens = float((f & y).sum() / y.sum()) if y.any() else None
    spec = float((~f & ~y).sum() / (~y).sum()) if (~y).any() else None
    return sens, spec


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature minimising the negative log-likelihood on held-out data (Guo et al. 2017)."""
    labels = np.asarray(labels, dtype=int)

    def nll(log_t: float) -> float:
        p = softmax(logits, math.exp(log_t))
        return float(-np.mean(np.log(p[np.arange(len(labels)), labels] + 1e-12)))

    result = minimize_scalar(nll, bounds=(math.log(0.05), math.log(20.0)), method="bounded")
    return float(math.exp(result.x))


def threshold_for_sensitivity(scores: np.ndarray, malignant: np.ndarray, target: float = 0.90) -> float:
    """A threshold whose sensitivity (score >= threshold) is at least ``target`` and flags as few
    cases as that allows: halfway between the lowest malignant score it must flag and the next
    lower score of any case. On the fitting set it flags exactly the cases that threshold at that
    score would; the gap keeps the last case flagged when the serving path recomputes its score a
    float rounding lower (a threshold equal to a case's own score lost that case on validation when
    served: 0.897 instead of the 0.900 fitted, mnv2-ham10000-v3m.2)."""
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.sort(scores[np.asarray(malignant, dtype=bool)])[::-1]
    if positives.size == 0:
        raise ValueError("no malignant cases to choose a threshold from")
    # The tolerance keeps float noise (0.07 * 100 = 7.000000000000001) from demanding one case too many.
    k = min(positives.size, max(1, int(math.ceil(target * positives.size - 1e-9))))
    needed = positives[k - 1]
    below = scores[scores < needed]
    return float((needed + below.max()) / 2) if below.size else float(needed)


def summary(probs: np.ndarray, labels: np.ndarray, threshold: float | np.ndarray,
            class_bias: np.ndarray | None = None) -> dict:
    """Every headline metric for a set of calibrated probabilities and true labels; `threshold`
    is one malignancy threshold, or one per image (answers with and without clinical context).
    The class metrics judge the suggested class (`class_bias`: the bundle's operating point,
    ml.scores.suggested_classes); the ECE judges the probabilities themselves (their argmax)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    preds = suggested_classes(probs, class_bias)
    cm = confusion_matrix(labels, preds)
    report = per_class_report(cm)
    present_f1 = [v["f1"] for v in report.values() if v["f1"] is not None]
    scores = malignancy_scores(probs)
    malignant = is_malignant(labels)
    sens, spec = sensitivity_specificity(malignant, scores >= threshold)
    return {
        "n_images": int(len(labels)),
        "balanced_accuracy": balanced_accuracy(labels, preds),
        "accuracy": float((preds == labels).mean()),
        "macro_f1": float(np.mean(present_f1)) if present_f1 else 0.0,
        "per_class": report,
        "malignant_sensitivity": sens,
        "malignant_specificity": spec,
        "malignant_auc": roc_auc(malignant, scores),
        "ece": expected_calibration_error(probs, labels),
        "confusion_matrix": cm.tolist(),
        "threshold": float(threshold) if np.ndim(threshold) == 0 else "per image",
    }


BOOTSTRAP_KEYS: tuple[str, ...] = (
    "balanced_accuracy",
    "accuracy",
    "macro_f1",
    "malignant_sensitivity",
    "malignant_specificity",
    "malignant_auc",
)


def bootstrap_resamples(
    n_items: int, *, groups: Sequence[str] | None, n_resamples: int, seed: int
) -> Iterator[np.ndarray]:
    """Index arrays of bootstrap resamples, drawing whole groups (lesions) when ``groups`` is given.

    The one resampling scheme behind the reported intervals and every paired comparison.
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        units = [np.array([i]) for i in range(n_items)]
    else:
        by_group: dict[str, list[int]] = {}
        for i, g in enumerate(groups):
            by_group.setdefault(g, []).append(i)
        units = [np.array(v) for v in by_group.values()]
    for _ in range(n_resamples):
        yield np.concatenate([units[j] for j in rng.integers(0, len(units), len(units))])


def bootstrap_intervals(
    probs: np.ndarray,
    labels: np.ndarray,
    threshold: float | np.ndarray,
    *,
    groups: Sequence[str] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    class_bias: np.ndarray | None = None,
) -> dict[str, list[float]]:
    """95% percentile intervals; resampling whole lesions when ``groups`` is given."""
    probs = np.asarray(probs)
    labels = np.asarray(labels, dtype=int)
    samples: dict[str, list[float]] = {k: [] for k in BOOTSTRAP_KEYS}
    preds = suggested_classes(probs, class_bias)
    scores = malignancy_scores(probs)
    thresholds = np.broadcast_to(np.asarray(threshold, dtype=float), scores.shape)
    malignant = is_malignant(labels)
    for idx in bootstrap_resamples(len(labels), groups=groups, n_resamples=n_resamples, seed=seed):
        y, p = labels[idx], preds[idx]
        cm = confusion_matrix(y, p)
        f1s = [v["f1"] for v in per_class_report(cm).values() if v["f1"] is not None]
        sens, spec = sensitivity_specificity(malignant[idx], scores[idx] >= thresholds[idx])
        values = {
            "balanced_accuracy": balanced_accuracy(y, p),
            "accuracy": float((y == p).mean()),
            "macro_f1": float(np.mean(f1s)),
            "malignant_sensitivity": sens,
            "malignant_specificity": spec,
            "malignant_auc": roc_auc(malignant[idx], scores[idx]),
        }
        for k, v in values.items():
            if v is not None:
                samples[k].append(v)
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in samples.items() if v}
