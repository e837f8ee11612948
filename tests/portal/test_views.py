"""HTML pages: happy paths, validation errors, outsider 404, read-only cannot write."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from diagnosis import services
from diagnosis.models import ClinicianReview, Lesion, LesionImage, Patient
from tests.portal.helpers import GREEN, PASSWORD, RED, STAND_IN_VERSION, image_bytes

pytestmark = pytest.mark.django_db


def _png(name: str = "photo.png", colour=RED) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, image_bytes(colour), content_type="image/png")


# --- Accounts ------------------------------------------------------------------------------


def test_it_sends_anonymous_visitors_to_the_login_page(client, patient):
    for url in [reverse("dashboard"), reverse("patient-list"), reverse("patient-detail", args=[patient.pk])]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_it_logs_in_and_out(client, owner):
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == reverse("dashboard")
    assert client.get(reverse("dashboard")).status_code == 200
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("dashboard")).status_code == 302


def test_it_shows_an_error_for_a_wrong_password(client, owner):
    response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert "enter a correct username and password" in response.content.decode()


def test_it_changes_a_password(client_for, owner):
    client = client_for(owner)
    assert client.get(reverse("password_change")).status_code == 200
    response = client.post(
        reverse("password_change"),
        {
            "old_password": PASSWORD,
            "new_password1": "a-new-long-passphrase-1",
            "new_password2": "a-new-long-passphrase-1",
        },
    )
    assert response.status_code == 302
    owner.refresh_from_db()
    assert owner.check_password("a-new-long-passphrase-1")


def test_it_e_mails_a_password_reset_link(client, owner):
    response = client.post(reverse("password_reset"), {"email": "alice@example.org"})
    assert response.status_code == 302
    assert len(mail.outbox) == 1 and "/accounts/reset/" in mail.outbox[0].body
    assert mail.outbox[0].subject == "SkinPortal password reset"


# --- Dashboard and patients ----------------------------------------------------------------


def test_it_shows_recent_and_flagged_results_on_the_dashboard(client_for, colleague, upload, lesion):
    upload(image_bytes(RED))
    html = client_for(colleague).get(reverse("dashboard")).content.decode()
    assert "Melanoma (mel)" in html
    assert "Upper back, left" in html and "Lesions flagged above threshold" in html
    assert "Not a certified medical device" in html


def test_it_keeps_other_organisations_off_the_dashboard(client_for, outsider, upload):
    upload(image_bytes(RED))
    html = client_for(outsider).get(reverse("dashboard")).content.decode()
    assert "Ada Lovelace" not in html and "Upper back" not in html


def test_it_lists_searches_and_paginates_patients(client_for, owner, org, patient, outsider, other_org):
    services.patients.patient_create(user=outsider, organisation=other_org, external_id="S-1", name="Hidden Person")
    for i in range(25):
        services.patients.patient_create(
            user=owner, organisation=org, external_id=f"B-{i:02}", name=f"Bulk Patient {i:02}"
        )
    client = client_for(owner)
    first = client.get(reverse("patient-list")).content.decode()
    assert "Ada Lovelace" in first and "Hidden Person" not in first and "Page 1 of 2" in first
    second = client.get(reverse("patient-list"), {"page": 2}).content.decode()
    assert "Bulk Patient 24" in second
    found = client.get(reverse("patient-list"), {"q": "lovelace"}).content.decode()
    assert "Ada Lovelace" in found and "Bulk Patient" not in found
    assert client.get(reverse("patient-list"), {"page": "nonsense"}).status_code == 200


def test_it_creates_a_patient(client_for, colleague, org):
    response = client_for(colleague).post(
        reverse("patient-create"),
        {
            "organisation": org.pk,
            "external_id": "MRN-5",
            "name": "Grace Hopper",
            "date_of_birth": "1950-01-02",
            "sex": "female",
        },
    )
    patient = Patient.objects.get(external_id="MRN-5")
    assert response.status_code == 302 and response["Location"] == reverse("patient-detail", args=[patient.pk])
    assert patient.organisation == org and patient.date_of_birth == dt.date(1950, 1, 2)


def test_it_shows_validation_errors_when_creating_a_patient(client_for, owner, org, patient):
    response = client_for(owner).post(
        reverse("patient-create"), {"organisation": org.pk, "external_id": "MRN-001", "name": "Dup"}
    )
    assert response.status_code == 400
    assert "already exists in this organisation" in response.content.decode()
    response = client_for(owner).post(
        reverse("patient-create"),
        {"organisation": org.pk, "external_id": "", "name": "", "date_of_birth": "31/31/2020"},
    )
    assert response.status_code == 400 and "This field is required" in response.content.decode()
    assert Patient.objects.count() == 1


def test_it_does_not_let_a_user_create_a_patient_in_another_organisation(client_for, owner, other_org):
    response = client_for(owner).post(
        reverse("patient-create"), {"organisation": other_org.pk, "external_id": "X", "name": "Y"}
    )
    assert response.status_code == 400 and "Select a valid choice" in response.content.decode()
    assert not Patient.objects.exists()


def test_it_refuses_the_patient_form_to_a_read_only_member(client_for, reader, org):
    client = client_for(reader)
    assert client.get(reverse("patient-create")).status_code == 403
    assert (
        client.post(reverse("patient-create"), {"organisation": org.pk, "external_id": "X", "name": "Y"}).status_code
        == 403
    )
    assert not Patient.objects.exists()


def test_it_shows_a_patient_to_colleagues_only(client_for, colleague, outsider, reader, patient, lesion):
    html = client_for(colleague).get(reverse("patient-detail", args=[patient.pk])).content.decode()
    assert "Ada Lovelace" in html and "Upper back, left" in html and "Back" in html
    assert client_for(reader).get(reverse("patient-detail", args=[patient.pk])).status_code == 200
    assert client_for(outsider).get(reverse("patient-detail", args=[patient.pk])).status_code == 404


def test_it_edits_a_patient(client_for, colleague, outsider, reader, patient):
    url = reverse("patient-edit", args=[patient.pk])
    assert client_for(outsider).get(url).status_code == 404
    assert (
        client_for(reader).post(url, {"external_id": "MRN-001", "name": "Changed", "sex": "female"}).status_code == 403
    )
    client = client_for(colleague)
    assert "Ada Lovelace" in client.get(url).content.decode()
    response = client.post(
        url, {"external_id": "MRN-001", "name": "Ada King", "sex": "female", "date_of_birth": "1960-12-10"}
    )
    assert response.status_code == 302
    patient.refresh_from_db()
    assert patient.name == "Ada King"


# --- Lesions -------------------------------------------------------------------------------


def test_it_creates_a_lesion_and_goes_to_the_upload_page(client_for, colleague, patient):
    response = client_for(colleague).post(
        reverse("lesion-create", args=[patient.pk]), {"label": "Left calf", "body_site": "lower extremity"}
    )
    lesion = Lesion.objects.get(label="Left calf")
    assert response["Location"] == reverse("lesion-upload", args=[lesion.pk])


def test_it_rejects_an_unknown_body_site(client_for, colleague, patient):
    response = client_for(colleague).post(
        reverse("lesion-create", args=[patient.pk]), {"label": "x", "body_site": "elbow"}
    )
    assert response.status_code == 400 and "Select a valid choice" in response.content.decode()
    assert not Lesion.objects.exists()


def test_it_hides_lesion_pages_from_outsiders(client_for, outsider, patient, lesion):
    client = client_for(outsider)
    for url in [
        reverse("lesion-create", args=[patient.pk]),
        reverse("lesion-detail", args=[lesion.pk]),
        reverse("lesion-edit", args=[lesion.pk]),
        reverse("lesion-upload", args=[lesion.pk]),
    ]:
        assert client.get(url).status_code == 404, url


def test_it_edits_a_lesion(client_for, colleague, reader, lesion):
    url = reverse("lesion-edit", args=[lesion.pk])
    assert client_for(reader).get(url).status_code == 403
    response = client_for(colleague).post(url, {"label": "Upper back, right", "body_site": "back", "notes": "6 mm"})
    assert response.status_code == 302
    lesion.refresh_from_db()
    assert (lesion.label, lesion.notes) == ("Upper back, right", "6 mm")


def test_it_plots_the_malignancy_score_across_visits(client_for, colleague, upload, lesion):
    upload(image_bytes(GREEN), captured_at=dt.date(2024, 1, 5))
    upload(image_bytes(RED), captured_at=dt.date(2024, 7, 5))
    html = client_for(colleague).get(reverse("lesion-detail", args=[lesion.pk])).content.decode()
    assert "<svg" in html and "<polyline" in html and html.count('<circle class="dot') == 2
    assert "2024-01-05" in html and "2024-07-05" in html and "threshold 50.0%" in html
    assert html.count('class="visit"') == 2


# The lesion page, with a lesion of 2 or 5 images: session, user, the lesion with its latest
# result (once: the URL scoping fetched it; it was 2 before the view used that), its images, their
# classifications, the write check, the audit event, and the session's save (3 with its savepoint).
LESION_PAGE_QUERIES = 10


@pytest.mark.parametrize("images", [2, 5])
def test_it_shows_the_lesion_page_in_a_fixed_number_of_queries(client_for, colleague, upload, lesion, images):
    for i in range(images):
        upload(image_bytes(RED if i % 2 else GREEN, size=(128 + i, 100)))  # each a new file: repeats are refused
    client = client_for(colleague)
    client.get(reverse("dashboard"))  # the first request after a login is not the point
    with CaptureQueriesContext(connection) as captured:
        response = client.get(reverse("lesion-detail", args=[lesion.pk]))
    assert response.status_code == 200 and response.content.decode().count('class="visit"') == images
    lesion_reads = [q for q in captured.captured_queries if 'FROM "diagnosis_lesion"' in q["sql"]]
    assert len(lesion_reads) == 1, [q["sql"] for q in lesion_reads]
    assert len(captured.captured_queries) == LESION_PAGE_QUERIES, [q["sql"][:80] for q in captured.captured_queries]


# --- Upload, result, review ----------------------------------------------------------------


def test_it_uploads_an_image_and_shows_its_result(client_for, colleague, lesion, run_on_commit):
    client = client_for(colleague)
    assert client.get(reverse("lesion-upload", args=[lesion.pk])).status_code == 200
    with run_on_commit():
        response = client.post(
            reverse("lesion-upload", args=[lesion.pk]), {"images": [_png()], "captured_at": "2024-05-01"}
        )
    image = LesionImage.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("image-detail", args=[image.pk])
    html = client.get(response["Location"]).content.decode()
    assert "Melanoma (mel)" in html and "Melanocytic nevus (nv)" in html and "Vascular lesion (vasc)" in html
    assert html.count('class="prob"') == 7
    assert STAND_IN_VERSION in html and "threshold of 50.0%" in html
    assert "Decision support, not a diagnosis." in html
    assert image.captured_at == dt.date(2024, 5, 1) and image.uploaded_by == colleague


def test_it_uploads_several_images_at_once(client_for, colleague, lesion, run_on_commit):
    with run_on_commit():
        response = client_for(colleague).post(
            reverse("lesion-upload", args=[lesion.pk]),
            {"images": [_png("a.png"), _png("b.png", GREEN)], "captured_at": "2024-05-01"},
        )
    assert response["Location"] == reverse("lesion-detail", args=[lesion.pk])
    assert LesionImage.objects.count() == 2


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            [SimpleUploadedFile("notes.txt", b"just text", content_type="image/png")],
            "notes.txt: the file is not a recognised image",
        ),
        ([], "Choose at least one image file"),
    ],
)
def test_it_explains_a_rejected_upload(client_for, colleague, lesion, files, message):
    response = client_for(colleague).post(
        reverse("lesion-upload", args=[lesion.pk]), {"images": files, "captured_at": "2024-05-01"}
    )
    assert response.status_code == 400 and message in response.content.decode()
    assert not LesionImage.objects.exists()


def test_it_refuses_uploads_from_readers_and_outsiders(client_for, reader, outsider, lesion):
    assert (
        client_for(reader)
        .post(reverse("lesion-upload", args=[lesion.pk]), {"images": [_png()], "captured_at": "2024-05-01"})
        .status_code
        == 403
    )
    assert (
        client_for(outsider)
        .post(reverse("lesion-upload", args=[lesion.pk]), {"images": [_png()], "captured_at": "2024-05-01"})
        .status_code
        == 404
    )
    assert not LesionImage.objects.exists()


def test_it_shows_a_failed_classification_without_an_error_page(client_for, colleague, upload, monkeypatch):
    from diagnosis import inference
    from ml.errors import ModelIntegrityError

    monkeypatch.setattr(
        inference, "loaded_model_version", lambda: (_ for _ in ()).throw(ModelIntegrityError("no default model"))
    )
    image = upload(image_bytes())
    response = client_for(colleague).get(reverse("image-detail", args=[image.pk]))
    assert response.status_code == 200
    assert "Classification failed." in response.content.decode() and "no default model" in response.content.decode()


def test_it_serves_image_files_to_members_only(client, client_for, colleague, outsider, upload):
    image = upload(image_bytes())
    url = reverse("image-file", args=[image.pk])
    assert client.get(url).status_code == 302
    response = client_for(colleague).get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content).startswith(b"\x89PNG")
    assert client_for(outsider).get(url).status_code == 404
    assert client_for(outsider).get(reverse("image-detail", args=[image.pk])).status_code == 404


def test_it_saves_a_review(client_for, colleague, upload):
    image = upload(image_bytes())
    client = client_for(colleague)
    response = client.post(
        reverse("image-review", args=[image.pk]),
        {"diagnosis": "bcc", "histopathology_confirmed": "on", "comment": "Biopsy"},
    )
    assert response.status_code == 302
    review = ClinicianReview.objects.get()
    assert (review.diagnosis, review.histopathology_confirmed, review.author) == ("bcc", True, colleague)
    assert "Basal cell carcinoma (bcc)" in client.get(reverse("image-detail", args=[image.pk])).content.decode()


def test_it_rejects_an_invalid_review(client_for, colleague, reader, outsider, upload):
    image = upload(image_bytes())
    response = client_for(colleague).post(reverse("image-review", args=[image.pk]), {"diagnosis": "cancer"})
    assert response.status_code == 400 and "Select a valid choice" in response.content.decode()
    assert client_for(reader).post(reverse("image-review", args=[image.pk]), {"diagnosis": "nv"}).status_code == 403
    assert client_for(outsider).post(reverse("image-review", args=[image.pk]), {"diagnosis": "nv"}).status_code == 404
    assert not ClinicianReview.objects.exists()


def test_it_classifies_again_on_request(client_for, colleague, reader, upload, run_on_commit):
    image = upload(image_bytes())
    image.classifications.all().delete()
    assert client_for(reader).post(reverse("image-classify", args=[image.pk])).status_code == 403
    with run_on_commit():
        response = client_for(colleague).post(reverse("image-classify", args=[image.pk]))
    assert response.status_code == 302
    assert image.classifications.get().top_class == "mel"


def test_it_shows_a_pending_result_while_the_worker_has_not_finished(client_for, colleague, owner, lesion):
    # Without running the on_commit callbacks the task is never sent: the state of a busy worker.
    (image,) = services.uploads.lesion_image_upload(
        user=owner, lesion=lesion, files=[services.uploads.ImageUpload("a.png", image_bytes())]
    )
    html = client_for(colleague).get(reverse("image-detail", args=[image.pk])).content.decode()
    assert "Classification pending" in html


def test_it_answers_get_only_pages_with_405_for_post(client_for, colleague, patient):
    assert client_for(colleague).post(reverse("patient-detail", args=[patient.pk])).status_code == 405


# --- Organisation members ------------------------------------------------------------------


def test_it_shows_the_organisation_to_members_only(client_for, colleague, outsider, org):
    url = reverse("organisation-detail", args=[org.pk])
    html = client_for(colleague).get(url).content.decode()
    assert "Northside Dermatology" in html and "bob" in html and "Add a member" not in html
    assert client_for(outsider).get(url).status_code == 404


def test_it_lets_an_admin_add_change_and_remove_members(client_for, owner, colleague, outsider, org):
    from diagnosis.models import Membership

    client = client_for(owner)
    url = reverse("organisation-detail", args=[org.pk])
    assert client.post(url, {"username": "charlie", "role": "readonly"}).status_code == 302
    assert Membership.objects.get(user=outsider, organisation=org).role == "readonly"
    assert client.post(url, {"username": "bob", "role": "admin"}).status_code == 302
    assert Membership.objects.get(user=colleague, organisation=org).role == "admin"
    response = client.post(url, {"username": "nobody", "role": "clinician"})
    assert response.status_code == 400 and "No login named" in response.content.decode()
    membership = Membership.objects.get(user=outsider, organisation=org)
    client.post(reverse("organisation-member-remove", args=[org.pk, membership.pk]))
    assert not Membership.objects.filter(pk=membership.pk).exists()


def test_it_keeps_at_least_one_admin(client_for, owner, org):
    from diagnosis.models import Membership

    membership = Membership.objects.get(user=owner, organisation=org)
    client = client_for(owner)
    response = client.post(reverse("organisation-member-remove", args=[org.pk, membership.pk]), follow=True)
    assert "at least one owner/admin" in response.content.decode()
    response = client.post(reverse("organisation-detail", args=[org.pk]), {"username": "alice", "role": "clinician"})
    assert response.status_code == 400 and "at least one owner/admin" in response.content.decode()
    assert Membership.objects.get(pk=membership.pk).role == "admin"


def test_it_refuses_member_changes_by_non_admins(client_for, colleague, outsider, owner, org):
    from diagnosis.models import Membership

    url = reverse("organisation-detail", args=[org.pk])
    assert client_for(colleague).post(url, {"username": "charlie", "role": "admin"}).status_code == 403
    membership = Membership.objects.get(user=owner, organisation=org)
    assert (
        client_for(colleague).post(reverse("organisation-member-remove", args=[org.pk, membership.pk])).status_code
        == 403
    )
    assert (
        client_for(outsider).post(reverse("organisation-member-remove", args=[org.pk, membership.pk])).status_code
        == 404
    )
    assert Membership.objects.filter(organisation=org).count() == 2
