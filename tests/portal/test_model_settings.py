"""The model served is a Django setting: SKINPORTAL_MODEL_DIR, SKINPORTAL_MODEL_VARIANT and
SKINPORTAL_ORT_THREADS are read once, when the settings load (a bad value stops the start with a
message naming the variable), and diagnosis/inference/ passes them to ml.inference; nothing
reads the environment again, and the Celery worker sizes its threads through the setting.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from diagnosis import inference
from ml.errors import ModelIntegrityError
from ml.inference import reset_classifier
from ml.manifest import VARIANTS, load_manifest, shipped_model_dir
from skinportal import celery as skinportal_celery
from skinportal.env import env_optional_int
from tests.portal.helpers import REPO_ROOT, build_stand_in_bundle
from tests.tinymodel import write_tiny_bundle

_MODEL_VARIABLES = ("SKINPORTAL_MODEL_DIR", "SKINPORTAL_MODEL_VARIANT", "SKINPORTAL_ORT_THREADS")


def _load_settings(**variables: str) -> subprocess.CompletedProcess[str]:
    """Import the settings in a fresh interpreter with these model variables (the others unset)."""
    env = {name: value for name, value in os.environ.items() if name not in _MODEL_VARIABLES}
    env |= {"DJANGO_SETTINGS_MODULE": "skinportal.settings", **variables}
    code = (
        "from django.conf import settings;"
        "print(repr((settings.SKINPORTAL_MODEL_DIR, settings.SKINPORTAL_MODEL_VARIANT, settings.SKINPORTAL_ORT_THREADS)))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def served(settings, tmp_path):
    """Serve a tiny bundle (fp32 and int8) through the settings; the classifier is reloaded."""
    bundle = write_tiny_bundle(str(tmp_path / "served"), size=32)
    settings.SKINPORTAL_MODEL_DIR = bundle
    reset_classifier()
    yield settings
    reset_classifier()


# --- Read once, when the settings load ------------------------------------------------------------


def test_the_defaults_are_the_shipped_bundle_fp32_and_threads_sized_by_the_process():
    result = _load_settings()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "(None, 'fp32', None)"


def test_it_reads_the_three_variables_once_typed():
    result = _load_settings(
        SKINPORTAL_MODEL_DIR="/srv/model", SKINPORTAL_MODEL_VARIANT="int8", SKINPORTAL_ORT_THREADS="3"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "('/srv/model', 'int8', 3)"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SKINPORTAL_MODEL_VARIANT", "fp16", "SKINPORTAL_MODEL_VARIANT must be one of fp32, int8, got 'fp16'"),
        ("SKINPORTAL_ORT_THREADS", "many", "SKINPORTAL_ORT_THREADS must be a whole number, got 'many'"),
        ("SKINPORTAL_ORT_THREADS", "0", "SKINPORTAL_ORT_THREADS must be at least 1, got 0"),
    ],
)
def test_a_bad_value_stops_the_start_with_a_message_naming_the_variable(variable, value, message):
    result = _load_settings(**{variable: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and message in result.stderr


def test_every_variant_ml_knows_is_accepted_and_no_other():
    """The settings' choices are ml.manifest.VARIANTS (written out there: settings import no ml)."""
    for variant in VARIANTS:
        result = _load_settings(SKINPORTAL_MODEL_VARIANT=variant)
        assert result.returncode == 0, result.stderr
        assert f"'{variant}'" in result.stdout


def test_the_optional_whole_number_helper(monkeypatch):
    monkeypatch.delenv("SKINPORTAL_TEST_NUMBER", raising=False)
    assert env_optional_int("SKINPORTAL_TEST_NUMBER", minimum=1) is None
    monkeypatch.setenv("SKINPORTAL_TEST_NUMBER", "  ")
    assert env_optional_int("SKINPORTAL_TEST_NUMBER", minimum=1) is None
    monkeypatch.setenv("SKINPORTAL_TEST_NUMBER", "2")
    assert env_optional_int("SKINPORTAL_TEST_NUMBER", minimum=1) == 2
    monkeypatch.setenv("SKINPORTAL_TEST_NUMBER", "-1")
    with pytest.raises(ImproperlyConfigured, match="SKINPORTAL_TEST_NUMBER must be at least 1, got -1"):
        env_optional_int("SKINPORTAL_TEST_NUMBER", minimum=1)


# --- Passed to the classifier ---------------------------------------------------------------------


def test_the_classifier_is_loaded_with_the_settings(served, monkeypatch):
    served.SKINPORTAL_MODEL_VARIANT = "int8"
    served.SKINPORTAL_ORT_THREADS = 2
    # The environment is read when the settings load, never again.
    monkeypatch.setenv("SKINPORTAL_MODEL_DIR", "/nowhere")
    monkeypatch.setenv("SKINPORTAL_MODEL_VARIANT", "fp32")
    monkeypatch.setenv("SKINPORTAL_ORT_THREADS", "1")
    classifier = inference.get_classifier()
    assert classifier is inference.get_classifier()
    assert classifier.model_dir == served.SKINPORTAL_MODEL_DIR
    assert classifier.model_version == "tiny-test-1" and classifier.variant == "int8"
    assert classifier.session.get_session_options().intra_op_num_threads == 2
    assert inference.loaded_model_version() == inference.current_model_version() == "tiny-test-1"


def test_unset_threads_get_ml_s_default(served):
    served.SKINPORTAL_ORT_THREADS = None
    threads = inference.get_classifier().session.get_session_options().intra_op_num_threads
    assert threads == min(4, os.cpu_count() or 1)


def test_the_readiness_check_looks_at_the_configured_bundle_and_variant(served, tmp_path):
    assert inference.model_check().ok and inference.model_check().detail == "tiny-test-1 (fp32)"
    served.SKINPORTAL_MODEL_VARIANT = "int8"
    assert inference.model_check().detail == "tiny-test-1 (int8)"
    served.SKINPORTAL_MODEL_DIR = str(build_stand_in_bundle(tmp_path / "fp32-only"))  # no int8 file
    status = inference.model_check()
    assert not status.ok and status.detail == "the bundle has no int8 variant"


def test_without_a_configured_folder_it_serves_the_shipped_bundle(settings, monkeypatch):
    settings.SKINPORTAL_MODEL_DIR = None
    monkeypatch.setenv("SKINPORTAL_MODEL_DIR", "/nowhere")  # ml's CLI default; the portal never reads it
    if not (REPO_ROOT / "ml" / "models" / "CURRENT").is_file():
        with pytest.raises(ModelIntegrityError, match="CURRENT is missing"):
            inference.configured_model_dir()
        return
    assert inference.configured_model_dir() == shipped_model_dir()
    assert inference.current_model_version() == load_manifest(shipped_model_dir())["version"]


# --- The worker sizes its threads through the setting -----------------------------------------------


@pytest.mark.parametrize(("requested", "threads"), [(None, 2), (1, 1), (4, 2)])
def test_the_worker_sizes_threads_in_the_setting_not_the_environment(settings, monkeypatch, requested, threads):
    monkeypatch.setattr(skinportal_celery, "available_cores", lambda: 4)
    monkeypatch.delenv("SKINPORTAL_ORT_THREADS", raising=False)
    settings.SKINPORTAL_ORT_THREADS = requested
    skinportal_celery._size_inference_threads(options={"concurrency": 2, "pool": "prefork"})
    assert settings.SKINPORTAL_ORT_THREADS == threads
    assert "SKINPORTAL_ORT_THREADS" not in os.environ
