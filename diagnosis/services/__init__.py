"""Writes. Every change to SkinPortal's data goes through a function in this package.

Pages, the REST API, Celery tasks and management commands all call these, so the rules
(permissions, validation, what happens after an upload) live in one place. Services raise
django.core.exceptions.ValidationError for bad input and PermissionDenied for a role that may
not write; callers turn those into a form error or a 4xx JSON error.

One module per sub-domain; callers name it (`services.batches.batch_create(...)`):

    accounts        organisations, members, logins, API tokens
    patients        patients and their lesions
    uploads         images coming in: one upload of a few files for one lesion
    batches         several files, or a ZIP + CSV, stored as one batch with an error per refused file
    imports         the operator's bulk import (manage.py import_images)
    classification  enqueue, claim, run and store the model's results
    reviews         a clinician's own diagnosis of an image
"""

from diagnosis.services import accounts, batches, classification, imports, patients, reviews, uploads

__all__ = ["accounts", "batches", "classification", "imports", "patients", "reviews", "uploads"]
