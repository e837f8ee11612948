"""A tiny train -> export -> parity -> int8 -> calibrate -> evaluate run, end to end (TensorFlow).

On ../shared's HAM10000 copy when present (10 images a class, ImageNet alpha 0.35 weights),
else on generated images with a random initialisation. About half a minute on two cores.
"""

import csv
import json
import os

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the 'train' extra (TensorFlow) is not installed")

from ml.__main__ import main as ml_main  # noqa: E402
from ml.classes import CLASSES  # noqa: E402
from ml.data import load_metadata, read_split_csv  # noqa: E402
from ml.training.pipeline import cap_per_class  # noqa: E402
from ml.inference import Classifier  # noqa: E402
from ml.manifest import OUTPUTS, sha256_file  # noqa: E402
from ml.screening import WARNING_CODES  # noqa: E402
from tests.conftest import HAM_IMAGES, HAM_METADATA, WEIGHTS_DIR, encode, make_image  # noqa: E402
from tests.ml.datasets import generated_dataset  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    weights = os.path.join(WEIGHTS_DIR, "mobilenet_v2_0.35_224_no_top.weights.h5")
    if os.path.isfile(HAM_METADATA) and os.path.isfile(weights):
        metadata, images, extra = HAM_METADATA, HAM_IMAGES, ["--weights", weights, "--max-per-class", "10"]
    else:
        metadata, images = generated_dataset(str(root))
        extra = ["--weights", "none"]
    out = str(root / "bundle")
    argv = [
        "train", "--metadata", metadata, "--images", images, "--out", out, "--work-dir", str(root / "work"),
        "--alpha", "0.35", "--size", "96", "--colour", "none", "--views", "2", "--head-epochs", "1",
        "--epochs", "1", "--calibration-images", "16", "--parity-images", "16", "--bootstrap", "50",
        # A one-epoch toy model's int8 copy is checked, not gated; the shipped model is gated at 0.98.
        "--min-int8-agreement", "0.5", *extra,
    ]
    assert ml_main(argv) == 0
    return {"out": out, "argv": argv, "metadata": metadata, "images": images}


def test_it_writes_a_complete_bundle(trained):
    out = trained["out"]
    for name in ("manifest.json", "model.onnx", "model.int8.onnx", "model.keras", "split.csv", "metrics.json",
                 "screening.npz"):
        assert os.path.isfile(os.path.join(out, name)), name
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert manifest["classes"] == list(CLASSES)
    assert manifest["input"]["shape"] == [None, 96, 96, 3]
    assert manifest["preprocessing"]["colour_order"] == "RGB"
    parity = manifest["checks"]["parity_keras_vs_onnxruntime"]
    assert parity["max_abs_probability_difference"] <= 1e-4 and parity["identical_argmax"]
    assert 0 <= manifest["checks"]["int8"]["agreement"] <= 1
    # Format 2: three outputs, the map checked to average to the logits, screening fitted on
    # training and validation and stored with its sha256.
    assert manifest["format"] == 2 and [manifest["outputs"][role]["name"] for role in OUTPUTS] == list(OUTPUTS)
    assert parity["cam_mean_plus_bias_vs_logits"] <= parity["cam_tolerance"]
    assert manifest["outputs"]["cam"]["grid"] == [3, 3]  # MobileNetV2 at 96x96: stride 32
    screening = manifest["screening"]
    assert sha256_file(os.path.join(out, screening["file"])) == screening["sha256"]
    ood = screening["ood"]
    flagged = (ood["validation_false_alarm_rate"] + ood["validation_views_false_alarm_rate"]) / 2
    assert flagged <= ood["max_false_alarm_rate"]  # images as they are and their views, in equal numbers
    assert ood["feature_dimensions"] > 0
    assert screening["quality"]["min_brightness"] <= screening["quality"]["max_brightness"]
    for variant in ("fp32", "int8"):
        entry = manifest["variants"][variant]
        assert entry["temperature"] > 0
        assert entry["validation_sensitivity"] >= 0.9
        assert set(manifest["metrics"]["test"][variant]["intervals_95"]) >= {"balanced_accuracy", "accuracy"}


