"""`python -m ml train-segmenter` end to end on generated images and masks (TensorFlow, a random
encoder): it trains, resumes after the last finished epoch, and packages a bundle that the serving
segmenter loads, with its threshold chosen on validation and both segmenters scored."""

import json
import os

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the 'train' extra (TensorFlow) is not installed")

from ml.__main__ import main as ml_main
from ml.data import load_metadata, write_split_csv
from ml.errors import ModelIntegrityError
from ml.preprocessing import read_image
from ml.segmentation.trained import TrainedSegmenter
from ml.training.segmentation_bundle import THRESHOLDS
from tests.ml.datasets import generated_dataset, generated_masks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("segmenter-data")
    metadata, images = generated_dataset(str(root), per_class=3, width=80, height=60)
    masks = os.path.join(root, "masks")
    generated_masks(images, masks)
    records = load_metadata(metadata, [images])
    # Every third image to validation, the next to test, the rest to training (one image a lesion).
    split_of = {r.image_id: ("val", "test", "train")[i % 3] for i, r in enumerate(records)}
    split = os.path.join(root, "split.csv")
    write_split_csv(split, records, split_of)
    return {"metadata": metadata, "images": images, "masks": masks, "split": split, "records": records,
            "split_of": split_of}


def command(data: dict, run: str, *extra: str) -> list[str]:
    return ["train-segmenter", "--images", data["images"], "--masks", data["masks"], "--metadata", data["metadata"],
            "--split", data["split"], "--out", run, "--size", "64x96", "--weights", "none", "--threads", "1",
            "--version", "seg-test-v1", *extra]


def test_it_resumes_after_the_last_finished_epoch_and_packages_a_bundle_the_portal_can_serve(data, tmp_path):
    run = str(tmp_path / "run")
    assert ml_main(command(data, run, "--epochs", "1", "--no-export")) == 0
    with open(os.path.join(run, "state.json")) as fh:
        first = json.load(fh)
    assert first["epochs_done"] == 1 and len(first["history"]) == 1
    assert not os.path.exists(os.path.join(run, "bundle"))  # --no-export: training only

    # The same command asked for two epochs continues after epoch 1, then packages.
    assert ml_main(command(data, run, "--epochs", "2")) == 0
    with open(os.path.join(run, "state.json")) as fh:
        state = json.load(fh)
    assert state["epochs_done"] == 2 and [row["epoch"] for row in state["history"]] == [1, 2]
    assert state["history"][0] == first["history"][0]  # epoch 1 was not trained again

    bundle = os.path.join(run, "bundle")
    with open(os.path.join(bundle, "manifest.json")) as fh:
        manifest = json.load(fh)
    assert manifest["task"] == "segmentation" and manifest["version"] == "seg-test-v1"
    assert manifest["input"]["shape"] == [None, 64, 96, 3]
    assert manifest["parity"]["max_abs_probability_difference_keras_vs_onnx"] <= 1e-3
    assert manifest["training"]["best_epoch"] in (1, 2) and manifest["training"]["epochs_run"] == 2
    # The threshold is chosen on validation, from the grid, scored as serving applies it.
    selection = manifest["output"]["threshold_selection"]
    assert manifest["output"]["threshold"] in THRESHOLDS and selection["split"] == "val"
    assert set(selection["by_threshold_dice_mean"]) == {f"{t:g}" for t in THRESHOLDS}
    assert selection["images"] == sum(1 for s in data["split_of"].values() if s == "val")
    # Both segmenters scored on validation and test, the same figures in metrics.json.
    with open(os.path.join(bundle, "metrics.json")) as fh:
        metrics = json.load(fh)
    assert {"trained", "classical"} <= set(metrics) and metrics["trained"] == manifest["metrics"]["trained"]
    assert set(metrics["trained"]) == {"val", "test"} and set(metrics["classical"]) == {"val", "test"}

    # The serving segmenter loads it (checked against its manifest) and outlines an image at its own size.
    record = next(r for r in data["records"] if data["split_of"][r.image_id] == "test")
    image = read_image(record.path)
    mask = TrainedSegmenter(bundle).segment(image)
    assert mask.shape == image.shape[:2] and mask.dtype == np.uint8


def test_it_packages_the_best_checkpoint_so_far_with_export_only_and_the_bundle_fails_closed(data, tmp_path):
    run = str(tmp_path / "run")
    assert ml_main(command(data, run, "--epochs", "1", "--no-export")) == 0
    bundle = str(tmp_path / "bundle")
    assert ml_main(command(data, run, "--epochs", "3", "--export-only", "--bundle", bundle, "--skip-scores")) == 0
    with open(os.path.join(run, "state.json")) as fh:
        assert json.load(fh)["epochs_done"] == 1  # packaging trained nothing more
    with open(os.path.join(bundle, "metrics.json")) as fh:
        assert "trained" not in json.load(fh)  # --skip-scores
    TrainedSegmenter(bundle)  # loads as written

    with open(os.path.join(bundle, "model.onnx"), "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(ModelIntegrityError):
        TrainedSegmenter(bundle)


def test_it_refuses_to_package_a_run_with_no_checkpoint(data, tmp_path, capsys):
    assert ml_main(command(data, str(tmp_path / "empty"), "--export-only")) == 2
    assert "no checkpoint" in capsys.readouterr().err
