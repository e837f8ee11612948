"""Classification of stored images: enqueue, claim, run, store. One path, for a list of image
ids: a single upload is a list of one, a batch goes SKINPORTAL_MICRO_BATCH images per task.

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
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, models, transaction
from django.utils import timezone

from diagnosis import audit, inference
from diagnosis.models import Classification, ClassificationStatus, LesionImage, Organisation
from diagnosis.permissions import require_write
from diagnosis.selectors import image_clinical_record, image_ids_missing_classification

logger = logging.getLogger(__name__)

# What a failed result keeps of an earlier run: nothing (no stale numbers beside an error).
_FAILURE_CLEARS = {
    "probabilities": {},
    "top_class": "",
    "malignancy_score": None,
    "malignant": False,
    "threshold": None,
    "warnings": [],
    "screening": {},
    "activation_map": None,
    "field_of_view": None,
    "segmentation": None,
}


# --- Enqueue -----------------------------------------------------------------------------------


def classification_enqueue(*, image_ids: Sequence[int], force: bool = False) -> int:
    """Send these images to the workers now, SKINPORTAL_MICRO_BATCH per task; returns the number
    of tasks sent. A broker outage becomes a failed classification on each image, not a 500."""
    from diagnosis.tasks import classify_images  # tasks import this module: imported on use

    ids = [int(i) for i in image_ids]
    size = settings.SKINPORTAL_MICRO_BATCH
    sent = 0
    for start in range(0, len(ids), size):
        chunk = ids[start : start + size]
        try:
            classify_images.delay(chunk, force=force)
            sent += 1
        except Exception as exc:  # kombu raises several unrelated types when the broker is unreachable
            logger.exception("could not queue classification of images %s", chunk)
            classification_fail_unqueued(
                image_ids=chunk,
                message=f"The classification queue is unavailable ({type(exc).__name__}). "
                "Use 'Classify again' once the worker is running.",
            )
    return sent


def classification_enqueue_on_commit(*, image_ids: Sequence[int], force: bool = False) -> None:
    """Queue classification of these images once the current transaction commits (a worker
    must find the rows it is sent)."""
    ids = [int(i) for i in image_ids]
    if ids:
        transaction.on_commit(lambda: classification_enqueue(image_ids=ids, force=force))


def classification_enqueue_missing(
    *, model_version: str, organisation: Organisation | None = None, dry_run: bool = False
) -> int:
    """Queue every image without a successful classification by `model_version` (a model
    upgrade, or earlier failures); earlier versions' results stay as history. Returns the count."""
    image_ids = list(image_ids_missing_classification(model_version=model_version, organisation=organisation))
    if not dry_run and image_ids:
        classification_enqueue(image_ids=image_ids)
    return len(image_ids)


def classification_enqueue_missing_outlines(
    *, model_version: str, organisation: Organisation | None = None, dry_run: bool = False
) -> int:
    """Queue again (forced) every image whose result by `model_version` has no lesion outline, so
    results from before outlines were stored get one; the model gives the same answer again.
    Returns the count."""
    from diagnosis.selectors.outlines import image_ids_without_outline

    image_ids = list(image_ids_without_outline(model_version=model_version, organisation=organisation))
    if not dry_run and image_ids:
        classification_enqueue(image_ids=image_ids, force=True)
    return len(image_ids)


@transaction.atomic
def classification_request(*, user: AbstractBaseUser, image: LesionImage) -> None:
    """Queue a new classification of an image (e.g. after a failure or a model upgrade)."""
    require_write(user=user, organisation_id=image.lesion.patient.organisation_id)
    classification_enqueue_on_commit(image_ids=[image.pk], force=True)


@transaction.atomic
def classification_fail_unqueued(*, image_ids: Sequence[int], message: str) -> None:
    """Images whose task could not even be sent: say so on each (model version unknown)."""
    _classification_store(
        [
            _Outcome(
                image_id,
                Classification.UNKNOWN_MODEL_VERSION,
                {"status": ClassificationStatus.FAILED, "error_message": message},
            )
            for image_id in image_ids
        ]
    )


@transaction.atomic
def classification_fail_delivery(*, image_ids: Sequence[int], task_id: str, message: str) -> int:
    """A task gave up (retries exhausted, unexpected error): its claimed rows become failed."""
    return Classification.objects.filter(
        image_id__in=list(image_ids), task_id=task_id, status=ClassificationStatus.RUNNING
    ).update(status=ClassificationStatus.FAILED, error_message=message, finished_at=timezone.now())


# --- Claim -------------------------------------------------------------------------------------


@dataclass
class Claim:
    """One image of a delivery: its (image, model version) row, and whether to classify it now."""

    image: LesionImage
    classification: Classification
    run_it: bool
    started_at: dt.datetime


