"""Portal objects -> FHIR R4 resources (JSON-ready dicts). Pure functions: no queries, no request;
the caller hands in objects fetched by the scoped selectors (with the relations they select) and
the absolute links (`Links`), so what is exported is decided in one place, the views.

Ids: Patient/{patient id}, BodyStructure/{lesion id}, Media/{image id}, and for each succeeded
classification both Observation/{classification id} and DiagnosticReport/{classification id}.
docs/interop.md describes every mapping.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from diagnosis.fhir import codes
from diagnosis.inference import CLASSES, display_name, warning_text
from diagnosis.interpretation import context_sentence, favoured_reason, percent, read_result
from diagnosis.models import Classification, Lesion, LesionImage, Patient

Resource = dict[str, Any]

FHIR_VERSION = "4.0.1"


@dataclass(frozen=True)
class Links:
    """Absolute URLs the resources point at: the FHIR base (for Bundle fullUrls) and the v1 API's
    checked file and PDF report endpoints (the organisation check runs again when they are fetched)."""

    base: str  # e.g. "https://portal.example/api/fhir/r4" (no trailing slash)
    image_file: Callable[[int], str]
    image_report: Callable[[int], str]

    def full_url(self, resource: Resource) -> str:
        return f"{self.base}/{resource['resourceType']}/{resource['id']}"


def reference(resource_type: str, pk: int) -> dict[str, str]:
    return {"reference": f"{resource_type}/{pk}"}


def _instant(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _meta(updated: dt.datetime | None) -> dict[str, str]:
    return {"lastUpdated": value} if (value := _instant(updated)) else {}


def _without_none(resource: Resource) -> Resource:
    """FHIR forbids empty elements ("" / [] / {}) and nulls; drop them at the top level."""
    return {key: value for key, value in resource.items() if value not in (None, "", [], {})}


# --- Patient -----------------------------------------------------------------------------------


def patient_identifier(patient: Patient) -> dict[str, str]:
    return {
        "use": "usual",
        "system": codes.patient_identifier_system(patient.organisation_id),
        "value": patient.external_id,
    }


def patient_resource(patient: Patient) -> Resource:
    """identifier (the clinic's record number), name, gender and birth date: all the portal keeps.
    The notes stay out (free text, often not meant for other systems)."""
    return _without_none(
        {
            "resourceType": "Patient",
            "id": str(patient.pk),
            "meta": _meta(patient.updated_at),
            "identifier": [patient_identifier(patient)],
            "active": True,
            "name": [{"text": patient.name}] if patient.name else [],
            "gender": patient.sex,  # the portal's choices are FHIR's administrative genders
            "birthDate": patient.date_of_birth.isoformat() if patient.date_of_birth else None,
            # Display only: Organization is not exported, so no reference that would not resolve.
            "managingOrganization": {"display": patient.organisation.name},
        }
    )


# --- BodyStructure (a lesion) -----------------------------------------------------------------------


def body_site_concept(lesion: Lesion, *, with_structure: bool = False) -> Resource:
    """The lesion's site: SNOMED CT where the table has a code, its words always (side included);
    `with_structure` adds the extension that points at the lesion's BodyStructure."""
    concept: Resource = {"text": lesion.side_and_site}
    code = codes.BODY_SITES.get(lesion.body_site)
    if code is not None:
        concept["coding"] = [code.coding()]
    if with_structure:
        concept["extension"] = [
            {"url": codes.BODY_STRUCTURE_EXTENSION, "valueReference": reference("BodyStructure", lesion.pk)}
        ]
    return concept


def body_structure_resource(lesion: Lesion) -> Resource:
    location_qualifier = []
    side = codes.LATERALITY.get(lesion.laterality)
    if side is not None:
        location_qualifier.append({"coding": [side.coding()], "text": lesion.get_laterality_display()})
    return _without_none(
        {
            "resourceType": "BodyStructure",
            "id": str(lesion.pk),
            "meta": _meta(lesion.updated_at),
            "active": not lesion.closed,  # a closed lesion (excised or discharged) is no longer followed
            "morphology": {"coding": [codes.LESION_MORPHOLOGY.coding()], "text": "Skin lesion"},
            "location": body_site_concept(lesion),
            "locationQualifier": location_qualifier,
            "description": lesion.label,
            "patient": reference("Patient", lesion.patient_id),
        }
    )


# --- Media (an image) ------------------------------------------------------------------------------


def media_resource(image: LesionImage, links: Links) -> Resource:
    """The image as R4 Media: its bytes are not inlined but linked to the checked file endpoint
    (the same organisation check as the v1 API, and its audit event)."""
    return _without_none(
        {
            "resourceType": "Media",
            "id": str(image.pk),
            "meta": _meta(image.uploaded_at),
            "status": "completed",
            "type": {"coding": [codes.MEDIA_IMAGE.coding()], "text": "Image"},
            "modality": {"coding": [codes.MODALITY_XC.coding()], "text": "Dermatoscopic photograph"},
            "subject": reference("Patient", image.lesion.patient_id),
            "createdDateTime": image.captured_at.isoformat(),  # the visit (date only)
            "issued": _instant(image.uploaded_at),
            "bodySite": body_site_concept(image.lesion, with_structure=True),
            "height": image.height,
            "width": image.width,
            "content": {
                "contentType": image.stored_content_type,
                "url": links.image_file(image.pk),
                "size": image.size_bytes,
                "title": f"Image {image.pk}, captured {image.captured_at.isoformat()}",
            },
        }
    )


# --- Observation and DiagnosticReport (a succeeded classification) ---------------------------------


def exported(classification: Classification) -> bool:
    """Only succeeded classifications are exported: a pending or running one has no result yet, and
    a failed one has none at all (its error stays in the portal)."""
    return classification.succeeded


DEVICE_ID = "model"


def device_resource(classification: Classification) -> Resource:
    """The model that made the result, contained in the Observation (it has no life of its own here)."""
    version = classification.model_version
    if classification.model_variant:
        version = f"{version} ({classification.model_variant})"
    return {
        "resourceType": "Device",
        "id": DEVICE_ID,
        "deviceName": [{"name": codes.DEVICE_NAME, "type": "user-friendly-name"}],
        "type": {"text": codes.DEVICE_TYPE_TEXT},
        "version": [{"value": version}],
        "note": [{"text": codes.DECISION_SUPPORT_NOTE}],
    }


def _percent_quantity(value: float) -> dict[str, Any]:
    return {"value": round(float(value) * 100, 4), "unit": "%", "system": codes.UCUM, "code": "%"}


def _components(classification: Classification) -> list[Resource]:
    components: list[Resource] = [
        {
            "code": {
                "coding": [{"system": codes.PORTAL_CLASSES, "code": code, "display": display_name(code)}],
                "text": f"Probability: {display_name(code)}",
            },
            "valueQuantity": _percent_quantity(classification.probabilities.get(code, 0.0)),
        }
        for code in CLASSES
    ]
    score: Resource = {
        "code": {"coding": [codes.MALIGNANCY_SCORE.coding()], "text": "Malignancy score"},
        "valueQuantity": _percent_quantity(classification.malignancy_score or 0.0),
    }
    if classification.threshold is not None:
        score["referenceRange"] = [
            {
                "high": _percent_quantity(classification.threshold),
                "text": f"Flagged at or above the threshold of {percent(classification.threshold)}",
            }
        ]
    components.append(score)
    components.append(
        {
            "code": {"coding": [codes.MALIGNANCY_FLAG.coding()], "text": "Malignancy flag"},
            "valueBoolean": bool(classification.malignant),
        }
    )
    for warning in classification.warnings or []:
        components.append(
            {
                "code": {"coding": [codes.SCREENING_WARNING.coding()], "text": "Screening warning"},
                "valueCodeableConcept": {
                    "coding": [{"system": codes.PORTAL_WARNINGS, "code": warning}],
                    "text": warning_text(warning),
                },
            }
        )
    return components


def observation_resource(classification: Classification) -> Resource:
    """One succeeded classification: the suggested class as the value, one component per class
    probability, the malignancy score (with the threshold as its range) and flag, and each warning;
    notes: decision support, the clinical context weighed, why a less probable class is suggested."""
    image = classification.image
    lesion = image.lesion
    top = classification.top_class
    return _without_none(
        {
            "resourceType": "Observation",
            "id": str(classification.pk),
            "meta": _meta(classification.updated_at),
            "contained": [device_resource(classification)],
            "status": "final",
            "category": [{"coding": [codes.IMAGING_CATEGORY.coding()]}],
            "code": {"coding": [codes.CLASSIFICATION.coding()], "text": codes.CLASSIFICATION.display},
            "subject": reference("Patient", lesion.patient_id),
            "focus": [reference("BodyStructure", lesion.pk)],
            "effectiveDateTime": image.captured_at.isoformat(),
            "issued": _instant(classification.finished_at or classification.updated_at),
            "valueCodeableConcept": {
                "coding": [{"system": codes.PORTAL_CLASSES, "code": top, "display": display_name(top)}],
                "text": f"{classification.top_class_label} class: {display_name(top)}",
            }
            if top in CLASSES
            else None,
            # What the answer weighed besides the image, and why a less probable class is suggested.
            "note": [{"text": text} for text in (codes.DECISION_SUPPORT_NOTE, context_sentence(classification.context),
                                                 *favoured_reason(classification))],
            "bodySite": body_site_concept(lesion, with_structure=True),
            "device": {"reference": f"#{DEVICE_ID}"},
            "derivedFrom": [reference("Media", image.pk)],
            "component": _components(classification),
        }
    )


def conclusion(classification: Classification) -> str:
    """The portal's one reading of the result (interpretation.read_result), with its note."""
    reading = read_result(classification)
    words = [reading.headline, *reading.details] if reading is not None else []
    return " ".join([*words, codes.DECISION_SUPPORT_NOTE])


def diagnostic_report_resource(classification: Classification, links: Links) -> Resource:
    image = classification.image
    reading = read_result(classification)
    return _without_none(
        {
            "resourceType": "DiagnosticReport",
            "id": str(classification.pk),
            "meta": _meta(classification.updated_at),
            "status": "final",
            "code": {"coding": [codes.CLASSIFICATION_REPORT.coding()], "text": codes.CLASSIFICATION_REPORT.display},
            "subject": reference("Patient", image.lesion.patient_id),
            "effectiveDateTime": image.captured_at.isoformat(),
            "issued": _instant(classification.finished_at or classification.updated_at),
            "result": [reference("Observation", classification.pk)],
            "media": [{"comment": "The classified image", "link": reference("Media", image.pk)}],
            "conclusion": conclusion(classification),
            "conclusionCode": [
                {
                    "coding": [{"system": codes.PORTAL_READING, "code": reading.level}],
                    "text": reading.level.capitalize(),
                }
            ]
            if reading is not None
            else [],
            "presentedForm": [
                {
                    "contentType": "application/pdf",
                    "url": links.image_report(image.pk),
                    "title": f"SkinPortal report, image {image.pk}",
                }
            ],
        }
    )


# --- Bundles, OperationOutcome, CapabilityStatement ----------------------------------------------


def bundle(
    resources: Iterable[Resource],
    links: Links,
    *,
    self_url: str,
    total: int | None = None,
    next_url: str | None = None,
    match_types: Sequence[str] | None = None,
) -> Resource:
    """A searchset Bundle; every entry with its absolute fullUrl. Entries whose type is not in
    `match_types` are marked `include` (the Patient's resources in $everything)."""
    entries = [
        {
            "fullUrl": links.full_url(resource),
            "resource": resource,
            "search": {
                "mode": "match" if match_types is None or resource["resourceType"] in match_types else "include"
            },
        }
        for resource in resources
    ]
    link = [{"relation": "self", "url": self_url}]
    if next_url:
        link.append({"relation": "next", "url": next_url})
    return _without_none(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": total if total is not None else len(entries),
            "link": link,
            "entry": entries,
        }
    )


ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    413: "too-long",
    415: "not-supported",
    429: "throttled",
}


