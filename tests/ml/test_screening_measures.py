"""The screening measures (ml/screening): the warning vocabulary and size check, image quality
and its limits, confidence limits, the feature-distance check and the degradations used to fit and
test them. Pure NumPy and OpenCV; images are generated here."""

import json

import numpy as np
import pytest

from ml.screening import IMAGE_WARNINGS, MIN_IMAGE_SIDE, WARNING_CODES, check_minimum_size
from ml.screening.confidence import ConfidenceLimits, fit_confidence_limits, margins, normalised_entropy
from ml.screening.ood import FeatureDistance, LayeredDistance, fit_feature_distance, threshold_for_false_alarms
from ml.screening.perturb import DEGRADATIONS, DERMATOSCOPE_SHIFTS, dermatoscope_view
from ml.screening.quality import QUALITY_MEASURES, QualityThresholds, fit_quality_thresholds, quality_measures
from tests.conftest import make_image
from tests.ml.screening_images import textured
from tests.tinymodel import PERMISSIVE_QUALITY

# --- Vocabulary and the size check -----------------------------------------------------------


def test_it_orders_the_warnings_with_the_image_warnings_before_low_confidence():
    assert WARNING_CODES[0] == "not_dermoscopic" and WARNING_CODES[-1] == "low_confidence"
    assert IMAGE_WARNINGS == frozenset(WARNING_CODES) - {"low_confidence"}
    assert {code for _, code, _ in DEGRADATIONS.values()} <= IMAGE_WARNINGS


@pytest.mark.parametrize(
    ("width", "height", "small"),
    [(MIN_IMAGE_SIDE, MIN_IMAGE_SIDE, False), (4000, 3000, False), (MIN_IMAGE_SIDE - 1, 500, True),
     (500, MIN_IMAGE_SIDE - 1, True), (1, 1, True)],
)
def test_it_refuses_images_below_the_minimum_side(width, height, small):
    message = check_minimum_size(width, height)
    if not small:
        assert message is None
    else:
        assert f"{width}x{height}" in message and str(MIN_IMAGE_SIDE) in message


# --- Quality -----------------------------------------------------------------------------------

# degradation -> (measure, direction in which it moves as the degradation gets worse)
MOVES = {
    "blurred": [("sharpness", -1)],
    "darkened": [("brightness", -1)],
    "over_exposed": [("brightness", +1), ("saturated", +1)],
    "low_contrast": [("contrast", -1)],
}


def test_it_knows_which_measure_each_degradation_should_move():
    assert set(MOVES) == set(DEGRADATIONS)


@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_it_moves_each_quality_measure_the_right_way_under_its_degradation(name):
    function, _, levels = DEGRADATIONS[name]
    image = textured(1)
    clean = quality_measures(image)
    series = [quality_measures(function(image, level)) for level in levels]  # mild to severe
    for measure, direction in MOVES[name]:
        values = [clean[measure]] + [m[measure] for m in series]
        steps = np.diff(values) * direction
        assert steps[0] > 0, f"{name} at its mildest level does not move {measure}: {values}"
        assert np.all(steps >= 0), f"{name} does not move {measure} steadily: {values}"


def test_it_does_not_call_a_dark_but_sharp_image_blurred():
    # Training images vary a little in focus and exposure, as real ones do.
    rng = np.random.default_rng(0)
    blur, expose = DEGRADATIONS["blurred"][0], DEGRADATIONS["over_exposed"][0]
    clean = [quality_measures(expose(blur(textured(seed), rng.uniform(0.002, 0.006)), rng.uniform(0.85, 1.15)))
             for seed in range(40)]
    limits = fit_quality_thresholds(clean, percentile=5.0)
    image = textured(99)
    assert limits.warnings(quality_measures(image)) == []
    dark = quality_measures(DEGRADATIONS["darkened"][0](image, 0.25))
    blurry = quality_measures(DEGRADATIONS["blurred"][0](image, 0.03))
    assert "too_dark" in limits.warnings(dark) and "blurred" not in limits.warnings(dark)
    assert "blurred" in limits.warnings(blurry)
    # Sharpness is relative to the image's own luma range: darkening barely changes it.
    assert dark["sharpness"] == pytest.approx(quality_measures(image)["sharpness"], rel=0.1)


def test_it_calls_a_flat_image_sharp_and_leaves_it_to_low_contrast():
    measures = quality_measures(np.full((64, 64, 3), 128, np.uint8))
    assert measures["sharpness"] == float("inf") and measures["contrast"] == 0.0
    assert QualityThresholds.from_dict(PERMISSIVE_QUALITY | {"min_contrast": 1.0}).warnings(measures) == ["low_contrast"]


