"""The screening checks as a bundle runs them (ml/screening): the warnings in their fixed order,
fitting a bundle's screening statistics, and loading them fail-closed. NumPy, OpenCV and
onnxruntime only; images are generated here."""

import json
import os

import cv2
import numpy as np
import pytest

from ml.classes import CLASSES
from ml.errors import ModelIntegrityError
from ml.inference import Classifier
from ml.manifest import load_manifest, sha256_file, write_manifest
from ml.preprocessing import PreprocessConfig
from ml.screening import SCREENING_FILE, WARNING_CODES
from ml.screening.confidence import ConfidenceLimits
from ml.screening.fit import collect, fit_screening, with_views
from ml.screening.ood import FeatureDistance, LayeredDistance
from ml.screening.quality import QUALITY_MEASURES, QualityThresholds, quality_measures
from ml.screening.screen import Screening, load_screening
from tests.conftest import make_image
from tests.ml.screening_images import flat, textured
from tests.tinymodel import PERMISSIVE_CONFIDENCE, PERMISSIVE_QUALITY, write_tiny_bundle

# --- Running the checks ---------------------------------------------------------------------------


def screening_with(*, quality=None, confidence=None, threshold=100.0) -> Screening:
    return Screening(
        quality=QualityThresholds.from_dict(quality or PERMISSIVE_QUALITY),
        confidence=ConfidenceLimits.from_dict(confidence or PERMISSIVE_CONFIDENCE),
        distance=FeatureDistance(np.zeros((7, 3), np.float32), np.eye(3, dtype=np.float32), threshold),
    )


def test_it_returns_the_warning_codes_in_their_fixed_order():
    image = textured(2, side=64)
    probs = np.full(7, 1 / 7)
    features = np.ones(3, np.float32)
    everything = screening_with(
        quality={"min_brightness": 255.0, "max_brightness": 0.0, "max_saturated": 0.0, "min_contrast": 1e9,
                 "min_sharpness": 1e9, "percentile": 0.5},
        confidence=PERMISSIVE_CONFIDENCE | {"min_margin": 0.5},
        threshold=0.5,
    )
    result = everything.screen(image, probs, features)
    assert result.warnings == WARNING_CODES
    assert set(result.measures) >= {*QUALITY_MEASURES, "margin", "entropy", "feature_distance"}
    assert result.measures["feature_distance"] == pytest.approx(np.sqrt(3), abs=1e-4)
    assert screening_with().screen(image, probs, features).warnings == ()
    # A few at once, still in the fixed order whatever order they were found in.
    some = screening_with(quality=PERMISSIVE_QUALITY | {"min_brightness": 255.0},
                          confidence=PERMISSIVE_CONFIDENCE | {"min_margin": 0.5}, threshold=0.5)
    assert some.screen(image, probs, features).warnings == ("not_dermoscopic", "too_dark", "low_confidence")


def test_it_reports_an_infinite_measure_as_none():
    result = screening_with().screen(np.full((32, 32, 3), 90, np.uint8), np.eye(7)[0], np.zeros(3, np.float32))
    assert result.measures["sharpness"] is None and result.warnings == ()


RED, BLUE = (200, 30, 30), (30, 30, 200)


def test_it_flags_an_image_unlike_every_dermoscopic_colour_of_the_tiny_bundle(tmp_path):
    bundle = write_tiny_bundle(str(tmp_path / "red"), dermoscopic_colours=[RED], ood_threshold=0.5)
    classifier = Classifier(bundle)
    red, blue = classifier.predict_batch([flat(RED, 128), flat(BLUE, 128)])
    assert "not_dermoscopic" not in red.warnings
    assert "not_dermoscopic" in blue.warnings
    assert red.screening["feature_distance"] < 0.5 < blue.screening["feature_distance"]


def test_it_refuses_tampered_or_missing_screening_statistics(tmp_path):
    bundle = write_tiny_bundle(str(tmp_path / "bundle"))
    manifest = load_manifest(bundle)
    assert isinstance(load_screening(bundle, manifest), Screening)
    path = os.path.join(bundle, SCREENING_FILE)
    with open(path, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelIntegrityError, match="sha256"):
        load_screening(bundle, manifest)
    with pytest.raises(ModelIntegrityError, match="sha256"):
        Classifier(bundle)
    os.remove(path)
    with pytest.raises(ModelIntegrityError, match="missing"):
        Classifier(bundle)
    with pytest.raises(ModelIntegrityError, match="no screening statistics"):
        load_screening(bundle, manifest | {"screening": {}})


@pytest.mark.parametrize(
    "spoil",
    [
        lambda section: section.pop("quality"),
        lambda section: section["ood"].pop("threshold"),
        lambda section: section["confidence"].pop("min_margin"),
        lambda section: section["quality"].update(min_contrast="dark"),
        lambda section: section.pop("sha256"),
        lambda section: section.update(file=None),
    ],
    ids=["no quality", "no threshold", "no margin", "not a number", "no sha256", "no file"],
)
def test_it_refuses_a_malformed_screening_section_as_a_model_problem(tmp_path, spoil):
    bundle = write_tiny_bundle(str(tmp_path / "bundle"))
    manifest = load_manifest(bundle)
    spoil(manifest["screening"])
    write_manifest(bundle, manifest)
    with pytest.raises(ModelIntegrityError):
        Classifier(bundle)


