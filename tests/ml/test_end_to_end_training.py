"""`python -m ml train --mode end-to-end`: augmentation, resume, and a tiny non-square run through
post-processing, export, parity, the int8 gate and inference (TensorFlow; generated images)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the 'train' extra (TensorFlow) is not installed")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from ml.__main__ import main as ml_main  # noqa: E402
from ml.card import render_card  # noqa: E402
from ml.classes import BENIGN_INDICES, CLASSES, MALIGNANT_INDICES  # noqa: E402
from ml.data import load_metadata, read_split_csv  # noqa: E402
from ml.errors import ModelIntegrityError  # noqa: E402
from ml.explain import heat_map  # noqa: E402
from ml.inference import Classifier  # noqa: E402
from ml.manifest import OUTPUTS  # noqa: E402
from ml.preprocessing import PreprocessConfig  # noqa: E402
from ml.training import batching, endtoend  # noqa: E402
from ml.training.augment import AUGMENTATIONS, augment_light  # noqa: E402
from tests.conftest import encode, make_image  # noqa: E402
from tests.ml.datasets import generated_dataset  # noqa: E402

pytestmark = pytest.mark.slow

CONFIG = PreprocessConfig(size=48, width=64, colour="clahe")


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


def _tiny_run(records, checkpoint_dir, *, stop_after=None, finish_now=False):
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(5)
    base = keras.applications.MobileNetV2(alpha=0.35, include_top=False, weights=None, input_shape=(48, 64, 3))
    model = endtoend.build_model(base, dropout=0.3, seed=5)
    cfg = endtoend.EndToEndConfig(epochs=2, warmup_epochs=1, batch_size=8, patience=5, seed=5)
    train, val = records[::2], records[1::2]
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


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e_nonsquare")
    metadata, images = generated_dataset(str(root), context=True)
    out = str(root / "bundle")
    argv = [
        "train", "--mode", "end-to-end", "--metadata", metadata, "--images", images, "--out", out,
        "--work-dir", str(root / "work"), "--alpha", "0.35", "--weights", "none", "--size", "48", "--width", "64",
        "--colour", "clahe", "--epochs", "1", "--batch-size", "8", "--calibration-images", "16",
        "--parity-images", "16", "--bootstrap", "20",
        # An impossible gate: the bundle must come out fp32-only, with int8 refused.
        "--min-int8-agreement", "1.01",
    ]
    assert ml_main(argv) == 0
    return out


def test_it_packages_a_non_square_model_with_parity(bundle):
    manifest = json.load(open(os.path.join(bundle, "manifest.json")))
    assert manifest["input"]["shape"] == [None, 48, 64, 3]
    assert manifest["preprocessing"]["width"] == 64 and manifest["preprocessing"]["size"] == 48
    parity = manifest["checks"]["parity_keras_vs_onnxruntime"]
    assert parity["max_abs_probability_difference"] <= 1e-4 and parity["identical_argmax"]
    # Format 2: three outputs, the map checked to average to the logits, screening fitted.
    assert manifest["format"] == 2 and [manifest["outputs"][role]["name"] for role in OUTPUTS] == list(OUTPUTS)
    assert parity["cam_mean_plus_bias_vs_logits"] <= parity["cam_tolerance"]
    assert manifest["outputs"]["cam"]["grid"] == [2, 2]  # MobileNetV2 at 48x64: stride 32, rounded up
    # Screening reads the middle layer's pooled output beside the last one's (ml/screening/ood.py).
    ood = manifest["screening"]["ood"]
    assert [block["layer"] for block in ood["blocks"]] == ["block_13_expand_relu", "out_relu"]
    assert ood["blocks"][1]["columns"] == [ood["blocks"][0]["columns"][1], ood["feature_dimensions"]]
    assert ood["feature_dimensions"] - ood["blocks"][0]["columns"][1] == 1280
    assert all(block["scale"] > 0 for block in ood["blocks"])
    assert os.path.isfile(os.path.join(bundle, manifest["screening"]["file"]))
    assert manifest["training"]["fit"]["mode"] == "end-to-end"
    post = manifest["training"]["post_training"]
    assert post["test_time_views"][0] == "none"
    assert {row["candidate"] for row in post["prior_candidates"]} >= {"tau=+0.0", "tau=+1.0", "tau=-1.0"}


def test_it_serves_portrait_and_landscape_uploads_through_the_non_square_model(bundle):
    classifier = Classifier(bundle)
    landscape = make_image(200, 150, seed=8)
    portrait = np.ascontiguousarray(np.rot90(landscape))
    assert classifier.prepare(encode(landscape)).shape == (48, 64, 3)
    assert classifier.prepare(portrait).shape == (48, 64, 3)
    for prediction in classifier.predict_batch([landscape, portrait, encode(landscape)]):
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction.top_class in CLASSES
        assert prediction.cam.shape == (2, 2, len(CLASSES))
        heat = heat_map(prediction.cam, CLASSES.index(prediction.top_class), prediction.image_size,
                        classifier.config.height_width)
        assert heat.shape == prediction.image_size and heat.dtype == np.float32


def test_it_leaves_an_int8_copy_below_the_gate_out_and_refuses_to_load_it(bundle):
    manifest = json.load(open(os.path.join(bundle, "manifest.json")))
    assert set(manifest["variants"]) == {"fp32"}
    assert manifest["checks"]["int8"]["shipped"] is False
    assert manifest["checks"]["int8"]["agreement"] < manifest["checks"]["int8"]["required_agreement"]
    assert not os.path.exists(os.path.join(bundle, "model.int8.onnx"))
    with pytest.raises(ModelIntegrityError, match="no 'int8' variant"):
        Classifier(bundle, variant="int8")


def test_it_calibrates_int8_on_any_number_of_images(bundle, tmp_path):
    from ml.training.onnx_export import onnx_logits
    from ml.training.quantize import even_batch_size, quantize_int8

    # onnxruntime's histogram calibrators stack the batches' outputs: a shorter last batch broke them.
    assert [even_batch_size(n) for n in (256, 140, 40, 7, 37, 1)] == [32, 28, 20, 7, 1, 1]
    images = np.random.default_rng(0).uniform(-1, 1, (40, 48, 64, 3)).astype(np.float32)
    fp32 = os.path.join(bundle, "model.onnx")
    result = quantize_int8(fp32, str(tmp_path / "int8.onnx"), images, images, onnx_logits(fp32, images),
                           min_agreement=1.01, log=lambda _: None)  # an impossible gate: every method runs
    assert result["calibration_images"] == 40 and result["method"] is not None and 0 <= result["agreement"] <= 1
    assert (tmp_path / "int8.onnx").stat().st_size > 0


def test_it_takes_the_clinical_context_into_account_when_given(bundle):
    from ml.context import ClinicalContext
    from tests.ml.datasets import CONTEXT_SITES

    manifest = json.loads(open(os.path.join(bundle, "manifest.json")).read())
    # In the generated data the site tells the class: the guard adopts the table on validation.
    context = manifest["context"]
    assert 0 < context["weight"] <= 1 and set(context["malignancy_threshold"]) == {"fp32"}
    assert manifest["checks"]["clinical_context"]["adopted"] is True
    assert manifest["metrics"]["test_with_context"]["fp32"]["balanced_accuracy"] >= \
        manifest["metrics"]["test"]["fp32"]["balanced_accuracy"]
    classifier = Classifier(bundle)
    image = encode(make_image(80, 60, seed=11))
    alone, without = classifier.predict(image), classifier.predict(image, ClinicalContext(sex="other"))
    assert alone.context == {} and without.context == {} and alone.probabilities == without.probabilities
    assert alone.threshold == classifier.threshold
    on_face = classifier.predict(image, ClinicalContext(age=24, sex="female", site=CONTEXT_SITES[0]))
    assert on_face.context["site"] == CONTEXT_SITES[0] and on_face.threshold == context["malignancy_threshold"]["fp32"]
    assert on_face.probabilities[CLASSES[0]] > alone.probabilities[CLASSES[0]]
    assert on_face.warnings == alone.warnings  # screening judges the image alone
    batch = classifier.predict_batch([image, image], contexts=[None, ClinicalContext(site=CONTEXT_SITES[0])])
    assert batch[0].probabilities == pytest.approx(alone.probabilities) and batch[1].context
    with pytest.raises(ValueError, match="contexts"):
        classifier.predict_batch([image], contexts=[None, None])


def test_it_evaluates_with_the_labels_clinical_context_unless_told_image_only(bundle, tmp_path):
    from tests.ml.datasets import generated_dataset as make

    metadata, images = make(str(tmp_path / "data"), per_class=3, context=True)
    results = {}
    for flags in ([], ["--image-only"]):
        out = str(tmp_path / f"eval{len(flags)}.json")
        assert ml_main(["evaluate", "--images", images, "--labels", metadata, "--model", bundle, "--json", out,
                        "--no-plots", "--predictions", str(tmp_path / "p.csv"), *flags]) == 0
        results[len(flags)] = json.loads(open(out).read())
    with_context, alone = results[0], results[1]
    assert with_context["clinical_context"]["used_for_images"] == 21 and with_context["threshold"] == "per image"
    assert with_context["clinical_context"]["image_alone"]["balanced_accuracy"] == alone["balanced_accuracy"]
    assert alone["clinical_context"] == {"used_for_images": 0, "why_not": "--image-only"}
    assert with_context["balanced_accuracy"] >= alone["balanced_accuracy"]  # the site tells the class here


def test_its_validation_figures_with_context_are_those_of_the_answers_as_served(bundle, tmp_path):
    """The manifest's validation headline with context is what `ml evaluate` (the inference path:
    context, per-answer threshold, operating point) gives on the same validation images."""
    import csv

    from ml.data import read_split_csv

    root = os.path.dirname(bundle)
    split = read_split_csv(os.path.join(bundle, "split.csv"))
    with open(os.path.join(root, "metadata.csv")) as fh:
        rows = list(csv.DictReader(fh))
    val_csv = tmp_path / "val.csv"
    with open(val_csv, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if split.get(r["image_id"]) == "val")
    out = tmp_path / "val.json"
    assert ml_main(["evaluate", "--images", os.path.join(root, "images"), "--labels", str(val_csv), "--model", bundle,
                    "--json", str(out), "--no-plots"]) == 0
    measured = json.loads(out.read_text())
    packaged = json.loads(Path(bundle, "manifest.json").read_text())["metrics"]["validation_with_context"]["fp32"]
    assert measured["n_images"] == packaged["n_images"] > 0
    for key in ("balanced_accuracy", "malignant_sensitivity", "malignant_specificity", "malignant_auc"):
        assert measured[key] == pytest.approx(packaged[key], abs=1e-4), key


def test_it_predicts_a_folder_with_the_context_csv(bundle, tmp_path):
    import csv

    from tests.ml.datasets import CONTEXT_SITES
    from tests.ml.datasets import generated_dataset as make

    metadata, images = make(str(tmp_path / "data"), per_class=1, context=True, width=200, height=150)
    rows = {}
    for flags in (["--context", metadata], []):
        out = str(tmp_path / f"p{len(flags)}.csv")
        assert ml_main(["predict", "--images", images, "--model", bundle, "--csv", out, *flags]) == 0
        with open(out, newline="") as fh:
            rows[len(flags)] = {row["image_id"]: row for row in csv.DictReader(fh)}
    assert rows[2]["GEN_0_0"]["context"] == f"age=<30;sex=male;site={CONTEXT_SITES[0]}"
    assert all(row["context"] == "" for row in rows[0].values())
    bad = tmp_path / "bad.csv"
    bad.write_text("name,age\nx,50\n")
    assert ml_main(["predict", "--images", images, "--model", bundle, "--csv", str(tmp_path / "x.csv"),
                    "--context", str(bad)]) == 2


def test_it_renders_a_model_card_for_the_end_to_end_bundle(bundle):
    card = render_card(bundle)
    assert "every layer fine-tuned end to end" in card
    assert "| epoch | loss | val bal. acc. (raw / EMA)" in card and "CPU-hours" in card
    assert "48x64x3 (height x width)" in card
    assert "--mode end-to-end" in card and "--width 64" in card
    assert "int8 is not shipped with this model" in card
    # No int8 column for a variant that is not there; a column for the answers with clinical context.
    assert "| metric | fp32 | fp32 with clinical context |\n" in card
    assert "### With the clinical context" in card and "**(used)**" in card
    assert "| AUC gain | AUC won in resamples |" in card  # both routes of the context guard, per weight
    assert "the largest balanced-accuracy gain of at least 0.01" in card
    assert "test-time views `none`" in card and "prior adjustment `tau=+0.0`" in card


def test_its_card_says_when_the_context_weight_was_chosen_for_its_malignant_auc(bundle, tmp_path):
    import shutil

    copy = tmp_path / "by-auc"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["context"]["chosen_by"] == "balanced_accuracy"  # the generated context tells the class
    manifest["context"]["chosen_by"] = "malignant_auc"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    card = render_card(str(copy))
    assert "no weight gained 0.01 balanced accuracy, so the highest malignant AUC" in card
    assert "the largest balanced-accuracy gain of at least 0.01" not in card


def test_its_card_gives_a_continued_runs_start_and_the_command_that_continues_it(bundle, tmp_path):
    import shutil

    first = render_card(bundle)
    assert "--init-from" not in first and "--augmentation" not in first and "random resized crop" in first
    continued = tmp_path / "continued"
    shutil.copytree(bundle, continued)
    manifest = json.loads((continued / "manifest.json").read_text())
    manifest["training"]["fit"] |= {"init_from": "mnv2-start", "augmentation": "light"}
    (continued / "manifest.json").write_text(json.dumps(manifest))
    card = render_card(str(continued))
    assert "Started from the weights of `mnv2-start`" in card
    assert "--init-from ml/models/mnv2-start --split-csv ml/models/mnv2-start/split.csv" in card
    assert "--augmentation light" in card and "light views only" in card and "random resized crop" not in card


def test_it_compares_candidate_bundles_on_validation_with_a_paired_bootstrap(bundle, capsys):
    root = os.path.dirname(bundle)
    argv = ["compare", "--models", bundle, bundle, "--metadata", os.path.join(root, "metadata.csv"),
            "--images", os.path.join(root, "images"), "--bootstrap", "50"]
    assert ml_main(argv) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| bundle")]
    assert len(rows) == 2 and "(baseline)" in rows[0]
    # A model is never better than itself.
    assert "| 0% of resamples | 0% | 0% |" in rows[1]
    assert rows[0].split("|")[2] == rows[1].split("|")[2]
    # The last column: sensitivity / specificity at the bundle's own threshold, as packaging measured them.
    fitted = json.loads((Path(bundle) / "manifest.json").read_text())["variants"]["fp32"]
    sensitivity, specificity = (float(x) for x in rows[1].split("|")[-2].split(" / "))
    assert sensitivity == pytest.approx(fitted["validation_sensitivity"], abs=1e-4)
    assert specificity == pytest.approx(fitted["validation_specificity"], abs=1e-4)
    # As served, the clinical context (it tells the class in this generated data) moves the figures.
    assert ml_main([*argv, "--as-served"]) == 0
    out = capsys.readouterr().out
    served = [line for line in out.splitlines() if line.startswith("| bundle")]
    assert "as served" in out and len(served) == 2
    assert float(served[0].split("|")[2]) >= float(rows[0].split("|")[2])


def _best_model(checkpoint_dir) -> keras.Model:
    """A run's best.npz loaded into a fresh tiny non-square model (alpha 0.35, 48x64)."""
    base = keras.applications.MobileNetV2(alpha=0.35, include_top=False, weights=None, input_shape=(48, 64, 3))
    model = endtoend.build_model(base, dropout=0.3, seed=20261125)
    with np.load(os.path.join(checkpoint_dir, "best.npz")) as arrays:
        for variable, name in zip(model.variables, sorted(arrays.files, key=lambda n: int(n.split("_")[1]))):
            variable.assign(arrays[name])
    return model


