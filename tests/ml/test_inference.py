import json
import os

import numpy as np
import pytest

from ml.classes import CLASSES, MALIGNANT_CLASSES
from ml.errors import ImageTooLargeError, InvalidImageError, ModelIntegrityError
from ml.inference import Classifier, get_classifier, reset_classifier
from ml.cpu import int8_kernel_class
from ml.manifest import load_manifest, write_manifest
from tests.conftest import encode, make_image
from tests.tinymodel import write_tiny_bundle


@pytest.fixture
def bundle(tmp_path):
    return write_tiny_bundle(str(tmp_path / "bundle"), size=32)


def test_it_returns_all_classes_top_class_and_malignancy(bundle):
    prediction = Classifier(bundle).predict(encode(make_image(seed=3)))
    assert list(prediction.probabilities) == list(CLASSES)
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert prediction.top_class == max(prediction.probabilities, key=prediction.probabilities.get)
    expected = sum(prediction.probabilities[c] for c in MALIGNANT_CLASSES)
    assert prediction.malignancy_score == pytest.approx(expected)
    assert prediction.malignant == (prediction.malignancy_score >= prediction.threshold)
    assert prediction.model_version == "tiny-test-1"


def test_it_gives_the_same_answer_in_a_batch_and_alone(bundle):
    classifier = Classifier(bundle)
    images = [encode(make_image(seed=s)) for s in range(5)]
    batch = classifier.predict_batch(images, batch_size=2)
    for image, in_batch in zip(images, batch):
        alone = classifier.predict(image)
        for c in CLASSES:
            assert in_batch.probabilities[c] == pytest.approx(alone.probabilities[c], abs=1e-6)
    # Arrays are accepted too and give the same result as their encoded bytes (PNG: lossless).
    array = make_image(seed=9)
    assert classifier.predict(array).probabilities == pytest.approx(classifier.predict(encode(array, ".png")).probabilities)


def test_it_flags_against_the_manifest_threshold(tmp_path):
    low = Classifier(write_tiny_bundle(str(tmp_path / "low"), threshold=0.0)).predict(make_image())
    high = Classifier(write_tiny_bundle(str(tmp_path / "high"), threshold=1.01)).predict(make_image())
    assert low.malignant and not high.malignant


@pytest.mark.parametrize(
    "data, error",
    [
        (b"", InvalidImageError),
        (b"not an image at all", InvalidImageError),
        (b"\xff\xd8\xff\xe0" + os.urandom(200), InvalidImageError),
    ],
)
def test_it_raises_typed_errors_on_bad_bytes(bundle, data, error):
    with pytest.raises(error):
        Classifier(bundle).predict(data)


def test_it_raises_on_a_huge_image_and_on_wrong_types(bundle):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buf, format="PNG")
    with pytest.raises(ImageTooLargeError):
        Classifier(bundle).predict(buf.getvalue())
    with pytest.raises(InvalidImageError):
        Classifier(bundle).predict("a string")  # type: ignore[arg-type]


def test_it_fails_closed_when_the_file_does_not_match_its_sha256(bundle):
    with open(os.path.join(bundle, "model.onnx"), "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(ModelIntegrityError, match="sha256"):
        Classifier(bundle)


def test_it_fails_closed_when_the_manifest_input_size_is_wrong(bundle):
    path = os.path.join(bundle, "manifest.json")
    manifest = json.load(open(path))
    manifest["preprocessing"]["size"] = 64
    json.dump(manifest, open(path, "w"))
    with pytest.raises(ModelIntegrityError, match="input shape"):
        Classifier(bundle)


def test_it_fails_closed_on_a_different_class_order(bundle):
    path = os.path.join(bundle, "manifest.json")
    manifest = json.load(open(path))
    manifest["classes"] = list(reversed(manifest["classes"]))
    json.dump(manifest, open(path, "w"))
    with pytest.raises(ModelIntegrityError, match="classes"):
        load_manifest(bundle)


@pytest.mark.parametrize(("text", "named"), [("[1, 2]", "not a manifest object"), ("{", "not valid JSON")])
def test_it_fails_closed_on_a_manifest_that_is_not_a_json_object(bundle, text, named):
    with open(os.path.join(bundle, "manifest.json"), "w") as fh:
        fh.write(text)
    with pytest.raises(ModelIntegrityError, match=named):
        load_manifest(bundle)


def test_it_fails_closed_without_a_manifest_or_variant(tmp_path, bundle):
    with pytest.raises(ModelIntegrityError, match="manifest not found"):
        Classifier(str(tmp_path))
    with pytest.raises(ModelIntegrityError, match="no 'int4' variant"):
        Classifier(bundle, variant="int4")


def test_it_loads_one_session_per_process_with_the_settings_passed_in(bundle):
    # The portal reads SKINPORTAL_MODEL_DIR/_VARIANT/ORT_THREADS in its Django settings and passes
    # them in (tests/portal/test_model_settings.py); ml reads no Django.
    reset_classifier()
    try:
        first = get_classifier(model_dir=bundle, variant="int8", threads=1)
        assert first is get_classifier(model_dir=bundle, variant="int8", threads=1)
        assert first.variant == "int8"
        assert first.session.get_session_options().intra_op_num_threads == 1
    finally:
        reset_classifier()


@pytest.mark.parametrize(("variant", "threads", "named"), [("fp32", 0, "threads"), ("fp16", 1, "variant")])
def test_it_rejects_bad_settings(bundle, variant, threads, named):
    # Bad SKINPORTAL_ORT_THREADS / SKINPORTAL_MODEL_VARIANT values are refused when the portal's
    # settings load (tests/portal/test_model_settings.py); a caller passing them gets a ValueError.
    reset_classifier()
    with pytest.raises(ValueError, match=named):
        get_classifier(model_dir=bundle, variant=variant, threads=threads)
    reset_classifier()


@pytest.mark.parametrize(
    ("recorded", "warning"),
    [(None, "not measured on this CPU class"), (0.5, "agrees with fp32 on only 0.500"), (0.995, None)],
)
def test_it_warns_when_int8_is_weak_or_unmeasured_on_this_cpu(bundle, caplog, recorded, warning):
    manifest = load_manifest(bundle)
    check = {"required_agreement": 0.9}
    if recorded is not None:
        check["agreement_by_cpu"] = {int8_kernel_class(): recorded}
    manifest["checks"] = {"int8": check}
    write_manifest(bundle, manifest)
    with caplog.at_level("WARNING", logger="ml.inference"):
        Classifier(bundle, variant="int8")
        Classifier(bundle, variant="fp32")  # fp32 never warns
    messages = [r.getMessage() for r in caplog.records if r.name == "ml.inference"]
    if warning is None:
        assert messages == []
    else:
        assert len(messages) == 1 and warning in messages[0]


def test_it_classifies_the_cpu_for_int8_kernels(monkeypatch):
    from ml import cpu

    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))
    assert cpu.int8_kernel_class() == "vnni"
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx", "avx2", "fma"}))
    assert cpu.int8_kernel_class() == "avx2"


