"""The README and the model card describe the model that is actually served."""

import json
import os

import pytest

from ml.manifest import MODELS_DIR, shipped_model_dir, load_manifest
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not os.path.isfile(os.path.join(MODELS_DIR, "CURRENT")), reason="no shipped model yet")


def test_it_names_the_served_model_and_its_test_figures_in_the_readme():
    bundle = shipped_model_dir()
    manifest = load_manifest(bundle)
    readme = open(os.path.join(REPO, "README.md")).read()
    with open(os.path.join(bundle, "metrics.json")) as fh:
        test = json.load(fh)["test"]["fp32"]  # full precision, as the model card prints it
    assert f"`{manifest['version']}`" in readme
    assert f"{test['balanced_accuracy']:.3f}" in readme
    assert f"{test['malignant_auc']:.3f}" in readme
