"""Batches: several files or a ZIP (with or without a CSV) become one Batch with progress;
invalid members are reported per file while the valid ones go on."""

from __future__ import annotations

import datetime as dt
import io
import time
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from diagnosis import selectors, services, tasks
from diagnosis.api import waiting
from diagnosis.models import Batch, Classification, ClassificationStatus, Lesion, LesionImage
from tests.portal.helpers import GREEN, RED, STAND_IN_VERSION, image_bytes

pytestmark = pytest.mark.django_db

API = "/api/v1"


def _png(name: str, colour=RED) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, image_bytes(colour), content_type="image/png")


def _zip(members: dict[str, bytes], name: str = "session.zip") -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="application/zip")


def test_it_stores_the_valid_files_of_a_multi_file_batch_and_reports_each_bad_one(
    api_for, colleague, lesion, run_on_commit
):
    with run_on_commit():
        response = api_for(colleague).post(
            f"{API}/batches/",
            {
                "lesion": lesion.pk,
                "images": [_png("a.png"), _png("b.png", GREEN), SimpleUploadedFile("notes.txt", b"just text")],
                "captured_at": "2024-05-01",
            },
            format="multipart",
        )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["kind"] == "files" and body["received"] == 3
    assert body["rejected"] == [{"name": "notes.txt", "error": body["rejected"][0]["error"]}]
    assert "not a recognised image" in body["rejected"][0]["error"]
    assert {image["name"] for image in body["images"]} == {"a.png", "b.png"}
    assert LesionImage.objects.filter(batch_id=body["id"], captured_at=dt.date(2024, 5, 1)).count() == 2
    detail = api_for(colleague).get(f"{API}/batches/{body['id']}/").json()
    assert detail["status"] == "finished"
    assert detail["progress"] == {
        "received": 3,
        "total": 2,
        "queued": 0,
        "running": 0,
        "done": 2,
        "failed": 0,
        "rejected": 1,
        "percent": 100,
    }
    assert {i["status"] for i in detail["images"]} == {"done"} and "classification" not in detail["images"][0]
    assert detail["images_url"] == f"{API}/images/?batch={body['id']}"
    results = api_for(colleague).get(detail["images_url"]).json()
    assert results["count"] == 2
    assert {i["classification"]["top_class"] for i in results["results"]} == {"mel", "nv"}


def test_it_answers_a_progress_poll_with_the_same_few_queries_whatever_the_batch_size(
    api_for, colleague, lesion, run_on_commit, django_assert_max_num_queries
):
    api = api_for(colleague)
    api.get(f"{API}/me/")  # the token and session lookups of a first request are not the point
    sizes = {}
    for n in (2, 12):
        with run_on_commit():
            batch = services.batches.batch_create(
                user=colleague,
                lesion=lesion,
                files=[services.uploads.ImageUpload(f"{i}.png", image_bytes()) for i in range(n)],
            )
        with django_assert_max_num_queries(12) as captured:
            body = api.get(f"{API}/batches/{batch.pk}/").json()
        assert len(body["images"]) == n and body["progress"]["done"] == n
        sizes[n] = len(captured.captured_queries)
    assert sizes[12] == sizes[2], sizes  # one query for every image's status, not one per image


