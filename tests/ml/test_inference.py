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
