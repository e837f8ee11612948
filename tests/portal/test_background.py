"""Background work without a real worker: bulk import, reclassify after a model upgrade,
delivery bookkeeping (one result per image and version, capped redeliveries), health probes
and worker sizing."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction
from django.urls import reverse

from diagnosis import services
from diagnosis.models import (
    AuditEvent,
    Batch,
    Classification,
    ClassificationStatus,
    Lesion,
    LesionImage,
    Organisation,
    Patient,
)
from ml.inference import reset_classifier
from skinportal.celery import ort_threads_for
from tests.portal.helpers import GREEN, RED, REPO_ROOT, STAND_IN_VERSION, build_stand_in_bundle, image_bytes

pytestmark = pytest.mark.django_db


def _run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


# --- import_images ------------------------------------------------------------------------------


@pytest.fixture
def ham_folder(tmp_path):
    """A HAM10000-style folder: metadata CSV, images in two parts, one bad row, one missing file."""
    (tmp_path / "part_1").mkdir()
    (tmp_path / "part_2").mkdir()
    (tmp_path / "part_1" / "ISIC_0001.jpg").write_bytes(image_bytes(RED, fmt="jpg"))
    (tmp_path / "part_1" / "ISIC_0002.jpg").write_bytes(image_bytes(GREEN, fmt="jpg"))
    (tmp_path / "part_2" / "ISIC_0003.png").write_bytes(image_bytes((200, 40, 60)))
    (tmp_path / "part_2" / "ISIC_0004.jpg").write_bytes(b"not an image at all")
    (tmp_path / "meta.csv").write_text(
        "lesion_id,image_id,dx,dx_type,age,sex,localization,patient_id\n"
        "HAM_1,ISIC_0001,mel,histo,60.0,male,back,P-1\n"
        "HAM_1,ISIC_0002,mel,histo,60.0,male,back,P-1\n"
        "HAM_2,ISIC_0003,nv,follow_up,45.0,female,lower extremity,P-2\n"
        "HAM_3,ISIC_0004,nv,consensus,30.0,female,face,P-3\n"
        "HAM_4,ISIC_0404,bkl,histo,50.0,male,trunk,P-4\n"
    )
    return tmp_path


def test_it_imports_a_ham10000_style_archive_and_never_twice(ham_folder):
    args = (
        "import_images",
        "--org",
        "Archive Clinic",
        "--metadata",
        str(ham_folder / "meta.csv"),
        "--images",
        str(ham_folder / "part_1"),
        str(ham_folder / "part_2"),
    )
    out, err = _run(*args)
    assert "Imported 3 image(s), skipped 0 already imported, 2 bad row(s)" in out
    assert "] 5/5 100%" in out  # the progress bar
    assert "line 5 (ISIC_0004)" in err and "line 6 (ISIC_0404): no image file" in err
    organisation = Organisation.objects.get(name="Archive Clinic")
    assert sorted(Patient.objects.filter(organisation=organisation).values_list("external_id", flat=True)) == [
        "P-1",
        "P-2",
    ]
    p1 = Patient.objects.get(external_id="P-1")
    assert p1.sex == "male" and [lesion.label for lesion in p1.lesions.all()] == ["HAM_1"]
    assert p1.lesions.get().images.count() == 2 and p1.lesions.get().body_site == "back"
    assert Classification.objects.filter(status="succeeded", model_version=STAND_IN_VERSION).count() == 3
    batch = Batch.objects.get(kind="import")
    assert batch.received == 5 and len(batch.rejected) == 2  # 3 imported + 2 refused
    imported = AuditEvent.objects.filter(surface="command", route="import_images")
    assert sorted(imported.values_list("object_id", flat=True)) == sorted(
        LesionImage.objects.values_list("pk", flat=True)
    )
    assert set(imported.values_list("organisation_id", flat=True)) == {organisation.pk}

    out, _ = _run(*args)  # again: nothing new
    assert "Imported 0 image(s), skipped 3 already imported, 2 bad row(s)" in out
    assert LesionImage.objects.count() == 3 and Patient.objects.count() == 2
    assert Classification.objects.count() == 3


def test_it_uses_the_lesion_as_patient_without_a_patient_column(tmp_path):
    (tmp_path / "ISIC_1.jpg").write_bytes(image_bytes(fmt="jpg"))
    (tmp_path / "meta.csv").write_text("lesion_id,image_id,localization\nHAM_9,ISIC_1,scalp\n")
    _run(
        "import_images",
        "--org",
        "X",
        "--metadata",
        str(tmp_path / "meta.csv"),
        "--images",
        str(tmp_path),
        "--no-classify",
    )
    image = LesionImage.objects.select_related("lesion__patient").get()
    assert (image.lesion.patient.external_id, image.lesion.label, image.lesion.body_site) == ("HAM_9", "HAM_9", "scalp")
    assert not Classification.objects.exists()


def test_it_reports_a_row_holding_a_control_character_as_bad_and_imports_the_rest(tmp_path):
    # A NUL was a DataError on PostgreSQL that ended the whole command.
    (tmp_path / "ISIC_1.jpg").write_bytes(image_bytes(fmt="jpg"))
    (tmp_path / "ISIC_2.jpg").write_bytes(image_bytes(GREEN, fmt="jpg"))
    (tmp_path / "meta.csv").write_text("lesion_id,image_id,localization\nHAM\x00_1,ISIC_1,scalp\nHAM_2,ISIC_2,back\n")
    out, err = _run("import_images", "--org", "X", "--metadata", str(tmp_path / "meta.csv"), "--images", str(tmp_path),
                    "--no-classify")
    assert "Imported 1 image(s)" in out and "control character" in err
    assert list(Lesion.objects.values_list("label", flat=True)) == ["HAM_2"]


def test_it_refuses_a_csv_without_the_ham10000_columns(tmp_path):
    (tmp_path / "meta.csv").write_text("file,patient\na.png,1\n")
    with pytest.raises(CommandError, match="no lesion_id or image_id column"):
        _run("import_images", "--org", "X", "--metadata", str(tmp_path / "meta.csv"), "--images", str(tmp_path))


# --- reclassify ----------------------------------------------------------------------------------


def test_it_reclassifies_exactly_the_images_missing_a_result_by_the_new_version(
    upload, owner, lesion, tmp_path, settings
):
    images = [upload(image_bytes(RED, seed=i)) for i in range(3)]  # three files: a repeat is refused
    failed = upload(image_bytes(GREEN))
    Classification.objects.filter(image=failed).update(status=ClassificationStatus.FAILED, error_message="x")

    new_model = build_stand_in_bundle(tmp_path / "v2", version="stand-in-test-2")
    settings.SKINPORTAL_MODEL_DIR = str(new_model)
    reset_classifier()
    try:
        Classification.objects.create(  # one image already has the new version's result
            image=images[0], model_version="stand-in-test-2", status=ClassificationStatus.SUCCEEDED
        )
        out, _ = _run("reclassify", "--dry-run")
        assert "Would queue 3 image(s) without a result by 'stand-in-test-2'" in out
        assert Classification.objects.filter(model_version="stand-in-test-2").count() == 1
        out, _ = _run("reclassify")
        assert "Queued 3 image(s)" in out
        new = Classification.objects.filter(model_version="stand-in-test-2")
        assert new.count() == 4 and set(new.values_list("status", flat=True)) == {"succeeded"}
        assert Classification.objects.filter(model_version=STAND_IN_VERSION).count() == 4  # the history stays
        assert "Queued 0 image(s)" in _run("reclassify")[0]
        # the old version's failed image is queued again when asked for that version
        out, _ = _run("reclassify", "--model-version", STAND_IN_VERSION, "--org", "Northside Dermatology", "--dry-run")
        assert "Would queue 1 image(s) in 'Northside Dermatology'" in out
    finally:
        reset_classifier()


def test_it_shows_the_current_result_and_the_earlier_versions_on_demand(
    client_for, colleague, upload, tmp_path, settings
):
    image = upload(image_bytes(RED))
    settings.SKINPORTAL_MODEL_DIR = str(build_stand_in_bundle(tmp_path / "v2", version="stand-in-test-2"))
    reset_classifier()
    try:
        services.classification.classification_run(image_ids=[image.pk])
    finally:
        reset_classifier()
    html = client_for(colleague).get(reverse("image-detail", args=[image.pk])).content.decode()
    assert 'id="model-version">stand-in-test-2<' in html
    assert "Earlier results (1)" in html and STAND_IN_VERSION in html


# --- Delivery bookkeeping ------------------------------------------------------------------------


def test_the_database_refuses_a_second_result_for_the_same_image_and_version(upload):
    image = upload(image_bytes())
    with pytest.raises(IntegrityError), transaction.atomic():
        Classification.objects.create(image=image, model_version=STAND_IN_VERSION)


def test_it_skips_an_image_already_classified_by_this_version(upload, monkeypatch):
    from diagnosis import inference

    image = upload(image_bytes())
    monkeypatch.setattr(inference, "classify_many", lambda images, contexts=None: pytest.fail("classified twice"))
    (row,) = services.classification.classification_run(image_ids=[image.pk], request_id="redelivered")
    assert row.status == "succeeded" and image.classifications.count() == 1


def test_it_gives_up_after_the_maximum_number_of_deliveries(upload, settings, monkeypatch):
    """A request whose worker dies every time (SIGKILL, OOM, hard time limit) ends as failed."""
    settings.SKINPORTAL_MAX_DELIVERIES = 2
    image = upload(image_bytes())
    image.classifications.all().delete()
    # Simulate two deliveries that died mid-way: the claim was taken, the result never stored.
    for _ in range(2):
        (claim,) = services.classification.classification_claim(
            image_ids=[image.pk], model_version=STAND_IN_VERSION, request_id="task-1", force=False
        )
        assert claim.run_it and claim.classification.status == ClassificationStatus.RUNNING
    (row,) = services.classification.classification_run(image_ids=[image.pk], request_id="task-1")
    assert row.status == "failed" and row.attempts == 3 and "Gave up after 2 attempts" in row.error_message
    # A new request (Classify again) starts counting afresh and succeeds.
    (row,) = services.classification.classification_run(image_ids=[image.pk], request_id="task-2")
    assert row.status == "succeeded" and row.attempts == 1 and image.classifications.count() == 1


def test_it_marks_the_claimed_images_failed_when_the_task_gives_up(upload):
    from diagnosis.tasks import classify_images

    image = upload(image_bytes())
    Classification.objects.filter(image=image).update(status=ClassificationStatus.RUNNING, task_id="t-9:5")
    classify_images.push_request(id="t-9", retries=5)
    try:
        classify_images.on_failure(ConnectionError("db away"), "t-9", ([image.pk],), {}, None)
    finally:
        classify_images.pop_request()
    row = image.classifications.get()
    assert row.status == "failed" and "after 5 retries (ConnectionError)" in row.error_message


def test_the_tasks_are_configured_to_lose_nothing(settings):
    from diagnosis.tasks import classify_image, classify_images

    for task in (classify_image, classify_images):
        assert task.acks_late and task.reject_on_worker_lost and task.max_retries >= 1 and task.retry_backoff
    assert settings.CELERY_TASK_ACKS_LATE and settings.CELERY_TASK_REJECT_ON_WORKER_LOST
    assert settings.CELERY_WORKER_PREFETCH_MULTIPLIER == 1
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] > settings.CELERY_TASK_TIME_LIMIT
    assert settings.CELERY_TASK_SOFT_TIME_LIMIT < settings.CELERY_TASK_TIME_LIMIT


def test_it_refuses_a_visibility_timeout_shorter_than_the_time_limit():
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    env.update(
        CELERY_TASK_TIME_LIMIT="600", CELERY_VISIBILITY_TIMEOUT="300", DJANGO_SETTINGS_MODULE="skinportal.settings"
    )
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0 and "CELERY_VISIBILITY_TIMEOUT (300 s) must be longer" in result.stderr


@pytest.mark.parametrize(
    ("concurrency", "cores", "requested", "threads", "adjusted"),
    [
        (1, 2, None, 2, False),
        (2, 2, None, 1, False),
        (1, 2, 2, 2, False),
        (2, 2, 2, 1, True),
        (3, 2, None, 1, False),
    ],
)
def test_it_keeps_processes_times_threads_within_the_cores(concurrency, cores, requested, threads, adjusted):
    got, note = ort_threads_for(concurrency=concurrency, cores=cores, requested=requested)
    assert got == threads and bool(note) == adjusted


# --- Health probes -------------------------------------------------------------------------------


def test_it_answers_the_liveness_probe(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.content == b"ok\n"


# The readiness probe (/readyz): tests/portal/test_health.py.


def test_it_shows_the_queue_to_staff_only(client_for, owner, colleague):
    assert client_for(colleague).get(reverse("ops")).status_code == 403
    owner.is_staff = True
    owner.save()
    html = client_for(owner).get(reverse("ops")).content.decode()
    assert 'id="queue-waiting">0<' in html and "Readiness" in html


def test_a_run_in_progress_never_hides_the_result_shown_so_far(api_for, client_for, colleague, upload, lesion):
    image = upload(image_bytes(RED))
    Classification.objects.create(image=image, model_version="v-next", status=ClassificationStatus.RUNNING)
    body = api_for(colleague).get(f"/api/v1/images/{image.pk}/").json()
    assert body["classification"]["model_version"] == STAND_IN_VERSION
    html = client_for(colleague).get(reverse("image-detail", args=[image.pk])).content.decode()
    assert 'data-status="succeeded"' in html and "Earlier results (1)" in html and "Running" in html

    fresh = upload(image_bytes(GREEN))
    fresh.classifications.all().delete()
    Classification.objects.create(image=fresh, model_version=STAND_IN_VERSION, status=ClassificationStatus.RUNNING)
    assert api_for(colleague).get(f"/api/v1/images/{fresh.pk}/").json()["classification"] is None
    html = client_for(colleague).get(reverse("image-detail", args=[fresh.pk])).content.decode()
    assert "Classification pending" in html
