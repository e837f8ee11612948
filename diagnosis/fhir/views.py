"""The FHIR R4 read-only API (/api/fhir/r4/): thin views over the scoped selectors and the pure
builders in resources.py.

The same authentication (API token or session), permission, throttling, organisation scoping
(ScopedApiView: another organisation's id is a 404 before anything else) and audit trail as
/api/v1/; only the body differs: FHIR JSON (`application/fhir+json`), errors as OperationOutcome.

Not in the OpenAPI schema (`schema = None`): a FHIR server's contract is its CapabilityStatement
(GET metadata) and the HL7 specification it points at (docs/interop.md says why).
"""

from __future__ import annotations

import re
from importlib import metadata
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from diagnosis.api.errors import api_exception_handler
from diagnosis.api.views import ScopedApiView
from diagnosis.fhir import resources
from diagnosis.fhir import selectors as fhir_selectors
from diagnosis.fhir.resources import Links, Resource, SearchParam

FHIR_JSON = "application/fhir+json"
# What a client may ask for, by `_format` or Accept: FHIR's JSON under any of its names.
JSON_FORMATS = frozenset({"json", FHIR_JSON, "application/json", "application/json+fhir"})
ACCEPTED_RANGES = JSON_FORMATS | {"*/*", "application/*"}
# Parameters every interaction takes (`_pretty` is accepted and ignored: the JSON is compact).
COMMON_PARAMS = frozenset({"_format", "_pretty"})
PAGING_PARAMS = frozenset({"_count", "_offset"})
DEFAULT_COUNT, MAX_COUNT = 100, 500
CAPABILITY_DATE = "2026-12-03"  # when this CapabilityStatement last changed

_PATIENT_REFERENCE = re.compile(r"^(?:(?:https?://\S+/)?Patient/)?(?P<id>\d{1,18})$")
_IDENTIFIER_SYSTEM = re.compile(r"^urn:skinportal:organisation:(?P<id>\d{1,18}):patient-id$")


class FhirJsonRenderer(JSONRenderer):
    media_type = FHIR_JSON
    format = "json"
    charset = "utf-8"