def test_it_fits_the_quality_limits_at_the_training_percentiles():
    rng = np.random.default_rng(0)
    measures = [{"brightness": float(b), "saturated": float(s), "contrast": float(c), "sharpness": float(h)}
                for b, s, c, h in zip(rng.uniform(60, 220, 500), rng.uniform(0, 0.2, 500),
                                      rng.uniform(5, 60, 500), rng.uniform(0.05, 2.0, 500))]
    measures.append({"brightness": 128.0, "saturated": 0.0, "contrast": 0.0, "sharpness": float("inf")})  # a flat image
    table = {k: np.array([m[k] for m in measures]) for k in QUALITY_MEASURES}
    limits = fit_quality_thresholds(measures, percentile=2.5)
    assert limits.percentile == 2.5
    assert limits.min_brightness == pytest.approx(np.percentile(table["brightness"], 2.5))
    assert limits.max_brightness == pytest.approx(np.percentile(table["brightness"], 97.5))
    assert limits.max_saturated == pytest.approx(np.percentile(table["saturated"], 97.5))
    assert limits.min_contrast == pytest.approx(np.percentile(table["contrast"], 2.5))
    # The flat image's infinite sharpness is left out rather than shifting the percentile.
    assert limits.min_sharpness == pytest.approx(np.percentile(table["sharpness"][:-1], 2.5))
    # At most the stated share of the training images falls outside each limit.
    share = 2.5 / 100 + 1 / len(measures)
    assert np.mean(table["brightness"] < limits.min_brightness) <= share
    assert np.mean(table["brightness"] > limits.max_brightness) <= share
    # Training images that never saturate still tolerate 1% saturated pixels.
    never = [m | {"saturated": 0.0} for m in measures]
    assert fit_quality_thresholds(never).max_saturated == 0.01


def test_it_round_trips_the_quality_limits_through_a_dict():
    limits = QualityThresholds(min_brightness=90.5, max_brightness=210.25, max_saturated=0.02, min_contrast=7.5,
                               min_sharpness=0.125, percentile=0.5)
    data = json.loads(json.dumps(limits.to_dict()))
    assert QualityThresholds.from_dict(data) == limits
    # The manifest section carries a note beside the limits: it is ignored.
    assert QualityThresholds.from_dict(data | {"fitted_on": "training split (3 images)"}) == limits


def test_it_reports_quality_warnings_in_a_fixed_order():
    limits = QualityThresholds(min_brightness=100, max_brightness=200, max_saturated=0.01, min_contrast=10,
                               min_sharpness=0.2, percentile=0.5)
    fine = {"brightness": 150.0, "saturated": 0.0, "contrast": 30.0, "sharpness": 0.8}
    assert limits.warnings(fine) == []
    assert limits.warnings(fine | {"brightness": 50.0, "contrast": 2.0, "sharpness": 0.1}) == [
        "blurred", "too_dark", "low_contrast"]
    assert limits.warnings(fine | {"saturated": 0.3}) == ["too_bright"]
    assert limits.warnings(fine | {"brightness": 230.0}) == ["too_bright"]


# --- Confidence ----------------------------------------------------------------------------------


def test_it_measures_margins_and_normalised_entropy_on_hand_made_probabilities():
    probs = np.array([
        [0.7, 0.2, 0.1, 0.0],
        [0.25, 0.25, 0.25, 0.25],
        [0.0, 1.0, 0.0, 0.0],
        [0.1, 0.4, 0.45, 0.05],
    ])
    np.testing.assert_allclose(margins(probs), [0.5, 0.0, 1.0, 0.05], atol=1e-12)
    entropy = normalised_entropy(probs)
    expected = -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1)) / np.log(4)
    assert entropy[0] == pytest.approx(expected)
    assert entropy[1] == pytest.approx(1.0)
    assert entropy[2] == pytest.approx(0.0, abs=1e-9)
    assert np.all((entropy >= 0) & (entropy <= 1 + 1e-12))
    # One image's probabilities (1-D) give one number.
    assert float(margins(probs[0])) == pytest.approx(0.5)
    assert float(normalised_entropy(probs[1])) == pytest.approx(1.0)


