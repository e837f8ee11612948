"""Schemathesis fuzzing of the REST API against its own OpenAPI schema (issue 5).

The schema is generated in-process by drf-spectacular (what /api/v1/schema/ serves) and every
operation in it is called through the Django WSGI app, authenticated with a clinician's token.
The clinician's organisation holds a patient, a lesion, an image with its classification, a
review and a batch; an outsider's organisation holds the same. Generated ids are sometimes
swapped for those real ids (ours and the outsider's), image fields for real PNGs and the token
body for real credentials, so the fuzzing reaches the real code paths, not only 404s and 400s.

Checks: no 5xx, every status code, content type and response body as the schema documents them,
and a request without the token is refused (schemathesis' default checks; the two left out are
explained in CONFIG). Each example runs in a savepoint that is rolled back, so writes (a PATCH of
the shared lesion, a new patient) never change what later examples see.

Bounded and reproducible for CI: the fuzzing phase draws at most MAX_EXAMPLES per operation,
derandomized, schema-valid and schema-violating inputs both; the coverage phase adds the boundary and
type-violating values the schema implies (a fixed set). The examples run are counted, checked
against a floor by the last test, and printed at the end: "fuzz: N operations, M examples, ...".
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, transaction
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.transport.serialization import Binary

from diagnosis import services
from tests.portal.helpers import GREEN, PASSWORD, RED, image_bytes

MAX_EXAMPLES = 20
SEED = 5_2024
# Floor for the count check: GET /me/ has no inputs at all and still gets 10 (fuzzing + coverage).
MIN_EXAMPLES_PER_OPERATION = 5


def _project_schema() -> dict[str, Any]:
    """The schema exactly as SpectacularAPIView renders it (JSON round trip: plain str keys and values)."""
    generated = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(generated, renderer_context={}))


CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "base-url": "http://localhost",  # requests go to the in-process WSGI app, never the network
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",  # no example database: CI replays exactly what the seed generates
            "mode": "all",  # schema-valid and schema-violating inputs both
            "with-security-parameters": False,  # our token goes in every request instead
        },
        "checks": {
            # "Every schema-valid request is accepted" is business semantics, not conformance: a schema
            # cannot say that a referenced patient must exist and be ours, that an external id is unique
            # per organisation, or that a password must be right. Those 400s are documented answers.
            "positive_data_acceptance": {"enabled": False},
            # "Every schema-violating request is rejected" is not ours either: DRF deliberately coerces
            # (36499 -> "36499" for a string, "yes" -> true, an invalid page_size -> the default size).
            # Those negative inputs are still generated, and every answer to them must still be a
            # documented status with a conforming body and no server error.
            "negative_data_rejection": {"enabled": False},
        },
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
    }
)


class _InProcessApp:
    """The project's WSGI application, built at the first request (its middleware is settings), run the way
    Django's test client runs it: Django closes 'old' connections around each request, which in a test
    would close the connection holding the test's transaction, so those two signal handlers are off."""

    def __init__(self) -> None:
        self._handler: Any = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if self._handler is None:
            self._handler = get_wsgi_application()
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            response = self._handler(environ, start_response)
            try:
                return [b"".join(response)]
            finally:
                response.close()
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)


RAW_SCHEMA = _project_schema()
schema = schemathesis.openapi.from_dict(RAW_SCHEMA, config=CONFIG)
schema.app = _InProcessApp()

OPERATIONS = [result.ok().label for result in schema.get_all_operations()]
PROTECTED = [  # every operation that requires a token or a session
    f"{method.upper()} {path}"
    for path, operations in RAW_SCHEMA["paths"].items()
    for method, operation in operations.items()
    if any(operation.get("security", []))
]
# The fuzzing phase alone aims at MAX_EXAMPLES per operation; with the coverage phase the run as
# configured makes about 1,600 requests.
MIN_EXAMPLES_TOTAL = MAX_EXAMPLES * len(OPERATIONS)


@dataclass
class FuzzStats:
    examples: Counter = field(default_factory=Counter)  # operation label -> examples run
    statuses: Counter = field(default_factory=Counter)  # status code -> responses
    failures: int = 0

    def summary(self) -> str:
        answered = ", ".join(f"{count} x {status}" for status, count in sorted(self.statuses.items()))
        return (
            f"fuzz: {len(self.examples)} operations, {sum(self.examples.values())} examples, "
            f"{self.failures} failures ({answered})"
        )

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:  # a pytest hook: see _report_stats
        if self.examples:
            terminalreporter.write_line(self.summary())


STATS = FuzzStats()


@pytest.fixture(scope="module", autouse=True)
def _report_stats(request: pytest.FixtureRequest) -> None:
    """Registers STATS as a plugin, so the summary line is printed at the end of the run."""
    if not request.config.pluginmanager.is_registered(STATS):
        request.config.pluginmanager.register(STATS, "skinportal-fuzz-stats")


