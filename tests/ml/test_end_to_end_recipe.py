"""The end-to-end recipe's pieces that need no trained network: augmentation and training views,
class sampling and loss weights, mixup, distillation and confirmation targets, the configuration's
refusals and the post-training selection rule (TensorFlow; generated images)."""

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the 'train' extra (TensorFlow) is not installed")

from ml.classes import BENIGN_INDICES, CLASSES, MALIGNANT_INDICES
from ml.training import batching, endtoend
from ml.training.augment import AUGMENTATIONS, augment_light
from tests.conftest import make_image
from tests.ml.end_to_end import CONFIG

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", sorted(AUGMENTATIONS))
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_it_augments_with_the_same_dtype_channels_and_range_deterministically(seed, kind):
    image = make_image(200, 150, seed=seed)
    augment = AUGMENTATIONS[kind]
    first = augment(image, np.random.default_rng(seed))
    again = augment(image, np.random.default_rng(seed))
    other = augment(image, np.random.default_rng(seed + 100))
    assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 3
    assert min(first.shape[:2]) >= 1
    assert np.array_equal(first, again)
    assert first.shape != other.shape or not np.array_equal(first, other)


@pytest.mark.parametrize("kind", sorted(AUGMENTATIONS))
def test_it_makes_training_views_of_the_model_input_shape_and_range(kind):
    image = make_image(200, 150, seed=4)
    views = [batching.training_view(image, CONFIG, (7, 0, k), kind) for k in range(6)]
    for view in views:
        assert view.shape == (48, 64, 3) and view.dtype == np.float32
        assert view.min() >= -1.0 and view.max() <= 1.0
    assert np.array_equal(views[0], batching.training_view(image, CONFIG, (7, 0, 0), kind))
    assert not np.array_equal(views[0], views[1])


def test_it_describes_every_augmentation_in_the_model_card():
    from ml.card.training import VIEWS

    assert set(VIEWS) == set(AUGMENTATIONS)


def test_it_keeps_the_whole_image_in_a_light_view():
    # No crop, warp or cutout: every light view is the image turned or mirrored, its colours
    # moved a little (the same pixels, in one of the 8 orientations of the square's group).
    image = make_image(200, 150, seed=5)
    for seed in range(8):
        view = augment_light(image, np.random.default_rng(seed))
        assert sorted(view.shape[:2]) == sorted(image.shape[:2])
        orientations = [np.rot90(flipped, k) for flipped in (image, image[:, ::-1]) for k in range(4)]
        closest = min(np.abs(view.astype(int) - o.astype(int)).mean() for o in orientations if o.shape == view.shape)
        assert closest < 30  # colour jitter only; a crop or warp would move every pixel
    with pytest.raises(ValueError, match="augmentation"):
        endtoend.EndToEndConfig(augmentation="heavy")


@pytest.mark.parametrize(("kind", "share"), [("light", 0.0), ("light_framed", 0.5), ("light_framed_quarter", 0.25),
                                             ("light_looks", 0.0)])
def test_it_frames_the_share_of_views_its_name_says(kind, share):
    # make_image has no black pixels; a frame blacks out at least the corners of the view.
    image = np.maximum(make_image(200, 150, seed=6), 40)
    framed = [(AUGMENTATIONS[kind](image, np.random.default_rng(seed)) < 5).all(axis=2).any() for seed in range(400)]
    assert np.mean(framed) == pytest.approx(share, abs=0.07)


def test_it_shows_half_the_views_in_another_white_balance_and_keeps_their_geometry():
    # A flat grey image: light's jitter moves all channels alike, another white balance does not.
    image = np.full((150, 200, 3), 128, np.uint8)
    views = [AUGMENTATIONS["light_looks"](image, np.random.default_rng(seed)) for seed in range(400)]
    assert all(sorted(view.shape[:2]) == [150, 200] for view in views)
    spreads = np.array([np.ptp(view.reshape(-1, 3).mean(axis=0)) for view in views])
    assert np.mean(spreads > 6) == pytest.approx(0.5, abs=0.08)
    # Gains stay within 0.8-1.25 on top of light's jitter: no channel is wiped out or saturated.
    assert all(20 < view.mean() < 235 for view in views)