def test_it_starts_a_second_run_from_a_bundles_weights_on_its_own_split_and_inputs_only(bundle, tmp_path):
    metadata = os.path.join(os.path.dirname(bundle), "metadata.csv")
    images = os.path.join(os.path.dirname(bundle), "images")

    def train(work, *extra):
        return ml_main(["train", "--mode", "end-to-end", "--metadata", metadata, "--images", images,
                        "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / work), "--alpha", "0.35",
                        "--weights", "none", "--size", "48", "--colour", "clahe", "--epochs", "1",
                        "--warmup-epochs", "0", "--batch-size", "8", "--train-only", "--init-from", bundle, *extra])

    # Another split could put the bundle's training images into validation: refused.
    with pytest.raises(SystemExit, match="another part of the split"):
        train("other_split", "--width", "64", "--split-seed", "7")
    own_split = ["--split-csv", os.path.join(bundle, "split.csv")]
    # Other inputs (a square 48x48 here) than the weights were trained on: refused.
    with pytest.raises(ValueError, match="was trained on"):
        train("other_size", "--width", "48", *own_split)
    # At a learning rate of 0 the run's best epoch holds exactly the bundle's weights: they were loaded.
    assert train("same", "--width", "64", "--head-lr", "0", "--backbone-lr", "0", *own_split) == 0
    state = json.loads((tmp_path / "same" / "end_to_end" / "state.json").read_text())
    assert state["config"]["init_from"] == json.loads(Path(bundle, "manifest.json").read_text())["version"]
    trained = keras.models.load_model(os.path.join(bundle, "model.keras"), compile=False).get_weights()
    for loaded, original in zip(_best_model(tmp_path / "same" / "end_to_end").get_weights(), trained, strict=True):
        np.testing.assert_array_equal(loaded, original)