# --- Format 2: three outputs checked against the manifest, screening, class activation maps -----


@pytest.mark.parametrize("role", ["logits", "features", "cam"])
def test_it_fails_closed_when_the_manifest_names_an_output_the_graph_lacks(bundle, role):
    manifest = load_manifest(bundle)
    manifest["outputs"][role]["name"] = f"{role}_renamed"
    write_manifest(bundle, manifest)
    with pytest.raises(ModelIntegrityError, match=f"{role}_renamed.*not in the graph"):
        Classifier(bundle)


def test_it_fails_closed_when_the_manifest_lacks_an_output_role(bundle):
    manifest = load_manifest(bundle)
    del manifest["outputs"]["cam"]
    write_manifest(bundle, manifest)
    with pytest.raises(ModelIntegrityError, match="outputs lack cam"):
        Classifier(bundle)


def test_it_fails_closed_when_the_features_differ_in_width_from_the_screening_statistics(bundle):
    from ml.manifest import sha256_file
    from ml.screening import SCREENING_FILE

    path = os.path.join(bundle, SCREENING_FILE)
    np.savez(path, ood_class_means=np.zeros((len(CLASSES), 4), np.float32), ood_whitening=np.eye(4, dtype=np.float32))
    manifest = load_manifest(bundle)
    manifest["screening"]["sha256"] = sha256_file(path)  # intact, but fitted on another graph's features
    write_manifest(bundle, manifest)
    with pytest.raises(ModelIntegrityError, match="features shape .* screening statistics' 4"):
        Classifier(bundle)


def test_it_refuses_a_format_1_manifest_and_names_the_upgrade(bundle):
    path = os.path.join(bundle, "manifest.json")
    with open(path) as fh:
        manifest = json.load(fh)
    manifest["format"] = 1
    del manifest["screening"]
    manifest["output"] = manifest.pop("outputs")["logits"]  # format 1 had one output
    with open(path, "w") as fh:
        json.dump(manifest, fh)
    for load in (load_manifest, Classifier):
        with pytest.raises(ModelIntegrityError, match="python -m ml repackage"):
            load(bundle)
    manifest["format"] = 3
    with open(path, "w") as fh:
        json.dump(manifest, fh)
    with pytest.raises(ModelIntegrityError, match="format 3 is not 2"):
        load_manifest(bundle)


def test_its_prediction_carries_the_class_activation_map_image_size_and_warnings(bundle):
    from ml.scores import softmax

    classifier = Classifier(bundle)
    image = make_image(160, 120, seed=4)
    prediction = classifier.predict(encode(image, ".png"))
    assert prediction.cam.shape == (4, 4, len(CLASSES)) and prediction.cam.dtype == np.float32
    assert prediction.image_size == (120, 160)
    assert prediction.warnings == ()  # the tiny bundle's default limits warn about nothing
    assert set(prediction.screening) >= {"brightness", "contrast", "sharpness", "margin", "entropy", "feature_distance"}
    # The map is the one the logits are the average of (the tiny graph has no bias, temperature 1).
    probs = softmax(prediction.cam.mean(axis=(0, 1))[None], 1.0)[0]
    assert [prediction.probabilities[c] for c in CLASSES] == pytest.approx(probs, abs=1e-5)
    data = prediction.to_dict()
    json.dumps(data)
    assert data["warnings"] == [] and np.asarray(data["cam"]).shape == (4, 4, len(CLASSES))
    assert data["image_size"] == (120, 160)
    # Each image of a batch gets its own map and size.
    portrait, landscape = classifier.predict_batch([np.ascontiguousarray(np.rot90(image)), image])
    assert portrait.image_size == (160, 120) and landscape.image_size == (120, 160)
    assert not np.array_equal(portrait.cam, landscape.cam)


def test_its_prediction_carries_the_warnings_in_their_fixed_order(tmp_path):
    from ml.screening import WARNING_CODES

    bundle = write_tiny_bundle(
        str(tmp_path / "strict"), dermoscopic_colours=[(200, 30, 30)], ood_threshold=0.5,
        confidence={"min_margin": 2.0, "max_entropy": 1.0, "accuracy_below_margin": None, "flagged_validation_rate": 1.0},
    )
    prediction = Classifier(bundle).predict(np.full((120, 120, 3), (30, 30, 200), np.uint8))
    assert prediction.warnings == ("not_dermoscopic", "low_confidence")
    assert list(prediction.warnings) == [c for c in WARNING_CODES if c in prediction.warnings]
