"""Packaging's clinical-context step (`ml.training.context_fit.fit_context`) on generated records:
a weight is adopted only behind the post-training guard, each variant gets its own malignancy
threshold fitted on the answers that use the context, and every way the context can fail to help
leaves the image alone."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the 'train' extra (TensorFlow) is not installed")

from ml.classes import CLASSES, MALIGNANT_CLASSES
from ml.context import NO_CONTEXT, SITES, ClinicalContext, ContextPrior
from ml.data import Record
from ml.metrics import is_malignant, malignancy_scores, softmax
from ml.training.context_fit import WEIGHTS, fit_context

TARGET = 0.9


def records(n_per_class: int, *, split: str, rng: np.random.Generator, site_tells: float,
            context_for=lambda dx: True) -> list[Record]:
    """`n_per_class` one-image lesions a class; with probability `site_tells` the body site is the
    class's own (SITES[k]), otherwise any site; `context_for(dx)` False leaves that image's context unknown."""
    made = []
    for k, dx in enumerate(CLASSES):
        for i in range(n_per_class):
            site = SITES[k] if rng.random() < site_tells else SITES[int(rng.integers(len(SITES)))]
            context = ClinicalContext(age=float(rng.integers(20, 85)), sex=("female", "male")[i % 2], site=site)
            made.append(Record(image_id=f"{split}_{k}_{i}", lesion_id=f"L_{split}_{k}_{i}", dx=dx, path="",
                               context=context if context_for(dx) else NO_CONTEXT))
    return made


def image_probabilities(val: list[Record], rng: np.random.Generator, signal: float = 1.0) -> np.ndarray:
    """A mediocre image-only classifier: the true class's logit raised by `signal`, plus noise."""
    labels = np.array([r.label for r in val])
    return softmax(signal * np.eye(len(CLASSES))[labels] + rng.normal(size=(len(val), len(CLASSES))))


def fit(train, val, val_probs):
    return fit_context(train=train, val=val, val_probs=val_probs, target_sensitivity=TARGET, seed=1,
                       log=lambda message: None)


def test_it_adopts_a_weight_when_the_site_tells_the_class_and_fits_a_threshold_for_each_variant():
    rng = np.random.default_rng(0)
    train, val = records(60, split="train", rng=rng, site_tells=0.8), records(40, split="val", rng=rng, site_tells=0.8)
    val_probs = {"fp32": image_probabilities(val, rng), "int8": image_probabilities(val, rng)}

    section, rows = fit(train, val, val_probs)

    assert section is not None and section["chosen_by"] == "balanced_accuracy"
    assert [row["candidate"] for row in rows] == [f"{w:g}" for w in WEIGHTS]
    chosen = next(row for row in rows if row["chosen_by"])
    assert float(chosen["candidate"]) == section["weight"] > 0 and chosen["gain"] >= 0.01
    assert section["fitted_on"]["split"] == "train" and section["fitted_on"]["images"] == len(train)
    assert section["fitted_on"]["images_with_field_known"] == {"age": len(train), "sex": len(train), "site": len(train)}
    # Each variant's threshold is fitted on its own answers with the context: it flags just the
    # malignant validation images the target needs (every image here has its context known).
    prior = ContextPrior.from_dict(section)
    contexts, labels = [r.context for r in val], np.array([r.label for r in val])
    malignant = is_malignant(labels)
    assert set(section["malignancy_threshold"]) == {"fp32", "int8"}
    for variant, probs in val_probs.items():
        flagged = malignancy_scores(prior.apply(probs, contexts)) >= section["malignancy_threshold"][variant]
        assert flagged[malignant].sum() == math.ceil(TARGET * malignant.sum())
    assert section["malignancy_threshold"]["fp32"] != section["malignancy_threshold"]["int8"]


def test_it_leaves_the_image_alone_when_the_metadata_has_no_context():
    rng = np.random.default_rng(1)
    train = records(20, split="train", rng=rng, site_tells=1.0, context_for=lambda dx: False)
    val = records(10, split="val", rng=rng, site_tells=1.0)
    assert fit(train, val, {"fp32": image_probabilities(val, rng)}) == (None, [])


def test_it_leaves_the_image_alone_when_the_context_carries_nothing():
    rng = np.random.default_rng(2)
    train, val = records(60, split="train", rng=rng, site_tells=0.0), records(40, split="val", rng=rng, site_tells=0.0)
    section, rows = fit(train, val, {"fp32": image_probabilities(val, rng, signal=2.0)})
    assert section is None and len(rows) == len(WEIGHTS)
    assert all(row["chosen_by"] is None for row in rows)


def test_it_leaves_the_image_alone_when_no_malignant_validation_image_has_a_known_field():
    rng = np.random.default_rng(3)
    train = records(60, split="train", rng=rng, site_tells=0.9)
    val = records(40, split="val", rng=rng, site_tells=0.9, context_for=lambda dx: dx not in MALIGNANT_CLASSES)
    section, rows = fit(train, val, {"fp32": image_probabilities(val, rng)})
    # The guard takes a weight (the benign images' sites tell them apart), but there is nothing to
    # fit a threshold with the context on: the image alone.
    assert any(row["chosen_by"] for row in rows)
    assert section is None
