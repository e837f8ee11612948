"""ml.context: the clinical context (age, sex, body site) beside the image (no model needed)."""

import math

import numpy as np
import pytest

from ml.classes import CLASSES
from ml.context import AGE_BANDS, SITES, ClinicalContext, ContextPrior, age_band, fit_context_prior
from ml.errors import ModelIntegrityError


def test_it_bands_ages_and_treats_the_impossible_as_unknown():
    assert [age_band(a) for a in (5, 29.9, 30, 45, 79, 80, 95)] == ["<30", "<30", "30-39", "40-49", "70-79", "80+",
                                                                      "80+"]
    assert [age_band(a) for a in (None, -1, 130, math.nan)] == [None, None, None, None]


def test_it_knows_only_the_vocabulary():
    assert ClinicalContext(age=63, sex="male", site="back").known() == {"age": "60-69", "sex": "male", "site": "back"}
    assert ClinicalContext(sex="other", site="unknown").known() == {}
    assert ClinicalContext(site="elbow").known() == {}


def _prior(weight=1.0):
    # Class 0 only ever on the face, class 5 only on the back; sexes alike.
    contexts = [ClinicalContext(site="face", sex="male")] * 30 + [ClinicalContext(site="back", sex="male")] * 60
    labels = np.array([0] * 30 + [5] * 60)
    return fit_context_prior(contexts, labels, weight=weight)


def test_it_counts_each_value_against_the_prior_with_smoothing():
    prior = _prior()
    face = dict(zip(CLASSES, prior.log_ratios["site"]["face"]))
    assert face[CLASSES[0]] > 0 > face[CLASSES[5]]
    assert np.allclose(prior.log_ratios["sex"]["male"], 0.0)  # every image male: it says nothing
    assert all(math.isfinite(x) for x in prior.log_ratios["site"]["face"])  # classes never seen get 0, not -inf


def test_it_leaves_the_answer_alone_without_context_and_moves_it_with_one():
    prior = _prior(weight=0.5)
    probs = np.full((3, len(CLASSES)), 1 / len(CLASSES))
    moved = prior.apply(probs, [None, ClinicalContext(), ClinicalContext(site="face")])
    np.testing.assert_allclose(moved[:2], probs[:2])
    assert moved[2].argmax() == 0 and moved[2].sum() == pytest.approx(1.0)
    assert prior.used(ClinicalContext(site="face", age=50)) == {"site": "face"}  # no age in the table
    half, full = _prior(0.5).offsets(ClinicalContext(site="face")), _prior(1.0).offsets(ClinicalContext(site="face"))
    np.testing.assert_allclose(2 * half, full)


def test_it_round_trips_through_the_manifest_and_refuses_a_malformed_table():
    prior = _prior(0.5)
    again = ContextPrior.from_dict(prior.to_dict())
    np.testing.assert_allclose(again.offsets(ClinicalContext(site="face")), prior.offsets(ClinicalContext(site="face")),
                               atol=1e-5)
    good = prior.to_dict()
    bad_tables = [
        good | {"weight": 1.5},
        good | {"log_ratios": {"colour": {"red": [0.0] * len(CLASSES)}}},
        good | {"log_ratios": {"site": {"elbow": [0.0] * len(CLASSES)}}},
        good | {"log_ratios": {"site": {SITES[0]: [0.0] * (len(CLASSES) - 1)}}},
        good | {"log_ratios": {"age": {AGE_BANDS[0]: [math.nan] * len(CLASSES)}}},
        {"log_ratios": {}},
    ]
    for table in bad_tables:
        with pytest.raises(ModelIntegrityError):
            ContextPrior.from_dict(table)
