"""The serving path stays light: importing it loads no SciPy and no TensorFlow, and the Django
models load no OpenCV (each checked in a fresh interpreter, so other tests' imports don't count)."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def modules_after_import(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    env = os.environ | {"DJANGO_SETTINGS_MODULE": "skinportal.settings"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return {name.split(".")[0] for name in done.stdout.split()}


@pytest.mark.parametrize("module", ["ml.inference", "ml.bench", "ml.int8_check"])
def test_it_serves_without_scipy_or_tensorflow(module):
    loaded = modules_after_import(f"import {module}")
    assert "onnxruntime" in loaded or module != "ml.inference"
    assert not loaded & {"scipy", "tensorflow", "keras", "tf2onnx"}


def test_it_reads_the_model_inference_path_with_the_classifier_loaded_yet_no_tensorflow():
    loaded = modules_after_import("from ml.inference import Classifier, get_classifier\nimport ml.manifest, ml.scores")
    assert not loaded & {"scipy", "tensorflow", "keras"}
