"""The agreement maths (diagnosis/agreement.py) against scikit-learn (when installed: it comes with
the train extra), SciPy, published Wilson intervals, hand-worked cases and the delta method, and
its empty and degenerate cases. No database."""

from __future__ import annotations

import math
import random

import pytest
from scipy.stats import binomtest

from diagnosis import agreement
from diagnosis.agreement import (
    KAPPA_NO_PAIRS,
    KAPPA_ONE_CLASS,
    Pair,
    Proportion,
    VersionCount,
    agreement_report,
    agreement_summary,
    cohen_kappa,
    confusion_matrix,
    flag_performance,
    wilson_interval,
)

CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
MALIGNANT = frozenset({"mel", "bcc", "akiec"})


def _sklearn():
    return pytest.importorskip("sklearn.metrics", reason="scikit-learn is not installed (the train extra)")


def _random_pairs(seed: int, n: int, agree: float) -> list[tuple[str, str]]:
    """Pairs where the model agrees with the reference about `agree` of the time (nv-heavy, as HAM10000)."""
    rng = random.Random(seed)
    weights = (3, 5, 11, 1, 11, 67, 2)
    pairs = []
    for _ in range(n):
        reference = rng.choices(CLASSES, weights)[0]
        model = reference if rng.random() < agree else rng.choice(CLASSES)
        pairs.append((reference, model))
    return pairs


@pytest.mark.parametrize(("seed", "n", "agree"), [(1, 7, 0.5), (2, 40, 0.7), (3, 300, 0.85), (4, 1000, 0.2)])
def test_it_counts_the_confusion_matrix_agreement_and_kappa_as_scikit_learn_does(seed, n, agree):
    metrics = _sklearn()
    pairs = _random_pairs(seed, n, agree)
    reference, model = zip(*pairs, strict=True)
    summary = agreement_summary(pairs, CLASSES)
    assert [list(row) for row in summary.matrix] == metrics.confusion_matrix(reference, model, labels=CLASSES).tolist()
    assert summary.kappa.value == pytest.approx(metrics.cohen_kappa_score(reference, model, labels=CLASSES), abs=1e-12)
    assert summary.overall.value == pytest.approx(sum(r == m for r, m in pairs) / n)
    recalls = metrics.recall_score(reference, model, labels=CLASSES, average=None, zero_division=0)
    for row, recall in zip(summary.per_class, recalls, strict=True):
        if row.agreement.total:
            assert row.agreement.value == pytest.approx(recall)
        else:
            assert row.agreement.value is None  # no image of that class: not 0%, unknown
    assert [row.model_count for row in summary.per_class] == [model.count(code) for code in CLASSES]