# --- The world the fuzzing runs in -----------------------------------------------------------


@dataclass
class World:
    token: str
    username: str
    ids: dict[str, list[int]]  # parameter name -> real ids: ours first (the first: a complete one), then theirs


WORLD: World | None = None  # read by the hooks at draw time, set by the fixture per test


def _populate(user, organisation, run_on_commit, *, tag: str) -> dict[str, list[int]]:
    patient = services.patients.patient_create(
        user=user, organisation=organisation, external_id=f"{tag}-MRN-1", name=f"{tag} patient"
    )
    lesion = services.patients.lesion_create(user=user, patient=patient, body_site="back", label=f"{tag} lesion")
    with run_on_commit():  # the embedded worker classifies on commit
        (image,) = services.uploads.lesion_image_upload(
            user=user, lesion=lesion, files=[services.uploads.ImageUpload(name="photo.png", data=image_bytes(RED))]
        )
        batch = services.batches.batch_create(
            user=user, lesion=lesion, files=[services.uploads.ImageUpload(name="batch.png", data=image_bytes(GREEN))]
        )
    # Outputs with their nulls: an image still queued (no classification) and one whose task failed.
    queued, failed = services.uploads.lesion_image_upload(
        user=user,
        lesion=lesion,
        files=[services.uploads.ImageUpload(name=f"{c}.png", data=image_bytes(c, seed=1)) for c in (GREEN, RED)],
    )
    services.classification.classification_fail_unqueued(
        image_ids=[failed.pk], message="The worker could not be reached."
    )
    review = services.reviews.review_create(user=user, image=image, diagnosis="mel", comment="fuzz fixture")
    classification = image.classifications.order_by("-id").first()
    assert classification is not None, "the stand-in model did not classify the fixture image"
    return {
        "organisation": [organisation.pk],
        "patient": [patient.pk],
        "lesion": [lesion.pk],
        "image": [image.pk, queued.pk, failed.pk],
        "batch": [batch.pk],
        "review": [review.pk],
        "classification": [classification.pk, failed.classifications.get().pk],
    }


@pytest.fixture(autouse=True)
def _fuzz_settings(settings) -> None:
    # The token rate (10/minute per address) would answer most token examples with 429; at 30 the
    # first 30 reach the view and the rest still check the 429 answer against the schema.
    rates = {**settings.REST_FRAMEWORK.get("DEFAULT_THROTTLE_RATES", {}), "token": "30/minute"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}


@pytest.fixture
def world(colleague, org, outsider, other_org, run_on_commit) -> Iterator[World]:
    global WORLD
    ours = _populate(colleague, org, run_on_commit, tag="OURS")
    theirs = _populate(outsider, other_org, run_on_commit, tag="THEIRS")
    ids = {name: ours[name] + theirs[name] for name in ours}
    WORLD = World(
        token=services.accounts.api_token_create(user=colleague).key, username=colleague.get_username(), ids=ids
    )
    yield WORLD
    WORLD = None


# --- Steering the generated data towards real objects ----------------------------------------

ID_PARAMETERS = {
    "organisation_id": "organisation",
    "patient_id": "patient",
    "lesion_id": "lesion",
    "image_id": "image",
    "batch_id": "batch",
    "classification_id": "classification",
    "review_id": "review",
    "patient": "patient",
    "lesion": "lesion",
    "image": "image",
    "organisation": "organisation",
}


