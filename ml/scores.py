"""Probabilities, the suggested class and the malignancy score (NumPy only: the serving path
imports this, so it stays free of SciPy; fitting a temperature is evaluation work and lives in
ml.metrics)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ml.classes import CLASSES, MALIGNANT_INDICES


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def class_bias_vector(decision: Mapping | None) -> np.ndarray | None:
    """The manifest's `decision` section as a per-class vector (CLASSES order); None when the
    bundle has none. Raises ValueError on an unknown class or a value that is not a finite number."""
    if not decision:
        return None
    biases = decision.get("class_bias")
    if not isinstance(biases, Mapping):
        raise ValueError("decision.class_bias must map class codes to numbers")  # noqa: TRY004 - a bad manifest
    vector = np.zeros(len(CLASSES))
    for code, value in biases.items():
        if code not in CLASSES:
            raise ValueError(f"decision.class_bias names unknown class {code!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise ValueError(f"decision.class_bias[{code!r}] is not a finite number: {value!r}")
        vector[CLASSES.index(code)] = float(value)
    return vector


def suggested_classes(probs: np.ndarray, class_bias: np.ndarray | None = None) -> np.ndarray:
    """The suggested class of each row: argmax of log p(class) + bias(class). The bias is the
    bundle's operating point (manifest `decision`): a class whose miss costs more (melanoma) is
    suggested before a more probable one whose probability is under exp(bias) times its own.
    The probabilities themselves stay calibrated; without a bias this is the plain argmax."""
    probs = np.asarray(probs, dtype=np.float64)
    if class_bias is None or not np.any(class_bias):
        return probs.argmax(axis=-1)
    with np.errstate(divide="ignore"):  # a zero probability is log 0 = -inf: never suggested
        return (np.log(probs) + np.asarray(class_bias, dtype=np.float64)).argmax(axis=-1)


def malignancy_scores(probs: np.ndarray) -> np.ndarray:
    """P(mel) + P(bcc) + P(akiec) for each row."""
    return np.asarray(probs)[..., list(MALIGNANT_INDICES)].sum(axis=-1)


def is_malignant(labels: np.ndarray) -> np.ndarray:
    return np.isin(np.asarray(labels), MALIGNANT_INDICES)
