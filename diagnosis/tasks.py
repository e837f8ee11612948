"""Celery tasks: thin wrappers that take ids and call a service."""

from __future__ import annotations

from celery import shared_task

from diagnosis.services import classification_run


@shared_task(name="diagnosis.classify_image", ignore_result=True)
def classify_image(image_id: int) -> None:
    classification_run(image_id=image_id)