def test_it_draws_classes_as_the_sampling_says_and_weights_them_back_to_balanced():
    labels = np.array([0] * 400 + [1] * 100 + [2] * 25 + [3] * 1 + [4] * 9 + [5] * 16 + [6] * 49)
    for sampling in endtoend.SAMPLINGS:
        probs = batching.sampling_probabilities(labels, sampling)
        weights = batching.loss_weights(labels, sampling)
        mass = np.bincount(labels, weights=probs, minlength=len(CLASSES))
        # Drawn mass times loss weight is the same for every class: balanced in expectation.
        assert np.allclose(mass * weights, (mass * weights)[0], rtol=1e-5)
        assert probs.sum() == pytest.approx(1.0)
    sqrt_mass = np.bincount(labels, weights=batching.sampling_probabilities(labels, "sqrt"), minlength=len(CLASSES))
    assert sqrt_mass[0] / sqrt_mass[1] == pytest.approx(2.0)  # sqrt(400 / 100)
    order = batching.epoch_order(labels, endtoend.EndToEndConfig(), epoch=3)
    assert np.array_equal(order, batching.epoch_order(labels, endtoend.EndToEndConfig(), epoch=3))
    assert len(order) == len(labels)


def test_it_mixes_image_pairs_with_their_targets_and_weights_by_one_share():
    rng = np.random.default_rng(0)
    views = rng.normal(size=(8, 4, 4, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 0])
    weights = np.linspace(0.5, 2.0, len(labels)).astype(np.float32)
    plain = batching.batch_targets(views, labels, weights=weights, cfg=endtoend.EndToEndConfig(), seed=(1, 2))
    np.testing.assert_array_equal(plain[0], views)
    np.testing.assert_array_equal(plain[1].argmax(1), labels)
    np.testing.assert_array_equal(plain[2], weights)

    cfg = endtoend.EndToEndConfig(mixup=0.4, label_smoothing=0.1)
    x, targets, w = batching.batch_targets(views, labels, weights=weights, cfg=cfg, seed=(1, 2))
    again = batching.batch_targets(views, labels, weights=weights, cfg=cfg, seed=(1, 2))
    np.testing.assert_array_equal(x, again[0])  # a pure function of the seed: resumable
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)
    assert not np.allclose(x, views)
    # The image's own label keeps the larger share of its target, and the weight lies between the pair's.
    own = targets[np.arange(len(labels)), labels]
    assert np.all(own >= 0.5 * 0.9 + 0.1 / len(CLASSES) - 1e-6)
    assert np.all((w >= weights.min() - 1e-6) & (w <= weights.max() + 1e-6))


def test_it_blends_the_teachers_answers_into_the_targets_at_the_distillation_weight():
    rng = np.random.default_rng(1)
    views = rng.normal(size=(4, 4, 4, 3)).astype(np.float32)
    labels = np.array([0, 4, 5, 6])
    teacher = rng.dirichlet(np.ones(len(CLASSES)), size=len(labels)).astype(np.float32)
    cfg = endtoend.EndToEndConfig(distill_from="teacher-v1", distill_weight=0.25)
    _, targets, _ = batching.batch_targets(views, labels, weights=np.ones(4), cfg=cfg, seed=(1, 2), teacher=teacher)
    np.testing.assert_allclose(targets, 0.75 * np.eye(len(CLASSES))[labels] + 0.25 * teacher, rtol=1e-6)
    with pytest.raises(ValueError, match="needs the teacher's answers"):
        batching.batch_targets(views, labels, weights=np.ones(4), cfg=cfg, seed=(1, 2))
    for weight, teacher_version in ((0.5, None), (0.0, "teacher-v1"), (1.5, "teacher-v1")):
        with pytest.raises(ValueError, match="distill_weight"):
            endtoend.EndToEndConfig(distill_from=teacher_version, distill_weight=weight)


def test_it_refuses_unknown_selection_rules_and_negative_mixup():
    with pytest.raises(ValueError, match="selection"):
        endtoend.EndToEndConfig(selection="auc")
    with pytest.raises(ValueError, match="mixup"):
        endtoend.EndToEndConfig(mixup=-0.1)
    for weight in (0.0, 1.5):
        with pytest.raises(ValueError, match="unconfirmed_weight"):
            endtoend.EndToEndConfig(unconfirmed_weight=weight)


def test_it_weighs_unconfirmed_diagnoses_down_within_their_class_and_keeps_each_class_mean():
    labels = np.array([0, 0, 5, 5, 5, 5, 6, 6])
    dx_types = ["histo", "histo", "histo", "follow_up", "follow_up", "consensus", "histo", "consensus"]
    factors = batching.confirmation_weights(labels, dx_types, 0.5)
    assert factors[:2] == pytest.approx([1.0, 1.0])  # all confirmed: unchanged
    for label in (0, 5, 6):
        assert factors[labels == label].mean() == pytest.approx(1.0)
    # Within a class a confirmed image weighs twice an unconfirmed one.
    assert factors[2] == pytest.approx(2 * factors[3]) and factors[6] == pytest.approx(2 * factors[7])
    np.testing.assert_allclose(batching.confirmation_weights(labels, dx_types, 1.0), 1.0)