def test_it_answers_a_waiting_client_when_the_worker_has_finished_the_batch(
    api_for, colleague, lesion, run_on_commit, monkeypatch
):
    monkeypatch.setattr(tasks.classify_images, "delay", lambda *args, **kwargs: None)  # no worker yet
    with run_on_commit():
        batch = services.batches.batch_create(
            user=colleague,
            lesion=lesion,
            files=[services.uploads.ImageUpload(f"{i}.png", image_bytes()) for i in range(3)],
        )
    ids = list(batch.images.values_list("id", flat=True))
    assert not selectors.batch_settled(batch_id=batch.pk)
    pauses = []

    def worker_runs_meanwhile(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 2:
            services.classification.classification_run(image_ids=ids)

    monkeypatch.setattr(waiting.time, "sleep", worker_runs_meanwhile)
    body = api_for(colleague).get(f"{API}/batches/{batch.pk}/", {"wait": 20}).json()
    assert body["status"] == "finished" and body["progress"]["done"] == 3 and len(pauses) == 2


def test_it_answers_with_the_progress_so_far_when_the_wait_runs_out(
    api_for, colleague, lesion, run_on_commit, monkeypatch
):
    monkeypatch.setattr(tasks.classify_images, "delay", lambda *args, **kwargs: None)
    with run_on_commit():
        batch = services.batches.batch_create(
            user=colleague, lesion=lesion, files=[services.uploads.ImageUpload("a.png", image_bytes())]
        )
    Classification.objects.create(image=batch.images.get(), model_version="v", status=ClassificationStatus.RUNNING)
    api = api_for(colleague)
    started = time.monotonic()
    body = api.get(f"{API}/batches/{batch.pk}/", {"wait": 0.1}).json()
    assert time.monotonic() - started >= 0.1
    assert body["status"] == "running" and body["progress"]["running"] == 1
    response = api.get(f"{API}/batches/{batch.pk}/", {"wait": 31})
    assert response.status_code == 400 and "wait" in response.json()["error"]["fields"]


def test_it_counts_queued_running_done_and_failed_images(owner, lesion, run_on_commit, monkeypatch):
    monkeypatch.setattr(tasks.classify_images, "delay", lambda *args, **kwargs: None)  # no worker yet
    with run_on_commit():
        batch = services.batches.batch_create(
            user=owner, lesion=lesion, files=[services.uploads.ImageUpload(f"{i}.png", image_bytes()) for i in range(4)]
        )
    images = list(LesionImage.objects.filter(batch=batch).order_by("id"))
    progress = selectors.batch_progress(batch=batch)
    assert (progress.total, progress.queued, progress.finished, progress.status) == (4, 4, False, "running")
    Classification.objects.create(image=images[0], model_version="v", status=ClassificationStatus.RUNNING)
    Classification.objects.create(image=images[1], model_version="v", status=ClassificationStatus.SUCCEEDED)
    Classification.objects.create(image=images[2], model_version="v", status=ClassificationStatus.FAILED)
    progress = selectors.batch_progress(batch=batch)
    assert (progress.queued, progress.running, progress.done, progress.failed) == (1, 1, 1, 1)
    assert progress.percent == 50


def test_it_takes_a_zip_without_csv_into_the_chosen_lesion(api_for, colleague, lesion, run_on_commit):
    archive = _zip(
        {
            "visit/a.jpg": image_bytes(RED, fmt="jpg"),
            "b.png": image_bytes(GREEN),
            "__MACOSX/._b.png": b"x",
            "c.png": b"\x89PNG broken",
        }
    )
    with run_on_commit():
        response = api_for(colleague).post(
            f"{API}/batches/", {"lesion": lesion.pk, "archive": archive}, format="multipart"
        )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["kind"] == "zip" and body["name"] == "session.zip" and body["received"] == 3
    assert [r["name"] for r in body["rejected"]] == ["c.png"]
    assert sorted(i["name"] for i in body["images"]) == ["b.png", "visit/a.jpg"]
    detail = api_for(colleague).get(f"{API}/batches/{body['id']}/").json()
    assert detail["progress"]["done"] == 2 and lesion.images.count() == 2


def test_it_follows_the_csv_in_a_zip(api_for, colleague, org, patient, lesion, run_on_commit):
    csv_text = (
        "file,patient,lesion,body_site,captured_at\n"
        "a.png,MRN-001,Upper back,back,02/01/2024\n"
        'b.png,MRN-001,"Left calf",lower extremity,2024-02-03\n'
        "c.png,MRN-404,Somewhere,back,2024-02-03\n"
        "d.png,MRN-001,Left calf,elbow,2024-02-03\n"
        "missing.png,MRN-001,Left calf,,\n"
    )
    archive = _zip(
        {
            "map.csv": csv_text.encode(),
            "a.png": image_bytes(RED),
            "b.png": image_bytes(GREEN),
            "c.png": image_bytes(RED),
            "d.png": image_bytes(RED),
            "e.png": image_bytes(RED),  # not in the CSV, and no lesion chosen
        }
    )
    with run_on_commit():
        response = api_for(colleague).post(
            f"{API}/batches/", {"organisation": org.pk, "archive": archive}, format="multipart"
        )
    assert response.status_code == 201, response.content
    body = response.json()
    errors = {r["name"]: r["error"] for r in body["rejected"]}
    assert set(errors) == {"a.png", "c.png", "d.png", "e.png", "missing.png"}
    assert "capture date '02/01/2024' is not a date" in errors["a.png"]
    assert "no patient with external id 'MRN-404'" in errors["c.png"]
    assert "unknown body site 'elbow'" in errors["d.png"]
    assert "not listed in the CSV" in errors["e.png"]
    assert "not in the ZIP" in errors["missing.png"]
    calf = Lesion.objects.get(patient=patient, label="Left calf")
    assert calf.body_site == "lower extremity"
    (image,) = calf.images.all()
    assert image.captured_at == dt.date(2024, 2, 3) and image.source_name == "b.png"
    assert image.classifications.get().top_class == "nv"


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"archive": SimpleUploadedFile("x.zip", b"not a zip")}, "archive", "not a readable ZIP"),
        ({}, "images", "at least one image"),
        ({"images": [SimpleUploadedFile("x.txt", b"text")]}, "images", "x.txt"),
    ],
)
def test_it_refuses_a_batch_with_nothing_usable(api_for, colleague, lesion, payload, field, message):
    response = api_for(colleague).post(f"{API}/batches/", {"lesion": lesion.pk, **payload}, format="multipart")
    assert response.status_code == 400, response.content
    assert message in str(response.json()["error"]["fields"][field])
    assert not Batch.objects.exists() and not LesionImage.objects.exists()


def test_it_needs_a_lesion_or_a_csv(api_for, colleague, org):
    archive = _zip({"a.png": image_bytes()})
    response = api_for(colleague).post(
        f"{API}/batches/", {"organisation": org.pk, "archive": archive}, format="multipart"
    )
    assert response.status_code == 400 and "lesion" in response.json()["error"]["fields"]


