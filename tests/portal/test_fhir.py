"""The FHIR R4 read-only API (/api/fhir/r4/, diagnosis/fhir): every resource and Bundle validated
with fhir.resources (R4B models: R4 with its errata, Media included), $everything's contents and
references, identifier search, organisation scoping (an outsider's id is a 404 OperationOutcome),
authentication, content negotiation, the audit trail, and which classifications are exported."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from fhir.resources.R4B.bodystructure import BodyStructure
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.media import Media
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient as FhirPatient
from rest_framework.test import APIClient

from diagnosis import services
from diagnosis.fhir import codes
from diagnosis.inference import CLASSES
from diagnosis.interpretation import read_result
from diagnosis.models import AuditEvent, BodySite, Classification, Laterality
from tests.portal.helpers import GREEN, RED, image_bytes

BASE = "/api/fhir/r4"
MODELS = {
    "Patient": FhirPatient,
    "BodyStructure": BodyStructure,
    "Media": Media,
    "Observation": Observation,
    "DiagnosticReport": DiagnosticReport,
    "Bundle": Bundle,
    "CapabilityStatement": CapabilityStatement,
    "OperationOutcome": OperationOutcome,
}


def _valid(body: dict[str, Any]) -> dict[str, Any]:
    """Validated against the FHIR model of its resourceType (raises on any violation)."""
    MODELS[body["resourceType"]].model_validate(body)
    if body["resourceType"] == "Bundle":
        for entry in body.get("entry", []):
            MODELS[entry["resource"]["resourceType"]].model_validate(entry["resource"])
    return body


def _fhir(response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/fhir+json"), response["Content-Type"]
    return _valid(response.json())


def _outcome(response, status: int) -> dict[str, Any]:
    body = _fhir(response, status)
    assert body["resourceType"] == "OperationOutcome", body
    return body


@pytest.fixture
def record(owner, patient, lesion, upload, run_on_commit) -> dict[str, Any]:
    """A patient with a flagged (red) and a reassuring (green) visit on one lesion, a second lesion
    (right hand, closed) with an image still queued and one whose classification failed."""
    red = upload(image_bytes(RED), captured_at=dt.date(2026, 1, 5))
    green = upload(image_bytes(GREEN), captured_at=dt.date(2026, 6, 5))
    hand = services.patients.lesion_create(
        user=owner, patient=patient, body_site="hand", label="Back of right hand", laterality="right"
    )
    queued, failed = services.uploads.lesion_image_upload(  # no commit: nothing classifies them
        user=owner,
        lesion=hand,
        files=[services.uploads.ImageUpload(name=f"{i}.png", data=image_bytes(RED, seed=i + 5)) for i in (1, 2)],
    )
    services.classification.classification_fail_unqueued(
        image_ids=[failed.pk], message="The worker could not be reached."
    )
    pending = Classification.objects.create(image=queued, model_version="next-version", status="pending")
    services.patients.lesion_close(user=owner, lesion=hand, outcome="discharged")
    return {
        "patient": patient,
        "back": lesion,
        "hand": hand,
        "red": red,
        "green": green,
        "queued": queued,
        "failed": failed,
        "red_result": red.classifications.get(),
        "green_result": green.classifications.get(),
        "failed_result": failed.classifications.get(),
        "pending_result": pending,
    }


# --- Resources ---------------------------------------------------------------------------------


def test_it_reads_a_patient_with_the_identifier_name_gender_and_birth_date(record, colleague, api_for):
    patient = record["patient"]
    body = _fhir(api_for(colleague).get(f"{BASE}/Patient/{patient.pk}"))
    assert body["id"] == str(patient.pk)
    assert body["identifier"] == [
        {
            "use": "usual",
            "system": f"urn:skinportal:organisation:{patient.organisation_id}:patient-id",
            "value": "MRN-001",
        }
    ]
    assert body["name"] == [{"text": "Ada Lovelace"}]
    assert (body["gender"], body["birthDate"]) == ("female", "1960-12-10")


def test_it_codes_body_site_and_laterality_in_snomed_and_a_closed_lesion_is_inactive(record, owner, api_for):
    api = api_for(owner)
    back = _fhir(api.get(f"{BASE}/BodyStructure/{record['back'].pk}"))
    assert back["location"]["coding"] == [
        {"system": codes.SNOMED, "code": "77568009", "display": "Back structure, excluding neck"}
    ]
    assert "locationQualifier" not in back  # side unknown: nothing coded
    assert back["active"] is True and back["patient"] == {"reference": f"Patient/{record['patient'].pk}"}
    assert back["description"] == "Upper back, left"

    hand = _fhir(api.get(f"{BASE}/BodyStructure/{record['hand'].pk}"))
    assert hand["location"]["coding"][0]["code"] == "85562004"
    assert hand["location"]["text"] == "Right · Hand"
    assert hand["locationQualifier"] == [
        {"coding": [{"system": codes.SNOMED, "code": "24028007", "display": "Right"}], "text": "Right"}
    ]
    assert hand["active"] is False  # closed (discharged)


def test_it_sends_a_site_without_a_code_as_text_only(owner, patient, api_for):
    acral = services.patients.lesion_create(
        user=owner, patient=patient, body_site="acral", label="Sole", laterality="left"
    )
    body = _fhir(api_for(owner).get(f"{BASE}/BodyStructure/{acral.pk}"))
    assert body["location"] == {"text": "Left · Acral"}
    assert body["locationQualifier"][0]["coding"][0]["code"] == "7771000"


def test_it_maps_every_body_site_but_acral_and_unknown_and_every_known_side():
    assert set(BodySite.values) - set(codes.BODY_SITES) == {"acral", "unknown"}
    assert set(Laterality.values) - set(codes.LATERALITY) == {"unknown"}
    assert {c.code for c in codes.LATERALITY.values()} == {"7771000", "24028007", "399488007"}
    assert all(c.system == codes.SNOMED and c.code.isdigit() for c in codes.BODY_SITES.values())


def test_it_links_media_to_the_checked_file_endpoint_and_the_lesions_body_structure(record, owner, api_for):
    api = api_for(owner)
    image = record["red"]
    body = _fhir(api.get(f"{BASE}/Media/{image.pk}"))
    assert body["content"]["url"] == f"http://testserver/api/v1/images/{image.pk}/file/"
    assert body["content"]["contentType"] == "image/png"
    assert (body["width"], body["height"]) == (128, 100)
    assert body["createdDateTime"] == "2026-01-05"
    assert body["type"]["coding"][0]["code"] == "image"
    assert body["subject"] == {"reference": f"Patient/{record['patient'].pk}"}
    assert body["bodySite"]["coding"][0]["code"] == "77568009"
    assert body["bodySite"]["extension"] == [
        {"url": codes.BODY_STRUCTURE_EXTENSION, "valueReference": {"reference": f"BodyStructure/{record['back'].pk}"}}
    ]
    file = api.get(body["content"]["url"])  # the link works with the same token
    assert file.status_code == 200 and file["Content-Type"] == "image/png"


def test_it_exports_a_classification_as_an_observation_with_every_probability_the_score_and_the_flag(
    record, owner, api_for
):
    result = record["red_result"]
    body = _fhir(api_for(owner).get(f"{BASE}/Observation/{result.pk}"))
    assert body["status"] == "final"
    assert body["code"]["coding"][0]["code"] == "ai-skin-lesion-classification"
    by_code = {c["code"]["coding"][0]["code"]: c for c in body["component"]}
    for code in CLASSES:
        assert by_code[code]["valueQuantity"]["unit"] == "%"
        assert by_code[code]["valueQuantity"]["value"] == pytest.approx(result.probabilities[code] * 100, abs=1e-3)
    assert by_code["malignancy-score"]["valueQuantity"]["value"] == pytest.approx(
        result.malignancy_score * 100, abs=1e-3
    )
    assert by_code["malignancy-score"]["referenceRange"][0]["high"]["value"] == pytest.approx(50.0)
    assert by_code["malignancy-flag"]["valueBoolean"] is True
    assert body["valueCodeableConcept"]["coding"][0]["code"] == "mel"
    (device,) = body["contained"]
    assert body["device"] == {"reference": f"#{device['id']}"}
    assert device["resourceType"] == "Device" and device["version"] == [
        {"value": f"{result.model_version} ({result.model_variant})"}
    ]
    assert body["derivedFrom"] == [{"reference": f"Media/{record['red'].pk}"}]
    assert body["subject"] == {"reference": f"Patient/{record['patient'].pk}"}
    assert body["focus"] == [{"reference": f"BodyStructure/{record['back'].pk}"}]
    assert "not a diagnosis" in body["note"][0]["text"]
    green = _fhir(api_for(owner).get(f"{BASE}/Observation/{record['green_result'].pk}"))
    assert {c["code"]["coding"][0]["code"]: c for c in green["component"]}["malignancy-flag"]["valueBoolean"] is False


def test_it_concludes_the_report_with_the_portals_one_reading_and_links_the_pdf(record, owner, api_for):
    api = api_for(owner)
    result = record["red_result"]
    body = _fhir(api.get(f"{BASE}/DiagnosticReport/{result.pk}"))
    reading = read_result(result)
    assert body["conclusion"].startswith(reading.headline)
    assert all(detail in body["conclusion"] for detail in reading.details)
    assert "not a diagnosis" in body["conclusion"]
    assert body["conclusionCode"][0]["coding"][0]["code"] == reading.level == "flagged"
    assert body["result"] == [{"reference": f"Observation/{result.pk}"}]
    assert body["media"] == [{"comment": "The classified image", "link": {"reference": f"Media/{record['red'].pk}"}}]
    (pdf,) = body["presentedForm"]
    assert pdf["contentType"] == "application/pdf"
    assert pdf["url"] == f"http://testserver/api/v1/images/{record['red'].pk}/report.pdf"


# --- Which classifications are exported ---------------------------------------------------------


def test_it_exports_no_failed_or_pending_classification(record, owner, api_for):
    api = api_for(owner)
    for key in ("failed_result", "pending_result"):
        for kind in ("Observation", "DiagnosticReport"):
            outcome = _outcome(api.get(f"{BASE}/{kind}/{record[key].pk}"), 404)
            assert "only succeeded classifications are exported" in outcome["issue"][0]["diagnostics"]
    exported = {str(record["red_result"].pk), str(record["green_result"].pk)}
    for kind in ("Observation", "DiagnosticReport"):
        bundle = _fhir(api.get(f"{BASE}/{kind}", {"patient": record["patient"].pk}))
        assert {entry["resource"]["id"] for entry in bundle["entry"]} == exported
    # the images themselves are exported (Media), results or not
    media = _fhir(api.get(f"{BASE}/Media", {"subject": f"Patient/{record['patient'].pk}"}))
    assert len(media["entry"]) == 4


# --- $everything and Bundles --------------------------------------------------------------------


def _references(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return found + [ref for value in node.values() for ref in _references(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _references(value)]
    return []


def test_it_returns_everything_of_a_patient_with_every_reference_resolving(record, owner, api_for, outsider):
    services.patients.patient_create(
        user=outsider, organisation=outsider.memberships.get().organisation, external_id="MRN-001", name="Other"
    )
    body = _fhir(api_for(owner).get(f"{BASE}/Patient/{record['patient'].pk}/$everything"))
    assert body["type"] == "searchset"
    types: dict[str, set[str]] = {}
    for entry in body["entry"]:
        resource = entry["resource"]
        assert entry["fullUrl"] == f"http://testserver{BASE}/{resource['resourceType']}/{resource['id']}"
        types.setdefault(resource["resourceType"], set()).add(resource["id"])
    assert types == {
        "Patient": {str(record["patient"].pk)},
        "BodyStructure": {str(record["back"].pk), str(record["hand"].pk)},
        "Media": {str(record[k].pk) for k in ("red", "green", "queued", "failed")},
        "Observation": {str(record[k].pk) for k in ("red_result", "green_result")},
        "DiagnosticReport": {str(record[k].pk) for k in ("red_result", "green_result")},
    }
    assert body["total"] == len(body["entry"]) == 11
    present = {f"{entry['resource']['resourceType']}/{entry['resource']['id']}" for entry in body["entry"]}
    for entry in body["entry"]:
        contained = {f"#{c['id']}" for c in entry["resource"].get("contained", [])}
        for ref in _references(entry["resource"]):
            assert ref in present or ref in contained, (entry["fullUrl"], ref)


def test_it_finds_a_patient_by_identifier_alone_or_with_its_system(record, owner, outsider, api_for):
    patient = record["patient"]
    other = services.patients.patient_create(
        user=outsider, organisation=outsider.memberships.get().organisation, external_id="MRN-001", name="Not yours"
    )
    api = api_for(owner)
    system = codes.patient_identifier_system(patient.organisation_id)

    def ids(**params) -> list[str]:
        bundle = _fhir(api.get(f"{BASE}/Patient", params))
        assert bundle["type"] == "searchset" and bundle["total"] == len(bundle.get("entry", []))
        return [entry["resource"]["id"] for entry in bundle.get("entry", [])]

    assert ids(identifier="MRN-001") == [str(patient.pk)]  # the outsider's MRN-001 is not found
    assert ids(identifier=f"{system}|MRN-001") == [str(patient.pk)]
    assert ids(identifier=f"{system}|") == [str(patient.pk)]
    assert ids(identifier="mrn-001") == []  # exact, as identifiers are
    assert ids(identifier="MRN-00") == []
    assert ids(identifier="urn:other:system|MRN-001") == []
    assert ids(identifier=f"{codes.patient_identifier_system(other.organisation_id)}|MRN-001") == []
    assert ids() == [str(patient.pk)]
    assert _fhir(api_for(outsider).get(f"{BASE}/Patient", {"identifier": "MRN-001"}))["entry"][0]["resource"][
        "id"
    ] == str(other.pk)


def test_it_pages_a_search_with_a_next_link(record, owner, api_for):
    api = api_for(owner)
    first = _fhir(api.get(f"{BASE}/Media", {"_count": 3}))
    assert (first["total"], len(first["entry"])) == (4, 3)
    (next_link,) = [link["url"] for link in first["link"] if link["relation"] == "next"]
    second = _fhir(api.get(next_link))
    assert len(second["entry"]) == 1
    assert not [link for link in second["link"] if link["relation"] == "next"]
    seen = {entry["resource"]["id"] for entry in first["entry"] + second["entry"]}
    assert len(seen) == 4


def test_it_finds_nothing_of_another_organisations_patient_in_a_search(record, outsider, api_for):
    for kind in ("BodyStructure", "Media", "Observation", "DiagnosticReport"):
        bundle = _fhir(api_for(outsider).get(f"{BASE}/{kind}", {"patient": f"Patient/{record['patient'].pk}"}))
        assert bundle["total"] == 0 and "entry" not in bundle, kind
        assert _fhir(api_for(outsider).get(f"{BASE}/{kind}"))["total"] == 0, kind


@pytest.mark.parametrize(
    "path, params",
    [
        ("Patient", {"name": "Ada"}),
        ("Patient", {"identifier": ["A", "B"]}),
        ("Patient", {"identifier": "MRN\x00001"}),
        ("Media", {"patient": "Practitioner/3"}),
        ("Media", {"patient": "abc"}),
        ("Observation", {"_count": "0"}),
        ("Observation", {"_count": "many"}),
        ("DiagnosticReport", {"patient": "1", "subject": "2"}),
        ("BodyStructure", {"subject": "1"}),  # BodyStructure has patient, not subject
        ("Patient/{patient}", {"_elements": "id"}),
        ("Patient/{patient}/$everything", {"_since": "2020-01-01"}),
    ],
)
def test_it_answers_a_bad_search_with_a_400_operation_outcome(record, owner, api_for, path, params):
    response = api_for(owner).get(f"{BASE}/{path.format(patient=record['patient'].pk)}", params)
    outcome = _outcome(response, 400)
    assert outcome["issue"][0]["code"] == "invalid" and outcome["issue"][0]["diagnostics"]


# --- Access, formats, errors ---------------------------------------------------------------------


def _object_paths(record) -> list[str]:
    return [
        f"Patient/{record['patient'].pk}",
        f"Patient/{record['patient'].pk}/$everything",
        f"BodyStructure/{record['back'].pk}",
        f"Media/{record['red'].pk}",
        f"Observation/{record['red_result'].pk}",
        f"DiagnosticReport/{record['red_result'].pk}",
    ]


def test_it_answers_404_to_an_outsider_on_every_resource_and_everything(record, outsider, api_for):
    api = api_for(outsider)
    for path in _object_paths(record):
        outcome = _outcome(api.get(f"{BASE}/{path}"), 404)
        assert outcome["issue"][0]["code"] == "not-found", path
        assert "Ada" not in str(outcome) and "MRN-001" not in str(outcome)
        assert api.delete(f"{BASE}/{path}").status_code == 404, path  # not a 405 that would confirm the id


def test_it_answers_401_without_credentials_and_reads_with_a_session_or_a_token(record, owner, api_for):
    anonymous = APIClient()
    for path in ["Patient", *_object_paths(record)]:
        outcome = _outcome(anonymous.get(f"{BASE}/{path}"), 401)
        assert outcome["issue"][0]["code"] == "login"
    bad_token = APIClient()
    bad_token.credentials(HTTP_AUTHORIZATION="Token " + "0" * 64)
    _outcome(bad_token.get(f"{BASE}/Patient"), 401)
    session = APIClient()
    session.force_login(owner)
    assert _fhir(session.get(f"{BASE}/Patient/{record['patient'].pk}"))["id"] == str(record["patient"].pk)
    assert _fhir(api_for(owner).get(f"{BASE}/Patient/{record['patient'].pk}"))["id"] == str(record["patient"].pk)


def test_it_refuses_writes_with_a_405_operation_outcome(record, owner, api_for):
    response = api_for(owner).post(f"{BASE}/Patient", {"resourceType": "Patient"}, format="json")
    assert _outcome(response, 405)["issue"][0]["code"] == "not-supported"


@pytest.mark.parametrize(
    "params, accept, status",
    [
        ({}, None, 200),
        ({"_format": "json"}, None, 200),
        ({"_format": "application/fhir+json"}, None, 200),
        ({}, "application/fhir+json", 200),
        ({}, "application/json", 200),
        ({}, "text/html,application/xhtml+xml,*/*;q=0.8", 200),
        ({"_format": "xml"}, None, 406),
        ({}, "application/fhir+xml", 406),
    ],
)
def test_it_speaks_fhir_json_by_format_or_accept(record, owner, api_for, params, accept, status):
    headers = {"HTTP_ACCEPT": accept} if accept else {}
    response = api_for(owner).get(f"{BASE}/Patient/{record['patient'].pk}", params, **headers)
    body = _fhir(response, status)
    assert body["resourceType"] == ("Patient" if status == 200 else "OperationOutcome")


def test_it_answers_an_unknown_path_with_a_404_operation_outcome(owner, api_for):
    for path in ("Practitioner/1", "Patient/abc", "Patient/1/", "Observation/1/_history/2"):
        _outcome(api_for(owner).get(f"{BASE}/{path}"), 404)


def test_it_describes_itself_in_a_capability_statement_open_to_all(db):
    body = _fhir(APIClient().get(f"{BASE}/metadata"))
    assert (body["kind"], body["fhirVersion"], body["format"]) == (
        "instance",
        "4.0.1",
        ["json", "application/fhir+json"],
    )
    (rest,) = body["rest"]
    by_type = {resource["type"]: resource for resource in rest["resource"]}
    assert set(by_type) == {"Patient", "BodyStructure", "Media", "Observation", "DiagnosticReport"}
    for resource in by_type.values():
        assert {i["code"] for i in resource["interaction"]} == {"read", "search-type"}
    assert {p["name"] for p in by_type["Patient"]["searchParam"]} >= {"identifier"}
    assert {p["name"] for p in by_type["Observation"]["searchParam"]} >= {"patient", "subject"}
    assert by_type["Patient"]["operation"][0]["name"] == "everything"
    assert "Token" in rest["security"]["description"]


def test_it_keeps_the_fhir_endpoints_out_of_the_openapi_schema(owner, api_for):
    schema = api_for(owner).get("/api/v1/schema/", {"format": "json"})
    assert schema.status_code == 200
    assert "/api/fhir" not in schema.content.decode()


# --- Audit trail -------------------------------------------------------------------------------


def test_it_records_one_export_event_per_read(record, owner, outsider, api_for):
    cases = [
        (f"Patient/{record['patient'].pk}", "patient", record["patient"].pk),
        (f"Patient/{record['patient'].pk}/$everything", "patient", record["patient"].pk),
        (f"BodyStructure/{record['back'].pk}", "lesion", record["back"].pk),
        (f"Media/{record['red'].pk}", "image", record["red"].pk),
        (f"Observation/{record['red_result'].pk}", "classification", record["red_result"].pk),
        (f"DiagnosticReport/{record['red_result'].pk}", "classification", record["red_result"].pk),
        ("Patient?identifier=MRN-001", "patient", None),
        ("Observation?patient=1", "classification", None),
    ]
    for user, outcome in ((owner, "ok"), (outsider, "denied")):
        for path, object_type, object_id in cases:
            response = api_for(user).get(f"{BASE}/{path}")
            if outcome == "denied" and object_id is None:
                continue  # a search by an outsider is an empty Bundle, not a denial
            (event,) = AuditEvent.objects.filter(request_id=response["X-Request-ID"])
            assert (event.action, event.object_type, event.surface, event.outcome) == (
                "export",
                object_type,
                "api",
                outcome,
            ), path
            assert event.object_id == object_id and event.actor_id == user.pk, path
            assert event.organisation_id == record["patient"].organisation_id, path
            assert "MRN" not in event.route


def test_it_reads_everything_and_each_search_in_a_fixed_number_of_queries(record, owner, api_for, upload):
    api = api_for(owner)
    paths = [
        f"Patient/{record['patient'].pk}/$everything",
        "Patient",
        "BodyStructure",
        "Media",
        "Observation",
        "DiagnosticReport",
    ]

    def counts() -> list[int]:
        found = []
        for path in paths:
            with CaptureQueriesContext(connection) as queries:
                assert api.get(f"{BASE}/{path}").status_code == 200
            found.append(len(queries))
        return found

    before = counts()
    for seed in range(3):  # three more classified visits
        upload(image_bytes(GREEN, seed=seed + 20), captured_at=dt.date(2026, 9, 1 + seed))
    assert counts() == before
