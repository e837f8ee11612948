"""The training-only targets beside the diagnosis. `ml train --mask-weight`: the light views carry a
lesion mask through the same flips and turns, the targets are the lesion's share of each cell of the
last feature map, and a run trains (and resumes) the lesion head beside the network it exports
unchanged. `--malignant-weight`: a malignant-vs-benign term in the loss (TensorFlow; generated images)."""

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the 'train' extra (TensorFlow) is not installed")

import keras
import tensorflow as tf

from ml.__main__ import main as ml_main
from ml.card import render_card
from ml.data import load_metadata
from ml.preprocessing import PreprocessConfig
from ml.training import batching, endtoend
from ml.training.augment import augment_light, with_mask
from tests.conftest import make_image
from tests.ml.datasets import disc_mask, generated_dataset, generated_masks

pytestmark = pytest.mark.slow

CONFIG = PreprocessConfig(size=48, width=64, colour="clahe")


def test_it_moves_the_mask_with_the_light_views_flips_and_turns_and_leaves_the_colours_as_they_were():
    image = make_image(200, 150, seed=3)
    mask = disc_mask(150, 200, (30, 40), 20)
    carried = with_mask(image, mask)

    def orientations(a):  # the 8 ways a light view can turn or mirror
        return [np.rot90(flipped, k) for flipped in (a, a[:, ::-1]) for k in range(4)]

    seen = set()
    for seed in range(8):
        plain = augment_light(image, np.random.default_rng(seed))
        view = augment_light(carried, np.random.default_rng(seed))
        assert view.shape == (*plain.shape[:2], 4)
        np.testing.assert_array_equal(view[..., :3], plain)  # the same RGB view as without the mask
        # The image's orientation in the view (colour jitter aside) is the mask's, pixel for pixel.
        distances = [np.abs(plain.astype(int) - o.astype(int)).mean() if o.shape == plain.shape else np.inf
                     for o in orientations(image)]
        turn = int(np.argmin(distances))
        np.testing.assert_array_equal(view[..., 3], orientations(mask)[turn])
        seen.add(turn)
    assert len(seen) > 2  # the seeds did turn and mirror it


def test_it_makes_lesion_targets_on_the_feature_grid_beside_the_same_view():
    image = make_image(200, 150, seed=4)
    mask = np.zeros((150, 200), np.uint8)
    mask[:, :100] = 255  # the left half
    carried = with_mask(image, mask)
    for k in range(8):
        view, cells = batching.masked_training_view(carried, CONFIG, (7, 0, k), "light", (2, 2))
        np.testing.assert_array_equal(view, batching.training_view(image, CONFIG, (7, 0, k), "light"))
        assert cells.shape == (2, 2, 1) and cells.dtype == np.float32
        # Half the image is lesion whichever way it is turned: two cells full, two empty.
        np.testing.assert_allclose(np.sort(cells.ravel()), [0, 0, 1, 1], atol=0.02)


def test_it_adds_the_malignant_vs_benign_cross_entropy_at_its_weight():
    from ml.classes import CLASSES, MALIGNANT_INDICES
    from ml.training.steps import weighted_loss

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, len(CLASSES))).astype(np.float32)
    target = rng.dirichlet(np.ones(len(CLASSES)), size=5).astype(np.float32)  # soft, as after mixup
    weight = rng.uniform(0.5, 2.0, size=5).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    malignant = list(MALIGNANT_INDICES)
    p_malignant, t_malignant = probs[:, malignant].sum(1), target[:, malignant].sum(1)
    diagnosis = -(target * np.log(probs)).sum(1)
    binary = -(t_malignant * np.log(p_malignant) + (1 - t_malignant) * np.log(1 - p_malignant))
    plain = float(weighted_loss(logits, target, weight))
    assert plain == pytest.approx(float(np.mean(diagnosis * weight)), rel=1e-5)
    assert float(weighted_loss(logits, target, weight, 0.5)) == pytest.approx(
        float(np.mean((diagnosis + 0.5 * binary) * weight)), rel=1e-5)
    with pytest.raises(ValueError, match="malignant_weight"):
        endtoend.EndToEndConfig(malignant_weight=-1.0)


def test_it_refuses_a_lesion_target_without_views_a_mask_can_follow():
    with pytest.raises(ValueError, match="mask_weight"):
        endtoend.EndToEndConfig(mask_weight=1.0, augmentation="full")
    with pytest.raises(ValueError, match="mask_weight"):
        endtoend.EndToEndConfig(mask_weight=-0.5, augmentation="light")
    assert endtoend.EndToEndConfig(mask_weight=1.0, augmentation="light").mask_weight == 1.0


