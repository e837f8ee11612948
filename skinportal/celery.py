"""The Celery application. Start a worker with: celery -A skinportal worker -l info"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "skinportal.settings")

app = Celery("skinportal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
