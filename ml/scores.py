"""Probabilities and the malignancy score from logits (NumPy only: the serving path imports this,
so it stays free of SciPy; fitting a temperature is evaluation work and lives in ml.metrics)."""

from __future__ import annotations

import numpy as np

from ml.classes import MALIGNANT_INDICES


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def malignancy_scores(probs: np.ndarray) -> np.ndarray:
    """P(mel) + P(bcc) + P(akiec) for each row."""
    return np.asarray(probs)[..., list(MALIGNANT_INDICES)].sum(axis=-1)


def is_malignant(labels: np.ndarray) -> np.ndarray:
    return np.isin(np.asarray(labels), MALIGNANT_INDICES)