def operation_outcome(*, status: int, message: str) -> Resource:
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error" if status < 500 else "fatal",
                "code": ISSUE_CODES.get(status, "exception"),
                "diagnostics": message,
            }
        ],
    }


@dataclass(frozen=True)
class SearchParam:
    name: str
    type: str
    documentation: str


def capability_statement(
    *, base: str, software_version: str, date: str, search_params: dict[str, Sequence[SearchParam]]
) -> Resource:
    """What this server does (kind instance): read and search-type per resource, Patient $everything."""
    resources = []
    for resource_type, params in search_params.items():
        entry: Resource = {
            "type": resource_type,
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "searchParam": [{"name": p.name, "type": p.type, "documentation": p.documentation} for p in params],
        }
        if resource_type == "Patient":
            entry["operation"] = [
                {
                    "name": "everything",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                    "documentation": "The patient with every lesion (BodyStructure), image (Media) and succeeded "
                    "classification (Observation and DiagnosticReport), as a searchset Bundle.",
                }
            ]
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "SkinPortal",
        "kind": "instance",
        "software": {"name": "SkinPortal", "version": software_version},
        "implementation": {"description": "SkinPortal FHIR R4 read-only API", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": ["json", "application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Read-only. " + codes.DECISION_SUPPORT_NOTE,
                "security": {
                    "cors": False,
                    "description": "The same accounts as the portal's REST API: an API token "
                    "(`Authorization: Token <key>`) or a signed-in session. Every answer is limited to "
                    "the caller's organisations (another organisation's id is a 404), and every read of "
                    "patient data is written to the organisation's audit trail.",
                },
                "resource": resources,
            }
        ],
    }
