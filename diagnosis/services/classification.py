"""Classification of stored images: enqueue, claim, run, store.

Delivery rules (docs/deployment.md): a task may be delivered more than once (acks_late: a
worker that dies mid-task gets its message redelivered), so running one must be idempotent.
The database keeps exactly one Classification per (image, model version); a delivery first
*claims* that row: an image that already has a result for the loaded version is skipped, and
a request delivered more than SKINPORTAL_MAX_DELIVERIES times is stored as failed with the reason.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, models, transaction
from django.utils import timezone

from diagnosis import audit, inference
from diagnosis.models import Classification, ClassificationStatus, LesionImage, Organisation
from diagnosis.permissions import require_write
from diagnosis.selectors import image_ids_missing_classification

logger = logging.getLogger(__name__)


def classification_enqueue_missing(
    *, model_version: str, organisation: Organisation | None = None, dry_run: bool = False
) -> int:
    """Queue every image without a successful classification by `model_version` (a model
    upgrade, or earlier failures); earlier versions' results stay as history. Returns the count."""
    image_ids = list(image_ids_missing_classification(model_version=model_version, organisation=organisation))
    if not dry_run and image_ids:
        _enqueue_classifications(image_ids)
    return len(image_ids)


def _queue_failure_message(exc: Exception) -> str:
    return (
        f"The classification queue is unavailable ({type(exc).__name__}). "
        "Use 'Classify again' once the worker is running."
    )


def _enqueue_classification(image_id: int, *, force: bool = False) -> None:
    """Send the Celery task; a broker outage becomes a failed classification, not a 500."""
    from diagnosis.tasks import classify_image  # tasks import this module: imported on use

    try:
        if force:
            classify_image.delay(image_id, force=True)
        else:
            classify_image.delay(image_id)
    except Exception as exc:  # kombu raises several unrelated types when the broker is unreachable
        logger.exception("could not queue classification of image %s", image_id)
        classification_fail_unqueued(image_ids=[image_id], message=_queue_failure_message(exc))


def _enqueue_classifications(image_ids: Sequence[int], *, force: bool = False) -> int:
    """Send images in micro-batches of SKINPORTAL_MICRO_BATCH (one task each); returns tasks sent."""
    from diagnosis.tasks import classify_images

    size = settings.SKINPORTAL_MICRO_BATCH
    sent = 0
    for start in range(0, len(image_ids), size):
        chunk = [int(i) for i in image_ids[start : start + size]]
        try:
            classify_images.delay(chunk, force=force)
            sent += 1
        except Exception as exc:
            logger.exception("could not queue classification of images %s", chunk)
            classification_fail_unqueued(image_ids=chunk, message=_queue_failure_message(exc))
    return sent


def classification_enqueue(*, image_ids: Sequence[int], force: bool = False) -> int:
    """Queue these images now, in micro-batches; returns the number of tasks sent."""
    return _enqueue_classifications([int(i) for i in image_ids], force=force)


def classification_enqueue_on_commit(*, image_ids: Sequence[int], force: bool = False) -> None:
    """Queue classification of these images once the current transaction commits."""
    ids = [int(i) for i in image_ids]
    if not ids:
        return
    if len(ids) == 1:
        transaction.on_commit(lambda: _enqueue_classification(ids[0], force=force))
    else:
        transaction.on_commit(lambda: _enqueue_classifications(ids, force=force))


@transaction.atomic
def classification_request(*, user: AbstractBaseUser, image: LesionImage) -> None:
    """Queue a new classification of an image (e.g. after a failure or a model upgrade)."""
    require_write(user=user, organisation_id=image.lesion.patient.organisation_id)
    classification_enqueue_on_commit(image_ids=[image.pk], force=True)


def classification_fail_unqueued(*, image_ids: Sequence[int], message: str) -> None:
    """Images whose task could not even be sent: say so on each (model version unknown)."""
    for image_id in image_ids:
        _classification_store(
            image_id=image_id,
            model_version=Classification.UNKNOWN_MODEL_VERSION,
            values={"status": ClassificationStatus.FAILED, "error_message": message},
        )


@transaction.atomic
def classification_fail_delivery(*, image_ids: Sequence[int], task_id: str, message: str) -> int:
    """A task gave up (retries exhausted, unexpected error): its claimed rows become failed."""
    return Classification.objects.filter(
        image_id__in=list(image_ids), task_id=task_id, status=ClassificationStatus.RUNNING
    ).update(status=ClassificationStatus.FAILED, error_message=message, finished_at=timezone.now())


