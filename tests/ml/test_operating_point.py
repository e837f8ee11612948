"""The suggested class's operating point: a melanoma bias on the log probabilities, chosen on
validation by ml.training.operating_point, carried in the manifest, applied at inference and in
every class metric; the probabilities themselves never move."""

import math

import numpy as np
import pytest

from ml.classes import CLASSES
from ml.errors import ModelIntegrityError
from ml.inference import Classifier
from ml.manifest import load_manifest, write_manifest
from ml.metrics import bootstrap_intervals, summary
from ml.scores import class_bias_vector, suggested_classes
from tests.conftest import make_image
from tests.tinymodel import write_tiny_bundle

MEL, NV, BKL = CLASSES.index("mel"), CLASSES.index("nv"), CLASSES.index("bkl")


def _row(**probs: float) -> np.ndarray:
    rest = (1.0 - sum(probs.values())) / (len(CLASSES) - len(probs))
    return np.array([probs.get(c, rest) for c in CLASSES])


def test_it_suggests_melanoma_when_its_probability_is_within_the_bias_of_the_top():
    bias = class_bias_vector({"class_bias": {"mel": 0.7}})
    probs = np.stack([_row(nv=0.5, mel=0.3),   # 0.3 >= exp(-0.7) * 0.5 = 0.248: melanoma
                      _row(nv=0.6, mel=0.25),  # 0.25 < 0.298: naevus stays
                      _row(bkl=0.9, mel=0.0)])  # a zero probability is never suggested
    assert list(suggested_classes(probs)) == [NV, NV, BKL]
    assert list(suggested_classes(probs, bias)) == [MEL, NV, BKL]
    assert list(suggested_classes(probs, np.zeros(len(CLASSES)))) == [NV, NV, BKL]


@pytest.mark.parametrize("decision", [
    {"class_bias": {"melanoma": 0.5}},
    {"class_bias": {"mel": math.nan}},
    {"class_bias": {"mel": "0.5"}},
    {"class_bias": {"mel": True}},
    {"class_bias": [0.5]},
])
def test_it_refuses_a_malformed_decision_section(decision):
    with pytest.raises(ValueError):
        class_bias_vector(decision)


def test_it_judges_the_suggested_class_but_leaves_auc_and_calibration_alone():
    labels = np.array([MEL, NV, MEL, MEL])
    probs = np.stack([_row(nv=0.5, mel=0.3), _row(nv=0.6, mel=0.25), _row(nv=0.5, mel=0.35), _row(mel=0.7)])
    bias = class_bias_vector({"class_bias": {"mel": 0.7}})
    plain, favoured = summary(probs, labels, 0.5), summary(probs, labels, 0.5, bias)
    assert plain["per_class"]["mel"]["recall"] == pytest.approx(1 / 3) and favoured["per_class"]["mel"]["recall"] == 1.0
    assert favoured["per_class"]["nv"]["recall"] == 1.0  # the naevus whose melanoma probability trails stays
    for unchanged in ("malignant_auc", "malignant_sensitivity", "malignant_specificity", "ece"):
        assert favoured[unchanged] == plain[unchanged]
    assert bootstrap_intervals(probs, labels, 0.5, n_resamples=50, seed=1, class_bias=bias)["accuracy"] == [1.0, 1.0]
    assert bootstrap_intervals(probs, labels, 0.5, n_resamples=50, seed=1)["accuracy"][0] < 1.0


def _with_decision(bundle: str, decision: dict | None) -> str:
    manifest = load_manifest(bundle)
    manifest.pop("decision", None)
    if decision is not None:
        manifest["decision"] = decision
    write_manifest(bundle, manifest)
    return bundle


def test_the_classifier_applies_the_bundles_operating_point_and_fails_closed_on_a_bad_one(tmp_path):
    bundle = write_tiny_bundle(str(tmp_path / "bundle"))
    image = make_image(seed=4)
    plain = Classifier(bundle).predict(image)
    runner_up = sorted(plain.probabilities, key=plain.probabilities.get)[-2]
    # A bias on the runner-up just large enough to overtake the top class, from the manifest alone.
    gap = math.log(max(plain.probabilities.values()) / plain.probabilities[runner_up])
    favoured = Classifier(_with_decision(bundle, {"class_bias": {runner_up: gap + 1e-3}})).predict(image)
    assert plain.top_class != runner_up and favoured.top_class == runner_up
    assert favoured.probabilities == plain.probabilities and favoured.malignancy_score == plain.malignancy_score
    _with_decision(bundle, {"class_bias": {"mel": math.inf}})
    with pytest.raises(ModelIntegrityError, match="class_bias"):
        Classifier(bundle)


def test_it_takes_the_largest_bias_that_costs_no_more_than_noise():
    from ml.training.operating_point import fit_operating_point

    rng = np.random.default_rng(0)
    # 100 melanomas, half with a probability just under the naevus's, half that no bias reaches;
    # 100 naevi whose melanoma probability trails further behind; 20 of each other class right.
    mel = [_row(nv=0.5, mel=0.5 * math.exp(-rng.uniform(0.05, 0.35))) for _ in range(50)]
    mel += [_row(bkl=0.9, mel=1e-4) for _ in range(50)]
    nv = [_row(nv=0.55, mel=0.55 * math.exp(-rng.uniform(0.3, 1.2))) for _ in range(100)]
    others = [_row(**{c: 0.9}) for c in CLASSES if c not in ("mel", "nv") for _ in range(20)]
    labels = np.array([MEL] * 100 + [NV] * 100 + [CLASSES.index(c) for c in CLASSES if c not in ("mel", "nv")
                                                  for _ in range(20)])
    decision = fit_operating_point(labels=labels, probs=np.stack(mel + nv + others), chosen_on="test", log=lambda _: None)
    chosen = decision["class_bias"]["mel"]
    rows = {row["bias"]: row for row in decision["selection"]}
    assert chosen > 0 and rows[chosen]["within_tolerance"] and rows[chosen]["val_mel_recall"] > rows[0.0]["val_mel_recall"]
    assert all(row["within_tolerance"] == (row["bias"] <= chosen) for row in decision["selection"])
    assert rows[chosen]["change"] >= -0.01 and not rows[round(chosen + 0.1, 1)]["within_tolerance"]
    assert decision["favoured_when_at_least"] == pytest.approx(math.exp(-chosen), abs=1e-4)
