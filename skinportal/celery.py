"""The Celery application. Start a worker with:

    celery -A skinportal worker --loglevel info

Sizing: each worker process holds one onnxruntime session running SKINPORTAL_ORT_THREADS
threads, so processes x threads must not exceed the cores. When SKINPORTAL_ORT_THREADS is not
set, each process gets cores // concurrency threads; when it is set too high, it is lowered
(with a warning). Each process loads and checks the model once, when it starts (diagnosis/tasks.py).
"""

from __future__ import annotations

import logging
import os

from celery import Celery
from celery.signals import celeryd_init

from skinportal.env import available_cores

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "skinportal.settings")

app = Celery("skinportal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

logger = logging.getLogger(__name__)


def ort_threads_for(*, concurrency: int, cores: int, requested: str | None) -> tuple[int, str]:
    """Threads per worker process so that processes x threads <= cores, and a note when adjusted."""
    fair_share = max(1, cores // max(1, concurrency))
    if not requested:
        return fair_share, ""
    try:
        wanted = int(requested)
    except ValueError:
        return fair_share, f"SKINPORTAL_ORT_THREADS={requested!r} is not a number; using {fair_share}"
    if wanted < 1 or wanted * concurrency > cores:
        return fair_share, (
            f"SKINPORTAL_ORT_THREADS={wanted} x concurrency {concurrency} exceeds the {cores} cores; using {fair_share}"
        )
    return wanted, ""


@celeryd_init.connect
def _size_inference_threads(sender=None, conf=None, options=None, **kwargs) -> None:
    """Runs once in the worker's main process, before the pool processes are forked."""
    options = options or {}
    pool = str(options.get("pool") or "prefork")
    concurrency = int(options.get("concurrency") or (conf.worker_concurrency if conf else 0) or 1)
    if pool in {"solo", "threads"}:
        concurrency = 1  # one process, so one onnxruntime session
    cores = available_cores()
    threads, note = ort_threads_for(
        concurrency=concurrency, cores=cores, requested=os.environ.get("SKINPORTAL_ORT_THREADS")
    )
    if note:
        logger.warning(note)
    os.environ["SKINPORTAL_ORT_THREADS"] = str(threads)
    logger.info("worker sizing: %s process(es) x %s onnxruntime thread(s) on %s cores", concurrency, threads, cores)