class FhirContentNegotiation(DefaultContentNegotiation):
    """FHIR JSON for `_format=json` (or either JSON media type) and for an Accept header that takes
    JSON or anything; a 406 OperationOutcome for XML or Turtle, which this server does not write."""

    def select_renderer(
        self, request: Request, renderers: list[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = renderers[0]
        wanted = request.query_params.get("_format")
        if wanted is not None:
            if wanted.split(";")[0].strip().lower() not in JSON_FORMATS:
                raise exceptions.NotAcceptable("Only JSON is served: _format=json or application/fhir+json.")
            return renderer, renderer.media_type
        accept = request.META.get("HTTP_ACCEPT", "").strip()
        ranges = {part.split(";")[0].strip().lower() for part in accept.split(",") if part.strip()}
        if not ranges or ranges & ACCEPTED_RANGES:
            return renderer, renderer.media_type
        raise exceptions.NotAcceptable("Only JSON is served: accept application/fhir+json or application/json.")


def fhir_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """The API's handler (the same statuses and words), with the body as an OperationOutcome."""
    response = api_exception_handler(exc, context)
    if response is None:
        return None  # a real bug: Django's 500 handling and logging take over
    error = response.data.get("error", {}) if isinstance(response.data, dict) else {}
    response.data = resources.operation_outcome(status=response.status_code, message=str(error.get("message", "")))
    return response


@csrf_exempt  # it changes nothing; a POST to an unknown path is a 404 like any other method
def fhir_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Unknown paths under /api/fhir/r4/ (an id that is not a number, a resource type not served)."""
    outcome = resources.operation_outcome(status=404, message=f"No FHIR endpoint at {request.path}.")
    return JsonResponse(outcome, status=404, content_type=f"{FHIR_JSON}; charset=utf-8")


class FhirApiView(ScopedApiView):
    schema = None  # the CapabilityStatement describes these endpoints, not the OpenAPI schema
    renderer_classes = (FhirJsonRenderer,)
    content_negotiation_class = FhirContentNegotiation
    allowed_params: frozenset[str] = COMMON_PARAMS

    def get_exception_handler(self):
        return fhir_exception_handler

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # authenticated, throttled and scoped first
        if any("\x00" in value for _, values in request.query_params.lists() for value in values):
            raise exceptions.ParseError("A search parameter holds a NUL character.")  # PostgreSQL cannot compare it
        unknown = sorted(set(request.query_params) - self.allowed_params)
        if unknown:
            allowed = ", ".join(sorted(self.allowed_params))
            raise exceptions.ParseError(
                f"Unknown or unsupported search parameter(s): {', '.join(unknown)} (this endpoint takes {allowed})."
            )

    def links(self) -> Links:
        request = self.request
        base = request.build_absolute_uri(reverse("api-fhir-metadata")).removesuffix("/metadata")
        return Links(
            base=base,
            image_file=lambda pk: request.build_absolute_uri(reverse("api-image-file", kwargs={"image_id": pk})),
            image_report=lambda pk: request.build_absolute_uri(reverse("api-image-report", kwargs={"image_id": pk})),
        )

    def single(self, name: str) -> str | None:
        """A parameter given at most once (FHIR would AND repeats; none of ours means anything twice)."""
        values = self.request.query_params.getlist(name)
        if len(values) > 1:
            raise exceptions.ParseError(f"Give the {name} parameter once.")
        return values[0] if values else None


class MetadataApi(FhirApiView):
    """GET metadata: the CapabilityStatement. Open without a login, as FHIR clients read it first
    to learn how to authenticate; it holds nothing about any patient."""

    permission_classes = (AllowAny,)

    def get(self, request: Request) -> Response:
        try:
            version = metadata.version("skinportal")
        except metadata.PackageNotFoundError:
            version = "unknown"
        search = {name: view.search_params for name, view in SEARCH_VIEWS.items()}
        return Response(
            resources.capability_statement(
                base=self.links().base, software_version=version, date=CAPABILITY_DATE, search_params=search
            )
        )


# --- Reads by id --------------------------------------------------------------------------------


class PatientReadApi(FhirApiView):
    def get(self, request: Request, patient_id: int) -> Response:
        return Response(resources.patient_resource(self.url_object("patient_id")))


class BodyStructureReadApi(FhirApiView):
    def get(self, request: Request, lesion_id: int) -> Response:
        return Response(resources.body_structure_resource(self.url_object("lesion_id")))


class MediaReadApi(FhirApiView):
    def get(self, request: Request, image_id: int) -> Response:
        return Response(resources.media_resource(self.url_object("image_id"), self.links()))


class _ClassificationReadApi(FhirApiView):
    def exported_classification(self) -> Any:
        classification = self.url_object("classification_id")
        if not resources.exported(classification):
            raise exceptions.NotFound(
                f"Classification {classification.pk} is {classification.status}: only succeeded classifications "
                "are exported."
            )
        return classification


class ObservationReadApi(_ClassificationReadApi):
    def get(self, request: Request, classification_id: int) -> Response:
        return Response(resources.observation_resource(self.exported_classification()))


class DiagnosticReportReadApi(_ClassificationReadApi):
    def get(self, request: Request, classification_id: int) -> Response:
        return Response(resources.diagnostic_report_resource(self.exported_classification(), self.links()))


# --- Searches -----------------------------------------------------------------------------------

PATIENT_PARAM = SearchParam(
    "patient", "reference", "The patient: Patient/{id} or {id}; another organisation's patient finds nothing."
)
SUBJECT_PARAM = SearchParam("subject", "reference", "The same as patient (the subject is always a Patient here).")
PAGING = (
    SearchParam("_count", "number", f"Entries per page, 1-{MAX_COUNT} (default {DEFAULT_COUNT})."),
    SearchParam("_offset", "number", "Entries to skip (the Bundle's next link sets it)."),
)


class _SearchApi(FhirApiView):
    search_params: tuple[SearchParam, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.allowed_params = COMMON_PARAMS | {p.name for p in cls.search_params}

    def _number(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.single(name)
        if raw is None:
            return default
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise exceptions.ParseError(f"{name} must be a whole number from {low} to {high}.")
        return int(raw)

    def patient_id(self) -> int | None:
        """The patient named by `patient` or `subject` (both: they must agree)."""
        given = {
            value
            for name in ("patient", "subject")
            if name in self.allowed_params
            if (value := self.single(name)) is not None
        }
        ids = set()
        for value in given:
            match = _PATIENT_REFERENCE.match(value.strip())
            if match is None:
                raise exceptions.ParseError(f"{value!r} is not a patient reference: give Patient/{{id}} or {{id}}.")
            ids.add(int(match["id"]))
        if len(ids) > 1:
            raise exceptions.ParseError("patient and subject name different patients.")
        return ids.pop() if ids else None

    def searchset(self, queryset: QuerySet, build) -> Response:
        count = self._number("_count", DEFAULT_COUNT, 1, MAX_COUNT)
        offset = self._number("_offset", 0, 0, 10**9)
        total = queryset.count()
        page = [build(row) for row in queryset[offset : offset + count]]
        next_url = None
        if offset + count < total:
            params = self.request.query_params.copy()
            params["_offset"] = str(offset + count)
            params["_count"] = str(count)
            next_url = self.request.build_absolute_uri(f"{self.request.path}?{params.urlencode()}")
        return Response(
            resources.bundle(
                page, self.links(), self_url=self.request.build_absolute_uri(), total=total, next_url=next_url
            )
        )


class PatientSearchApi(_SearchApi):
    search_params = (
        SearchParam(
            "identifier",
            "token",
            "The clinic's record number: {value}, or {system}|{value} with the system "
            "urn:skinportal:organisation:{organisation id}:patient-id (exact match).",
        ),
        *PAGING,
    )

    def get(self, request: Request) -> Response:
        value: str | None = None
        organisation_id: int | None = None
        identifier = self.single("identifier")
        if identifier is not None:
            system, bar, value = identifier.partition("|") if "|" in identifier else ("", "", identifier)
            if system:
                match = _IDENTIFIER_SYSTEM.match(system)
                if match is None:  # a system this server does not issue: nothing carries it
                    return self.searchset(
                        fhir_selectors.fhir_patient_list(user=request.user).none(), resources.patient_resource
                    )
                organisation_id = int(match["id"])
            if bar and not value:
                value = None  # "system|": any identifier of that system
        patients = fhir_selectors.fhir_patient_list(
            user=request.user, identifier_value=value, organisation_id=organisation_id
        )
        return self.searchset(patients, resources.patient_resource)


class BodyStructureSearchApi(_SearchApi):
    search_params = (PATIENT_PARAM, *PAGING)

    def get(self, request: Request) -> Response:
        lesions = fhir_selectors.fhir_lesion_list(user=request.user, patient_id=self.patient_id())
        return self.searchset(lesions, resources.body_structure_resource)


class MediaSearchApi(_SearchApi):
    search_params = (PATIENT_PARAM, SUBJECT_PARAM, *PAGING)

    def get(self, request: Request) -> Response:
        images = fhir_selectors.fhir_image_list(user=request.user, patient_id=self.patient_id())
        links = self.links()
        return self.searchset(images, lambda image: resources.media_resource(image, links))


class ObservationSearchApi(_SearchApi):
    search_params = (PATIENT_PARAM, SUBJECT_PARAM, *PAGING)

    def get(self, request: Request) -> Response:
        classifications = fhir_selectors.fhir_classification_list(user=request.user, patient_id=self.patient_id())
        return self.searchset(classifications, resources.observation_resource)


class DiagnosticReportSearchApi(_SearchApi):
    search_params = (PATIENT_PARAM, SUBJECT_PARAM, *PAGING)

    def get(self, request: Request) -> Response:
        classifications = fhir_selectors.fhir_classification_list(user=request.user, patient_id=self.patient_id())
        links = self.links()
        return self.searchset(classifications, lambda c: resources.diagnostic_report_resource(c, links))


SEARCH_VIEWS: dict[str, type[_SearchApi]] = {
    "Patient": PatientSearchApi,
    "BodyStructure": BodyStructureSearchApi,
    "Media": MediaSearchApi,
    "Observation": ObservationSearchApi,
    "DiagnosticReport": DiagnosticReportSearchApi,
}


class PatientEverythingApi(FhirApiView):
    """Patient/{id}/$everything: the patient and all its exported resources in one Bundle."""

    def get(self, request: Request, patient_id: int) -> Response:
        patient = self.url_object("patient_id")
        links = self.links()
        user = request.user
        found: list[Resource] = [resources.patient_resource(patient)]
        found += [
            resources.body_structure_resource(lesion)
            for lesion in fhir_selectors.fhir_lesion_list(user=user, patient_id=patient.pk)
        ]
        found += [
            resources.media_resource(image, links)
            for image in fhir_selectors.fhir_image_list(user=user, patient_id=patient.pk)
        ]
        classifications = list(fhir_selectors.fhir_classification_list(user=user, patient_id=patient.pk))
        found += [resources.observation_resource(c) for c in classifications]
        found += [resources.diagnostic_report_resource(c, links) for c in classifications]
        return Response(resources.bundle(found, links, self_url=request.build_absolute_uri(), match_types=("Patient",)))