@pytest.mark.parametrize(
    ("count", "total", "low", "high"),
    # Newcombe (1998), Statistics in Medicine 17:857-872, table I, method 3 (Wilson score, no correction).
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_it_gives_newcombes_published_wilson_intervals(count, total, low, high):
    interval = wilson_interval(count, total)
    assert interval is not None
    assert interval == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize(("count", "total"), [(0, 1), (1, 1), (3, 7), (12, 12), (0, 50), (499, 1000)])
def test_it_gives_the_wilson_interval_scipy_gives(count, total):
    expected = binomtest(count, total).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(count, total) == pytest.approx((expected.low, expected.high), abs=1e-9)


def test_it_keeps_the_interval_inside_zero_and_one_at_the_ends():
    assert wilson_interval(0, 3)[0] == 0.0
    assert wilson_interval(3, 3)[1] == 1.0
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(4, 3)


def _kappa_of(p: list[list[float]]) -> float:
    k = len(p)
    rows = [sum(p[i]) for i in range(k)]
    cols = [sum(p[i][j] for i in range(k)) for j in range(k)]
    chance = sum(rows[i] * cols[i] for i in range(k))
    return (sum(p[i][i] for i in range(k)) - chance) / (1 - chance)


def _delta_method_se(matrix: list[list[int]]) -> float:
    """The standard error of kappa-hat by the delta method on the multinomial cell proportions,
    with a numerical gradient: an independent route to the large-sample variance."""
    n = sum(map(sum, matrix))
    p = [[cell / n for cell in row] for row in matrix]
    k, h = len(p), 1e-7
    gradient = [[0.0] * k for _ in range(k)]
    for i in range(k):
        for j in range(k):
            up = [row[:] for row in p]
            down = [row[:] for row in p]
            up[i][j] += h
            down[i][j] -= h
            gradient[i][j] = (_kappa_of(up) - _kappa_of(down)) / (2 * h)
    mean = sum(p[i][j] * gradient[i][j] for i in range(k) for j in range(k))
    variance = sum(p[i][j] * (gradient[i][j] - mean) ** 2 for i in range(k) for j in range(k)) / n
    return math.sqrt(variance)


@pytest.mark.parametrize(("seed", "n", "agree"), [(5, 60, 0.6), (6, 400, 0.8), (7, 2000, 0.4)])
def test_it_gives_the_large_sample_kappa_interval_of_the_delta_method(seed, n, agree):
    matrix = confusion_matrix(_random_pairs(seed, n, agree), CLASSES)
    kappa = cohen_kappa(matrix)
    assert kappa.standard_error == pytest.approx(_delta_method_se(matrix), rel=1e-5)
    assert kappa.low == pytest.approx(max(-1.0, kappa.value - 1.959963984540054 * kappa.standard_error))
    assert kappa.high == pytest.approx(min(1.0, kappa.value + 1.959963984540054 * kappa.standard_error))


def test_it_works_out_a_two_by_two_kappa_by_hand():
    # 50 pairs: agreement 35/50 = 0.7; marginals 25/25 and 30/20: chance 0.5*0.6 + 0.5*0.4 = 0.5; kappa 0.4.
    kappa = cohen_kappa([[20, 5], [10, 15]])
    assert kappa.value == pytest.approx(0.4)
    # Fleiss, Levin & Paik eq. 18.15 by hand: A = .4*(1-1.1*.6)^2 + .3*(1-.9*.6)^2 = .10972;
    # B = .6^2*(p12*(c1+r2)^2 + p21*(c2+r1)^2) = .36*(.1*1.21 + .2*.81) = .10188; C = (.4-.5*.6)^2 = .01;
    # SE = sqrt((A+B-C)/50)/(1-.5) = sqrt(.2016/50)/.5 = .126996...
    assert kappa.standard_error == pytest.approx(math.sqrt(0.2016 / 50) / 0.5)


def test_it_says_kappa_is_not_defined_without_pairs_or_with_one_class_only():
    empty = agreement_summary([], CLASSES)
    assert empty.pairs == 0 and not empty.kappa.defined and empty.kappa.undefined_reason == KAPPA_NO_PAIRS
    assert empty.overall == Proportion(count=0, total=0, value=None, low=None, high=None)
    assert all(row.agreement.value is None for row in empty.per_class)
    one_class = agreement_summary([("nv", "nv")] * 12, CLASSES)
    assert one_class.overall.value == 1.0 and not one_class.kappa.defined
    assert one_class.kappa.undefined_reason == KAPPA_ONE_CLASS
    assert one_class.kappa.low is None and one_class.kappa.standard_error is None


def test_it_leaves_kappa_undefined_where_scikit_learn_answers_nan():
    metrics = _sklearn()
    with pytest.warns(UserWarning):
        assert math.isnan(metrics.cohen_kappa_score(["nv"] * 12, ["nv"] * 12, labels=CLASSES))
    assert not cohen_kappa(confusion_matrix([("nv", "nv")] * 12, CLASSES)).defined


def test_it_defines_kappa_when_only_the_reference_used_one_class():
    pairs = [("nv", "nv")] * 8 + [("nv", "mel")] * 2
    summary = agreement_summary(pairs, CLASSES)
    # By hand: agreement 0.8; the model's marginals nv 0.8, mel 0.2 against the reference's nv 1.0: chance 0.8.
    assert summary.kappa.value == pytest.approx(0.0)
    assert summary.kappa.defined


def test_it_gives_perfect_agreement_a_kappa_of_one_and_a_collapsed_interval():
    summary = agreement_summary([("nv", "nv")] * 5 + [("mel", "mel")] * 5, CLASSES)
    assert (summary.kappa.value, summary.kappa.low, summary.kappa.high) == (1.0, 1.0, 1.0)
    assert summary.small


def test_it_refuses_a_class_outside_the_matrix():
    with pytest.raises(ValueError):
        confusion_matrix([("other", "nv")], CLASSES)


def test_it_measures_the_flag_against_malignant_and_benign_diagnoses():
    pairs = [("mel", True)] * 9 + [("bcc", False)] + [("nv", False)] * 30 + [("bkl", True)] * 10
    flag = flag_performance(pairs, MALIGNANT)
    assert (flag.true_positives, flag.false_negatives, flag.true_negatives, flag.false_positives) == (9, 1, 30, 10)
    assert flag.sensitivity.value == pytest.approx(0.9) and flag.specificity.value == pytest.approx(0.75)
    assert (flag.sensitivity.low, flag.sensitivity.high) == pytest.approx(wilson_interval(9, 10))
    none = flag_performance([], MALIGNANT)
    assert none.sensitivity.value is None and none.specificity.value is None


def test_it_leaves_out_other_and_unclassified_images_and_splits_the_confirmed():
    pairs = [
        Pair("mel", True, "mel", True, "v1"),
        Pair("mel", True, "nv", False, "v1"),
        Pair("nv", True, "nv", False, "v2"),
        Pair("nv", False, "bkl", True, "v2"),
        Pair("other", True, "nv", False, "v2"),
        Pair("other", False, "bkl", False, "v2"),
        Pair("bcc", True, None, None, None),  # reviewed, no succeeded result
    ]
    report = agreement_report(
        pairs, classes=CLASSES, malignant=MALIGNANT, versions=[VersionCount("v1", 2, 2), VersionCount("v2", 4, 2)]
    )
    assert (report.reviewed_images, report.without_result) == (7, 1)
    assert (report.other_diagnosis, report.other_diagnosis_confirmed) == (2, 1)
    assert report.all_reviews.pairs == 4 and report.all_reviews.overall.count == 2
    assert report.confirmed.pairs == 3 and report.confirmed.overall.count == 2
    flag = report.malignancy_flag  # confirmed: mel flagged, mel missed, nv not flagged
    assert (flag.true_positives, flag.false_negatives, flag.true_negatives, flag.false_positives) == (1, 1, 1, 0)
    assert not report.empty


def test_it_writes_every_figure_as_a_csv_row_even_when_empty():
    report = agreement_report([], classes=CLASSES, malignant=MALIGNANT)
    assert report.empty
    rows = list(agreement.csv_rows(report, notice="Decision support, not a diagnosis."))
    assert all(len(row) == len(agreement.CSV_COLUMNS) for row in rows)
    measures = [row[1] for row in rows]
    assert measures.count("confusion") == 2 * 49 and measures.count("class_agreement") == 2 * 7
    kappa_rows = [row for row in rows if row[1] == "cohen_kappa"]
    assert [row[-1] for row in kappa_rows] == [f"not defined: {KAPPA_NO_PAIRS}"] * 2