@transaction.atomic
def classification_claim(*, image_ids: Sequence[int], model_version: str, request_id: str, force: bool) -> list[Claim]:
    """Take the (image, model version) rows for this delivery, in the order of `image_ids`
    (images deleted meanwhile are left out). One transaction and a handful of queries: rows are
    created, then locked in id order (two workers never deadlock), then decided one by one."""
    images = LesionImage.objects.select_related("lesion__patient").in_bulk(sorted({int(i) for i in image_ids}))
    if not images:
        return []
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
    claims: dict[int, Claim] = {}
    changed: list[Classification] = []
    for row in rows:
        skipped = row.status == ClassificationStatus.SUCCEEDED and not force
        run_it = _claim_decide(row, request_id=request_id, force=force, now=now)
        claims[row.image_id] = Claim(image=images[row.image_id], classification=row, run_it=run_it, started_at=now)
        if not skipped:
            row.updated_at = now
            changed.append(row)
    _claims_save(changed)
    return [claims[image_id] for image_id in dict.fromkeys(int(i) for i in image_ids) if image_id in claims]


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


def _claims_save(changed: Sequence[Classification]) -> None:
    """Rows getting the same values share one plain UPDATE (usually one in all): Django's
    bulk_update (CASE WHEN) costs far more."""
    claim_fields = ["status", "task_id", "attempts", "started_at", "finished_at", "error_message", "updated_at"]
    groups: dict[str, tuple[tuple, list[int]]] = {}
    for row in changed:
        fields = claim_fields + (list(_FAILURE_CLEARS) if row.status == ClassificationStatus.FAILED else [])
        values = tuple((field, getattr(row, field)) for field in fields)
        groups.setdefault(repr(values), (values, []))[1].append(row.pk)
    for values, pks in groups.values():
        Classification.objects.filter(pk__in=pks).update(**dict(values))


# --- Run -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    """What to store for one image: the row's key and the fields to write."""

    image_id: int
    model_version: str
    values: dict[str, Any]


def classification_run(*, image_ids: Sequence[int], force: bool = False, request_id: str = "") -> list[Classification]:
    """Classify stored images with the loaded model (one micro-batch) and store each outcome.

    Never raises for a model or image problem: each failure is stored with a message a clinician
    can read. Database errors propagate (the task retries them). Images deleted meanwhile are
    skipped; an image already classified by this model version is not classified again unless
    `force`. Returns the classifications of the images that still exist, in the order of
    `image_ids`. Not atomic as a whole: inference runs outside any transaction; only the claims
    and the writes are.
    """
    request_id = request_id or uuid.uuid4().hex
    ids = list(dict.fromkeys(int(i) for i in image_ids))
    started_at = timezone.now()
    try:
        model_version = inference.loaded_model_version()
    except Exception as exc:  # noqa: BLE001 - logged by _model_unavailable; each image says why
        message = _model_unavailable(exc)
        outcomes = [_failure(image_id, Classification.UNKNOWN_MODEL_VERSION, message, started_at) for image_id in ids]
        return _stored(ids, {}, _store_and_audit(outcomes, request_id=request_id))
    claims = classification_claim(image_ids=ids, model_version=model_version, request_id=request_id, force=force)
    outcomes = _classify([claim for claim in claims if claim.run_it], model_version=model_version)
    shown = {claim.image.pk: claim.classification for claim in claims}
    return _stored(ids, shown, _store_and_audit(outcomes, request_id=request_id))


def _model_unavailable(exc: Exception) -> str:
    if isinstance(exc, inference.MLError):
        logger.error("model unavailable: %s", exc)
        return f"The model could not be loaded: {exc}"
    logger.exception("unexpected error loading the model")
    return f"The model could not be loaded ({type(exc).__name__}); see the server log."


def _classify(claims: Sequence[Claim], *, model_version: str) -> list[_Outcome]:
    """Classify the claimed images together; one outcome per claim. Each stored file is read
    only when inference.classify_many comes to it, so a micro-batch holds one file at a time."""
    if not claims:
        return []
    predictions = _predict(
        [partial(_stored_bytes, claim.image) for claim in claims], image_ids=[c.image.pk for c in claims],
        contexts=[_clinical_context(claim.image) for claim in claims],
    )
    return [_outcome(claim, prediction, model_version=model_version) for claim, prediction in zip(claims, predictions)]


def _clinical_context(image: LesionImage):
    """What the model may weigh beside the image (inference.clinical_context); unknown stays unknown."""
    return inference.clinical_context(**image_clinical_record(image=image))


def _stored_bytes(image: LesionImage) -> bytes:
    with image.file.open("rb") as fh:
        return fh.read()


def _predict(
    images: list[inference.ImageSource], *, image_ids: list[int], contexts: list | None = None
) -> list[inference.PortalPrediction | Exception]:
    """The model's answer for each image, or the error that stands in for it."""
    try:
        return list(inference.classify_many(images, contexts))
    except inference.MLError as exc:
        logger.error("images %s: classification failed: %s", image_ids, exc)
        return [exc] * len(images)
    except Exception as exc:
        logger.exception("images %s: unexpected classification error", image_ids)
        return [exc] * len(images)