def logits_malignant_auc(labels: np.ndarray, logits: np.ndarray) -> float | None:
    from ml.metrics import malignant_auc, softmax

    return malignant_auc(labels, softmax(logits))


def test_it_adopts_a_post_training_change_only_if_it_keeps_the_malignant_auc():
    from ml.metrics import balanced_accuracy, bootstrap_resamples, is_malignant
    from ml.training import finalize

    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(len(CLASSES)), 60)
    onehot = np.eye(len(CLASSES))[labels]
    base = rng.normal(size=onehot.shape) + 1.0 * onehot  # mediocre argmax...
    malignant_columns = [CLASSES.index(c) for c in ("akiec", "bcc", "mel")]
    base[:, malignant_columns] += 2.0 * is_malignant(labels)[:, None]  # ...a well-ranked malignancy score
    better = base + 1.5 * onehot * (rng.random(len(labels)) < 0.5)[:, None]
    # Same decisions as `better`, but the malignancy score carries nothing beyond the argmax.
    scrambled = 10.0 * np.eye(len(CLASSES))[better.argmax(1)] + rng.uniform(0, 9, size=onehot.shape)
    resamples = list(bootstrap_resamples(len(labels), groups=list(range(len(labels))), n_resamples=200, seed=1))

    assert balanced_accuracy(labels, scrambled.argmax(1)) - balanced_accuracy(labels, base.argmax(1)) >= finalize.MIN_GAIN
    base_auc = logits_malignant_auc(labels, base)
    assert (logits_malignant_auc(labels, scrambled) < base_auc - finalize.MAX_AUC_LOSS
            <= logits_malignant_auc(labels, better))
    assert finalize.choose(labels, {"base": base, "scrambled": scrambled}, "base", resamples)[0] == "base"
    chosen, rows = finalize.choose(labels, {"base": base, "better": better}, "base", resamples)
    assert chosen == "better" and all("val_malignant_auc" in row for row in rows)


def test_it_takes_a_candidate_that_only_ranks_malignancy_better_when_asked_to_count_auc():
    from ml.metrics import balanced_accuracy, bootstrap_resamples, is_malignant
    from ml.training import finalize

    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(len(CLASSES)), 60)
    onehot = np.eye(len(CLASSES))[labels]
    base = rng.normal(size=onehot.shape) + 1.5 * onehot
    malignant_columns, benign_columns = list(MALIGNANT_INDICES), list(BENIGN_INDICES)
    # Same argmax everywhere (malignant columns raised together only where one already leads), but
    # malignant images' malignancy scores rise: AUC up, balanced accuracy unchanged.
    leads_malignant = np.isin(base.argmax(1), malignant_columns) & is_malignant(labels)
    ranked = base.copy()
    ranked[np.ix_(leads_malignant, malignant_columns)] += 3.0
    # The same ranking, but benign columns shuffled on benign images: balanced accuracy falls.
    worse = ranked.copy()
    shuffled = ~is_malignant(labels) & (rng.random(len(labels)) < 0.5)
    worse[np.ix_(shuffled, benign_columns)] = worse[np.ix_(shuffled, benign_columns[::-1])]
    resamples = list(bootstrap_resamples(len(labels), groups=list(range(len(labels))), n_resamples=200, seed=1))

    assert (ranked.argmax(1) == base.argmax(1)).all()
    assert logits_malignant_auc(labels, ranked) >= logits_malignant_auc(labels, base) + 0.005
    assert balanced_accuracy(labels, worse.argmax(1)) < balanced_accuracy(labels, base.argmax(1))
    assert logits_malignant_auc(labels, worse) == pytest.approx(logits_malignant_auc(labels, ranked))
    candidates = {"base": base, "ranked": ranked, "worse": worse}
    assert finalize.choose(labels, candidates, "base", resamples)[0] == "base"  # balanced accuracy only
    chosen, rows = finalize.choose(labels, candidates, "base", resamples, min_auc_gain=0.005)
    assert chosen == "ranked"
    by_name = {row["candidate"]: row for row in rows}
    assert by_name["ranked"]["chosen_by"] == "malignant_auc" and by_name["worse"]["chosen_by"] is None
    assert by_name["ranked"]["auc_bootstrap_win_fraction"] >= finalize.MIN_WIN_FRACTION
    # A gain below the bar is not taken.
    assert finalize.choose(labels, candidates, "base", resamples, min_auc_gain=1.0)[0] == "base"
