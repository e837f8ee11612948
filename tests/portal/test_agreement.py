"""The organisation's agreement page and API: which review meets which result, the figures shown,
the model-version filter, the small-number and not-defined cases, the CSV export, who may see it,
and its audit trail. The maths itself: test_agreement_maths.py."""

from __future__ import annotations

import csv
import io

import pytest
from django.urls import reverse

from diagnosis import selectors, services
from diagnosis.agreement import KAPPA_NO_PAIRS, KAPPA_ONE_CLASS
from diagnosis.models import AuditEvent, AuditOutcome, Classification, ClassificationStatus, LesionImage

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


@pytest.fixture
def reviewed(owner, colleague, lesion):
    """`reviewed(diagnosis, top_class, ...)`: an image of `lesion` with a clinician's review and a
    succeeded result (rows written directly: the figures, not the classifier, are under test)."""

    def _reviewed(
        diagnosis: str,
        top_class: str | None,
        *,
        flagged: bool = False,
        confirmed: bool = False,
        version: str = "v1",
        target=None,
        author=None,
    ) -> LesionImage:
        image = LesionImage.objects.create(
            lesion=target or lesion, file="lesion-images/2026/12/x.png", sha256="0" * 64, width=600, height=450,
            size_bytes=1000, source_format="png",
        )  # fmt: skip
        if top_class is not None:
            _result(image, top_class, flagged=flagged, version=version)
        services.reviews.review_create(
            user=author or colleague, image=image, diagnosis=diagnosis, histopathology_confirmed=confirmed
        )
        return image

    return _reviewed


def _result(image, top_class, *, flagged=False, version="v1", status=ClassificationStatus.SUCCEEDED):
    return Classification.objects.create(
        image=image, model_version=version, status=status, top_class=top_class if status == "succeeded" else "",
        malignant=flagged, malignancy_score=0.9 if flagged else 0.1, threshold=0.5,
    )  # fmt: skip


def _page(client, org, **params):
    return client.get(reverse("organisation-agreement", kwargs={"organisation_id": org.pk}), params)


def _api(api, org, **params):
    return api.get(reverse("api-organisation-agreement", kwargs={"organisation_id": org.pk}), params)


def test_it_pairs_each_reviewed_images_latest_review_with_its_latest_succeeded_result(
    org, colleague, reviewed, outsider, other_org
):
    image = reviewed("mel", "mel", flagged=True, version="v1")  # v1 says mel, the first review mel
    _result(image, "nv", version="v2")  # a later version says nv: the latest succeeded result
    _result(image, "", version="v3", status=ClassificationStatus.FAILED)  # a failed run after it: not a result
    services.reviews.review_create(user=colleague, image=image, diagnosis="nv")  # the latest review: nv
    reviewed("bcc", None)  # reviewed, never classified
    patient = services.patients.patient_create(user=outsider, organisation=other_org, external_id="X", name="X")
    elsewhere = services.patients.lesion_create(user=outsider, patient=patient, body_site="back", label="x")
    reviewed("mel", "nv", target=elsewhere, author=outsider)  # another organisation's: never counted here

    report = selectors.agreement_report(organisation=org)
    assert (report.reviewed_images, report.without_result, report.all_reviews.pairs) == (2, 1, 1)
    assert report.all_reviews.matrix[CLASSES.index("nv")][CLASSES.index("nv")] == 1
    assert [(v.model_version, v.pairs) for v in report.versions] == [("v1", 1), ("v2", 1)]
    only_v1 = selectors.agreement_report(organisation=org, model_version="v1")
    assert only_v1.all_reviews.matrix[CLASSES.index("nv")][CLASSES.index("mel")] == 1  # nv review, v1's mel


def test_it_shows_every_figure_on_the_page_for_every_member(org, owner, colleague, reader, reviewed, client_for):
    for diagnosis, top, flagged, confirmed in [
        ("mel", "mel", True, True), ("mel", "nv", False, True), ("nv", "nv", False, True),
        ("nv", "nv", True, False), ("bkl", "nv", False, False), ("other", "nv", False, True),
    ]:  # fmt: skip
        reviewed(diagnosis, top, flagged=flagged, confirmed=confirmed)
    for user in (owner, colleague, reader):
        response = _page(client_for(user), org)
        assert response.status_code == 200, user
    body = response.content.decode()
    assert "Not a certified medical device" in body and "Decision support, not a diagnosis" in body
    assert "latest clinician review against the model&#x27;s latest succeeded" in body  # the pairing, said
    assert "n = 5: intervals are wide" in body and "n = 3: intervals are wide" in body
    assert "<strong>60.0%</strong>" in body  # 3 of 5 agree overall
    assert "Melanoma (mel)" in body and "Confusion matrix" in body
    assert "Sensitivity (flagged, of the confirmed malignant)" in body
    assert "<strong>50.0%</strong> <span class=\"muted small\">(1 of 2; 95% CI" in body  # sensitivity 1 of 2
    assert 'Latest review "other" (left out)' in body
    detail = client_for(reader).get(reverse("organisation-detail", kwargs={"organisation_id": org.pk}))
    assert reverse("organisation-agreement", kwargs={"organisation_id": org.pk}) in detail.content.decode()


