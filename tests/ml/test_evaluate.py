"""`python -m ml evaluate` end to end on a tiny real ONNX bundle and generated images."""

import csv
import json
import os
import sys

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, roc_auc_score

from ml.__main__ import main
from ml.classes import CLASSES, MALIGNANT_CLASSES
from ml.inference import Classifier
from tests.conftest import encode, make_image
from tests.tinymodel import write_tiny_bundle

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SUMMARY_KEYS = {
    "balanced_accuracy", "accuracy", "macro_f1", "per_class", "malignant_sensitivity", "malignant_specificity",
    "malignant_auc", "ece", "confusion_matrix", "n_images", "threshold",
}


def write_images(folder, ids, *, seed=0):
    """Images of several sizes and formats: mostly .jpg, some .jpeg and .png."""
    os.makedirs(folder, exist_ok=True)
    for i, image_id in enumerate(ids):
        ext = ".png" if i % 5 == 1 else ".jpeg" if i % 7 == 2 else ".jpg"
        image = make_image(width=40 + 7 * (i % 6), height=30 + 5 * (i % 4), seed=seed + i)
        with open(os.path.join(folder, image_id + ext), "wb") as fh:
            fh.write(encode(image, ext))


def write_labels(path, rows, header=("lesion_id", "image_id", "dx", "age")):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for i, (image_id, dx) in enumerate(rows):
            writer.writerow({"lesion_id": f"L{i // 2}", "image_id": image_id, "dx": dx, "age": 50,
                             "diagnosis": dx}[h] for h in header)


@pytest.fixture
def case(tmp_path):
    """A bundle, 28 images (4 per class) and their labels."""
    ids = [f"IMG_{i:04d}" for i in range(28)]
    rows = [(image_id, CLASSES[i % len(CLASSES)]) for i, image_id in enumerate(ids)]
    write_images(tmp_path / "images", ids)
    write_labels(tmp_path / "labels.csv", rows)
    return {
        "tmp": tmp_path,
        "model": write_tiny_bundle(str(tmp_path / "model")),
        "images": str(tmp_path / "images"),
        "labels": str(tmp_path / "labels.csv"),
        "rows": rows,
    }


def evaluate(case, *extra):
    return main(["evaluate", "--images", case["images"], "--labels", case["labels"], "--model", case["model"], *extra])


