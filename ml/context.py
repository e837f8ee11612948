"""The clinical context beside the image: the patient's age and sex and the lesion's body site.

Dermatologists read a lesion with them, and they carry information the 200x150 image does not
(basal cell carcinomas and actinic keratoses sit on the face of older patients, naevi on the back
of younger ones). Each known field adds, per class, log p(class | value) - log p(class), counted
on the training split and smoothed toward the class prior, times one weight, to the calibrated
log-probabilities; then the classes are renormalised. This is naive Bayes: it takes the fields
and the image as independent given the diagnosis, which they are not quite, so the weight is
chosen on validation (ml.training.export) and is below 1. An unknown field adds nothing: an image
without context gets exactly the image-only answer.

Pure NumPy: the table travels in the bundle's manifest and is checked at load (fail closed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from ml.classes import CLASSES
from ml.errors import ModelIntegrityError

FIELDS: tuple[str, ...] = ("age", "sex", "site")
SEXES: tuple[str, ...] = ("female", "male")
# HAM10000's `localization` vocabulary without "unknown" (the portal's BodySite stores the same values).
SITES: tuple[str, ...] = ("abdomen", "acral", "back", "chest", "ear", "face", "foot", "genital", "hand",
                          "lower extremity", "neck", "scalp", "trunk", "upper extremity")
AGE_BAND_EDGES: tuple[int, ...] = (30, 40, 50, 60, 70, 80)
AGE_BANDS: tuple[str, ...] = ("<30", "30-39", "40-49", "50-59", "60-69", "70-79", "80+")
# Pseudo-count pulling each value's class mix toward the training prior: a value seen on few
# images (7 acral, 48 genital) then moves the answer little.
SMOOTHING = 10.0


def age_band(age: float | None) -> str | None:
    if age is None or not math.isfinite(age) or not 0 <= age <= 120:
        return None
    return AGE_BANDS[sum(age >= edge for edge in AGE_BAND_EDGES)]


@dataclass(frozen=True)
class ClinicalContext:
    """What is known beside the image; anything unknown or outside the vocabulary counts as unknown."""

    age: float | None = None
    sex: str = ""
    site: str = ""

    def known(self) -> dict[str, str]:
        """field -> the value the table is indexed by (the age as its band), known fields only."""
        values = {"age": age_band(self.age), "sex": self.sex if self.sex in SEXES else None,
                  "site": self.site if self.site in SITES else None}
        return {field: value for field, value in values.items() if value is not None}


NO_CONTEXT = ClinicalContext()


@dataclass(frozen=True)
class ContextPrior:
    """Per field and value, the per-class log ratio (CLASSES order) and the weight it is used with."""

    weight: float
    log_ratios: Mapping[str, Mapping[str, tuple[float, ...]]]

    def offsets(self, context: ClinicalContext | None) -> np.ndarray:
        """What the context adds to each class's log-probability (zeros when nothing is known)."""
        total = np.zeros(len(CLASSES))
        for field, value in (context or NO_CONTEXT).known().items():
            ratios = self.log_ratios.get(field, {}).get(value)
            if ratios is not None:
                total += ratios
        return self.weight * total

    def used(self, context: ClinicalContext | None) -> dict[str, str]:
        """The fields that moved the answer, with the value used (the age as its band)."""
        return {field: value for field, value in (context or NO_CONTEXT).known().items()
                if value in self.log_ratios.get(field, {})}

    def thresholds(self, contexts: Iterable[ClinicalContext | None], *, with_context: float,
                   image_only: float) -> np.ndarray:
        """Each answer's malignancy threshold: the one fitted for answers with context where a
        field moved it, the image's own otherwise (ml.inference.Classifier serves by this rule)."""
        return np.array([with_context if self.used(c) else image_only for c in contexts], dtype=np.float64)

    def apply(self, probabilities: np.ndarray, contexts: Iterable[ClinicalContext | None]) -> np.ndarray:
        """Calibrated probabilities (N, classes) with each row's context taken into account."""
        return shifted(probabilities, np.stack([self.offsets(c) for c in contexts]))

    def to_dict(self) -> dict:
        return {"fields": list(FIELDS), "weight": self.weight, "smoothing": SMOOTHING,
                "age_bands": list(AGE_BANDS),
                "log_ratios": {f: {v: [round(x, 6) for x in r] for v, r in values.items()}
                               for f, values in self.log_ratios.items()}}

    @classmethod
    def from_dict(cls, data: Mapping) -> ContextPrior:
        """The manifest's table, checked: known fields and values, one finite number per class."""
        try:
            weight = float(data["weight"])
            tables = data["log_ratios"]
            vocabulary = {"age": AGE_BANDS, "sex": SEXES, "site": SITES}
            log_ratios: dict[str, dict[str, tuple[float, ...]]] = {}
            for field, values in tables.items():
                if field not in vocabulary:
                    raise ValueError(f"unknown field {field!r}")
                for value, ratios in values.items():
                    if value not in vocabulary[field]:
                        raise ValueError(f"unknown {field} {value!r}")
                    row = tuple(float(x) for x in ratios)
                    if len(row) != len(CLASSES) or not all(math.isfinite(x) for x in row):
                        raise ValueError(f"{field} {value!r}: expected {len(CLASSES)} finite numbers")
                    log_ratios.setdefault(field, {})[value] = row
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelIntegrityError(f"manifest context table is malformed: {exc}") from exc
        if not 0 <= weight <= 1:
            raise ModelIntegrityError(f"manifest context weight must be within [0, 1], got {weight}")
        return cls(weight=weight, log_ratios=log_ratios)


def shifted(probabilities: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Probabilities (N, classes) with `offsets` added to their logarithms, renormalised per row."""
    log_p = np.log(np.clip(probabilities, 1e-12, 1.0)) + offsets
    log_p -= log_p.max(axis=1, keepdims=True)
    out = np.exp(log_p)
    return out / out.sum(axis=1, keepdims=True)


def fit_context_prior(contexts: Iterable[ClinicalContext], labels: np.ndarray, *, weight: float = 1.0) -> ContextPrior:
    """Count each known value's classes on the training split: log p(c | value) - log p(c), the
    value's class mix smoothed toward the prior with SMOOTHING pseudo-images."""
    labels = np.asarray(labels)
    prior = np.bincount(labels, minlength=len(CLASSES)).astype(float)
    prior /= prior.sum()
    counts: dict[str, dict[str, np.ndarray]] = {}
    for context, label in zip(contexts, labels):
        for field, value in context.known().items():
            counts.setdefault(field, {}).setdefault(value, np.zeros(len(CLASSES)))[label] += 1
    log_ratios = {field: {value: tuple(float(x) for x in smoothed_log_ratio(c, prior))
                          for value, c in sorted(values.items())}
                  for field, values in counts.items()}
    return ContextPrior(weight=weight, log_ratios=log_ratios)


def smoothed_log_ratio(counts: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """log p(class | value) - log p(class) of one value's per-class training counts, its class mix
    smoothed toward `prior` with SMOOTHING pseudo-images; a class absent from training gets 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(prior > 0, np.log((counts + SMOOTHING * prior) / (counts.sum() + SMOOTHING)) - np.log(prior), 0.0)