def synthetic_validation(n: int, seed: int, accuracy_at) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probs, labels, margins) over 7 classes: margins uniform in [0, 1), the top class right
    with probability accuracy_at(margin), else the label is the second class."""
    rng = np.random.default_rng(seed)
    margin = rng.uniform(0, 1, n)
    top, second = rng.integers(0, 7, n), rng.integers(1, 7, n)
    second = (top + second) % 7
    probs = np.zeros((n, 7))
    probs[np.arange(n), top] = (1 + margin) / 2
    probs[np.arange(n), second] = (1 - margin) / 2
    right = rng.uniform(0, 1, n) < accuracy_at(margin)
    labels = np.where(right, top, second)
    return probs, labels, margin


def test_it_puts_the_margin_limit_where_local_accuracy_crosses_a_coin_toss():
    probs, labels, _ = synthetic_validation(4000, 0, lambda m: 1 / (1 + np.exp(-(m - 0.5) * 20)))
    limits = fit_confidence_limits(probs, labels)
    assert limits.min_margin == pytest.approx(0.5, abs=0.08)
    below = margins(probs) < limits.min_margin
    right = probs.argmax(1) == labels
    assert limits.accuracy_below_margin == pytest.approx(right[below].mean())
    assert limits.accuracy_below_margin < 0.5 < right[~below].mean()
    assert limits.max_entropy == pytest.approx(np.quantile(normalised_entropy(probs), 0.98))
    flagged = below | (normalised_entropy(probs) > limits.max_entropy)
    assert limits.flagged_validation_rate == pytest.approx(flagged.mean())
    assert limits.is_low(limits.min_margin / 2, 0.0) and not limits.is_low(0.9, 0.0)


def test_it_flags_no_margin_when_the_model_is_never_as_bad_as_a_coin_toss():
    probs, labels, _ = synthetic_validation(500, 1, lambda m: np.ones_like(m))  # always right
    limits = fit_confidence_limits(probs, labels)
    assert limits.min_margin == 0.0
    assert np.isnan(limits.accuracy_below_margin)
    data = limits.to_dict()
    assert data["accuracy_below_margin"] is None  # JSON has no NaN
    json.dumps(data, allow_nan=False)
    again = ConfidenceLimits.from_dict(json.loads(json.dumps(data)))
    assert np.isnan(again.accuracy_below_margin)
    assert (again.min_margin, again.max_entropy, again.flagged_validation_rate) == (
        limits.min_margin, limits.max_entropy, limits.flagged_validation_rate)
    assert not again.is_low(0.0, 0.0)  # a margin of 0 is not below a limit of 0


def test_it_handles_a_window_wider_than_the_validation_set():
    probs, labels, _ = synthetic_validation(20, 2, lambda m: m)
    limits = fit_confidence_limits(probs, labels, window=101)
    assert 0.0 <= limits.min_margin <= 1.0 and 0.0 <= limits.flagged_validation_rate <= 1.0


# --- Feature distance -----------------------------------------------------------------------------


def mahalanobis_to_nearest(points, features, labels, n_classes, shrinkage):
    """Straight from the definition: class means, the pooled covariance shrunk toward its mean
    variance, its inverse, and the smallest distance over the classes."""
    means = np.stack([features[labels == c].mean(0) if np.any(labels == c) else features.mean(0)
                      for c in range(n_classes)])
    centred = features - means[labels]
    sample = centred.T @ centred / (len(features) - 1)
    covariance = (1 - shrinkage) * sample + shrinkage * np.trace(sample) / sample.shape[0] * np.eye(sample.shape[0])
    precision = np.linalg.inv(covariance)
    squared = np.array([[(p - m) @ precision @ (p - m) for m in means] for p in points])
    return np.sqrt(squared.min(1)), means, precision


@pytest.mark.parametrize("shrinkage", [0.1, 0.5])
def test_it_measures_the_mahalanobis_distance_to_the_nearest_class_mean(shrinkage):
    rng = np.random.default_rng(3)
    k, n_classes = 6, 4
    mixing = rng.normal(size=(k, k))  # correlated features, unequal variances
    labels = rng.integers(0, 3, 300)  # class 3 has no training images
    features = rng.normal(size=(300, k)) @ mixing + labels[:, None] * 2.0
    means, whitening = fit_feature_distance(features, labels, n_classes, shrinkage=shrinkage)
    points = rng.normal(size=(25, k)) @ mixing * 2
    expected, direct_means, precision = mahalanobis_to_nearest(points, features, labels, n_classes, shrinkage)
    np.testing.assert_allclose(means, direct_means, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(whitening.astype(np.float64) @ whitening.T, precision, rtol=1e-3, atol=1e-4)
    distance = FeatureDistance(means, whitening, threshold=1.0)
    np.testing.assert_allclose(distance.distances(points), expected, rtol=1e-3)
    # A class mean itself is at distance 0 from its class: the minimum is over the classes.
    np.testing.assert_allclose(distance.distances(means), 0.0, atol=1e-2)


def test_it_keeps_the_distance_statistics_through_their_arrays():
    rng = np.random.default_rng(4)
    features, labels = rng.normal(size=(100, 5)), rng.integers(0, 7, 100)
    distance = FeatureDistance(*fit_feature_distance(features, labels, 7), threshold=3.5)
    again = FeatureDistance.from_arrays(distance.arrays(), 3.5)
    assert again.threshold == 3.5
    np.testing.assert_array_equal(again.distances(features), distance.distances(features))


def test_it_scores_several_layers_by_the_largest_scaled_distance_and_keeps_them_through_their_arrays():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 7, 200)
    middle, last = rng.normal(size=(200, 4)) + labels[:, None], rng.normal(size=(200, 6)) * 3
    parts = tuple(FeatureDistance(*fit_feature_distance(f, labels, 7), threshold=0.0) for f in (middle, last))
    layered = LayeredDistance(parts=parts, columns=((0, 4), (4, 10)), scales=(2.0, 5.0), threshold=1.5,
                              layers=("block_13_expand_relu", "out_relu"))
    features = np.hstack([middle, last])
    expected = np.maximum(parts[0].distances(middle) / 2.0, parts[1].distances(last) / 5.0)
    np.testing.assert_allclose(layered.distances(features), expected, rtol=1e-6)
    # An image far off in the middle layer only is flagged all the same.
    odd = features[:1].copy()
    odd[0, :4] += 100.0
    assert layered.distances(odd)[0] > layered.threshold
    ood = {"threshold": 1.5, "blocks": layered.blocks()}
    again = LayeredDistance.from_arrays(layered.arrays(), ood)
    assert again.columns == layered.columns and again.scales == layered.scales and again.layers == layered.layers
    np.testing.assert_array_equal(again.distances(features), layered.distances(features))
    with pytest.raises(ValueError, match="columns"):
        layered.distances(features[:, :9])
    with pytest.raises(ValueError, match="disagree"):
        LayeredDistance.from_arrays(layered.arrays(), {"threshold": 1.5, "blocks": [
            {"layer": "a", "columns": [0, 5], "scale": 2.0}, {"layer": "b", "columns": [5, 10], "scale": 5.0}]})
    # A bundle from before blocks: one unscaled block, arrays without a suffix.
    legacy = LayeredDistance.from_arrays(parts[1].arrays(), {"threshold": 3.0})
    np.testing.assert_array_equal(legacy.distances(last), parts[1].distances(last))


@pytest.mark.parametrize("rate", [0.01, 0.05, 0.2])
def test_it_chooses_a_threshold_that_flags_at_most_the_stated_share(rate):
    distances = np.random.default_rng(5).gamma(4.0, 2.0, 1000)
    threshold = threshold_for_false_alarms(distances, rate)
    flagged = np.mean(distances > threshold)
    assert flagged <= rate
    assert flagged >= rate - 2 / len(distances)  # and not needlessly fewer
    tied = np.repeat([1.0, 2.0, 3.0], 100)  # ties never push the share over the limit
    assert np.mean(tied > threshold_for_false_alarms(tied, rate)) <= rate


# --- Degradations and other dermatoscopes ---------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_it_degrades_deterministically_keeping_shape_and_dtype(name):
    function, code, levels = DEGRADATIONS[name]
    image = make_image(150, 110, seed=7)
    assert code in WARNING_CODES
    for level in levels:
        out = function(image, level)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert np.array_equal(out, function(image, level))
        assert not np.array_equal(out, image)


def test_it_draws_the_same_dermatoscope_view_for_the_same_seed():
    image = make_image(160, 120, seed=8)
    views = {}
    for seed in range(8):
        first = dermatoscope_view(image, np.random.default_rng(seed))
        assert np.array_equal(first, dermatoscope_view(image, np.random.default_rng(seed)))
        assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 3 and min(first.shape[:2]) > 0
        views[seed] = first
    distinct = {(v.shape, v.tobytes()) for v in views.values()}
    assert len(distinct) > 1


@pytest.mark.parametrize("name", sorted(DERMATOSCOPE_SHIFTS))
def test_it_gives_every_fixed_dermatoscope_shift_an_rgb_image(name):
    image = make_image(160, 120, seed=9)
    out = DERMATOSCOPE_SHIFTS[name](image)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and min(out.shape[:2]) > 0
    assert np.array_equal(out, DERMATOSCOPE_SHIFTS[name](image))
