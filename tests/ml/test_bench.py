"""`python -m ml bench` on the tiny bundle with generated images (small n and repeats)."""

import json
import os
import re
import sys

import numpy as np
import pytest

import ml.bench as bench
from ml.__main__ import main
from ml.manifest import sha256_file
from tests.conftest import encode, make_image
from tests.tinymodel import WEIGHTS, write_tiny_bundle

SMALL = ["--n", "5", "--repeats", "4", "--batch-repeats", "2", "--warmup", "1", "--threads", "1"]


@pytest.fixture
def bundle(tmp_path):
    return write_tiny_bundle(str(tmp_path / "bundle"))


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(7):
        (folder / f"img_{i}.jpg").write_bytes(encode(make_image(80, 60, seed=i)))
    (folder / "notes.txt").write_text("not an image, not listed")
    return str(folder)


def edit_manifest(bundle, change):
    path = os.path.join(bundle, "manifest.json")
    with open(path) as fh:
        manifest = json.load(fh)
    change(manifest)
    with open(path, "w") as fh:
        json.dump(manifest, fh)


def row(output, name):
    line = next(line for line in output.splitlines() if line.startswith(name))
    return line[len(name):].split()


def test_it_prints_one_table_with_fp32_int8_and_an_unavailable_keras_row(bundle, images, capsys):
    assert main(["bench", "--model", bundle, "--images", images, *SMALL]) == 0
    out = capsys.readouterr().out
    assert out.count("batch-1 median (ms)") == 1  # one table
    median, p95, throughput, speedup = row(out, "onnxruntime fp32")
    assert 0 < float(median) <= float(p95)
    assert float(throughput) > 0
    assert speedup == "n/a"  # no Keras timing to compare with
    assert len(row(out, "onnxruntime int8")) == 4
    assert re.search(r"Keras \(TensorFlow\)\s+not available \(the bundle lists no Keras file\)", out)
    assert "Preprocessing (decode + preprocess" in out and "ms/image" in out
    assert f"first 5 files (sorted) of {images}" in out
    assert "onnxruntime int8: top-1 equal to fp32 on 5/5 images" in out
    machine = next(line for line in out.splitlines() if line.startswith("Machine:"))
    assert "onnxruntime" in machine and "numpy" in machine and "1 intra-op thread" in machine


def test_it_prints_markdown_for_the_readme(bundle, images, capsys):
    assert main(["bench", "--model", bundle, "--images", images, "--markdown", *SMALL]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| backend | batch-1 median (ms) |")
    assert lines[1] == "|---|---:|---:|---:|---:|"
    fp32 = next(line for line in lines if line.startswith("| onnxruntime fp32 |"))
    assert fp32.count("|") == 6
    assert any(line.startswith("- Machine: ") for line in lines)


def test_it_uses_synthetic_jpegs_and_says_so_when_there_is_no_image_folder(bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "DEFAULT_IMAGES", str(tmp_path / "absent"))
    assert main(["bench", "--model", bundle, *SMALL]) == 0
    assert "5 synthetic 600x450 JPEGs" in capsys.readouterr().out


def test_it_takes_the_first_n_image_files_sorted(images):
    loaded, source = bench.load_images(images, 3)
    assert [name for name, _ in loaded] == ["img_0.jpg", "img_1.jpg", "img_2.jpg"]
    assert "first 3 files" in source


def test_it_says_why_int8_is_missing(bundle, images, capsys):
    edit_manifest(bundle, lambda m: m["variants"].pop("int8"))
    assert main(["bench", "--model", bundle, "--images", images, *SMALL]) == 0
    assert re.search(r"onnxruntime int8\s+not available \(the bundle has no int8 variant\)", capsys.readouterr().out)


def test_it_reports_keras_unavailable_without_tensorflow(bundle, images, monkeypatch, capsys):
    keras_path = os.path.join(bundle, "model.keras")
    with open(keras_path, "wb") as fh:
        fh.write(b"placeholder")
    edit_manifest(bundle, lambda m: m.setdefault("files", {}).update(
        keras={"file": "model.keras", "sha256": sha256_file(keras_path)}))
    for name in ("tensorflow", "keras"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    assert main(["bench", "--model", bundle, "--images", images, *SMALL]) == 0
    out = capsys.readouterr().out
    assert re.search(r"Keras \(TensorFlow\)\s+not available \(TensorFlow is not installed", out)
    assert len(row(out, "onnxruntime fp32")) == 4


def test_it_refuses_a_keras_file_that_does_not_match_the_manifest(bundle, images, capsys):
    with open(os.path.join(bundle, "model.keras"), "wb") as fh:
        fh.write(b"placeholder")
    edit_manifest(bundle, lambda m: m.setdefault("files", {}).update(keras={"file": "model.keras", "sha256": "0" * 64}))
    assert main(["bench", "--model", bundle, "--images", images, *SMALL]) == 0
    assert "does not match the manifest's sha256" in capsys.readouterr().out


def test_it_exits_2_on_a_model_that_fails_its_checks(bundle, images, capsys):
    with open(os.path.join(bundle, "model.onnx"), "ab") as fh:
        fh.write(b"tampered")
    assert main(["bench", "--model", bundle, "--images", images, *SMALL]) == 2
    err = capsys.readouterr().err
    assert "sha256" in err and "Traceback" not in err


@pytest.mark.slow
def test_it_times_the_bundles_keras_model_and_checks_it_agrees(bundle, images, capsys):
    keras = pytest.importorskip("keras")
    pytest.importorskip("tensorflow")
    image = keras.Input((32, 32, 3), name="input")
    logits = keras.layers.Dense(7, use_bias=False, name="logits")(keras.layers.GlobalAveragePooling2D()(image))
    model = keras.Model(image, logits)
    model.get_layer("logits").set_weights([np.asarray(WEIGHTS)])  # the same function as the tiny ONNX graph
    keras_path = os.path.join(bundle, "model.keras")
    model.save(keras_path)
    edit_manifest(bundle, lambda m: m.setdefault("files", {}).update(
        keras={"file": "model.keras", "sha256": sha256_file(keras_path)}))
    assert main(["bench", "--model", bundle, "--images", images, *SMALL]) == 0
    out = capsys.readouterr().out
    median, p95, throughput, speedup = row(out, "Keras (TensorFlow)")
    assert float(median) > 0 and float(throughput) > 0 and speedup == "1.00x"
    assert row(out, "onnxruntime fp32")[3].endswith("x")
    assert "Keras (TensorFlow): top-1 equal to fp32 on 5/5 images" in out
    assert "TensorFlow 2." in out