def read_predictions(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def assert_png(path):
    assert os.path.isfile(path), path
    with open(path, "rb") as fh:
        assert fh.read(8) == PNG_MAGIC
    import cv2

    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100


def test_it_writes_json_predictions_and_plots_with_metrics_that_match_an_independent_computation(case, capsys):
    out = case["tmp"] / "results" / "eval.json"
    predictions = case["tmp"] / "results" / "predictions.csv"
    assert evaluate(case, "--json", str(out), "--predictions", str(predictions), "--batch-size", "5") == 0

    result = json.loads(out.read_text())
    assert SUMMARY_KEYS <= set(result)
    assert result["model_version"] == "tiny-test-1"
    assert result["variant"] == "fp32"
    assert result["classes"] == list(CLASSES)
    assert result["n_images"] == 28
    assert set(result["per_class"]) == set(CLASSES)
    for row in result["per_class"].values():
        assert {"precision", "recall", "f1", "support"} <= set(row)
        assert row["support"] == 4

    # Independent check 1: the per-image CSV against scikit-learn.
    rows = read_predictions(predictions)
    assert [r["image_id"] for r in rows] == [image_id for image_id, _ in case["rows"]]
    assert [r["dx"] for r in rows] == [dx for _, dx in case["rows"]]
    y_true = [CLASSES.index(r["dx"]) for r in rows]
    y_pred = [CLASSES.index(r["predicted"]) for r in rows]
    probs = np.array([[float(r[f"p_{c}"]) for c in CLASSES] for r in rows])
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert y_pred == list(probs.argmax(axis=1))
    assert result["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert result["confusion_matrix"] == confusion_matrix(y_true, y_pred, labels=range(len(CLASSES))).tolist()
    malignant = [dx in MALIGNANT_CLASSES for _, dx in case["rows"]]
    scores = [float(r["malignancy_score"]) for r in rows]
    assert result["malignant_auc"] == pytest.approx(roc_auc_score(malignant, scores))
    flagged = np.array(scores) >= result["threshold"]
    assert [int(f) for f in flagged] == [int(r["flagged"]) for r in rows]
    assert result["malignant_sensitivity"] == pytest.approx(flagged[np.array(malignant)].mean())

    # Independent check 2: the serving classifier, one image at a time.
    classifier = Classifier(case["model"])
    for r in rows[:8]:
        name = next(n for n in os.listdir(case["images"]) if os.path.splitext(n)[0] == r["image_id"])
        with open(os.path.join(case["images"], name), "rb") as fh:
            prediction = classifier.predict(fh.read())
        assert prediction.top_class == r["predicted"]
        assert prediction.malignancy_score == pytest.approx(float(r["malignancy_score"]), abs=1e-6)

    assert_png(case["tmp"] / "results" / "eval_confusion.png")
    assert_png(case["tmp"] / "results" / "eval_roc.png")

    report = capsys.readouterr().out
    for text in ("balanced accuracy", "malignant sensitivity", "malignant AUC", "confusion matrix", *CLASSES):
        assert text in report


def test_it_gives_the_same_metrics_whatever_the_batch_size(case, tmp_path):
    assert evaluate(case, "--json", str(tmp_path / "a.json"), "--batch-size", "1", "--no-plots") == 0
    assert evaluate(case, "--json", str(tmp_path / "b.json"), "--batch-size", "64", "--no-plots") == 0
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    for key in SUMMARY_KEYS:
        assert a[key] == pytest.approx(b[key]) if isinstance(a[key], float) else a[key] == b[key]
    assert not (tmp_path / "a_confusion.png").exists()


def test_it_streams_batches_instead_of_decoding_every_image_first(case, monkeypatch):
    calls = []
    prepare, probabilities = Classifier.prepare, Classifier.probabilities
    monkeypatch.setattr(Classifier, "prepare", lambda self, image: (calls.append("prepare"), prepare(self, image))[1])
    monkeypatch.setattr(
        Classifier, "probabilities", lambda self, batch: (calls.append(len(batch)), probabilities(self, batch))[1]
    )
    assert evaluate(case, "--batch-size", "4", "--no-plots") == 0
    batches = [c for c in calls if c != "prepare"]
    assert batches == [4] * 7
    assert calls.index(4) < len(calls) - 1 - calls[::-1].index("prepare")  # inference starts before decoding ends


def test_it_writes_default_plot_names_in_the_current_directory_without_json(case, monkeypatch):
    work = case["tmp"] / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    assert evaluate(case) == 0
    assert_png(work / "evaluation_confusion.png")
    assert_png(work / "evaluation_roc.png")


def test_it_runs_without_tensorflow(case, monkeypatch):
    for name in ("tensorflow", "keras"):
        monkeypatch.setitem(sys.modules, name, None)  # any import of them now raises ImportError
    assert evaluate(case, "--no-plots") == 0


def test_it_gives_null_auc_and_still_plots_for_an_all_benign_set(case, capsys):
    benign = [(image_id, ("nv", "bkl")[i % 2]) for i, (image_id, _) in enumerate(case["rows"])]
    write_labels(case["labels"], benign)
    out = case["tmp"] / "benign.json"
    assert evaluate(case, "--json", str(out)) == 0
    text = out.read_text()
    result = json.loads(text)
    assert '"malignant_auc": null' in text
    assert result["malignant_auc"] is None
    assert result["malignant_sensitivity"] is None
    assert result["malignant_specificity"] is not None
    assert result["per_class"]["mel"]["recall"] is None  # absent class
    assert result["per_class"]["mel"]["support"] == 0
    recalls = [result["per_class"][c]["recall"] for c in ("nv", "bkl")]
    assert result["balanced_accuracy"] == pytest.approx(np.mean(recalls))  # only the present classes count
    assert_png(case["tmp"] / "benign_roc.png")
    assert "not defined" in capsys.readouterr().out


def test_it_adds_lesion_level_bootstrap_intervals_on_request(case, tmp_path):
    out = tmp_path / "boot.json"
    assert evaluate(case, "--json", str(out), "--bootstrap", "40", "--no-plots") == 0
    result = json.loads(out.read_text())
    assert result["bootstrap"]["unit"] == "lesion_id"
    for key in ("balanced_accuracy", "accuracy", "malignant_auc"):
        lo, hi = result["intervals_95"][key]
        assert 0.0 <= lo <= hi <= 1.0


def assert_input_error(capsys, rc, *needles):
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def test_it_exits_2_naming_a_missing_csv(case, capsys):
    case["labels"] = str(case["tmp"] / "nope.csv")
    assert_input_error(capsys, evaluate(case), "nope.csv", "not found")


def test_it_exits_2_naming_a_missing_column(case, capsys):
    write_labels(case["labels"], case["rows"], header=("image_id", "diagnosis"))
    assert_input_error(capsys, evaluate(case), "missing column", "dx")


def test_it_exits_2_naming_an_unknown_diagnosis(case, capsys):
    rows = list(case["rows"])
    rows[3] = (rows[3][0], "melanoma")
    write_labels(case["labels"], rows)
    err = assert_input_error(capsys, evaluate(case), "'melanoma'", "line 5")
    assert "akiec" in err  # lists the valid codes


def test_it_exits_2_naming_missing_images_and_their_count(case, capsys):
    for name in os.listdir(case["images"]):
        if name.startswith(("IMG_0003", "IMG_0010")):
            os.remove(os.path.join(case["images"], name))
    assert_input_error(capsys, evaluate(case), "2 of 28", "IMG_0003", "IMG_0010")


def test_it_exits_2_naming_every_undecodable_image(case, capsys):
    truncated = encode(make_image(200, 150, seed=9))[:1500]
    for image_id, data in (("IMG_0004", b"this is not an image"), ("IMG_0020", b""), ("IMG_0027", truncated)):
        name = next(n for n in os.listdir(case["images"]) if n.startswith(image_id))
        with open(os.path.join(case["images"], name), "wb") as fh:
            fh.write(data)
    out = case["tmp"] / "never.json"
    assert_input_error(capsys, evaluate(case, "--json", str(out)), "3 image(s) could not be decoded", "IMG_0004",
                       "IMG_0020", "IMG_0027")
    assert not out.exists()


def test_it_exits_2_when_the_model_fails_its_integrity_check(case, capsys):
    with open(os.path.join(case["model"], "model.onnx"), "ab") as fh:
        fh.write(b"tampered")
    assert_input_error(capsys, evaluate(case), "sha256")


def test_it_exits_2_when_the_variant_is_missing(case, capsys):
    manifest_path = os.path.join(case["model"], "manifest.json")
    with open(manifest_path) as fh:
        manifest = json.load(fh)
    del manifest["variants"]["int8"]
    with open(manifest_path, "w") as fh:
        json.dump(manifest, fh)
    assert_input_error(capsys, evaluate(case, "--variant", "int8"), "int8")
