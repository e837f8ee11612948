"""How sure the classifier is: the margin between its top two classes and the entropy of its
probabilities (normalised to [0, 1] by log of the number of classes).

The limits are fitted per bundle on validation images: `low_confidence` marks the small margins
at which the model's top class was right no more often than a stated rate (a coin toss by
default), judged over a window of neighbouring validation images, so the warning means "on
images like this, the top class was wrong about as often as it was right".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def margins(probs: np.ndarray) -> np.ndarray:
    """Top probability minus the second one, per row."""
    ordered = np.sort(np.asarray(probs, dtype=np.float64), axis=-1)
    return ordered[..., -1] - ordered[..., -2]


def normalised_entropy(probs: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=-1) / np.log(p.shape[-1])


@dataclass(frozen=True)
class ConfidenceLimits:
    min_margin: float  # below: low_confidence
    max_entropy: float  # above: low_confidence
    # What the limits were fitted for, for the model card.
    accuracy_below_margin: float
    flagged_validation_rate: float

    def to_dict(self) -> dict[str, float | None]:
        return {k: (None if np.isnan(v) else v) for k, v in asdict(self).items()}  # JSON has no NaN

    @classmethod
    def from_dict(cls, data: dict) -> ConfidenceLimits:
        return cls(**{k: float("nan") if data[k] is None else float(data[k]) for k in cls.__dataclass_fields__})

    def is_low(self, margin: float, entropy: float) -> bool:
        return margin < self.min_margin or entropy > self.max_entropy


def fit_confidence_limits(probs: np.ndarray, labels: np.ndarray, *, max_accuracy: float = 0.5,
                          window: int = 101, entropy_quantile: float = 0.98) -> ConfidenceLimits:
    """The largest margin m at which the `window` validation images nearest in margin had a
    top-class accuracy of at most `max_accuracy`; and an entropy limit at the
    `entropy_quantile` of validation."""
    margin = margins(probs)
    correct = (np.asarray(probs).argmax(-1) == np.asarray(labels)).astype(np.float64)
    order = np.argsort(margin, kind="stable")
    window = max(1, min(window, len(order)))
    kernel = np.ones(window)
    # Divided by the count actually in the window, so the ends are not diluted by padding.
    local_accuracy = np.convolve(correct[order], kernel, mode="same") / np.convolve(np.ones(len(order)), kernel, mode="same")
    eligible = np.nonzero(local_accuracy <= max_accuracy)[0]
    min_margin = float(margin[order][eligible[-1]]) if len(eligible) else 0.0
    entropy = normalised_entropy(probs)
    max_entropy = float(np.quantile(entropy, entropy_quantile))
    below = margin < min_margin
    flagged = below | (entropy > max_entropy)
    return ConfidenceLimits(
        min_margin=min_margin,
        max_entropy=max_entropy,
        accuracy_below_margin=float(correct[below].mean()) if below.any() else float("nan"),
        flagged_validation_rate=float(flagged.mean()),
    )
