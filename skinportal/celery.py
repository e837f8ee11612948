"""The Celery application. Start a worker with:

    celery -A skinportal worker --loglevel info

Sizing: each worker process holds one onnxruntime session running settings.SKINPORTAL_ORT_THREADS
threads, so processes x threads must not exceed the cores. When SKINPORTAL_ORT_THREADS is not
set, each process gets cores // concurrency threads; when it is set too high, it is lowered
(with a warning). The worker's main process sets the setting once, before the pool processes are
forked, so each of them reads the sized value. Each process loads and checks the model once,
when it starts (diagnosis/tasks.py).
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


def ort_threads_for(*, concurrency: int, cores: int, requested: int | None) -> tuple[int, str]:
    """Threads per worker process so that processes x threads <= cores, and a note when adjusted.

    `requested` is settings.SKINPORTAL_ORT_THREADS: None when unset, else a whole number of at
    least 1 (the settings refuse anything else at start-up).
    """
    fair_share = max(1, cores // max(1, concurrency))
    if requested is None:
        return fair_share, ""
    if requested * concurrency > cores:
        return fair_share, (
            f"SKINPORTAL_ORT_THREADS={requested} x concurrency {concurrency} exceeds the {cores} cores; using {fair_share}"
        )
    return requested, ""


@celeryd_init.connect
def _size_inference_threads(sender=None, conf=None, options=None, **kwargs) -> None:
    """Runs once in the worker's main process, before the pool processes are forked."""
    from django.conf import settings

    options = options or {}
    pool = str(options.get("pool") or "prefork")
    concurrency = int(options.get("concurrency") or (conf.worker_concurrency if conf else 0) or 1)
    if pool in {"solo", "threads"}:
        concurrency = 1  # one process, so one onnxruntime session
    cores = available_cores()
    threads, note = ort_threads_for(concurrency=concurrency, cores=cores, requested=settings.SKINPORTAL_ORT_THREADS)
    if note:
        logger.warning(note)
    # The forked pool processes inherit this; diagnosis/inference/ passes it to the classifier.
    settings.SKINPORTAL_ORT_THREADS = threads
    logger.info("worker sizing: %s process(es) x %s onnxruntime thread(s) on %s cores", concurrency, threads, cores)
