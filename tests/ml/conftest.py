"""Fixtures for tests/ml: the tiny end-to-end bundle that test_end_to_end_packaging.py and
test_end_to_end_runs.py share, trained once a session rather than once in each module."""

import pytest

from tests.ml.datasets import generated_dataset


@pytest.fixture(scope="session")
def e2e_bundle(tmp_path_factory):
    """`python -m ml train --mode end-to-end` on generated images with clinical context: a non-square
    (48x64) MobileNetV2 at alpha 0.35, one epoch from random weights, packaged fp32-only. Read-only:
    a test that changes a bundle changes a copy."""
    pytest.importorskip("tensorflow", reason="the 'train' extra (TensorFlow) is not installed")
    from ml.__main__ import main as ml_main

    root = tmp_path_factory.mktemp("e2e_nonsquare")
    metadata, images = generated_dataset(str(root), context=True)
    out = str(root / "bundle")
    argv = [
        "train", "--mode", "end-to-end", "--metadata", metadata, "--images", images, "--out", out,
        "--work-dir", str(root / "work"), "--alpha", "0.35", "--weights", "none", "--size", "48", "--width", "64",
        "--colour", "clahe", "--epochs", "1", "--batch-size", "8", "--calibration-images", "16",
        "--parity-images", "16", "--bootstrap", "20",
        # An impossible gate: the bundle must come out fp32-only, with int8 refused.
        "--min-int8-agreement", "1.01",
    ]
    assert ml_main(argv) == 0
    return out
