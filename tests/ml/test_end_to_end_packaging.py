"""A tiny non-square end-to-end bundle (tests/ml/conftest.py's `e2e_bundle`) through post-processing,
export, parity, the int8 gate and inference: clinical context, `ml evaluate`, `predict` and `compare`,
the model card and repackaging; and the export's own checks (TensorFlow; generated images)."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the 'train' extra (TensorFlow) is not installed")

import keras

from ml.__main__ import main as ml_main
from ml.card import render_card
from ml.classes import CLASSES
from ml.data import read_split_csv
from ml.errors import ModelIntegrityError
from ml.explain import heat_map
from ml.inference import Classifier
from ml.manifest import OUTPUTS
from tests.conftest import encode, make_image

pytestmark = pytest.mark.slow


def test_it_packages_a_non_square_model_with_parity(e2e_bundle):
    manifest = json.loads(Path(e2e_bundle, "manifest.json").read_text())
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
    assert os.path.isfile(os.path.join(e2e_bundle, manifest["screening"]["file"]))
    assert manifest["training"]["fit"]["mode"] == "end-to-end"
    post = manifest["training"]["post_training"]
    assert post["test_time_views"][0] == "none"
    assert {row["candidate"] for row in post["prior_candidates"]} >= {"tau=+0.0", "tau=+1.0", "tau=-1.0"}


def test_it_serves_portrait_and_landscape_uploads_through_the_non_square_model(e2e_bundle):
    classifier = Classifier(e2e_bundle)
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


def test_it_leaves_an_int8_copy_below_the_gate_out_and_refuses_to_load_it(e2e_bundle):
    manifest = json.loads(Path(e2e_bundle, "manifest.json").read_text())
    assert set(manifest["variants"]) == {"fp32"}
    assert manifest["checks"]["int8"]["shipped"] is False
    assert manifest["checks"]["int8"]["agreement"] < manifest["checks"]["int8"]["required_agreement"]
    assert not os.path.exists(os.path.join(e2e_bundle, "model.int8.onnx"))
    with pytest.raises(ModelIntegrityError, match="no 'int8' variant"):
        Classifier(e2e_bundle, variant="int8")


def test_it_calibrates_int8_on_any_number_of_images(e2e_bundle, tmp_path):
    from ml.training.onnx_export import onnx_logits
    from ml.training.quantize import even_batch_size, quantize_int8

    # onnxruntime's histogram calibrators stack the batches' outputs: a shorter last batch broke them.
    assert [even_batch_size(n) for n in (256, 140, 40, 7, 37, 1)] == [32, 28, 20, 7, 1, 1]
    images = np.random.default_rng(0).uniform(-1, 1, (40, 48, 64, 3)).astype(np.float32)
    fp32 = os.path.join(e2e_bundle, "model.onnx")
    result = quantize_int8(fp32, str(tmp_path / "int8.onnx"), images, images, onnx_logits(fp32, images),
                           min_agreement=1.01, log=lambda _: None)  # an impossible gate: every method runs
    assert result["calibration_images"] == 40 and result["method"] is not None and 0 <= result["agreement"] <= 1
    assert (tmp_path / "int8.onnx").stat().st_size > 0


def test_it_refits_the_threshold_for_another_target_sensitivity_when_repackaging(e2e_bundle, tmp_path):
    metadata = os.path.join(os.path.dirname(e2e_bundle), "metadata.csv")
    images = os.path.join(os.path.dirname(e2e_bundle), "images")
    out = tmp_path / "refit"
    assert ml_main(["repackage", "--model", e2e_bundle, "--out", str(out), "--version", "refit", "--metadata", metadata,
                    "--images", images, "--calibration-images", "16", "--parity-images", "16", "--bootstrap", "20",
                    "--min-int8-agreement", "1.01", "--target-sensitivity", "0.99", "--field-of-view"]) == 0
    old_manifest = json.loads((Path(e2e_bundle) / "manifest.json").read_text())
    new_manifest = json.loads((out / "manifest.json").read_text())
    # The crop to the field of view: declared by the new bundle only, and used by its classifier.
    assert "field_of_view" not in old_manifest["preprocessing"] and new_manifest["preprocessing"]["field_of_view"]
    assert "crop to the bright field of view" in new_manifest["preprocessing"]["steps"]
    assert Classifier(str(out)).config.field_of_view and not Classifier(e2e_bundle).config.field_of_view
    old, new = old_manifest["variants"]["fp32"], new_manifest["variants"]["fp32"]
    assert (old["target_sensitivity"], new["target_sensitivity"]) == (0.9, 0.99)
    assert new["malignancy_threshold"] <= old["malignancy_threshold"]  # more sensitive: flags at a lower score
    assert "--min-int8-agreement 1.01 --target-sensitivity 0.99 --field-of-view\n" in render_card(str(out))


def test_it_takes_the_clinical_context_into_account_when_given(e2e_bundle):
    from ml.context import ClinicalContext
    from tests.ml.datasets import CONTEXT_SITES

    manifest = json.loads(Path(e2e_bundle, "manifest.json").read_text())
    # In the generated data the site tells the class: the guard adopts the table on validation.
    context = manifest["context"]
    assert 0 < context["weight"] <= 1 and set(context["malignancy_threshold"]) == {"fp32"}
    assert manifest["checks"]["clinical_context"]["adopted"] is True
    assert manifest["metrics"]["test_with_context"]["fp32"]["balanced_accuracy"] >= \
        manifest["metrics"]["test"]["fp32"]["balanced_accuracy"]
    classifier = Classifier(e2e_bundle)
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


def test_it_evaluates_with_the_labels_clinical_context_unless_told_image_only(e2e_bundle, tmp_path):
    from tests.ml.datasets import generated_dataset as make

    metadata, images = make(str(tmp_path / "data"), per_class=3, context=True)
    results = {}
    for flags in ([], ["--image-only"]):
        out = str(tmp_path / f"eval{len(flags)}.json")
        assert ml_main(["evaluate", "--images", images, "--labels", metadata, "--model", e2e_bundle, "--json", out,
                        "--no-plots", "--predictions", str(tmp_path / "p.csv"), *flags]) == 0
        results[len(flags)] = json.loads(Path(out).read_text())
    with_context, alone = results[0], results[1]
    assert with_context["clinical_context"]["used_for_images"] == 21 and with_context["threshold"] == "per image"
    assert with_context["clinical_context"]["image_alone"]["balanced_accuracy"] == alone["balanced_accuracy"]
    assert alone["clinical_context"] == {"used_for_images": 0, "why_not": "--image-only"}
    assert with_context["balanced_accuracy"] >= alone["balanced_accuracy"]  # the site tells the class here


def test_its_validation_figures_with_context_are_those_of_the_answers_as_served(e2e_bundle, tmp_path):
    """The manifest's validation headline with context is what `ml evaluate` (the inference path:
    context, per-answer threshold, operating point) gives on the same validation images."""
    import csv

    from ml.data import read_split_csv

    root = os.path.dirname(e2e_bundle)
    split = read_split_csv(os.path.join(e2e_bundle, "split.csv"))
    with open(os.path.join(root, "metadata.csv")) as fh:
        rows = list(csv.DictReader(fh))
    val_csv = tmp_path / "val.csv"
    with open(val_csv, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if split.get(r["image_id"]) == "val")
    out = tmp_path / "val.json"
    assert ml_main(["evaluate", "--images", os.path.join(root, "images"), "--labels", str(val_csv),
                    "--model", e2e_bundle, "--json", str(out), "--no-plots"]) == 0
    measured = json.loads(out.read_text())
    packaged = json.loads(Path(e2e_bundle, "manifest.json").read_text())["metrics"]["validation_with_context"]["fp32"]
    assert measured["n_images"] == packaged["n_images"] > 0
    for key in ("balanced_accuracy", "malignant_sensitivity", "malignant_specificity", "malignant_auc"):
        assert measured[key] == pytest.approx(packaged[key], abs=1e-4), key


def test_it_predicts_a_folder_with_the_context_csv(e2e_bundle, tmp_path):
    import csv

    from tests.ml.datasets import CONTEXT_SITES
    from tests.ml.datasets import generated_dataset as make

    metadata, images = make(str(tmp_path / "data"), per_class=1, context=True, width=200, height=150)
    rows = {}
    for flags in (["--context", metadata], []):
        out = str(tmp_path / f"p{len(flags)}.csv")
        assert ml_main(["predict", "--images", images, "--model", e2e_bundle, "--csv", out, *flags]) == 0
        with open(out, newline="") as fh:
            rows[len(flags)] = {row["image_id"]: row for row in csv.DictReader(fh)}
    assert rows[2]["GEN_0_0"]["context"] == f"age=<30;sex=male;site={CONTEXT_SITES[0]}"
    assert all(row["context"] == "" for row in rows[0].values())
    bad = tmp_path / "bad.csv"
    bad.write_text("name,age\nx,50\n")
    assert ml_main(["predict", "--images", images, "--model", e2e_bundle, "--csv", str(tmp_path / "x.csv"),
                    "--context", str(bad)]) == 2


def test_it_compares_candidate_bundles_on_validation_with_a_paired_bootstrap(e2e_bundle, capsys):
    root = os.path.dirname(e2e_bundle)
    argv = ["compare", "--models", e2e_bundle, e2e_bundle, "--metadata", os.path.join(root, "metadata.csv"),
            "--images", os.path.join(root, "images"), "--bootstrap", "50"]
    assert ml_main(argv) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| bundle")]
    assert len(rows) == 2 and "(baseline)" in rows[0]
    # A model is never better than itself.
    assert "| 0.0% of resamples | 0.0% | 0.0% |" in rows[1]
    assert rows[0].split("|")[2] == rows[1].split("|")[2]
    # The last column: sensitivity / specificity at the bundle's own threshold, as packaging measured them.
    fitted = json.loads((Path(e2e_bundle) / "manifest.json").read_text())["variants"]["fp32"]
    sensitivity, specificity = (float(x) for x in rows[1].split("|")[-2].split(" / "))
    assert sensitivity == pytest.approx(fitted["validation_sensitivity"], abs=1e-4)
    assert specificity == pytest.approx(fitted["validation_specificity"], abs=1e-4)
    # As served, the clinical context (it tells the class in this generated data) moves the figures.
    assert ml_main([*argv, "--as-served"]) == 0
    out = capsys.readouterr().out
    served = [line for line in out.splitlines() if line.startswith("| bundle")]
    assert "as served" in out and len(served) == 2
    assert float(served[0].split("|")[2]) >= float(rows[0].split("|")[2])


def test_it_compares_bundles_on_a_carved_selection_set(e2e_bundle, tmp_path, capsys):
    root = os.path.dirname(e2e_bundle)
    data = ["--metadata", os.path.join(root, "metadata.csv"), "--images", os.path.join(root, "images")]
    compare = ["compare", *data, "--bootstrap", "20", "--split", "select", "--models"]
    # The bundle's own split has no selection set: a usage error that says so.
    with pytest.raises(SystemExit) as exc:
        ml_main([*compare, e2e_bundle])
    assert exc.value.code == 2 and "no select images" in capsys.readouterr().err
    copy = tmp_path / "carved"
    shutil.copytree(e2e_bundle, copy)
    assert ml_main(["carve-selection", "--split-csv", os.path.join(e2e_bundle, "split.csv"), "--fraction", "0.3",
                    "--seed", "5", "--out", str(copy / "split.csv"), *data]) == 0
    carved = read_split_csv(str(copy / "split.csv"))
    capsys.readouterr()
    assert ml_main([*compare, str(copy), str(copy)]) == 0
    out = capsys.readouterr().out
    n_select = sum(1 for s in carved.values() if s == "select")
    assert n_select and f"select split: {n_select} images" in out
    assert len([line for line in out.splitlines() if line.startswith("| carved")]) == 2


def test_it_compares_a_cross_fit_by_answering_each_image_from_the_fold_that_kept_it_out(e2e_bundle, tmp_path,
                                                                                          capsys):
    root = os.path.dirname(e2e_bundle)
    data = ["--metadata", os.path.join(root, "metadata.csv"), "--images", os.path.join(root, "images")]
    folds = []
    for keep in (0, 1):  # the same network twice, each copy claiming one fold of validation
        copy = tmp_path / f"fold{keep}"
        shutil.copytree(e2e_bundle, copy)
        assert ml_main(["fold-validation", "--split-csv", os.path.join(e2e_bundle, "split.csv"), "--keep", str(keep),
                        "--seed", "5", "--out", str(copy / "split.csv"), *data]) == 0
        folds.append(str(copy))
    capsys.readouterr()
    compare = ["compare", *data, "--bootstrap", "20", "--as-served", "--models", e2e_bundle]
    assert ml_main([*compare, "+".join(folds)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    assert len(rows) == 2
    assert rows[1].startswith("| fold0+fold1 |")
    # Every validation image answered once, by a copy of the same network: the same figures, never better.
    assert rows[0].split("|")[2:5] == rows[1].split("|")[2:5]
    assert "| 0.0% of resamples | 0.0% | 0.0% |" in rows[1]
    assert "fold0+fold1: one threshold on the pooled answers for 0.91 sensitivity" in out
    # Folds that do not partition validation, or a cross-fit as the baseline: usage errors that say so.
    for models, message in (([e2e_bundle, f"{folds[0]}+{folds[0]}"], "not one fold each"),
                            ([f"{folds[0]}+{folds[1]}"], "the baseline must be one bundle"),
                            ([e2e_bundle, f"{folds[0]}+"], "not a bundle folder with a split.csv: ''"),
                            ([e2e_bundle, str(tmp_path / "nowhere")], "not a bundle folder")):
        with pytest.raises(SystemExit) as exc:
            ml_main([*compare[:-2], "--models", *models])
        assert exc.value.code == 2 and message in capsys.readouterr().err


def test_it_renders_a_model_card_for_the_end_to_end_bundle(e2e_bundle):
    card = render_card(e2e_bundle)
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


def test_its_card_says_when_the_context_weight_was_chosen_for_its_malignant_auc(e2e_bundle, tmp_path):
    import shutil

    copy = tmp_path / "by-auc"
    shutil.copytree(e2e_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["context"]["chosen_by"] == "balanced_accuracy"  # the generated context tells the class
    manifest["context"]["chosen_by"] = "malignant_auc"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    card = render_card(str(copy))
    assert "no weight gained 0.01 balanced accuracy, so the highest malignant AUC" in card
    assert "the largest balanced-accuracy gain of at least 0.01" not in card


def test_its_card_gives_a_continued_runs_start_and_the_command_that_continues_it(e2e_bundle, tmp_path):
    import shutil

    first = render_card(e2e_bundle)
    assert "--init-from" not in first and "--augmentation" not in first and "random resized crop" in first
    continued = tmp_path / "continued"
    shutil.copytree(e2e_bundle, continued)
    manifest = json.loads((continued / "manifest.json").read_text())
    manifest["training"]["fit"] |= {"init_from": "mnv2-start", "augmentation": "light"}
    (continued / "manifest.json").write_text(json.dumps(manifest))
    card = render_card(str(continued))
    assert "Started from the weights of `mnv2-start`" in card
    assert "--init-from ml/models/mnv2-start --split-csv ml/models/mnv2-start/split.csv" in card
    assert "--augmentation light" in card and "light views only" in card and "random resized crop" not in card


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