@transaction.atomic
def _classification_store(*, image_id: int, model_version: str, values: dict[str, Any]) -> Classification | None:
    """Insert or update the one row for (image, model version)."""
    return _store_row(image_id=image_id, model_version=model_version, values=values)


_FAILURE_CLEARS = {
    "probabilities": {},
    "top_class": "",
    "malignancy_score": None,
    "malignant": False,
    "threshold": None,
}


def _classification_store_many(outcomes: Sequence[tuple[int, str, dict[str, Any]]]) -> list[Classification]:
    """Several results in a handful of queries (a micro-batch), with the same rules as
    _store_row: one row per (image, model version), failures keep no stale numbers, a success
    removes the image's failures that never reached a model. The caller holds the transaction."""
    if not outcomes:
        return []
    alive = set(LesionImage.objects.filter(pk__in={i for i, _, _ in outcomes}).values_list("pk", flat=True))
    outcomes = [o for o in outcomes if o[0] in alive]  # images deleted meanwhile are skipped
    existing = {
        (row.image_id, row.model_version): row
        for row in Classification.objects.select_for_update()
        .filter(image_id__in=alive, model_version__in={v for _, v, _ in outcomes})
        .order_by("image_id", "model_version")
    }
    now = timezone.now()
    result: list[Classification] = []
    updates: dict[tuple[str, ...], list[Classification]] = {}  # rows by the fields they change
    for image_id, model_version, values in outcomes:
        if values.get("status") == ClassificationStatus.FAILED:
            values = {**_FAILURE_CLEARS, **values}
        row = existing.get((image_id, model_version))
        if row is None:  # not claimed (or deleted since): a plain write, racing claims are handled by the constraint
            row = _store_row(image_id=image_id, model_version=model_version, values=values)
            if row is not None:
                result.append(row)
            continue
        for field, value in values.items():
            setattr(row, field, value)
        row.updated_at = now
        updates.setdefault((*values, "updated_at"), []).append(row)
        result.append(row)
    for fields, rows in updates.items():
        _update_each(rows, fields)
    succeeded = [r.image_id for r in result if r.status == ClassificationStatus.SUCCEEDED]
    if succeeded:
        Classification.objects.filter(
            image_id__in=succeeded,
            model_version=Classification.UNKNOWN_MODEL_VERSION,
            status=ClassificationStatus.FAILED,
        ).delete()
    return result


def _update_each(rows: Sequence[models.Model], fields: Sequence[str]) -> None:
    """Write `fields` of each row (each its own values) in one executemany: psycopg pipelines
    it into one round trip, where an UPDATE per row costs one each and Django's bulk_update
    builds a CASE per field that costs more than both. No signals, like QuerySet.update."""
    meta = rows[0]._meta
    columns = [meta.get_field(name) for name in fields]
    quote = connection.ops.quote_name
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {', '.join(f'{quote(c.column)} = %s' for c in columns)} "
        f"WHERE {quote(meta.pk.column)} = %s"
    )
    params = [[c.get_db_prep_save(getattr(row, c.attname), connection) for c in columns] + [row.pk] for row in rows]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def _store_row(*, image_id: int, model_version: str, values: dict[str, Any]) -> Classification | None:
    if not LesionImage.objects.filter(pk=image_id).exists():
        return None  # deleted while the task waited in the queue
    if values.get("status") == ClassificationStatus.FAILED:
        # A failure keeps no stale numbers from an earlier run.
        values = {
            "probabilities": {},
            "top_class": "",
            "malignancy_score": None,
            "malignant": False,
            "threshold": None,
            **values,
        }
    classification, _ = Classification.objects.update_or_create(
        image_id=image_id, model_version=model_version, defaults=values
    )
    if classification.status == ClassificationStatus.SUCCEEDED:
        # An earlier failure that never reached a model is superseded by this result.
        Classification.objects.filter(
            image_id=image_id, model_version=Classification.UNKNOWN_MODEL_VERSION, status=ClassificationStatus.FAILED
        ).delete()
    return classification


@dataclass
class _Claim:
    image: LesionImage
    classification: Classification
    started_at: dt.datetime


@transaction.atomic
def _classification_claim(
    *, image_id: int, model_version: str, request_id: str, force: bool
) -> tuple[Classification | None, bool]:
    """Take the (image, model version) row for this delivery. Returns (row, run_it)."""
    if not LesionImage.objects.filter(pk=image_id).exists():
        return None, False
    return _claim_row(image_id=image_id, model_version=model_version, request_id=request_id, force=force)