def test_it_packages_the_mean_of_several_seeds_best_weights_as_one_network(bundle, tmp_path):
    metadata = os.path.join(os.path.dirname(bundle), "metadata.csv")
    images = os.path.join(os.path.dirname(bundle), "images")

    def train(work, seed, *extra):
        return ml_main(["train", "--mode", "end-to-end", "--metadata", metadata, "--images", images,
                        "--out", str(tmp_path / "soup"), "--work-dir", str(tmp_path / work), "--alpha", "0.35",
                        "--weights", "none", "--size", "48", "--width", "64", "--colour", "clahe", "--epochs", "1",
                        "--warmup-epochs", "0", "--batch-size", "8", "--split-csv", os.path.join(bundle, "split.csv"),
                        # Rates high enough for one tiny epoch to move the seeds apart.
                        "--backbone-lr", "0.01", "--head-lr", "0.01", "--ema-decay", "0.5",
                        "--init-from", bundle, "--seed", str(seed), *extra])

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
    members = [_best_model(tmp_path / run / "end_to_end") for run in ("a", "b", "c")]
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
    weights.append(_best_model(tmp_path / "d" / "end_to_end").get_weights())
    split = read_split_csv(os.path.join(bundle, "split.csv"))
    train_labels = np.array([r.label for r in load_metadata(metadata, [images]) if split[r.image_id] == "train"])
    tau = manifest["training"]["post_training"]["prior_adjustment_tau"]
    bigger = keras.models.load_model(str(tmp_path / "bigger" / "model.keras"), compile=False).get_weights()
    bigger[shifted] = bigger[shifted] - endtoend.prior_bias(train_labels, tau)
    for i, value in enumerate(bigger):
        np.testing.assert_allclose(value, np.mean([w[i] for w in weights], axis=0), atol=1e-5)
    card = render_card(str(tmp_path / "bigger"))
    assert "--average-with ~/.cache/skinportal/train/bigger-seed3 ~/.cache/skinportal/train/bigger-seed1" in card
    assert card.count("--target-sensitivity 0.91") == 4  # every run's command: the members' and the last