def _sometimes_real_ids(container: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Each id-like value: as generated, or one of ours, or the outsider's (shrinks towards generated)."""
    assert WORLD is not None
    choices = {}
    for name, value in container.items():
        real = WORLD.ids.get(ID_PARAMETERS.get(name, ""), []) if isinstance(value, int) else []
        choices[name] = st.sampled_from([value, *real])
    return st.fixed_dictionaries(choices)


FILE_TYPES = (bytes, Binary)  # schemathesis generates `format: binary` fields as Binary


def _zip_of_pngs() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.png", image_bytes(RED))
        archive.writestr("b.png", image_bytes(GREEN))
    return buffer.getvalue()


def _sometimes_real_files(body: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Uploads: the generated bytes (rejected as not an image) or a real PNG / ZIP of PNGs."""
    choices: dict[str, st.SearchStrategy] = {name: st.just(value) for name, value in body.items()}
    if isinstance(body.get("image"), FILE_TYPES):
        choices["image"] = st.sampled_from([body["image"], image_bytes(RED)])
    if isinstance(body.get("images"), list):
        choices["images"] = st.sampled_from([body["images"], [image_bytes(RED), image_bytes(GREEN)]])
    if isinstance(body.get("archive"), FILE_TYPES):
        choices["archive"] = st.sampled_from([body["archive"], _zip_of_pngs()])
    return st.fixed_dictionaries(choices).flatmap(_sometimes_real_ids)


@schema.hook
def flatmap_case(context: schemathesis.HookContext, case: schemathesis.Case) -> st.SearchStrategy:
    assert WORLD is not None
    parts: dict[str, st.SearchStrategy] = {}
    if isinstance(case.path_parameters, dict) and case.path_parameters:
        parts["path_parameters"] = _sometimes_real_ids(case.path_parameters)
    if isinstance(case.query, dict) and case.query:
        parts["query"] = _sometimes_real_ids(case.query)
    if isinstance(case.body, dict):
        if case.path == "/api/v1/auth/token/":
            parts["body"] = st.sampled_from([case.body, {"username": WORLD.username, "password": PASSWORD}])
        else:
            parts["body"] = _sometimes_real_files(case.body)

    def apply(values: dict[str, Any]) -> schemathesis.Case:
        for name, value in values.items():
            setattr(case, name, value)
        return case

    return st.fixed_dictionaries(parts).map(apply)


# --- The fuzz --------------------------------------------------------------------------------


@schema.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)
def test_it_conforms_to_its_schema_under_fuzzing(case: schemathesis.Case, world: World) -> None:
    STATS.examples[case.operation.label] += 1
    headers = {"Authorization": f"Token {world.token}"}
    # Rolled back, checks included (one re-sends the request without the token): every example
    # starts from the same world.
    with transaction.atomic():
        try:
            response = case.call(headers=headers)
            STATS.statuses[response.status_code] += 1
            case.validate_response(response, headers=headers)
        except BaseException:  # schemathesis' FailureGroup is a BaseExceptionGroup
            STATS.failures += 1
            raise
        finally:
            transaction.set_rollback(True)


@pytest.mark.parametrize("label", PROTECTED)
def test_it_refuses_a_protected_operation_without_a_token_as_documented(label: str, world: World) -> None:
    """The fuzz always sends the token; this is the one request per operation without it, on a real object."""
    operation = schema.find_operation_by_label(label)
    assert operation is not None
    names = re.findall(r"{(\w+)}", operation.path)
    real = {name: world.ids[ID_PARAMETERS[name]][0] for name in names if name in ID_PARAMETERS}
    if "token_key" in names:  # an API token is named by its key's first 15 characters
        real["token_key"] = world.token[:15]
    case = operation.Case(path_parameters=real)
    response = case.call()
    assert response.status_code == 401, response.text
    case.validate_response(response)  # documented, with the error body


def test_it_fuzzes_the_schema_the_api_serves(api_for, colleague) -> None:
    served = api_for(colleague).get("/api/v1/schema/", {"format": "json"})
    assert served.status_code == 200
    assert json.loads(served.content) == _project_schema()


def test_it_documents_every_error_with_the_error_body() -> None:
    for path, operations in RAW_SCHEMA["paths"].items():
        for method, operation in operations.items():
            errors = {code: r for code, r in operation["responses"].items() if code.startswith("4")}
            assert errors, f"{method.upper()} {path} documents no error response"
            for code, response in errors.items():
                body = response["content"]["application/json"]["schema"]
                assert body == {"$ref": "#/components/schemas/Error"}, f"{method.upper()} {path} {code}"
                assert response["description"], f"{method.upper()} {path} {code}"
            if any(operation.get("security", [])):
                assert "401" in errors, f"{method.upper()} {path}"


def test_it_answers_a_write_to_an_unknown_api_path_in_the_error_format(db) -> None:
    """Found by the fuzz: a POST to /api/v1/images/true/classify/ got Django's HTML CSRF 403 page."""
    response = Client(enforce_csrf_checks=True).post("/api/v1/images/true/classify/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_it_refuses_ids_beyond_64_bits_as_invalid(api_for, colleague) -> None:
    """Found by the fuzz: ?patient=<40 digits> was a 500 (OverflowError in SQLite)."""
    api, huge = api_for(colleague), str(2**64)
    for url in (
        "patients/?organisation=",
        "lesions/?patient=",
        "images/?patient=",
        "reviews/?patient=",
        "classifications/?lesion=",
    ):
        response = api.get(f"/api/v1/{url}{huge}")
        assert response.status_code == 400, (url, response.content)
        assert response.json()["error"]["code"] == "invalid"
    response = api.post("/api/v1/reviews/", {"image": 2**64, "diagnosis": "mel"}, format="json")
    assert response.status_code == 400 and "image" in response.json()["error"]["fields"]


def test_it_ran_every_operation_with_enough_examples() -> None:
    """Runs after the fuzz (file order): a fuzz that silently generated nothing must not pass."""
    assert sorted(STATS.examples) == sorted(OPERATIONS), "some operations were not fuzzed"
    assert sum(STATS.examples.values()) >= MIN_EXAMPLES_TOTAL
    too_few = {label: count for label, count in STATS.examples.items() if count < MIN_EXAMPLES_PER_OPERATION}
    assert not too_few, f"operations fuzzed with fewer than {MIN_EXAMPLES_PER_OPERATION} examples: {too_few}"