@transaction.atomic
def _classification_claim_many(
    *, image_ids: Sequence[int], model_version: str, request_id: str, force: bool
) -> tuple[dict[int, LesionImage], dict[int, tuple[Classification, bool]]]:
    """Claim a micro-batch in one transaction and a handful of queries; rows are created, then
    locked in id order (two workers never deadlock), then decided exactly as _claim_row does."""
    images = LesionImage.objects.in_bulk(sorted({int(i) for i in image_ids}))
    if not images:
        return images, {}
    now = timezone.now()
    Classification.objects.bulk_create(
        [
            Classification(
                image_id=image_id,
                model_version=model_version,
                status=ClassificationStatus.PENDING,
                task_id="",
                attempts=0,
            )
            for image_id in images
        ],
        ignore_conflicts=True,  # rows that exist already stay as they are
    )
    rows = (
        Classification.objects.select_for_update()
        .filter(image_id__in=list(images), model_version=model_version)
        .order_by("image_id")
    )
    claims: dict[int, tuple[Classification, bool]] = {}
    changed: list[Classification] = []
    for row in rows:
        skipped = row.status == ClassificationStatus.SUCCEEDED and not force
        run_it = _claim_decide(row, request_id=request_id, force=force, now=now)
        claims[row.image_id] = (row, run_it)
        if not skipped:
            row.updated_at = now
            changed.append(row)
    claim_fields = ["status", "task_id", "attempts", "started_at", "finished_at", "error_message", "updated_at"]
    groups: dict[str, tuple[tuple, list[int]]] = {}  # rows getting the same values: one UPDATE (usually one in all)
    for row in changed:
        fields = claim_fields + (list(_FAILURE_CLEARS) if row.status == ClassificationStatus.FAILED else [])
        values = tuple((field, getattr(row, field)) for field in fields)
        groups.setdefault(repr(values), (values, []))[1].append(row.pk)
    for values, pks in groups.values():  # plain UPDATEs: Django's bulk_update (CASE WHEN) costs far more
        Classification.objects.filter(pk__in=pks).update(**dict(values))
    return images, claims


def _claim_decide(row: Classification, *, request_id: str, force: bool, now: dt.datetime) -> bool:
    """Update `row` in memory for this delivery; True when the image is to be classified now."""
    if row.status == ClassificationStatus.SUCCEEDED and not force:
        return False  # already classified by this version: a redelivered or repeated request
    if request_id and row.task_id == request_id:
        row.attempts += 1  # the same request again: the worker that had it died
    else:
        row.task_id, row.attempts = request_id, 1
    max_deliveries = settings.SKINPORTAL_MAX_DELIVERIES
    if row.attempts > max_deliveries:
        row.status = ClassificationStatus.FAILED
        row.error_message = (
            f"Gave up after {max_deliveries} attempts: the worker stopped each time while classifying this "
            "image (killed, out of memory or over the time limit). Use 'Classify again' to retry."
        )
        row.finished_at = now
        for field, value in _FAILURE_CLEARS.items():
            setattr(row, field, value)
        return False
    if row.status != ClassificationStatus.SUCCEEDED:  # a re-run keeps the shown result until replaced
        row.status = ClassificationStatus.RUNNING
    row.started_at = now
    return True


def _claim_row(*, image_id: int, model_version: str, request_id: str, force: bool) -> tuple[Classification, bool]:
    row, _ = Classification.objects.select_for_update().get_or_create(
        image_id=image_id,
        model_version=model_version,
        defaults={"status": ClassificationStatus.PENDING, "task_id": "", "attempts": 0},
    )
    run_it = _claim_decide(row, request_id=request_id, force=force, now=timezone.now())
    row.save()
    return row, run_it


def classification_run(*, image_id: int, force: bool = True, request_id: str = "") -> Classification | None:
    """Classify one stored image now and store the outcome; by default a re-run replaces this
    model version's result (see classification_run_many)."""
    results = classification_run_many(image_ids=[image_id], force=force, request_id=request_id)
    return results[0] if results else None