def test_it_refuses_screening_statistics_whose_arrays_disagree(tmp_path):
    bundle = write_tiny_bundle(str(tmp_path / "bundle"))
    path = os.path.join(bundle, SCREENING_FILE)
    manifest = load_manifest(bundle)
    for arrays in ({"ood_class_means": np.zeros((7, 3), np.float32), "ood_whitening": np.eye(4, dtype=np.float32)},
                   {"ood_class_means": np.zeros(7, np.float32), "ood_whitening": np.eye(3, dtype=np.float32)}):
        np.savez(path, **arrays)
        manifest["screening"]["sha256"] = sha256_file(path)
        write_manifest(bundle, manifest)
        with pytest.raises(ModelIntegrityError, match="disagree"):
            Classifier(bundle)
    np.savez(path, class_means=np.zeros((7, 3), np.float32))  # not the arrays screening needs
    manifest["screening"]["sha256"] = sha256_file(path)
    write_manifest(bundle, manifest)
    with pytest.raises(ModelIntegrityError, match="malformed"):
        Classifier(bundle)


# --- Fitting a bundle's screening ----------------------------------------------------------------


def lesion_like(n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    images = [make_image(96, 72, seed=seed + i) for i in range(n)]
    return images, np.arange(n) % len(CLASSES)


def test_it_fits_screening_for_the_tiny_bundle_and_the_bundle_loads_it(tmp_path):
    bundle = write_tiny_bundle(str(tmp_path / "bundle"))
    manifest = load_manifest(bundle)
    config = PreprocessConfig.from_dict(manifest["preprocessing"])
    train_images, train_labels = lesion_like(21, 0)
    val_images, val_labels = lesion_like(30, 1000)
    rate = 0.1
    section = fit_screening(
        onnx_path=os.path.join(bundle, "model.onnx"), output_names=["logits", "features", "cam"], config=config,
        temperature=1.0, train_images=iter(train_images), train_labels=train_labels, val_images=iter(val_images),
        val_labels=val_labels, out_dir=bundle, max_false_alarm_rate=rate, views=1,
    )
    path = os.path.join(bundle, SCREENING_FILE)
    assert section["file"] == SCREENING_FILE and section["sha256"] == sha256_file(path)
    assert not os.path.exists(path + ".tmp.npz")
    json.dumps(section, allow_nan=False)  # goes into manifest.json as it is
    ood = section["ood"]
    assert ood["feature_dimensions"] == 3 and ood["max_false_alarm_rate"] == rate
    with np.load(path) as arrays:
        distance = LayeredDistance.from_arrays(dict(arrays), ood)
    (part,) = distance.parts  # the tiny model's features are one block
    assert part.class_means.shape == (len(CLASSES), 3) and part.whitening.shape == (3, 3)
    assert ood["blocks"] == [{"layer": "features", "columns": [0, 3], "scale": distance.scales[0]}]

    # The validation images, each as it is and with its other-dermatoscope view, as fitting saw them:
    # the threshold flags at most the stated share of them.
    import onnxruntime as ort

    session = ort.InferenceSession(os.path.join(bundle, "model.onnx"), providers=["CPUExecutionProvider"])
    _, features, _ = collect(session, ["logits", "features"], with_views(val_images, 1, 20261202 + 1), config)
    flagged = distance.distances(features) > distance.threshold
    assert flagged.mean() <= rate
    assert ood["validation_false_alarm_rate"] == pytest.approx(flagged[::2].mean())
    assert ood["validation_views_false_alarm_rate"] == pytest.approx(flagged[1::2].mean())

    # The quality limits come from the training images as they are.
    train_measures = collect(session, ["logits", "features"], train_images, config)[2]
    assert train_measures[0] == quality_measures(cv2.resize(train_images[0], (32, 32), interpolation=cv2.INTER_AREA))
    assert section["quality"]["min_brightness"] == pytest.approx(
        np.percentile([m["brightness"] for m in train_measures], 0.5))

    # The section goes into the manifest and the bundle serves with it.
    manifest["screening"] = section
    write_manifest(bundle, manifest)
    prediction = Classifier(bundle).predict(val_images[0])
    assert set(prediction.warnings) <= set(WARNING_CODES)
    assert prediction.screening["feature_distance"] == pytest.approx(float(distance.distances(features[:1])[0]), abs=1e-3)


def test_it_refuses_to_fit_when_images_and_labels_disagree(tmp_path):
    bundle = write_tiny_bundle(str(tmp_path / "bundle"))
    images, labels = lesion_like(6, 0)
    with pytest.raises(ValueError, match="labels"):
        fit_screening(onnx_path=os.path.join(bundle, "model.onnx"), output_names=["logits", "features", "cam"],
                      config=PreprocessConfig(size=32), temperature=1.0, train_images=images, train_labels=labels[:4],
                      val_images=images, val_labels=labels, out_dir=bundle)