def test_its_split_keeps_lesions_whole(trained):
    split = read_split_csv(os.path.join(trained["out"], "split.csv"))
    with open(os.path.join(trained["out"], "split.csv")) as fh:
        rows = list(csv.DictReader(fh))
    lesions = {}
    for row in rows:
        lesions.setdefault(row["lesion_id"], set()).add(row["split"])
    assert all(len(s) == 1 for s in lesions.values())
    assert set(split.values()) == {"train", "val", "test"}


def test_its_onnx_variants_serve_through_the_inference_library(trained):
    image = encode(make_image(120, 90, seed=5))
    for variant in ("fp32", "int8"):
        prediction = Classifier(trained["out"], variant=variant).predict(image)
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction.variant == variant
        assert prediction.cam.shape == (3, 3, len(CLASSES)) and prediction.image_size == (90, 120)
        assert set(prediction.warnings) <= set(WARNING_CODES)


def test_it_evaluates_the_bundle_with_the_cli(trained, tmp_path):
    split = read_split_csv(os.path.join(trained["out"], "split.csv"))
    # The same capped subset the training run used (--max-per-class), so the figures can be compared.
    cap = int(trained["argv"][trained["argv"].index("--max-per-class") + 1]) if "--max-per-class" in trained["argv"] else None
    records = cap_per_class(load_metadata(trained["metadata"], [trained["images"]]), cap, seed=20261125)
    rows = [{"image_id": r.image_id, "dx": r.dx} for r in records if split[r.image_id] == "test"]
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_id", "dx"])
        writer.writerows((r["image_id"], r["dx"]) for r in rows)
    out = tmp_path / "eval.json"
    code = ml_main(["evaluate", "--images", trained["images"], "--labels", str(labels), "--model", trained["out"], "--json", str(out)])
    assert code == 0
    result = json.load(open(out))
    assert result["n_images"] == len(rows)
    manifest = json.load(open(os.path.join(trained["out"], "manifest.json")))
    # The CLI and the packaging step score the same images with the same model the same way.
    assert result["balanced_accuracy"] == pytest.approx(manifest["metrics"]["test"]["fp32"]["balanced_accuracy"], abs=1e-4)


def test_it_resumes_instead_of_retraining(trained, capsys):
    assert ml_main(trained["argv"]) == 0
    printed = capsys.readouterr().out
    assert "epoch 1/" not in printed  # every epoch was already done
    assert "best epoch" in printed


def test_it_packages_an_ensemble_over_flips(trained, tmp_path):
    out = str(tmp_path / "ensemble")
    argv = [
        "ensemble", "--members", trained["out"], trained["out"], "--flips", "none", "h", "--metadata",
        trained["metadata"], "--images", trained["images"], "--out", out, "--calibration-images", "16",
        "--parity-images", "16", "--bootstrap", "20", "--min-int8-agreement", "0.5",
        *(["--max-per-class", "10"] if "--max-per-class" in trained["argv"] else []),
    ]
    assert ml_main(argv) == 0
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert manifest["architecture"]["test_time_flips"] == ["none", "h"]
    assert len(manifest["architecture"]["members"]) == 2
    assert manifest["checks"]["parity_keras_vs_onnxruntime"]["identical_argmax"]
    # A model averaged over an image and its mirror gives the mirror the same answer.
    image = make_image(96, 96, seed=11)
    classifier = Classifier(out)
    straight, mirrored = classifier.predict(image), classifier.predict(np.ascontiguousarray(image[:, ::-1]))
    for c in CLASSES:
        assert straight.probabilities[c] == pytest.approx(mirrored.probabilities[c], abs=1e-4)
    # Explained from its members: features side by side, the map averaged over the views (each
    # flipped back), so the mirror's map is the straight map mirrored.
    member = json.load(open(os.path.join(trained["out"], "manifest.json")))
    assert manifest["screening"]["ood"]["feature_dimensions"] == 2 * member["screening"]["ood"]["feature_dimensions"]
    assert manifest["checks"]["parity_keras_vs_onnxruntime"]["cam_mean_plus_bias_vs_logits"] <= 1e-3
    assert np.allclose(straight.cam, mirrored.cam[:, ::-1], atol=1e-3)