def classification_run_many(
    *, image_ids: Sequence[int], force: bool = False, request_id: str = ""
) -> list[Classification]:
    """Classify stored images with the loaded model (one micro-batch) and store each outcome.

    Never raises for a model or image problem: each failure is stored with a message a clinician
    can read. Database errors propagate (the task retries them). Images deleted meanwhile are
    skipped; an image already classified by this model version is not classified again unless
    `force`. Returns the classifications of the images that still exist. Not atomic as a whole:
    inference runs outside any transaction; only the claims and the writes are.
    """
    request_id = request_id or uuid.uuid4().hex
    started_at = timezone.now()
    try:
        model_version = inference.loaded_model_version()
    except Exception as exc:
        if isinstance(exc, inference.MLError):
            logger.error("model unavailable: %s", exc)
            message = f"The model could not be loaded: {exc}"
        else:
            logger.exception("unexpected error loading the model")
            message = f"The model could not be loaded ({type(exc).__name__}); see the server log."
        stored = []
        for image_id in image_ids:
            row = _classification_store(
                image_id=image_id,
                model_version=Classification.UNKNOWN_MODEL_VERSION,
                values={
                    "status": ClassificationStatus.FAILED,
                    "error_message": message,
                    "started_at": started_at,
                    "finished_at": timezone.now(),
                    "inference_ms": None,
                },
            )
            if row is None:
                logger.info("image %s was deleted before it could be classified", image_id)
            else:
                stored.append(row)
        audit.audit_classifications_record(classifications=stored, request_id=request_id)
        return stored

    results: dict[int, Classification] = {}
    images, claimed = _classification_claim_many(
        image_ids=image_ids, model_version=model_version, request_id=request_id, force=force
    )
    claims: list[_Claim] = []
    for image_id in dict.fromkeys(int(i) for i in image_ids):
        if image_id not in claimed:
            logger.info("image %s was deleted before it could be classified", image_id)
            continue
        row, run_it = claimed[image_id]
        results[image_id] = row
        if run_it:
            claims.append(_Claim(image=images[image_id], classification=row, started_at=timezone.now()))

    outcomes_to_store: list[tuple[int, str, dict[str, Any]]] = []

    def fail(claim: _Claim, message: str) -> None:
        outcomes_to_store.append(
            (
                claim.image.pk,
                model_version,
                {
                    "status": ClassificationStatus.FAILED,
                    "error_message": message,
                    "started_at": claim.started_at,
                    "finished_at": timezone.now(),
                    "inference_ms": None,
                },
            )
        )

    readable: list[tuple[_Claim, bytes]] = []
    for claim in claims:
        try:
            with claim.image.file.open("rb") as fh:
                readable.append((claim, fh.read()))
        except OSError as exc:
            logger.error("image %s: stored file unreadable: %s", claim.image.pk, exc)
            fail(claim, "The stored image file could not be read; upload it again.")

    outcomes: list[inference.PortalPrediction | Exception]
    try:
        if len(readable) == 1:
            try:
                outcomes = [inference.classify_image_bytes(readable[0][1])]
            except inference.InvalidImageError as exc:
                outcomes = [exc]
        else:
            outcomes = list(inference.classify_many([data for _, data in readable]))
    except inference.MLError as exc:
        logger.error("images %s: classification failed: %s", [c.image.pk for c, _ in readable], exc)
        outcomes = [exc] * len(readable)
    except Exception as exc:
        logger.exception("images %s: unexpected classification error", [c.image.pk for c, _ in readable])
        outcomes = [exc] * len(readable)

    for (claim, _), outcome in zip(readable, outcomes):
        if isinstance(outcome, inference.InvalidImageError):
            fail(claim, f"The image could not be analysed: {outcome}.")
        elif isinstance(outcome, inference.MLError):
            fail(claim, f"Classification failed: {outcome}")
        elif isinstance(outcome, Exception):
            fail(claim, f"Classification failed unexpectedly ({type(outcome).__name__}); see the server log.")
        else:
            outcomes_to_store.append(
                (
                    claim.image.pk,
                    outcome.model_version,
                    {
                        "status": ClassificationStatus.SUCCEEDED,
                        "model_variant": outcome.variant,
                        "probabilities": outcome.probabilities,
                        "top_class": outcome.top_class,
                        "malignancy_score": outcome.malignancy_score,
                        "malignant": outcome.malignant,
                        "threshold": outcome.threshold,
                        "error_message": "",
                        "started_at": claim.started_at,
                        "finished_at": timezone.now(),
                        "inference_ms": outcome.inference_ms,
                    },
                )
            )
    with transaction.atomic():  # the results and their audit events: one commit
        written = _classification_store_many(outcomes_to_store)
        audit.audit_classifications_record(classifications=written, request_id=request_id)
    for row in written:
        results[row.image_id] = row
    return list(results.values())
