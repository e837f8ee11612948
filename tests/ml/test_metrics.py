"""ml.metrics against scikit-learn and SciPy on random data, plus calibration and the operating point."""

import warnings

import numpy as np
import pytest
import scipy.special
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import roc_curve as sk_roc_curve

from ml import metrics
from ml.classes import CLASSES, MALIGNANT_CLASSES

K = len(CLASSES)


def random_case(seed, n=400, classes=range(K), skill=1.5):
    """Labels from ``classes`` and probabilities that lean towards the true label."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(np.array(list(classes)), size=n)
    logits = rng.normal(0, 1, (n, K))
    logits[np.arange(n), labels] += skill
    return metrics.softmax(logits), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_it_matches_sklearn_on_accuracy_balanced_accuracy_f1_and_the_confusion_matrix(seed):
    probs, labels = random_case(seed)
    preds = probs.argmax(axis=1)
    s = metrics.summary(probs, labels, threshold=0.5)
    assert s["n_images"] == len(labels)
    assert s["accuracy"] == pytest.approx(accuracy_score(labels, preds))
    assert s["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, preds))
    assert s["macro_f1"] == pytest.approx(f1_score(labels, preds, average="macro"))
    assert s["confusion_matrix"] == sk_confusion_matrix(labels, preds, labels=range(K)).tolist()
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=range(K), zero_division=0)
    for i, code in enumerate(CLASSES):
        row = s["per_class"][code]
        assert row["precision"] == pytest.approx(precision[i])
        assert row["recall"] == pytest.approx(recall[i])
        assert row["f1"] == pytest.approx(f1[i])
        assert row["support"] == support[i]


def test_it_averages_over_present_classes_only_when_some_are_absent():
    probs, labels = random_case(3, classes=(0, 2, 5), skill=0.5)
    preds = probs.argmax(axis=1)
    assert set(preds) - {0, 2, 5}  # the model predicts classes the labels never use
    s = metrics.summary(probs, labels, threshold=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that y_pred has classes y_true lacks
        expected_bacc = balanced_accuracy_score(labels, preds)
    assert s["balanced_accuracy"] == pytest.approx(expected_bacc)
    # Macro F1 over the classes present in the labels (a class never present has no F1).
    assert s["macro_f1"] == pytest.approx(f1_score(labels, preds, labels=[0, 2, 5], average="macro"))
    for code in ("bcc", "df", "mel", "vasc"):  # classes 1, 3, 4, 6
        assert s["per_class"][code]["recall"] is None and s["per_class"][code]["f1"] is None


@pytest.mark.parametrize("decimals", [None, 1])  # continuous scores, and heavily tied ones
def test_it_matches_sklearn_on_malignant_auc_and_the_roc_curve(decimals):
    probs, labels = random_case(4)
    malignant = metrics.is_malignant(labels)
    scores = metrics.malignancy_scores(probs)
    if decimals is not None:
        scores = np.round(scores, decimals)
    auc = metrics.roc_auc(malignant, scores)
    assert auc == pytest.approx(roc_auc_score(malignant, scores))
    fpr, tpr = metrics.roc_curve(malignant, scores)
    sk_fpr, sk_tpr, _ = sk_roc_curve(malignant, scores, drop_intermediate=False)
    assert np.allclose(fpr, sk_fpr) and np.allclose(tpr, sk_tpr)
    assert np.trapezoid(tpr, fpr) == pytest.approx(auc)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)


def test_it_gives_no_auc_or_sensitivity_when_one_group_is_absent():
    probs, labels = random_case(5, classes=(2, 3, 5, 6))  # benign only
    s = metrics.summary(probs, labels, threshold=0.3)
    assert s["malignant_auc"] is None
    assert s["malignant_sensitivity"] is None
    assert s["malignant_specificity"] == pytest.approx((metrics.malignancy_scores(probs) < 0.3).mean())


def test_it_matches_sklearn_on_malignant_sensitivity_and_specificity():
    probs, labels = random_case(6)
    s = metrics.summary(probs, labels, threshold=0.4)
    truth = np.isin(labels, [CLASSES.index(c) for c in MALIGNANT_CLASSES])
    flagged = probs[:, [CLASSES.index(c) for c in MALIGNANT_CLASSES]].sum(axis=1) >= 0.4
    assert s["malignant_sensitivity"] == pytest.approx(flagged[truth].mean())
    assert s["malignant_specificity"] == pytest.approx((~flagged[~truth]).mean())


def test_it_matches_scipy_softmax_with_a_temperature():
    logits = np.random.default_rng(7).normal(0, 5, (20, K))
    for t in (0.5, 1.0, 3.0):
        assert np.allclose(metrics.softmax(logits, t), scipy.special.softmax(logits / t, axis=1))


def test_it_gives_zero_ece_when_confidence_equals_accuracy_and_the_gap_otherwise():
    n = 100
    probs = np.full((n, K), 0.2 / (K - 1))
    probs[:, 0] = 0.8  # confidence 0.8 everywhere
    labels = np.where(np.arange(n) < 80, 0, 1)  # right 80% of the time
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    labels = np.where(np.arange(n) < 50, 0, 1)  # right 50% of the time
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(0.3)


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_it_recovers_a_known_temperature(true_t):
    rng = np.random.default_rng(8)
    n = 4000
    calibrated = rng.normal(0, 2.0, (n, K))
    labels = np.array([rng.choice(K, p=p) for p in metrics.softmax(calibrated)])
    observed = calibrated * true_t  # logits over- (t > 1) or under-confident (t < 1) by true_t
    assert metrics.fit_temperature(observed, labels) == pytest.approx(true_t, rel=0.1)


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 0.99, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_it_picks_the_highest_threshold_reaching_the_target_sensitivity(target, seed):
    rng = np.random.default_rng(seed)
    scores = rng.random(300)
    malignant = rng.random(300) < 0.3
    threshold = metrics.threshold_for_sensitivity(scores, malignant, target)
    sensitivity = (scores[malignant] >= threshold).mean()
    assert sensitivity >= target
    flagged = scores[malignant][scores[malignant] >= threshold]
    higher = flagged[flagged > flagged.min()]
    if higher.size:  # a threshold at the next malignant score up would miss the target
        assert (scores[malignant] >= higher.min()).mean() < target


def test_it_does_not_ask_for_one_case_too_many_because_of_float_rounding():
    scores = np.arange(100, dtype=float)
    # 0.07 * 100 == 7.000000000000001: exactly 7 of the 100 positives are needed.
    assert 92.0 < metrics.threshold_for_sensitivity(scores, np.ones(100, bool), 0.07) < 93.0


def test_it_keeps_the_last_needed_case_flagged_when_its_score_comes_back_a_rounding_lower():
    scores = np.array([0.9, 0.7, 0.62, 0.61, 0.3, 0.2])
    malignant = np.array([True, True, False, True, False, False])
    threshold = metrics.threshold_for_sensitivity(scores, malignant, 1.0)
    assert threshold == pytest.approx(0.455)  # halfway between the last malignant case (0.61) and 0.3
    assert 0.61 - 1e-7 >= threshold  # the serving path's float32 score of that case still passes
    assert ((scores >= threshold) == (scores >= 0.61)).all()  # the same cases flagged as at its own score


def test_it_refuses_a_threshold_without_malignant_cases():
    with pytest.raises(ValueError):
        metrics.threshold_for_sensitivity(np.array([0.1, 0.2]), np.array([False, False]))


def test_it_gives_bootstrap_intervals_around_the_estimate_reproducibly():
    probs, labels = random_case(9, n=300)
    s = metrics.summary(probs, labels, threshold=0.5)
    groups = [f"lesion{i // 2}" for i in range(len(labels))]
    a = metrics.bootstrap_intervals(probs, labels, 0.5, groups=groups, n_resamples=200, seed=1)
    b = metrics.bootstrap_intervals(probs, labels, 0.5, groups=groups, n_resamples=200, seed=1)
    assert a == b
    assert set(a) == set(metrics.BOOTSTRAP_KEYS)
    for key, (lo, hi) in a.items():
        assert lo <= s[key] <= hi
        assert hi - lo < 0.3


def test_it_counts_paired_bootstrap_wins_over_lesions():
    from ml.compare import paired_bootstrap

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(CLASSES)), 20)
    groups = [f"L{i // 2}" for i in range(len(labels))]  # two images a lesion
    noisy = rng.dirichlet(np.ones(len(CLASSES)), len(labels))
    perfect = np.eye(len(CLASSES))[labels] * 0.9 + 0.1 / len(CLASSES)
    assert paired_bootstrap(labels, groups, noisy, noisy, n_resamples=50, seed=1) == {
        "balanced_accuracy": 0.0, "malignant_auc": 0.0, "melanoma_recall": 0.0}
    wins = paired_bootstrap(labels, groups, noisy, perfect, n_resamples=50, seed=1)
    assert wins["balanced_accuracy"] == 1.0 and wins["malignant_auc"] == 1.0


def test_it_prints_a_bootstrap_share_that_misses_a_bound_as_missing_it():
    from ml.compare import share_of_resamples

    # The v3x verdict: 896 of 1,000 resamples is under "at least 90%", and the table must say so.
    assert share_of_resamples(0.896) == "89.6%"
    assert share_of_resamples(0.9) == "90.0%"
    assert share_of_resamples(1.0) == "100.0%"
    # Other resample counts: rounded down, never up to a bound.
    assert share_of_resamples(1799 / 2000) == "89.9%"
    assert share_of_resamples(0.29) == "29.0%"


def test_it_judges_each_side_of_a_paired_bootstrap_at_its_own_operating_point():
    from ml.compare import figures, paired_bootstrap

    mel, nv = CLASSES.index("mel"), CLASSES.index("nv")
    labels = np.array([mel] * 10 + [nv] * 10)
    groups = [f"L{i}" for i in range(len(labels))]
    probs = np.full((20, len(CLASSES)), 0.02)
    probs[:, nv], probs[:, mel] = 0.55, 0.33  # every image: naevus most likely, melanoma close behind
    bias = np.zeros(len(CLASSES))
    bias[mel] = 0.7  # melanoma suggested when at least exp(-0.7) = 0.50 x the top class
    assert figures(labels, probs)["melanoma_recall"] == 0.0
    assert figures(labels, probs, bias)["melanoma_recall"] == 1.0
    # The same probabilities: only the operating point differs, and it is what wins.
    wins = paired_bootstrap(labels, groups, probs, probs, n_resamples=30, seed=2, other_bias=bias)
    assert wins["melanoma_recall"] == 1.0 and wins["malignant_auc"] == 0.0


def test_it_judges_pooled_cross_fit_answers_each_at_its_own_folds_operating_point():
    from ml.compare import figures, paired_bootstrap

    mel, nv = CLASSES.index("mel"), CLASSES.index("nv")
    labels = np.array([mel] * 10 + [nv] * 10)
    groups = [f"L{i}" for i in range(len(labels))]
    probs = np.full((20, len(CLASSES)), 0.02)
    probs[:, nv], probs[:, mel] = 0.55, 0.33
    per_row = np.zeros((20, len(CLASSES)))
    per_row[:2, mel] = 0.7  # one fold's bundle favours melanoma, the other's does not
    # Two melanomas in ten are suggested: each row's own bias counts, in the full split and in every resample.
    assert figures(labels, probs, per_row)["melanoma_recall"] == 0.2
    wins = paired_bootstrap(labels, groups, probs, probs, n_resamples=30, seed=2, other_bias=per_row)
    resamples = list(metrics.bootstrap_resamples(len(labels), groups=groups, n_resamples=30, seed=2))
    expected = np.mean([figures(labels[idx], probs[idx], per_row[idx])["melanoma_recall"] > 0 for idx in resamples])
    by_position = np.mean([figures(labels[idx], probs[idx], per_row)["melanoma_recall"] > 0 for idx in resamples])
    assert expected != by_position  # the case below tells a bias kept with its row from one read by position
    assert 0 < wins["melanoma_recall"] == pytest.approx(expected)
