"""At packaging: the operating point of the suggested class (the manifest's `decision` section).

The probabilities stay calibrated; only the choice of the one class the portal suggests moves.
A missed melanoma costs more than a second look at a naevus, so melanoma gets a bias on its log
probability before the top class is taken (ml.scores.suggested_classes): with bias b, melanoma is
suggested whenever its probability is at least exp(-b) times the most probable class's.

Rule, on validation only, through the answer the portal serves (with the clinical context where
the bundle adopted it): the largest bias on a grid of 0.1 steps that keeps validation balanced
accuracy within MIN_GAIN (0.01: one df or vasc image moves it by about that) of the plain argmax,
every smaller bias included. Melanoma recall is bought for as long as it costs nothing the
validation split can tell from noise. Malignant AUC, sensitivity, specificity and ECE are
properties of the probabilities and do not move.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ml.classes import CLASSES
from ml.metrics import balanced_accuracy, confusion_matrix, per_class_report
from ml.scores import suggested_classes

FAVOURED_CLASS = "mel"
BIASES: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(16))
RULE = "suggested class = argmax over classes of log p(class) + class_bias(class); probabilities unchanged"


def fit_operating_point(*, labels: np.ndarray, probs: np.ndarray, chosen_on: str,
                        log: Callable[[str], None] = print) -> dict:
    """The `decision` section: the favoured class's bias by the rule above, and the table it
    was chosen from (balanced accuracy, the favoured class's recall and naevus recall per bias)."""
    from ml.training.finalize import MIN_GAIN

    favoured = CLASSES.index(FAVOURED_CLASS)
    labels = np.asarray(labels, dtype=int)
    plain = balanced_accuracy(labels, probs.argmax(axis=1))
    rows, chosen, within = [], 0.0, True
    for bias in BIASES:
        vector = np.zeros(len(CLASSES))
        vector[favoured] = bias
        preds = suggested_classes(probs, vector)
        score = balanced_accuracy(labels, preds)
        report = per_class_report(confusion_matrix(labels, preds))
        within = within and score >= plain - MIN_GAIN
        if within:
            chosen = bias
        rows.append({"bias": bias, "val_balanced_accuracy": round(score, 4), "change": round(score - plain, 4),
                     f"val_{FAVOURED_CLASS}_recall": _rounded(report[FAVOURED_CLASS]["recall"]),
                     "val_nv_recall": _rounded(report["nv"]["recall"]), "within_tolerance": within})
        log(f"operating point {rows[-1]}")
    log(f"operating point: {FAVOURED_CLASS} bias {chosen:g} (suggested when its probability is at least "
        f"{np.exp(-chosen):.2f} x the most probable class's)")
    return {"rule": RULE, "class_bias": {FAVOURED_CLASS: chosen}, "favoured_class": FAVOURED_CLASS,
            "favoured_when_at_least": round(float(np.exp(-chosen)), 4), "chosen_on": chosen_on,
            "tolerance": MIN_GAIN, "selection": rows}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