def _outcome(claim: Claim, prediction: inference.PortalPrediction | Exception, *, model_version: str) -> _Outcome:
    image_id = claim.image.pk
    if isinstance(prediction, OSError):
        logger.error("image %s: stored file unreadable: %s", image_id, prediction)
        return _failure(
            image_id, model_version, "The stored image file could not be read; upload it again.", claim.started_at
        )
    if isinstance(prediction, inference.InvalidImageError):
        return _failure(image_id, model_version, f"The image could not be analysed: {prediction}.", claim.started_at)
    if isinstance(prediction, inference.MLError):
        return _failure(image_id, model_version, f"Classification failed: {prediction}", claim.started_at)
    if isinstance(prediction, Exception):
        message = f"Classification failed unexpectedly ({type(prediction).__name__}); see the server log."
        return _failure(image_id, model_version, message, claim.started_at)
    return _Outcome(
        image_id,
        prediction.model_version,
        {
            "status": ClassificationStatus.SUCCEEDED,
            "model_variant": prediction.variant,
            "probabilities": prediction.probabilities,
            "top_class": prediction.top_class,
            "malignancy_score": prediction.malignancy_score,
            "malignant": prediction.malignant,
            "threshold": prediction.threshold,
            "warnings": list(prediction.warnings),
            "screening": prediction.screening,
            "activation_map": prediction.activation_map,
            "field_of_view": prediction.field_of_view,
            "context": prediction.context,
            "segmentation": _segmentation(claim.image),
            "error_message": "",
            "started_at": claim.started_at,
            "finished_at": timezone.now(),
            "inference_ms": prediction.inference_ms,
        },
    )


def _segmentation(image: LesionImage) -> dict | None:
    """The lesion's outline and descriptors (inference.segment_image), computed after the
    classifier's run from the stored file. A segmentation problem never fails the classification:
    it is logged and stored as None (the result page then shows no outline)."""
    try:
        return inference.segment_image(_stored_bytes(image), pixels_per_mm=image.pixels_per_mm)
    except Exception:  # any segmenter error: the classification stands without an outline
        logger.exception("image %s: segmentation failed; the classification is stored without it", image.pk)
        return None


def _failure(image_id: int, model_version: str, message: str, started_at: dt.datetime) -> _Outcome:
    return _Outcome(
        image_id,
        model_version,
        {
            "status": ClassificationStatus.FAILED,
            "error_message": message,
            "started_at": started_at,
            "finished_at": timezone.now(),
            "inference_ms": None,
        },
    )


def _store_and_audit(outcomes: Sequence[_Outcome], *, request_id: str) -> list[Classification]:
    with transaction.atomic():  # the results and their audit events: one commit
        written = _classification_store(outcomes)
        audit.audit_classifications_record(classifications=written, request_id=request_id)
    return written


def _stored(
    ids: Sequence[int], shown: dict[int, Classification], written: Sequence[Classification]
) -> list[Classification]:
    """The rows to return, in the order asked for: each image's written row, else its claimed one."""
    rows = {**shown, **{row.image_id: row for row in written}}
    for image_id in ids:
        if image_id not in rows:
            logger.info("image %s was deleted before it could be classified", image_id)
    return [rows[image_id] for image_id in ids if image_id in rows]


# --- Store ---------------------------------------------------------------------------------------


def _classification_store(outcomes: Sequence[_Outcome]) -> list[Classification]:
    """Write outcomes in a handful of queries: one row per (image, model version), failures keep
    no stale numbers, a success removes the image's failures that never reached a model. Images
    deleted meanwhile are skipped. The caller holds the transaction."""
    if not outcomes:
        return []
    alive = set(LesionImage.objects.filter(pk__in={o.image_id for o in outcomes}).values_list("pk", flat=True))
    outcomes = [o for o in outcomes if o.image_id in alive]
    existing = {
        (row.image_id, row.model_version): row
        for row in Classification.objects.select_for_update()
        .filter(image_id__in=alive, model_version__in={o.model_version for o in outcomes})
        .order_by("image_id", "model_version")
    }
    now = timezone.now()
    result: list[Classification] = []
    updates: dict[tuple[str, ...], list[Classification]] = {}  # rows by the fields they change
    for outcome in outcomes:
        values = outcome.values
        if values.get("status") == ClassificationStatus.FAILED:
            values = {**_FAILURE_CLEARS, **values}
        row = existing.get((outcome.image_id, outcome.model_version))
        if row is None:  # not claimed: a plain write, racing claims are handled by the constraint
            row, _ = Classification.objects.update_or_create(
                image_id=outcome.image_id, model_version=outcome.model_version, defaults=values
            )
        else:
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
