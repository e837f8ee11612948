"""Environment helpers and the production settings' fail-fast rules (run in subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from skinportal.env import env_bool, env_choice, env_int, env_list, env_str
from tests.portal.helpers import REPO_ROOT


def test_it_reads_typed_values(monkeypatch):
    monkeypatch.setenv("SP_FLAG", "Yes")
    monkeypatch.setenv("SP_NUMBER", " 42 ")
    monkeypatch.setenv("SP_HOSTS", "a.example, b.example,,")
    assert env_bool("SP_FLAG", False) is True
    assert env_int("SP_NUMBER", 1) == 42
    assert env_list("SP_HOSTS") == ["a.example", "b.example"]
    assert env_str("SP_MISSING", "fallback") == "fallback"
    assert env_choice("SP_MISSING", "a", ("a", "b")) == "a"


@pytest.mark.parametrize(
    ("setup", "call", "message"),
    [
        ({"SP_FLAG": "perhaps"}, lambda: env_bool("SP_FLAG", False), "SP_FLAG must be true or false"),
        ({"SP_NUMBER": "ten"}, lambda: env_int("SP_NUMBER", 1), "SP_NUMBER must be a whole number"),
        ({"SP_NUMBER": "0"}, lambda: env_int("SP_NUMBER", 1, minimum=1), "at least 1"),
        ({}, lambda: env_str("SP_SECRET", required=True), "SP_SECRET is required"),
        ({"SP_HOSTS": " , "}, lambda: env_list("SP_HOSTS", required=True), "SP_HOSTS"),
        ({"SP_MODE": "staging"}, lambda: env_choice("SP_MODE", "a", ("a", "b")), "SP_MODE must be one of a, b"),
    ],
)
def test_it_explains_bad_values(monkeypatch, setup, call, message):
    monkeypatch.delenv("SP_SECRET", raising=False)
    for key, value in setup.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ImproperlyConfigured, match=message):
        call()


def _settings_in_subprocess(env: dict[str, str], expression: str) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SECRET_KEY", "ALLOWED_HOSTS", "DEBUG", "DATABASE_URL", "CELERY_BROKER_URL"}
    }
    clean.update(env, DJANGO_SETTINGS_MODULE="skinportal.settings")
    code = f"import django; from django.conf import settings; django.setup(); print({expression})"
    return subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=REPO_ROOT, env=clean, capture_output=True, text=True, timeout=120
    )


def test_it_refuses_production_without_a_secret_key():
    result = _settings_in_subprocess(
        {"SKINPORTAL_ENV": "production", "ALLOWED_HOSTS": "skin.example"}, "settings.DEBUG"
    )
    assert result.returncode != 0 and "SECRET_KEY is required" in result.stderr


def test_it_refuses_production_without_allowed_hosts():
    result = _settings_in_subprocess({"SKINPORTAL_ENV": "production", "SECRET_KEY": "x" * 50}, "settings.DEBUG")
    assert result.returncode != 0 and "ALLOWED_HOSTS is required" in result.stderr


def test_it_configures_production_from_the_environment(tmp_path):
    result = _settings_in_subprocess(
        {
            "SKINPORTAL_ENV": "production",
            "SECRET_KEY": "x" * 50,
            "ALLOWED_HOSTS": "skin.example,10.0.0.5",
            "DATABASE_URL": "postgres://sp:pw@db.internal:5432/skinportal",
            "CELERY_BROKER_URL": "redis://redis:6379/0",
            "MEDIA_ROOT": str(tmp_path / "media"),
        },
        "settings.DEBUG, settings.ALLOWED_HOSTS, settings.DATABASES['default']['ENGINE'], settings.CELERY_TASK_ALWAYS_EAGER, "
        "settings.CELERY_BROKER_URL, str(settings.MEDIA_ROOT), settings.STORAGES['staticfiles']['BACKEND'], settings.SESSION_COOKIE_SECURE",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"False ['skin.example', '10.0.0.5'] django.db.backends.postgresql False redis://redis:6379/0 {tmp_path / 'media'} "
        "whitenoise.storage.CompressedManifestStaticFilesStorage True"
    )


def test_it_runs_everything_in_process_by_default():
    result = _settings_in_subprocess(
        {},
        "settings.DEBUG, settings.CELERY_TASK_ALWAYS_EAGER, settings.DATABASES['default']['ENGINE'], settings.EMAIL_BACKEND",
    )
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip() == "True True django.db.backends.sqlite3 django.core.mail.backends.console.EmailBackend"
    )


def test_it_never_imports_tensorflow_in_the_web_process(stand_in_model_dir):
    """Load every URL, view and API module and classify an image: TensorFlow must stay out."""
    code = (
        "import sys, django; django.setup();"
        "import skinportal.urls, skinportal.wsgi, diagnosis.api.views, diagnosis.tasks;"
        "from diagnosis import inference;"
        "from tests.portal.helpers import image_bytes;"
        "print(inference.classify_many([image_bytes()])[0].top_class);"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'tensorflow', 'keras', 'tf2onnx'} or m.startswith('ml.training'));"
        "print('LOADED', bad)"
    )
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="skinportal.settings", SKINPORTAL_MODEL_DIR=str(stand_in_model_dir))
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "mel"
    assert "LOADED []" in result.stdout