def test_it_names_the_three_exported_outputs_by_their_shapes_and_orders_them():
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from ml.training.export import PackagingError, name_outputs

    def graph(outputs):
        nodes = [helper.make_node("Identity", ["x4"], ["StatefulPartitionedCall:2"]),
                 helper.make_node("Identity", ["x2"], ["StatefulPartitionedCall:0"]),
                 helper.make_node("Identity", ["f"], ["StatefulPartitionedCall:1"])]
        inputs = [helper.make_tensor_value_info("x4", TensorProto.FLOAT, ["N", 2, 3, 7]),
                  helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["N", 7]),
                  helper.make_tensor_value_info("f", TensorProto.FLOAT, ["N", 5])]
        model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs),
                                  opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = 9
        return model

    cam = helper.make_tensor_value_info("StatefulPartitionedCall:2", TensorProto.FLOAT, ["N", 2, 3, 7])
    logits = helper.make_tensor_value_info("StatefulPartitionedCall:0", TensorProto.FLOAT, ["N", 7])
    features = helper.make_tensor_value_info("StatefulPartitionedCall:1", TensorProto.FLOAT, ["N", 5])
    named = name_outputs(graph([cam, features, logits]), len(CLASSES))
    onnx.checker.check_model(named)
    assert [o.name for o in named.graph.output] == list(OUTPUTS)
    session = ort.InferenceSession(named.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"x4": np.full((1, 2, 3, 7), 4, np.float32), "x2": np.full((1, 7), 2, np.float32),
             "f": np.full((1, 5), 5, np.float32)}
    out = dict(zip(OUTPUTS, session.run(list(OUTPUTS), feeds)))
    assert out["cam"].shape == (1, 2, 3, 7) and out["logits"].shape == (1, 7) and out["features"].shape == (1, 5)
    with pytest.raises(PackagingError, match="expected"):
        name_outputs(graph([logits, features]), len(CLASSES))


