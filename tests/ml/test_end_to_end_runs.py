"""`python -m ml train --mode end-to-end` runs: the training loop's weight average, resuming and
finishing an interrupted run, a run trained under JAX and packaged under TensorFlow, and runs that
start from a bundle (`--init-from`, seed soups, distillation). The bundle is tests/ml/conftest.py's
`e2e_bundle` (TensorFlow; generated images)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the 'train' extra (TensorFlow) is not installed")

import keras
import tensorflow as tf

from ml.__main__ import main as ml_main
from ml.card import render_card
from ml.classes import CLASSES
from ml.data import load_metadata, read_split_csv
from ml.inference import Classifier
from ml.training import endtoend
from tests.conftest import encode, make_image
from tests.ml.datasets import generated_dataset
from tests.ml.end_to_end import CONFIG, best_model

pytestmark = pytest.mark.slow


def test_its_weight_average_is_its_own_copy_that_lags_the_live_weights():
    """The EMA holds copies: under TensorFlow a keras.Variable made from `v.value` would be the
    live variable itself, and the 'averaged' weights would silently be the raw ones."""
    image = keras.Input((8, 8, 3))
    base = keras.Model(image, keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3)(image)))
    model = endtoend.build_model(base, dropout=0.0, seed=1)
    cfg = endtoend.EndToEndConfig(epochs=50, warmup_epochs=0, batch_size=4, head_lr=1e-2, backbone_lr=1e-2)
    trainer = endtoend.Trainer(model, base, cfg, steps_per_epoch=10, class_weights=np.ones(len(CLASSES)))
    assert not any(a.value is v.value for a, v in zip(trainer.ema, trainer.trainable))
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(4, 8, 8, 3)).astype("float32"),
                np.eye(len(CLASSES), dtype="float32")[rng.integers(0, len(CLASSES), 4)], np.ones(4, "float32"))
               for _ in range(10)]
    trainer.train_epoch(iter(batches))
    gap = max(float(np.abs(keras.ops.convert_to_numpy(a.value) - keras.ops.convert_to_numpy(v.value)).max())
              for a, v in zip(trainer.ema, trainer.trainable))
    assert gap > 1e-4  # ten steps at 1e-2 leave the average behind
    x = rng.normal(size=(6, 8, 8, 3)).astype("float32")
    raw = trainer.logits(x)
    trainer.swap_ema()
    averaged = trainer.logits(x)
    trainer.swap_ema()
    assert np.abs(raw - averaged).max() > 1e-6
    np.testing.assert_array_equal(trainer.logits(x), raw)  # swapping twice puts the live weights back


def _tiny_run(records, checkpoint_dir, *, stop_after=None, finish_now=False, keep_epoch=0, keep_weights="ema",
              val=None):
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(5)
    base = keras.applications.MobileNetV2(alpha=0.35, include_top=False, weights=None, input_shape=(48, 64, 3))
    model = endtoend.build_model(base, dropout=0.3, seed=5)
    cfg = endtoend.EndToEndConfig(epochs=2, warmup_epochs=1, batch_size=8, patience=5, seed=5, keep_epoch=keep_epoch,
                                  keep_weights=keep_weights)
    train, val = records[::2], (records[1::2] if val is None else val)
    state = endtoend.train_end_to_end(model, base, train=train, val=val, config=CONFIG, cfg=cfg,
                                      checkpoint_dir=str(checkpoint_dir), log=lambda _: None, stop_after=stop_after,
                                      finish_now=finish_now)
    return model, state


def test_it_resumes_an_interrupted_run_to_the_same_weights(tmp_path):
    metadata, images = generated_dataset(str(tmp_path / "data"), per_class=4)
    records = load_metadata(metadata, [images])
    straight, straight_state = _tiny_run(records, tmp_path / "straight")
    _, interrupted = _tiny_run(records, tmp_path / "interrupted", stop_after=1)
    assert interrupted["next_epoch"] == 1 and not interrupted["finished"]
    resumed, resumed_state = _tiny_run(records, tmp_path / "interrupted")  # a fresh model, as a new process
    assert resumed_state["finished"] and resumed_state["next_epoch"] == 2
    assert [r["loss"] for r in resumed_state["history"]] == pytest.approx([r["loss"] for r in straight_state["history"]])
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_it_ends_a_resumed_run_where_it_stands_when_told_to_finish_now(tmp_path):
    metadata, images = generated_dataset(str(tmp_path / "data"), per_class=4)
    records = load_metadata(metadata, [images])
    with pytest.raises(ValueError, match="at least one finished epoch"):
        _tiny_run(records, tmp_path / "empty", finish_now=True)
    interrupted, _ = _tiny_run(records, tmp_path / "run", stop_after=1)
    finished_model, state = _tiny_run(records, tmp_path / "run", finish_now=True)
    assert state["finished"] and state["next_epoch"] == 1 and state["ended_by_operator_after"] == 1
    assert len(state["history"]) == 1  # no further epoch was trained
    for a, b in zip(interrupted.get_weights(), finished_model.get_weights()):  # epoch 1 was the best: its weights
        np.testing.assert_allclose(a, b, atol=1e-6)
    # The same command without --finish-now goes on training to the planned end.
    _, continued = _tiny_run(records, tmp_path / "run")
    assert continued["finished"] and continued["next_epoch"] == 2 and "ended_by_operator_after" not in continued


def test_it_keeps_a_fixed_epoch_without_validation_images(tmp_path):
    """A cross-fit's final network trains on every labelled image but test: the epoch it keeps
    was chosen by its folds, and the weights of that epoch are the result, whatever comes after."""
    metadata, images = generated_dataset(str(tmp_path / "data"), per_class=4)
    records = load_metadata(metadata, [images])
    with pytest.raises(ValueError, match="give a fixed epoch"):
        _tiny_run(records, tmp_path / "unpicked", val=[])
    model, state = _tiny_run(records, tmp_path / "fixed", keep_epoch=1, val=[])
    assert state["finished"] and state["next_epoch"] == 1  # the schedule is two epochs long; epoch 1 is kept
    assert state["best"]["epoch"] == 1 and state["best"]["weights"] == "ema"
    assert state["best"]["selection"] == "fixed epoch 1" and state["best"]["balanced_accuracy"] is None
    assert state["history"][0]["val_raw"] is None
    # Training does not depend on validation: the loss is that of the same run with validation images.
    _, validated = _tiny_run(records, tmp_path / "validated", stop_after=1)
    assert validated["history"][0]["loss"] == pytest.approx(state["history"][0]["loss"])
    # The kept weights are that epoch's: the averaged ones, or with keep_weights="raw" the live ones
    # (last.npz, the resumable state, begins with the live weights).
    _, raw_state = _tiny_run(records, tmp_path / "raw", keep_epoch=1, keep_weights="raw", val=[])
    assert raw_state["best"]["weights"] == "raw"
    live = endtoend.load_arrays(str(tmp_path / "raw" / "last.npz"))[: len(model.variables)]
    kept_raw = endtoend.load_arrays(str(tmp_path / "raw" / "best.npz"))
    kept_ema = endtoend.load_arrays(str(tmp_path / "fixed" / "best.npz"))
    for a, b in zip(kept_raw, live):
        np.testing.assert_array_equal(a, b)
    assert max(float(np.abs(a - b).max()) for a, b in zip(kept_ema, live) if a.dtype.kind == "f") > 1e-6
    with pytest.raises(ValueError, match="keep_epoch must be between 0 and epochs"):
        endtoend.EndToEndConfig(epochs=2, keep_epoch=3)


def test_it_refuses_a_split_without_validation_unless_it_trains_a_fixed_epoch_only(tmp_path):
    from ml.data import write_split_csv

    metadata, images = generated_dataset(str(tmp_path / "data"), per_class=4)
    records = load_metadata(metadata, [images])
    split_csv = str(tmp_path / "split.csv")
    write_split_csv(split_csv, records, {r.image_id: ("train", "test")[i % 2] for i, r in enumerate(records)})
    argv = ["train", "--mode", "end-to-end", "--metadata", metadata, "--images", images, "--out", str(tmp_path / "out"),
            "--work-dir", str(tmp_path / "work"), "--alpha", "0.35", "--weights", "none", "--size", "48",
            "--width", "64", "--colour", "clahe", "--epochs", "2", "--batch-size", "8", "--split-csv", split_csv]
    # Nothing to pick an epoch on, or to fit the threshold on: said before any training.
    for extra in ([], ["--train-only"], ["--keep-epoch", "1"]):
        with pytest.raises(SystemExit, match="no validation images"):
            ml_main([*argv, *extra])
    assert not (tmp_path / "work" / "end_to_end" / "state.json").exists()
    assert ml_main([*argv, "--keep-epoch", "1", "--train-only"]) == 0
    state = json.loads((tmp_path / "work" / "end_to_end" / "state.json").read_text())
    assert state["next_epoch"] == 1 and state["best"]["selection"] == "fixed epoch 1"


JAX_WITHOUT_TENSORFLOW = (
    "import sys; sys.modules['tensorflow'] = None; sys.modules['tf2onnx'] = None; "  # as on the GPU machine
    "from ml.__main__ import main; sys.exit(main(sys.argv[1:]))"
)


def test_it_packages_under_tensorflow_a_run_trained_under_jax_without_the_test_images(tmp_path):
    pytest.importorskip("jax", reason="JAX (the 'train' extra) is not installed")
    import subprocess
    import sys

    from ml.data import write_split_csv
    from ml.metrics import balanced_accuracy, malignant_auc, softmax
    from ml.preprocessing import preprocess, read_image

    metadata, images = generated_dataset(str(tmp_path / "data"))
    records = load_metadata(metadata, [images])
    split_of = {r.image_id: ("train", "train", "val", "val", "test", "test")[i % 6] for i, r in enumerate(records)}
    split_csv = str(tmp_path / "split.csv")
    write_split_csv(split_csv, records, split_of)
    held_out = tmp_path / "test_images"  # the GPU machine gets no test images
    held_out.mkdir()
    for r in records:
        if split_of[r.image_id] == "test":
            os.rename(r.path, held_out / os.path.basename(r.path))
    def train_options(work):
        return ["--mode", "end-to-end", "--metadata", metadata, "--split-csv", split_csv, "--out",
                str(tmp_path / "out"), "--work-dir", str(work), "--alpha", "0.35", "--weights", "none", "--size", "48",
                "--width", "64", "--colour", "clahe", "--epochs", "1", "--batch-size", "8"]

    options = train_options(tmp_path / "work")

    trained = subprocess.run(
        [sys.executable, "-c", JAX_WITHOUT_TENSORFLOW, "train", *options, "--images", images, "--train-only",
         "--workers", "2"],
        env=os.environ | {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=600,
        check=False,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "run the same command without --train-only" in trained.stdout
    checkpoint = tmp_path / "work" / "end_to_end"
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["next_epoch"] == 1 and state["best"] is not None
    assert not (tmp_path / "out" / "manifest.json").exists()  # nothing packaged there
    os.remove(checkpoint / "last.npz")  # only state.json and best.npz come back from the GPU machine

    # An unfinished run without last.npz is refused rather than silently restarted over its best epoch.
    unfinished = tmp_path / "unfinished" / "end_to_end"
    unfinished.mkdir(parents=True)
    (unfinished / "state.json").write_text(json.dumps(state | {"next_epoch": 0}))
    (unfinished / "best.npz").write_bytes((checkpoint / "best.npz").read_bytes())
    with pytest.raises(ValueError, match="--finish-now"):
        ml_main(["train", *train_options(tmp_path / "unfinished"), "--images", images, str(held_out)])

    # The JAX-trained weights, loaded by TensorFlow, score validation as they did under JAX.
    model = best_model(checkpoint)
    val = [r for r in records if split_of[r.image_id] == "val"]
    val_y = np.array([r.label for r in val])
    probs = softmax(model.predict(np.stack([preprocess(read_image(r.path), CONFIG) for r in val]), verbose=0))
    assert balanced_accuracy(val_y, probs.argmax(1)) == pytest.approx(state["best"]["balanced_accuracy"], abs=1e-9)
    assert malignant_auc(val_y, probs) == pytest.approx(state["best"]["malignant_auc"], abs=1e-3)

    # The same options without --train-only package it here, the test images back in place.
    assert ml_main(["train", *options, "--images", images, str(held_out), "--calibration-images", "16",
                    "--parity-images", "16", "--bootstrap", "20", "--min-int8-agreement", "1.01",
                    "--latency-reference", "none"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["input"]["shape"] == [None, 48, 64, 3]
    assert manifest["training"]["fit"]["best_epoch"] == state["best"]["epoch"]
    test_rows = [row for row in (tmp_path / "out" / "split.csv").read_text().split() if row.endswith(",test")]
    assert len(test_rows) == sum(s == "test" for s in split_of.values())
    assert Classifier(str(tmp_path / "out")).predict(encode(make_image(80, 60, seed=3))).top_class in CLASSES


def test_it_starts_a_second_run_from_a_bundles_weights_on_its_own_split_and_inputs_only(e2e_bundle, tmp_path):
    metadata = os.path.join(os.path.dirname(e2e_bundle), "metadata.csv")
    images = os.path.join(os.path.dirname(e2e_bundle), "images")

    def train(work, *extra):
        return ml_main(["train", "--mode", "end-to-end", "--metadata", metadata, "--images", images,
                        "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / work), "--alpha", "0.35",
                        "--weights", "none", "--size", "48", "--colour", "clahe", "--epochs", "1",
                        "--warmup-epochs", "0", "--batch-size", "8", "--train-only", "--init-from", e2e_bundle, *extra])

    # Another split could put the bundle's training images into validation: refused.
    with pytest.raises(SystemExit, match="another part of the split"):
        train("other_split", "--width", "64", "--split-seed", "7")
    own_split = ["--split-csv", os.path.join(e2e_bundle, "split.csv")]
    # Other inputs (a square 48x48 here) than the weights were trained on: refused.
    with pytest.raises(ValueError, match="was trained on"):
        train("other_size", "--width", "48", *own_split)
    # Unless asked for: the convolutional weights fit any size, and the run starts from them exactly.
    assert train("resized", "--width", "48", "--init-other-size", "--head-lr", "0", "--backbone-lr", "0",
                 *own_split) == 0
    trained = keras.models.load_model(os.path.join(e2e_bundle, "model.keras"), compile=False).get_weights()
    resized = best_model(tmp_path / "resized" / "end_to_end")  # the same weights fit the 48x64 model
    for loaded, original in zip(resized.get_weights(), trained, strict=True):
        np.testing.assert_array_equal(loaded, original)
    # Another size never excuses other colour handling.
    with pytest.raises(ValueError, match="was trained on"):
        train("other_colour", "--width", "48", "--init-other-size", "--colour", "none", *own_split)
    # And without a bundle to start from, the flag is a mistake, said before any training.
    with pytest.raises(SystemExit, match="--init-other-size needs --init-from"):
        ml_main(["train", "--mode", "end-to-end", "--metadata", metadata, "--images", images, "--out",
                 str(tmp_path / "out"), "--work-dir", str(tmp_path / "no_start"), "--weights", "none",
                 "--size", "48", "--colour", "clahe", "--train-only", "--init-other-size", *own_split])
    # At a learning rate of 0 the run's best epoch holds exactly the bundle's weights: they were loaded.
    assert train("same", "--width", "64", "--head-lr", "0", "--backbone-lr", "0", *own_split) == 0
    state = json.loads((tmp_path / "same" / "end_to_end" / "state.json").read_text())
    assert state["config"]["init_from"] == json.loads(Path(e2e_bundle, "manifest.json").read_text())["version"]
    for loaded, original in zip(best_model(tmp_path / "same" / "end_to_end").get_weights(), trained, strict=True):
        np.testing.assert_array_equal(loaded, original)
    # Framed views without the crop that takes the frames away: a mistake, said before any training.
    with pytest.raises(SystemExit, match="light_framed_quarter needs --field-of-view"):
        train("framed_uncropped", "--width", "64", "--augmentation", "light_framed_quarter", *own_split)
    # A run may add the crop to the field of view (and train on framed views) from a start without it.
    assert train("framed", "--width", "64", "--field-of-view", "--augmentation", "light_framed", "--head-lr", "0",
                 "--backbone-lr", "0", *own_split) == 0
    framed_state = json.loads((tmp_path / "framed" / "end_to_end" / "state.json").read_text())
    assert framed_state["preprocessing"]["field_of_view"] is True
    for loaded, original in zip(best_model(tmp_path / "framed" / "end_to_end").get_weights(), trained, strict=True):
        np.testing.assert_array_equal(loaded, original)


def test_it_packages_the_mean_of_several_seeds_best_weights_as_one_network(e2e_bundle, tmp_path):
    metadata = os.path.join(os.path.dirname(e2e_bundle), "metadata.csv")
    images = os.path.join(os.path.dirname(e2e_bundle), "images")

    def train(work, seed, *extra):
        return ml_main(["train", "--mode", "end-to-end", "--metadata", metadata, "--images", images,
                        "--out", str(tmp_path / "soup"), "--work-dir", str(tmp_path / work), "--alpha", "0.35",
                        "--weights", "none", "--size", "48", "--width", "64", "--colour", "clahe", "--epochs", "1",
                        "--warmup-epochs", "0", "--batch-size", "8",
                        "--split-csv", os.path.join(e2e_bundle, "split.csv"),
                        # Rates high enough for one tiny epoch to move the seeds apart.
                        "--backbone-lr", "0.01", "--head-lr", "0.01", "--ema-decay", "0.5",
                        "--init-from", e2e_bundle, "--seed", str(seed), *extra])

    assert train("a", 1, "--train-only") == 0
    assert train("b", 2, "--train-only") == 0
    # Refused before any training: a member sharing this run's seed, one of another recipe, an unfinished one.
    with pytest.raises(ValueError, match="a seed of its own"):
        train("c", 1, "--average-with", str(tmp_path / "a"))
    state = json.loads((tmp_path / "a" / "end_to_end" / "state.json").read_text())
    for name, changed, message in (("other", {"config": state["config"] | {"mixup": 0.5}}, r"other settings \(mixup\)"),
                                   ("unfinished", {"next_epoch": 0}, "stopped after epoch 0 of 1")):
        folder = tmp_path / name / "end_to_end"
        folder.mkdir(parents=True)
        (folder / "state.json").write_text(json.dumps(state | changed))
        (folder / "best.npz").write_bytes((tmp_path / "a" / "end_to_end" / "best.npz").read_bytes())
        with pytest.raises(ValueError, match=message):
            train("c", 3, "--average-with", str(tmp_path / name))
    assert not (tmp_path / "c" / "end_to_end" / "state.json").exists()  # nothing was trained for the refused soups

    assert train("c", 3, "--average-with", str(tmp_path / "a"), str(tmp_path / "b" / "end_to_end"),
                 "--calibration-images", "16", "--parity-images", "16", "--bootstrap", "20",
                 "--min-int8-agreement", "1.01", "--latency-reference", "none") == 0
    soup = json.loads((tmp_path / "soup" / "manifest.json").read_text())["training"]["fit"]["soup"]
    assert [m["seed"] for m in soup["members"]] == [3, 1, 2]
    members = [best_model(tmp_path / run / "end_to_end") for run in ("a", "b", "c")]
    packaged = keras.models.load_model(str(tmp_path / "soup" / "model.keras"), compile=False)
    weights = [m.get_weights() for m in members]
    assert max(np.abs(a - b).max() for a, b in zip(weights[0], weights[1])) > 1e-3  # the seeds did train apart
    shifted = len(weights[0]) - 1  # the classifier's bias also carries the prior shift, if one was adopted
    for i, value in enumerate(packaged.get_weights()):
        if i != shifted:
            np.testing.assert_allclose(value, np.mean([w[i] for w in weights], axis=0), atol=1e-5)
    card = render_card(str(tmp_path / "soup"))
    assert "The packaged weights are a soup" in card and "| 2 | 1 (" in card
    assert "--seed 1 --split-seed" in card and "--work-dir ~/.cache/skinportal/train/soup-seed1 --train-only" in card
    assert ("--average-with ~/.cache/skinportal/train/soup-seed1 ~/.cache/skinportal/train/soup-seed2"
            in card.split("--seed 3")[1])

    # The soup bundle as one member of a larger soup: it counts as its three runs, its class-prior
    # shift is taken back out, and seeds it already holds are refused.
    with pytest.raises(ValueError, match="a seed of its own"):
        train("e", 2, "--out", str(tmp_path / "refused"), "--average-with", str(tmp_path / "soup"))
    assert train("d", 4, "--out", str(tmp_path / "bigger"), "--average-with", str(tmp_path / "soup"),
                 "--target-sensitivity", "0.91", "--calibration-images", "16", "--parity-images", "16", "--bootstrap", "20",
                 "--min-int8-agreement", "1.01", "--latency-reference", "none") == 0
    manifest = json.loads((tmp_path / "bigger" / "manifest.json").read_text())
    members = manifest["training"]["fit"]["soup"]["members"]
    assert [m["seed"] for m in members] == [4, 3, 1, 2]
    assert [m.get("via") for m in members] == [None, "soup", "soup", "soup"]
    weights.append(best_model(tmp_path / "d" / "end_to_end").get_weights())
    split = read_split_csv(os.path.join(e2e_bundle, "split.csv"))
    train_labels = np.array([r.label for r in load_metadata(metadata, [images]) if split[r.image_id] == "train"])
    tau = manifest["training"]["post_training"]["prior_adjustment_tau"]
    bigger = keras.models.load_model(str(tmp_path / "bigger" / "model.keras"), compile=False).get_weights()
    bigger[shifted] = bigger[shifted] - endtoend.prior_bias(train_labels, tau)
    for i, value in enumerate(bigger):
        np.testing.assert_allclose(value, np.mean([w[i] for w in weights], axis=0), atol=1e-5)
    card = render_card(str(tmp_path / "bigger"))
    assert "--average-with ~/.cache/skinportal/train/bigger-seed3 ~/.cache/skinportal/train/bigger-seed1" in card
    assert card.count("--target-sensitivity 0.91") == 4  # every run's command: the members' and the last

    # A run on other training views joins the soup only when the soup is told it may mix them
    # (--soup-across augmentation); each member keeps its own views in the manifest and the card.
    assert train("f", 5, "--augmentation", "light", "--train-only") == 0
    with pytest.raises(ValueError, match=r"other settings \(augmentation\)"):
        train("g", 6, "--out", str(tmp_path / "mixed"), "--average-with", str(tmp_path / "f"), str(tmp_path / "soup"))
    with pytest.raises(SystemExit, match="--soup-across needs --average-with"):
        train("g", 6, "--out", str(tmp_path / "mixed"), "--soup-across", "augmentation")
    assert not (tmp_path / "g" / "end_to_end" / "state.json").exists()
    assert train("g", 6, "--out", str(tmp_path / "mixed"), "--average-with", str(tmp_path / "f"), str(tmp_path / "soup"),
                 "--soup-across", "augmentation", "--calibration-images", "16", "--parity-images", "16",
                 "--bootstrap", "20", "--min-int8-agreement", "1.01", "--latency-reference", "none") == 0
    fit = json.loads((tmp_path / "mixed" / "manifest.json").read_text())["training"]["fit"]
    assert fit["soup"]["across"] == ["augmentation"]
    assert [(m["seed"], m["augmentation"]) for m in fit["soup"]["members"]] == [
        (6, "full"), (5, "light"), (3, "full"), (1, "full"), (2, "full")]
    mixed = [best_model(tmp_path / run / "end_to_end").get_weights() for run in ("g", "f")] + weights[:3]
    packaged = keras.models.load_model(str(tmp_path / "mixed" / "model.keras"), compile=False).get_weights()
    for i, value in enumerate(packaged):
        if i != shifted:
            np.testing.assert_allclose(value, np.mean([w[i] for w in mixed], axis=0), atol=1e-5)
    card = render_card(str(tmp_path / "mixed"))
    assert "across training views" in card and "| 5 | 1 (" in card and " light |" in card
    seed5, = (command for command in card.split(".venv/bin/python -m ml train") if "--seed 5 " in command)
    seed6, = (command for command in card.split(".venv/bin/python -m ml train") if "--seed 6 " in command)
    assert "--augmentation light" in seed5 and "--augmentation" not in seed6
    assert "--soup-across augmentation" in seed6 and "--soup-across" not in seed5
    # The bundle it joined is named as it is, not retrained run by run (its own card rebuilds it).
    assert "--average-with ~/.cache/skinportal/train/mixed-seed5 ml/models/soup --soup-across augmentation" in seed6
    assert card.count(".venv/bin/python -m ml train") == 2


def test_it_distils_a_bundles_two_view_answers_into_a_run_and_records_the_teacher(e2e_bundle, tmp_path):
    from ml.data import records_in
    from ml.inference import Classifier
    from ml.training.distill import teacher_answers

    metadata = os.path.join(os.path.dirname(e2e_bundle), "metadata.csv")
    images = os.path.join(os.path.dirname(e2e_bundle), "images")
    split = read_split_csv(os.path.join(e2e_bundle, "split.csv"))
    train_records = records_in(load_metadata(metadata, [images]), split, "train")
    answers = teacher_answers(e2e_bundle, train_records[:5], batch=2)
    classifier = Classifier(e2e_bundle, variant="fp32")
    with open(train_records[0].path, "rb") as fh:
        x = classifier.prepare(fh.read())[None]
    mirrored = (classifier.probabilities(x) + classifier.probabilities(np.ascontiguousarray(x[:, :, ::-1]))) / 2
    assert answers.shape == (5, len(CLASSES)) and answers.dtype == np.float32
    np.testing.assert_allclose(answers[0], mirrored[0], atol=1e-6)
    np.testing.assert_allclose(answers.sum(1), 1.0, atol=1e-5)

    def train(name, *extra):
        return ml_main(["train", "--mode", "end-to-end", "--metadata", metadata, "--images", images,
                        "--out", str(tmp_path / name), "--work-dir", str(tmp_path / f"work-{name}"), "--alpha", "0.35",
                        "--weights", "none", "--size", "48", "--width", "64", "--colour", "clahe", "--epochs", "1",
                        "--warmup-epochs", "0", "--batch-size", "8",
                        "--split-csv", os.path.join(e2e_bundle, "split.csv"), "--backbone-lr", "0.01",
                        "--head-lr", "0.01", "--init-from", e2e_bundle, "--seed", "5", *extra])

    assert train("plain", "--train-only") == 0
    assert train("distilled", "--distill-from", e2e_bundle, "--distill-weight", "0.5", "--calibration-images", "16",
                 "--parity-images", "16", "--bootstrap", "20", "--min-int8-agreement", "1.01",
                 "--latency-reference", "none") == 0
    # The same seed and start: only the targets differ, and so do the trained weights.
    plain, distilled = (best_model(tmp_path / f"work-{name}" / "end_to_end").get_weights()
                        for name in ("plain", "distilled"))
    assert max(float(np.abs(a - b).max()) for a, b in zip(plain, distilled)) > 1e-4
    fit = json.loads((tmp_path / "distilled" / "manifest.json").read_text())["training"]["fit"]
    teacher_version = json.loads((Path(e2e_bundle) / "manifest.json").read_text())["version"]
    assert (fit["distill_from"], fit["distill_weight"]) == (teacher_version, 0.5)
    assert (f"--distill-from ml/models/{teacher_version} --distill-weight 0.5"
            in render_card(str(tmp_path / "distilled")))


def test_it_trains_without_a_carved_selection_sets_images_and_refuses_starts_that_saw_them(e2e_bundle, tmp_path,
                                                                                           capsys):
    import shutil

    metadata = os.path.join(os.path.dirname(e2e_bundle), "metadata.csv")
    images = tmp_path / "images"
    shutil.copytree(os.path.join(os.path.dirname(e2e_bundle), "images"), images)
    carved = tmp_path / "split.csv"
    assert ml_main(["carve-selection", "--split-csv", os.path.join(e2e_bundle, "split.csv"), "--fraction", "0.3",
                    "--seed", "5", "--out", str(carved), "--metadata", metadata, "--images", str(images)]) == 0
    selected = [i for i, s in read_split_csv(str(carved)).items() if s == "select"]
    # The selection set's files are gone: a run that needed any of them would fail to find it.
    for image_id in selected:
        (images / f"{image_id}.jpg").unlink()

    def train(work, *extra):
        return ml_main(["train", "--mode", "end-to-end", "--metadata", metadata, "--images", str(images),
                        "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / work), "--alpha", "0.35",
                        "--weights", "none", "--size", "48", "--width", "64", "--colour", "clahe", "--epochs", "1",
                        "--batch-size", "8", "--train-only", "--split-csv", str(carved), *extra])

    # The bundle's weights have seen the selection set's images in training: refused as a start.
    with pytest.raises(SystemExit, match="another part of the split"):
        train("from_bundle", "--init-from", e2e_bundle)
    assert train("fresh") == 0
    assert f"select: {len(selected)} images of the second selection set, never loaded" in capsys.readouterr().out
    state = json.loads((tmp_path / "fresh" / "end_to_end" / "state.json").read_text())
    assert state["next_epoch"] == 1 and len(state["history"]) == 1
