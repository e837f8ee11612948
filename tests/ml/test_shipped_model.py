"""The bundle in ml/models/<CURRENT>: intact, servable, and its reported figures reproducible."""

import csv
import json
import os

import numpy as np
import pytest

from ml.card import CARD_PATH, render_card
from ml.classes import CLASSES
from ml.data import load_metadata, read_split_csv, records_in
from ml.cpu import int8_kernel_class
from ml.errors import ModelIntegrityError
from ml.inference import Classifier
from ml.manifest import MODELS_DIR, shipped_model_dir, load_manifest, sha256_file
from ml.metrics import summary
from tests.conftest import HAM_IMAGES, HAM_METADATA, encode, make_image, needs_ham10000

pytestmark = pytest.mark.skipif(
    not os.path.isfile(os.path.join(MODELS_DIR, "CURRENT")), reason="no shipped model (ml/models/CURRENT) yet"
)


@pytest.fixture(scope="module")
def bundle():
    return shipped_model_dir()


@pytest.fixture(scope="module")
def manifest(bundle):
    return load_manifest(bundle)


def test_it_ships_every_file_the_manifest_names_with_matching_sha256(bundle, manifest):
    entries = list(manifest["variants"].values()) + list(manifest["files"].values())
    for entry in entries:
        assert sha256_file(os.path.join(bundle, entry["file"])) == entry["sha256"]
    quant = manifest["checks"]["int8"]
    # int8 is shipped only when it passed its gate; otherwise the bundle is fp32 only and says why.
    expected = {"fp32", "int8"} if quant.get("shipped", True) else {"fp32"}
    assert set(manifest["variants"]) == expected
    if "int8" not in expected:
        assert quant["agreement"] < quant["required_agreement"]
        assert not os.path.exists(os.path.join(bundle, "model.int8.onnx"))


def test_it_records_what_an_auditor_needs(manifest):
    assert manifest["classes"] == list(CLASSES)
    assert manifest["input"]["colour_order"] == "RGB"
    assert manifest["training_data"]["licence"] == "CC BY-NC-SA 4.0"
    assert "Tschandl" in manifest["training_data"]["citation"]
    assert "not a certified medical device" in manifest["intended_use"].lower()
    parity = manifest["checks"]["parity_keras_vs_onnxruntime"]
    assert parity["images"] >= 64 and parity["max_abs_probability_difference"] <= 1e-4 and parity["identical_argmax"]
    quant = manifest["checks"]["int8"]
    assert quant["checked_on_validation_images"] >= 1000
    assert (quant["agreement"] >= quant["required_agreement"]) == quant.get("shipped", True)
    for variant in manifest["variants"].values():
        # Fitted for at least the 0.90 the issue asks (0.91 since v3m.4: a margin), and reached on validation.
        assert variant["validation_sensitivity"] >= variant["target_sensitivity"] >= 0.9


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_it_serves_every_shipped_variant_and_refuses_a_missing_one(bundle, manifest, variant):
    if variant not in manifest["variants"]:
        with pytest.raises(ModelIntegrityError, match=f"no '{variant}' variant"):
            Classifier(bundle, variant=variant)
        return
    prediction = Classifier(bundle, variant=variant).predict(encode(make_image(300, 200, seed=1)))
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert prediction.model_version == os.path.basename(bundle)


def test_its_model_card_is_generated_from_this_bundle(bundle):
    with open(CARD_PATH) as fh:
        assert fh.read() == render_card(bundle), "ml/MODEL_CARD.md is stale: run python -m ml card"


def test_its_split_file_covers_ham10000_ids_only_once(bundle):
    with open(os.path.join(bundle, "split.csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len({r["image_id"] for r in rows}) == 10015
    lesions = {}
    for row in rows:
        lesions.setdefault(row["lesion_id"], set()).add(row["split"])
    assert all(len(s) == 1 for s in lesions.values())


def test_its_operating_point_follows_its_rule_on_validation(manifest):
    """The melanoma bias is the largest whose validation balanced accuracy, and every smaller
    one's, stays within the tolerance of the plain argmax (ml/training/operating_point.py)."""
    decision = manifest.get("decision")
    if decision is None:
        pytest.skip("the shipped bundle suggests the plain argmax (no operating point)")
    rows = decision["selection"]
    plain = next(r for r in rows if r["bias"] == 0)["val_balanced_accuracy"]
    within = [r["bias"] for r in rows if r["val_balanced_accuracy"] >= plain - decision["tolerance"] - 1e-9]
    contiguous = max(b for b in within if all(r["bias"] in within for r in rows if r["bias"] <= b))
    assert decision["class_bias"] == {decision["favoured_class"]: contiguous}


@pytest.fixture(scope="module")
def test_split(bundle):
    split = read_split_csv(os.path.join(bundle, "split.csv"))
    return records_in(load_metadata(HAM_METADATA, [HAM_IMAGES]), split, "test")


@needs_ham10000
def test_it_reproduces_the_reported_test_metrics(bundle, manifest, test_split):
    """Every test-split figure in the manifest comes back from the shipped file, within 1e-4."""
    classifier = Classifier(bundle, variant="fp32")
    labels = np.array([r.label for r in test_split])
    probs = np.concatenate(
        [classifier.probabilities(np.stack([classifier.prepare(open(r.path, "rb").read()) for r in test_split[i : i + 64]]))
         for i in range(0, len(test_split), 64)]
    )
    result = summary(probs, labels, classifier.threshold, classifier.class_bias)  # the suggested class, as served
    reported = manifest["metrics"]["test"]["fp32"]
    for key in ("balanced_accuracy", "accuracy", "malignant_sensitivity", "malignant_specificity", "malignant_auc"):
        assert result[key] == pytest.approx(reported[key], abs=1e-4), key
    # A regression floor well below the reported figures; the targets are tracked in the card.
    assert result["balanced_accuracy"] >= 0.60
    assert result["malignant_auc"] >= 0.85


@needs_ham10000
def test_its_int8_variant_agrees_with_fp32_as_reported(bundle, manifest, test_split):
    """On held-out images the int8 copy agrees with fp32 about as often as measured on validation
    for this CPU class (onnxruntime's int8 kernels differ between VNNI and AVX2 CPUs)."""
    if "int8" not in manifest["variants"]:
        pytest.skip(f"the shipped bundle has no int8 variant (agreement {manifest['checks']['int8']['agreement']:.4f} "
                    "was below its gate)")
    cpu_class = int8_kernel_class()
    recorded = manifest["checks"]["int8"].get("agreement_by_cpu", {}).get(cpu_class)
    if recorded is None:
        pytest.skip(f"no int8 agreement recorded for CPU class {cpu_class}: run python -m ml int8-check --record")
    fp32, int8 = Classifier(bundle, variant="fp32"), Classifier(bundle, variant="int8")
    sample = test_split[::3]
    batch = np.stack([fp32.prepare(open(r.path, "rb").read()) for r in sample])
    agreement = (fp32.probabilities(batch).argmax(1) == int8.probabilities(batch).argmax(1)).mean()
    assert abs(agreement - recorded) <= 0.05