def _run(records, checkpoint_dir, masks, *, mask_weight, stop_after=None):
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(5)
    base = keras.applications.MobileNetV2(alpha=0.35, include_top=False, weights=None, input_shape=(48, 64, 3))
    model = endtoend.build_model(base, dropout=0.3, seed=5)
    cfg = endtoend.EndToEndConfig(epochs=2, warmup_epochs=0, batch_size=8, patience=5, seed=5, augmentation="light",
                                  mask_weight=mask_weight, head_lr=0.01, backbone_lr=0.01)
    state = endtoend.train_end_to_end(model, base, train=records[::2], val=records[1::2], config=CONFIG, cfg=cfg,
                                      checkpoint_dir=str(checkpoint_dir), log=lambda _: None, stop_after=stop_after,
                                      masks_dir=masks)
    return model, state


def test_its_lesion_head_sends_gradients_into_the_whole_backbone():
    base = keras.applications.MobileNetV2(alpha=0.35, include_top=False, weights=None, input_shape=(48, 64, 3))
    model = endtoend.build_model(base, dropout=0.3, seed=5)
    training = endtoend.with_lesion_head(model)
    assert training.outputs[1].shape[1:] == (2, 2, 1)  # the last feature map's grid at 48x64
    head = training.get_layer("lesion_mask")
    head.kernel.assign(np.ones(head.kernel.shape, np.float32))  # past the zero start
    x = tf.constant(np.random.default_rng(0).uniform(-1, 1, (2, 48, 64, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(training(x, training=True)[1])
    grads = tape.gradient(loss, base.trainable_variables)
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def _lesion_head_weights(run_dir, model) -> list[np.ndarray]:
    """The lesion head's weights after a run's last epoch, from its last.npz (the checkpoint holds
    the training graph's variables: the network's and the head's)."""
    arrays = endtoend.load_arrays(str(run_dir / "last.npz"))
    training = endtoend.with_lesion_head(model)  # the order the checkpoint was written in
    network = {id(v) for v in model.variables}
    return [arrays[i] for i, v in enumerate(training.variables) if id(v) not in network]


def test_it_trains_the_lesion_head_beside_the_network_and_resumes_it(tmp_path):
    metadata, images = generated_dataset(str(tmp_path / "data"), per_class=4)
    masks = str(tmp_path / "masks")
    generated_masks(images, masks)
    records = load_metadata(metadata, [images])
    with pytest.raises(ValueError, match="masks' folder"):
        _run(records, tmp_path / "none", None, mask_weight=1.0)
    with pytest.raises(FileNotFoundError, match="no lesion mask"):
        _run(records, tmp_path / "missing", str(tmp_path / "data"), mask_weight=1.0)

    _, plain = _run(records, tmp_path / "plain", masks, mask_weight=0.0)
    straight, state = _run(records, tmp_path / "straight", masks, mask_weight=1.0)
    assert state["finished"]
    assert "lesion_mask" not in [layer.name for layer in straight.layers]  # the exported network is unchanged
    # The first batch: the same views and start as the plain run, and a lesion head whose kernel is
    # zero answers 0.5 in every cell, a binary cross-entropy of ln 2 whatever the mask.
    first_loss = state["history"][0]["loss"] - plain["history"][0]["loss"]
    assert first_loss == pytest.approx(np.log(2.0), abs=1e-4)
    # The head lives in the checkpoint beside the network, and has learnt.
    head = _lesion_head_weights(tmp_path / "straight", straight)
    assert [w.shape for w in head] == [(1, 1, 1280, 1), (1,)]
    assert float(np.abs(head[1]).max()) > 1e-3

    _, interrupted = _run(records, tmp_path / "resumed", masks, mask_weight=1.0, stop_after=1)
    assert not interrupted["finished"]
    resumed, resumed_state = _run(records, tmp_path / "resumed", masks, mask_weight=1.0)
    assert [r["loss"] for r in resumed_state["history"]] == pytest.approx([r["loss"] for r in state["history"]])
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_it_records_the_auxiliary_targets_in_the_manifest_and_the_cards_command(tmp_path):
    metadata, images = generated_dataset(str(tmp_path / "data"))
    masks = str(tmp_path / "masks")
    generated_masks(images, masks)
    out = tmp_path / "bundle"
    argv = ["train", "--mode", "end-to-end", "--metadata", metadata, "--images", images, "--out", str(out),
            "--work-dir", str(tmp_path / "work"), "--alpha", "0.35", "--weights", "none", "--size", "48",
            "--width", "64", "--colour", "clahe", "--epochs", "1", "--batch-size", "8", "--augmentation", "light",
            "--calibration-images", "16", "--parity-images", "16", "--bootstrap", "20",
            "--min-int8-agreement", "1.01", "--latency-reference", "none"]
    with pytest.raises(SystemExit, match="--masks"):
        ml_main([*argv, "--mask-weight", "0.5"])
    assert ml_main([*argv, "--mask-weight", "0.5", "--masks", masks, "--malignant-weight", "0.25"]) == 0
    fit = json.loads((out / "manifest.json").read_text())["training"]["fit"]
    assert (fit["mask_weight"], fit["malignant_weight"]) == (0.5, 0.25)
    card = render_card(str(out))
    assert "--mask-weight 0.5 --masks ../shared/data/ham10000/masks --malignant-weight 0.25" in card
    assert "auxiliary lesion-mask target" in card and "malignant-vs-benign binary cross-entropy" in card