def test_it_refuses_a_class_activation_map_that_does_not_average_to_the_logits(tmp_path):
    from ml.training.explainable import dense_bias, explainable_model
    from ml.training.export import PackagingError, check_cam_identity
    from ml.training.onnx_export import keras_to_onnx

    keras.utils.set_random_seed(3)
    image = keras.Input(shape=(32, 48, 3), name="input")
    feature_map = keras.layers.Conv2D(6, 3, strides=8, padding="same", activation="relu")(image)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(feature_map)
    dense = keras.layers.Dense(len(CLASSES), name="logits", bias_initializer="random_normal")
    model = keras.Model(image, dense(keras.layers.Dropout(0.2)(pooled)))
    path = str(tmp_path / "model.onnx")
    with open(path, "wb") as fh:
        fh.write(keras_to_onnx(explainable_model(model), input_name="input"))
    images = np.random.default_rng(0).uniform(-1, 1, (4, 32, 48, 3)).astype(np.float32)
    deviation, grid = check_cam_identity(dense_bias(model), path, images)
    assert deviation <= 1e-3 and grid == [4, 6]
    # The same graph checked against a model with another bias: the map would explain another model.
    dense.bias.assign(dense.bias.numpy() + 1.0)
    with pytest.raises(PackagingError, match="does not average to the logits"):
        check_cam_identity(dense_bias(model), path, images)