def test_it_keeps_batches_inside_the_organisation(api_for, client_for, owner, reader, outsider, lesion, run_on_commit):
    with run_on_commit():
        batch = services.batches.batch_create(
            user=owner, lesion=lesion, files=[services.uploads.ImageUpload("a.png", image_bytes())]
        )
    assert api_for(outsider).get(f"{API}/batches/{batch.pk}/").status_code == 404
    assert api_for(outsider).get(f"{API}/batches/").json()["count"] == 0
    response = api_for(outsider).post(
        f"{API}/batches/", {"lesion": lesion.pk, "images": [_png("a.png")]}, format="multipart"
    )
    assert response.status_code == 400 and response.json()["error"]["fields"]["lesion"] == ["No such lesion."]
    response = api_for(reader).post(
        f"{API}/batches/", {"lesion": lesion.pk, "images": [_png("a.png")]}, format="multipart"
    )
    assert response.status_code == 403
    assert client_for(outsider).get(reverse("batch-detail", args=[batch.pk])).status_code == 404


def test_it_shows_a_self_updating_progress_page(client_for, colleague, lesion, run_on_commit):
    client = client_for(colleague)
    assert client.get(reverse("batch-create") + f"?lesion={lesion.pk}").status_code == 200
    with run_on_commit():
        response = client.post(
            reverse("batch-create"),
            {
                "lesion": lesion.pk,
                "archive": _zip({"a.png": image_bytes(), "bad.png": b"nope"}),
                "captured_at": "2024-05-01",
            },
        )
    batch = Batch.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("batch-detail", args=[batch.pk])
    html = client.get(response["Location"]).content.decode()
    assert 'id="batch-bar"' in html and "js/batch.js" in html
    assert f'data-api="/api/v1/batches/{batch.pk}/"' in html
    assert "bad.png" in html and "Refused files (1)" in html
    assert 'data-count="done">1<' in html
    assert f"#{batch.pk} session.zip" in client.get(reverse("batch-list")).content.decode()


def test_it_explains_a_refused_batch_on_the_page(client_for, colleague, lesion):
    response = client_for(colleague).post(
        reverse("batch-create"), {"lesion": lesion.pk, "archive": SimpleUploadedFile("x.zip", b"nope")}
    )
    assert response.status_code == 400 and "not a readable ZIP archive" in response.content.decode()


def test_it_classifies_a_micro_batch_in_one_go(owner, lesion, run_on_commit, monkeypatch):
    from diagnosis import inference

    calls = []
    real = inference.classify_many
    monkeypatch.setattr(inference, "classify_many",
                        lambda images, contexts=None: calls.append(len(images)) or real(images, contexts))
    with run_on_commit():
        services.batches.batch_create(
            user=owner,
            lesion=lesion,
            files=[services.uploads.ImageUpload(f"{i}.png", image_bytes(RED if i % 2 else GREEN)) for i in range(20)],
        )
    assert calls == [16, 4]  # SKINPORTAL_MICRO_BATCH = 16
    assert Classification.objects.filter(model_version=STAND_IN_VERSION, status="succeeded").count() == 20


def test_it_refuses_an_oversized_member_of_a_zip_and_keeps_the_rest(owner, lesion, settings, run_on_commit):
    settings.SKINPORTAL_MAX_UPLOAD_BYTES = 60_000
    big = image_bytes(RED, size=(400, 400))
    assert len(big) > 60_000
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.png", big)
        zf.writestr("small.png", image_bytes(GREEN))
    buffer.seek(0)
    with run_on_commit():
        batch = services.batches.batch_create(user=owner, lesion=lesion, archive=buffer, archive_name="s.zip")
    assert batch.rejected == [{"name": "big.png", "error": "the file is larger than the 0.1 MiB limit"}]
    assert [image.source_name for image in batch.images.all()] == ["small.png"]
    assert selectors.batch_progress(batch=batch).finished


def test_it_creates_no_lesion_for_a_refused_file_and_reports_it_once(owner, org, patient, settings, run_on_commit):
    settings.SKINPORTAL_MAX_UPLOAD_BYTES = 60_000
    csv_text = (
        "file,patient,lesion\ngood.png,MRN-001,Left calf\ncut.png,MRN-001,New spot\nbig.png,MRN-001,Another spot\n"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("map.csv", csv_text)
        zf.writestr("good.png", image_bytes(GREEN))
        zf.writestr("cut.png", image_bytes(RED)[:300])
        zf.writestr("big.png", image_bytes(RED, size=(400, 400)))
    buffer.seek(0)
    with run_on_commit():
        batch = services.batches.batch_create(user=owner, organisation=org, archive=buffer, archive_name="s.zip")
    assert [r["name"] for r in batch.rejected] == ["cut.png", "big.png"]  # not also "listed but not in the ZIP"
    assert set(Lesion.objects.filter(patient=patient).values_list("label", flat=True)) == {"Left calf"}
