"""`python -m ml screening-report` through the serving path, on a copy of the shipped bundle whose
split names generated images as its test split (onnxruntime only; no ../shared needed)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from ml.__main__ import main as ml_main
from ml.data import load_metadata, write_split_csv
from ml.manifest import load_manifest, shipped_model_dir
from ml.nonderm import generate
from ml.screening import WARNING_CODES
from ml.screening.perturb import DEGRADATIONS, DERMATOSCOPE_SHIFTS
from tests.ml.datasets import generated_dataset, generated_masks

PER_KIND = 2


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("screening-report")
    metadata, images = generated_dataset(str(root), per_class=2, width=200, height=150)
    masks = os.path.join(root, "masks")
    generated_masks(images, masks)
    records = load_metadata(metadata, [images])
    bundle = os.path.join(root, "bundle")
    # The Keras file is for training only; serving reads model.onnx, its manifest and screening.npz.
    shutil.copytree(shipped_model_dir(), bundle, ignore=shutil.ignore_patterns("model.keras"))
    # Two of the generated images as training rows, the rest as the test split the report reads.
    write_split_csv(os.path.join(bundle, "split.csv"), records,
                    {r.image_id: "train" if i < 2 else "test" for i, r in enumerate(records)})
    return {"metadata": metadata, "images": images, "masks": masks, "bundle": bundle, "tests": len(records) - 2}


def run(case: dict, *extra: str) -> int:
    return ml_main(["screening-report", "--model", case["bundle"], "--metadata", case["metadata"],
                    "--images", case["images"], "--nonderm-per-kind", str(PER_KIND), *extra])


def read_metrics(bundle: str) -> dict:
    with open(os.path.join(bundle, "metrics.json")) as fh:
        return json.load(fh)


def test_it_writes_every_section_into_metrics_json_and_leaves_the_rest_as_it_was(case, capsys):
    before = read_metrics(case["bundle"])
    assert run(case, "--masks", case["masks"]) == 0
    after = read_metrics(case["bundle"])
    report = after.pop("screening_report")
    before.pop("screening_report", None)
    assert after == before  # only its own key changes

    version = load_manifest(case["bundle"])["version"]
    assert report["model"] == version and report["test_images"] == case["tests"]
    clean = report["clean_test"]
    assert set(clean) == {*WARNING_CODES, "any"} and all(0.0 <= r <= 1.0 for r in clean.values())
    assert clean["any"] >= max(clean[code] for code in WARNING_CODES)
    low = report["low_confidence"]
    assert 0.0 <= low["rate"] <= 1.0
    assert set(report["dermatoscope_views"]) == set(DERMATOSCOPE_SHIFTS)
    assert set(report["degradations"]) == {f"{name} {level:g}" for name, (_, _, levels) in DEGRADATIONS.items()
                                           for level in levels}
    # The severest darkening and over-exposure are what the quality checks exist for.
    assert report["degradations"]["darkened 0.15"]["expected_rate"] == 1.0
    assert report["degradations"]["over_exposed 3"]["expected_rate"] == 1.0

    kinds = {item.kind for item in generate(per_kind=PER_KIND)}
    ood = report["non_dermoscopic"]
    assert set(ood["by_kind"]) == kinds and ood["images"] == PER_KIND * len(kinds)
    assert all(v["images"] == PER_KIND for v in ood["by_kind"].values())
    flagged = sum(round(v["detected_rate"] * v["images"]) for v in ood["by_kind"].values())
    assert ood["detected_rate"] == pytest.approx(flagged / ood["images"])
    assert sum(ood["top_class_when_missed"].values()) == ood["images"] - flagged

    # Localisation against the masks: each generated mask is a disc of radius min(h, w) / 4.
    loc = report["localisation"]
    assert loc["images"] == case["tests"]
    assert loc["lesion_area_share_mean"] == pytest.approx(np.pi * (150 // 4) ** 2 / (200 * 150), abs=0.01)
    assert 0.0 <= loc["mass_inside_lesion_mean"] <= 1.0 and 0.0 <= loc["pointing_game"] <= 1.0

    printed = capsys.readouterr().out
    assert printed.startswith(f"Screening of {version} on {case['tests']} test images")
    assert "heatmap localisation" in printed


def test_it_prints_without_writing_with_no_write_and_counts_only_the_first_images_with_limit(case, capsys):
    path = os.path.join(case["bundle"], "metrics.json")
    with open(path, "rb") as fh:
        before = fh.read()
    assert run(case, "--no-write", "--limit", "3") == 0
    with open(path, "rb") as fh:
        assert fh.read() == before
    printed = capsys.readouterr().out
    assert "on 3 test images" in printed and "heatmap localisation" not in printed  # no --masks