def test_it_times_test_time_views_against_the_served_bundle_unless_told_otherwise(tmp_path):
    from ml.manifest import shipped_model_dir
    from ml.training.finalize import latency_reference

    assert latency_reference(None) == os.path.join(shipped_model_dir(), "model.onnx")
    assert os.path.isfile(latency_reference(None))
    assert latency_reference(str(tmp_path / "other.onnx")) == str(tmp_path / "other.onnx")


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


def test_it_distils_a_bundles_two_view_answers_into_a_run_and_records_the_teacher(bundle, tmp_path):
    from ml.data import records_in
    from ml.inference import Classifier
    from ml.training.distill import teacher_answers

    metadata = os.path.join(os.path.dirname(bundle), "metadata.csv")
    images = os.path.join(os.path.dirname(bundle), "images")
    split = read_split_csv(os.path.join(bundle, "split.csv"))
    train_records = records_in(load_metadata(metadata, [images]), split, "train")
    answers = teacher_answers(bundle, train_records[:5], batch=2)
    classifier = Classifier(bundle, variant="fp32")
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
                        "--warmup-epochs", "0", "--batch-size", "8", "--split-csv", os.path.join(bundle, "split.csv"),
                        "--backbone-lr", "0.01", "--head-lr", "0.01", "--init-from", bundle, "--seed", "5", *extra])

    assert train("plain", "--train-only") == 0
    assert train("distilled", "--distill-from", bundle, "--distill-weight", "0.5", "--calibration-images", "16",
                 "--parity-images", "16", "--bootstrap", "20", "--min-int8-agreement", "1.01",
                 "--latency-reference", "none") == 0
    # The same seed and start: only the targets differ, and so do the trained weights.
    plain, distilled = (_best_model(tmp_path / f"work-{name}" / "end_to_end").get_weights()
                        for name in ("plain", "distilled"))
    assert max(float(np.abs(a - b).max()) for a, b in zip(plain, distilled)) > 1e-4
    fit = json.loads((tmp_path / "distilled" / "manifest.json").read_text())["training"]["fit"]
    teacher_version = json.loads((Path(bundle) / "manifest.json").read_text())["version"]
    assert (fit["distill_from"], fit["distill_weight"]) == (teacher_version, 0.5)
    assert (f"--distill-from ml/models/{teacher_version} --distill-weight 0.5"
            in render_card(str(tmp_path / "distilled")))


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
    model = _best_model(checkpoint)
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


def test_it_refits_the_threshold_for_another_target_sensitivity_when_repackaging(bundle, tmp_path):
    metadata = os.path.join(os.path.dirname(bundle), "metadata.csv")
    images = os.path.join(os.path.dirname(bundle), "images")
    out = tmp_path / "refit"
    assert ml_main(["repackage", "--model", bundle, "--out", str(out), "--version", "refit", "--metadata", metadata,
                    "--images", images, "--calibration-images", "16", "--parity-images", "16", "--bootstrap", "20",
                    "--min-int8-agreement", "1.01", "--target-sensitivity", "0.99"]) == 0
    old = json.loads((Path(bundle) / "manifest.json").read_text())["variants"]["fp32"]
    new = json.loads((out / "manifest.json").read_text())["variants"]["fp32"]
    assert (old["target_sensitivity"], new["target_sensitivity"]) == (0.9, 0.99)
    assert new["malignancy_threshold"] <= old["malignancy_threshold"]  # more sensitive: flags at a lower score
    assert "--min-int8-agreement 1.01 --target-sensitivity 0.99\n" in render_card(str(out))
