"""Loading the app stays light: the Django models (and everything django.setup() loads with them:
the admin, the signals, AppConfig.ready) need seven class names, not OpenCV or onnxruntime.
diagnosis/inference/ imports those on first use, and sets OpenCV to one thread then.
Each check runs in a fresh interpreter, so other tests' imports don't count.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.portal.helpers import REPO_ROOT, image_bytes

HEAVY = ("cv2", "onnxruntime")


def _run(code: str, *, stdin: bytes = b"") -> str:
    env = os.environ | {"DJANGO_SETTINGS_MODULE": "skinportal.settings"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, input=stdin, capture_output=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def test_importing_the_models_loads_no_opencv_and_no_onnxruntime():
    out = _run(
        "import sys, django; django.setup(); import diagnosis.models;"
        f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    assert "LOADED []" in out


def test_opencv_loads_on_first_use_with_one_thread():
    out = _run(
        "import sys, django; django.setup(); from diagnosis import inference;"
        "print('BEFORE', 'cv2' in sys.modules);"
        "image = inference.sanitise_upload(sys.stdin.buffer.read());"
        "import cv2; print('AFTER', image.width, image.height, cv2.getNumThreads())",
        stdin=image_bytes(size=(140, 110)),
    )
    assert "BEFORE False" in out and "AFTER 140 110 1" in out


def test_numpys_openblas_runs_one_thread_in_a_portal_process_unless_the_operator_says_otherwise():
    # OpenBLAS's threads spin after each matrix product: on 2 cores that cost ~60 CPU-ms per image.
    code = ("import django; django.setup(); import numpy, threadpoolctl;"
            "print('BLAS', [i['num_threads'] for i in threadpoolctl.threadpool_info() if i['internal_api'] == 'openblas'])")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, timeout=120, check=False,
                          env=env | {"DJANGO_SETTINGS_MODULE": "skinportal.settings"})
    assert done.returncode == 0, done.stderr.decode()
    assert "BLAS [1]" in done.stdout.decode()
    chosen = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, timeout=120, check=False,
                            env=env | {"DJANGO_SETTINGS_MODULE": "skinportal.settings", "OPENBLAS_NUM_THREADS": "2"})
    assert "BLAS [2]" in chosen.stdout.decode(), chosen.stderr.decode()
