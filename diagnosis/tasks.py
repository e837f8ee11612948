"""Celery tasks: thin wrappers that take ids and call a service.

Reliability (settings.py, docs/deployment.md): messages are acknowledged after the task ends
(CELERY_TASK_ACKS_LATE) and requeued when the worker process dies
(CELERY_TASK_REJECT_ON_WORKER_LOST), so a delivery can repeat; the services make that harmless
(one row per image and model version, claimed first, capped at SKINPORTAL_MAX_DELIVERIES
deliveries). Transient database errors are retried
with exponential backoff; when the retries run out, the claimed images are marked failed.
"""

from __future__ import annotations

import logging

from celery import Task, shared_task
from celery.signals import worker_process_init
from django.conf import settings
from django.db import InterfaceError, OperationalError

from diagnosis.inference import warm_up
from diagnosis.services.classification import classification_fail_delivery, classification_run

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS = (OperationalError, InterfaceError, ConnectionError, TimeoutError)


@worker_process_init.connect
def _load_model(**kwargs) -> None:
    """Load and verify the model in each pool process (after the fork), not on the first image.
    The worker imports this module (autodiscover) before it forks its pool."""
    warm_up()


class ClassificationTask(Task):
    # acks_late, reject_on_worker_lost and ignore_result come from the settings (CELERY_TASK_*).
    autoretry_for = TRANSIENT_ERRORS
    retry_backoff = 2
    retry_backoff_max = settings.SKINPORTAL_RETRY_BACKOFF_MAX
    retry_jitter = True
    max_retries = settings.SKINPORTAL_MAX_RETRIES

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        image_ids = _image_ids(self.name, args, kwargs)
        message = (
            f"Classification failed after {self.request.retries} retries ({type(exc).__name__}); see the worker log."
        )
        try:
            classification_fail_delivery(image_ids=image_ids, task_id=_request_key(self), message=message)
        except Exception:  # the database may be the thing that is down
            logger.exception("could not record the failure of task %s for images %s", task_id, image_ids)


def _request_key(task: Task) -> str:
    """Identifies one delivery sequence: a redelivered message keeps it (the cap counts those),
    a retry after a transient error starts a new one (retries have their own limit)."""
    return f"{task.request.id or ''}:{task.request.retries or 0}"


def _image_ids(name: str, args, kwargs) -> list[int]:
    if name == "diagnosis.classify_image":
        return [kwargs.get("image_id", args[0] if args else None)]
    return list(kwargs.get("image_ids", args[0] if args else []))


@shared_task(bind=True, base=ClassificationTask, name="diagnosis.classify_images")
def classify_images(self, image_ids: list[int], force: bool = False) -> None:
    """A micro-batch: the images go through the model together (one upload: a list of one)."""
    classification_run(image_ids=image_ids, force=force, request_id=_request_key(self))


@shared_task(bind=True, base=ClassificationTask, name="diagnosis.classify_image")
def classify_image(self, image_id: int, force: bool = False) -> None:
    """Nothing sends this any more; it runs the messages an earlier release left in the queue."""
    classification_run(image_ids=[image_id], force=force, request_id=_request_key(self))