def test_it_shows_empty_figures_and_says_kappa_is_not_defined(org, owner, client_for, api_for):
    response = _page(client_for(owner), org)
    assert response.status_code == 200
    body = response.content.decode()
    assert "No review to compare yet" in body and "No reviewed image has a result yet" in body
    data = _api(api_for(owner), org).json()
    assert data["all_reviews"]["pairs"] == 0 and data["all_reviews"]["overall_agreement"]["value"] is None
    assert data["all_reviews"]["kappa"] == {
        "defined": False, "value": None, "standard_error": None, "ci95_low": None, "ci95_high": None,
        "undefined_reason": KAPPA_NO_PAIRS,
    }  # fmt: skip
    assert data["malignancy_flag"]["sensitivity"]["total"] == 0


def test_it_says_kappa_is_not_defined_when_everyone_used_one_class(org, owner, reviewed, client_for, api_for):
    for _ in range(3):
        reviewed("nv", "nv", confirmed=True)
    body = _page(client_for(owner), org).content.decode()
    assert "not defined" in body and KAPPA_ONE_CLASS in body
    data = _api(api_for(owner), org).json()
    assert data["confirmed"]["kappa"]["defined"] is False
    assert data["confirmed"]["overall_agreement"]["value"] == 1.0
    assert data["malignancy_flag"]["specificity"]["count"] == 3  # three benign, none flagged
    assert data["malignancy_flag"]["sensitivity"]["value"] is None  # no confirmed malignant lesion


def test_it_answers_the_api_with_the_figures_and_kappa_scikit_learn_gives(org, owner, reviewed, api_for):
    pairs = [("mel", "mel"), ("mel", "nv"), ("nv", "nv"), ("nv", "nv"), ("bkl", "bkl"), ("bkl", "nv"), ("df", "df")]
    for diagnosis, top in pairs:
        reviewed(diagnosis, top)
    response = _api(api_for(owner), org)
    assert response.status_code == 200
    data = response.json()
    assert data["organisation"] == org.pk and data["model_version"] is None
    assert data["model_versions"] == [{"model_version": "v1", "pairs": 7, "confirmed_pairs": 0}]
    section = data["all_reviews"]
    assert section["pairs"] == 7 and section["small_sample"] is True
    assert section["confusion_matrix"]["labels"] == CLASSES
    assert sum(map(sum, section["confusion_matrix"]["rows"])) == 7
    # By hand: agreement 5/7; marginals (clinician, model) mel 2, 1; nv 2, 4; bkl 2, 1; df 1, 1: chance 13/49;
    # kappa (35/49 - 13/49) / (36/49) = 11/18 (scikit-learn's cohen_kappa_score agrees).
    assert section["kappa"]["value"] == pytest.approx(11 / 18)
    assert section["kappa"]["ci95_low"] < section["kappa"]["value"] < section["kappa"]["ci95_high"]
    mel = next(row for row in section["per_class"] if row["clinician_class"] == "mel")
    assert (mel["agreement"]["count"], mel["agreement"]["total"], mel["model_count"]) == (1, 2, 1)
    assert 0 < mel["agreement"]["ci95_low"] < 0.5 < mel["agreement"]["ci95_high"] < 1
    assert data["confirmed"]["pairs"] == 0 and "not a diagnosis" in data["notice"]


def test_it_filters_by_model_version_and_refuses_an_unknown_one(org, owner, reviewed, client_for, api_for):
    reviewed("mel", "mel", version="v1")
    reviewed("nv", "mel", version="v2")
    api = api_for(owner)
    assert _api(api, org, model_version="v2").json()["all_reviews"]["pairs"] == 1
    assert _api(api, org, model_version="").json()["all_reviews"]["pairs"] == 2  # empty: all versions
    refused = _api(api, org, model_version="v9")
    assert refused.status_code == 400 and "model_version" in refused.json()["error"]["fields"]
    client = client_for(owner)
    page = _page(client, org, model_version="v2")
    assert page.status_code == 200 and "Shown: results of model version v2 only." in page.content.decode()
    assert _page(client, org, model_version="v9").status_code == 400
    assert _page(client, org, model_version="v9", format="csv")["Content-Type"].startswith("text/html")


def _csv_rows(response) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_it_exports_the_figures_as_csv_with_formulas_written_as_text(org, owner, reviewed, client_for, api_for):
    version = "=HYPERLINK(\"http://evil\")"
    reviewed("mel", "mel", flagged=True, confirmed=True, version=version)
    reviewed("nv", "mel", flagged=True, confirmed=True, version=version)
    page = _page(client_for(owner), org, format="csv", model_version=version)
    api = api_for(owner).get(
        reverse("api-organisation-agreement-csv", kwargs={"organisation_id": org.pk}),
        {"model_version": version}, HTTP_ACCEPT="text/csv",
    )  # fmt: skip
    for response in (page, api):
        assert response.status_code == 200 and response["Content-Type"] == "text/csv; charset=utf-8"
        assert response["Content-Disposition"] == (
            f'attachment; filename="agreement-organisation-{org.pk}-_HYPERLINK__http___evil__.csv"'
        )
        rows = _csv_rows(response)
        assert {row["model_version"] for row in rows} == {f"'{version}"}  # never a live formula
        by_measure = {(row["section"], row["measure"]): row for row in rows}
        sensitivity = by_measure[("confirmed", "flag_sensitivity")]
        assert (sensitivity["count"], sensitivity["total"], sensitivity["value"]) == ("1", "1", "1.0")
        specificity = by_measure[("confirmed", "flag_specificity")]
        assert (specificity["count"], specificity["total"]) == ("0", "1")
        assert specificity["note"] == "n = 1: the interval is wide"
        confusion = [r for r in rows if r["section"] == "all_reviews" and r["measure"] == "confusion"]
        assert len(confusion) == 49
        assert next(r for r in confusion if (r["clinician_class"], r["model_class"]) == ("nv", "mel"))["count"] == "1"
        assert by_measure[("", "notice")]["note"].startswith("Decision support, not a diagnosis")


def test_it_records_reading_and_downloading_the_figures(org, owner, reviewed, client_for, api_for):
    reviewed("mel", "mel")
    client = client_for(owner)
    views = [_page(client, org), _api(api_for(owner), org)]
    downloads = [
        _page(client, org, format="csv"),
        api_for(owner).get(reverse("api-organisation-agreement-csv", kwargs={"organisation_id": org.pk})),
    ]
    for response, action in [(r, "view") for r in views] + [(r, "export") for r in downloads]:
        event = AuditEvent.objects.get(request_id=response["X-Request-ID"])
        assert (event.action, event.object_type, event.object_id, event.organisation_id) == (
            action, "organisation", org.pk, org.pk
        ), event.route  # fmt: skip


def test_it_answers_404_to_an_outsider_and_files_the_attempt_under_the_organisation(
    org, outsider, reviewed, client_for, api_for
):
    reviewed("mel", "mel")
    api = api_for(outsider)
    responses = [
        _page(client_for(outsider), org),
        _page(client_for(outsider), org, format="csv"),
        _api(api, org),
        api.get(reverse("api-organisation-agreement-csv", kwargs={"organisation_id": org.pk})),
    ]
    for response in responses:
        assert response.status_code == 404
        event = AuditEvent.objects.get(request_id=response["X-Request-ID"])
        assert (event.outcome, event.organisation_id) == (AuditOutcome.DENIED, org.pk)


def test_it_documents_both_operations_for_integrators(owner, api_for):
    schema = api_for(owner).get("/api/v1/schema/", {"format": "json"}).json()
    json_operation = schema["paths"]["/api/v1/organisations/{organisation_id}/agreement/"]["get"]
    csv_operation = schema["paths"]["/api/v1/organisations/{organisation_id}/agreement.csv"]["get"]
    assert "Cohen's kappa" in json_operation["description"] and "Wilson" in json_operation["description"]
    assert "text/csv" in csv_operation["responses"]["200"]["content"]
    assert {"400", "401", "404"} <= set(json_operation["responses"]) & set(csv_operation["responses"])
    assert [p["name"] for p in json_operation["parameters"] if p["in"] == "query"] == ["model_version"]
