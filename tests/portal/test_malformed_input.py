"""Malformed and hostile request bodies and batch CSVs (issue 13, defect 4): each is a 4xx with
a clear message (the JSON error envelope in the API, an HTML page or form error elsewhere),
never a 500, and nothing stored is added or changed.

The reproductions of the attacker's findings come first; then Hypothesis fuzzes each parser
(JSON, form, multipart) with malformed bodies on every API operation that takes one and on the
upload and form pages. Generated ZIP archives with CSVs are in test_archive_fuzz.py.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from diagnosis.api import parsers
from diagnosis.archives import CSV_MAX_CELL_CHARS
from diagnosis.models import Batch, Classification, ClinicianReview, Lesion, LesionImage, Patient
from tests.portal.helpers import GREEN, PASSWORD, RED, image_bytes

pytestmark = pytest.mark.django_db

API = "/api/v1"
DEEP = "[" * 100_000  # the attacker's body: RecursionError in json's scanner

# Examples per fuzz test: each request is a few milliseconds (no valid image gets through to the
# classifier), so the five fuzz tests together stay within seconds on the 2-core CI machine.
MAX_EXAMPLES = 60


def _body_operations() -> dict[str, list[tuple[str, str]]]:
    """Media type -> every (METHOD, path template) of the API's schema whose request body takes it."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    found: dict[str, list[tuple[str, str]]] = {}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for media_type in (operation.get("requestBody") or {}).get("content", {}):
                found.setdefault(media_type, []).append((method.upper(), path))
    return found


BODY_OPERATIONS = _body_operations()
JSON_OPERATIONS = BODY_OPERATIONS["application/json"]
FORM_OPERATIONS = BODY_OPERATIONS["application/x-www-form-urlencoded"]
MULTIPART_OPERATIONS = BODY_OPERATIONS["multipart/form-data"]
MALFORMED_OPERATIONS = sorted({operation for operations in BODY_OPERATIONS.values() for operation in operations})
# Pages that read a form body (the URL keyword -> a real object of the victim fixture).
PAGES = [
    ("patient-create", None),
    ("patient-edit", "patient_id"),
    ("lesion-create", "patient_id"),
    ("lesion-edit", "lesion_id"),
    ("lesion-upload", "lesion_id"),
    ("image-review", "image_id"),
    ("batch-create", None),
]


def _path(template: str, ids: dict[str, int]) -> str:
    for key, value in ids.items():
        template = template.replace("{" + key + "}", str(value))
    return template


def _page(name: str, key: str | None, ids: dict[str, int]) -> str:
    return reverse(name, args=[ids[key]]) if key else reverse(name)


def _stored() -> dict[str, Any]:
    """What a refused request must leave as it was: every row of patient data, by its fields."""
    return {
        model.__name__: list(model.objects.order_by("pk").values())
        for model in (Patient, Lesion, LesionImage, Batch, Classification, ClinicianReview)
    }


def _assert_api_error(response, status: int | None = None) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:500])
    if status is not None:
        assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    error = response.json()["error"]
    assert error["status"] == response.status_code and error["message"], error
    return error


@pytest.fixture
def api(api_for, owner) -> APIClient:
    return api_for(owner)


@pytest.fixture
def ids(victim) -> dict[str, int]:
    return victim


@pytest.fixture
def high_rates(settings) -> None:
    """The fuzz sends many uploads: the per-user upload rate (60/minute) must not answer them all with 429."""
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "uploads": "100000/minute", "token": "100000/minute"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}


# --- Deep JSON -------------------------------------------------------------------------------


def test_it_refuses_deeply_nested_json_on_the_unauthenticated_token_endpoint(owner) -> None:
    response = APIClient().generic("POST", f"{API}/auth/token/", DEEP, content_type="application/json")
    error = _assert_api_error(response, 400)
    assert error["code"] == "parse_error" and f"nested more than {parsers.MAX_JSON_DEPTH} levels" in error["message"]


@pytest.mark.parametrize(("method", "template"), JSON_OPERATIONS)
def test_it_refuses_deeply_nested_json_on_every_json_operation(api, ids, method, template) -> None:
    before = _stored()
    for body in (DEEP, "[" * 100_000 + "]" * 100_000, '{"notes": ' * 5_000 + "1" + "}" * 5_000):
        response = api.generic(method, _path(template, ids), body, content_type="application/json")
        error = _assert_api_error(response, 400)
        assert "nested more than" in error["message"], error
    assert _stored() == before


@pytest.mark.parametrize("depth", [parsers.MAX_JSON_DEPTH + 1, 500, 5_000])
def test_it_refuses_json_nested_past_the_limit_however_deep(api, depth) -> None:
    notes = "[" * (depth - 1) + '"x"' + "]" * (depth - 1)  # by hand: json.dumps recurses too
    body = '{"external_id": "MRN-9", "name": "Deep", "notes": ' + notes + "}"
    response = api.post(f"{API}/patients/", body, content_type="application/json")
    assert "nested more than" in _assert_api_error(response, 400)["message"]
    assert not Patient.objects.filter(external_id="MRN-9").exists()


def test_it_reads_json_nested_up_to_the_limit_as_usual(api) -> None:
    nested: Any = "x"
    for _ in range(parsers.MAX_JSON_DEPTH - 1):
        nested = [nested]
    response = api.post(f"{API}/patients/", {"external_id": "MRN-9", "name": "Deep", "notes": nested}, format="json")
    assert _assert_api_error(response, 400)["fields"] == {"notes": ["Not a valid string."]}  # the serializer's word
    ok = api.post(f"{API}/patients/", {"external_id": "MRN-9", "name": "Flat", "notes": "plain"}, format="json")
    assert ok.status_code == 201, ok.content


def test_it_parses_every_api_view_with_the_guarded_parsers() -> None:
    """Walks the URL resolver: a view that names DRF's own JSONParser would bring the 500 back."""
    allowed = {parsers.JSONParser, parsers.FormParser, parsers.MultiPartParser}

    def views(patterns) -> Iterator[type]:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from views(pattern.url_patterns)
            elif isinstance(pattern, URLPattern) and hasattr(pattern.callback, "cls"):
                yield pattern.callback.cls

    found = list(views(get_resolver().url_patterns))
    assert len(found) > 20
    for view in found:
        used = {type(parser) for parser in view().get_parsers()}
        assert used <= allowed, f"{view.__name__} parses with {used - allowed}"


# --- Bodies the framework refuses: in the envelope, with a reason --------------------------


def test_it_words_a_body_over_the_size_limit(api, settings) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    response = api.post(f"{API}/patients/", {"external_id": "X", "name": "Y", "notes": "n" * 2000}, format="json")
    error = _assert_api_error(response, 400)
    assert "larger than" in error["message"], error


def test_it_words_a_form_with_too_many_fields(api, settings) -> None:
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    body = "&".join(f"f{i}=x" for i in range(20))
    response = api.generic("POST", f"{API}/patients/", body, content_type="application/x-www-form-urlencoded")
    assert "more than 10 fields" in _assert_api_error(response, 400)["message"]
    response = api.post(f"{API}/patients/", {f"f{i}": "x" for i in range(20)}, format="multipart")
    assert "more than 10 fields" in _assert_api_error(response, 400)["message"]


def test_it_words_a_form_with_too_many_files(api, ids, settings) -> None:
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2
    files = [SimpleUploadedFile(f"{i}.png", image_bytes(RED), content_type="image/png") for i in range(3)]
    response = api.post(f"{API}/batches/", {"lesion": ids["lesion_id"], "images": files}, format="multipart")
    assert "more than 2 files" in _assert_api_error(response, 400)["message"]
    assert Batch.objects.count() == 1  # the victim's own


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"\xff\xfe{"),
        ("application/json", b'{"name": NaN}'),
        ("application/json; charset=bz2_codec", b'{"name": "x"}'),
        ("application/x-www-form-urlencoded; charset=rot13", b"name=x"),
        ("multipart/form-data", b"--x\r\n"),
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n\r\nvalue"),
        ("multipart/form-data; boundary=x; charset=hex", b"--x\r\n"),
        ("multipart/form-data; boundary=" + "x" * 300, b"--x\r\n"),
        ("text/plain", b"name=x"),
    ],
)
def test_it_refuses_a_malformed_body_in_the_error_format(api, owner, content_type, body) -> None:
    before = _stored()
    for client in (api, APIClient()):
        for path in (f"{API}/patients/", f"{API}/auth/token/"):
            _assert_api_error(client.generic("POST", path, body, content_type=content_type))
    assert _stored() == before


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"--x\r\n"),
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data; name=images\r\n\r\nvalue"),
        ("multipart/form-data; boundary=x; charset=rot13", b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--x--\r\n'),
        ("application/x-www-form-urlencoded; charset=hex", b"label=x"),
        ("application/x-www-form-urlencoded", b"label=%00&notes=%ff%fe"),
    ],
)
def test_it_answers_a_malformed_page_form_with_a_4xx_page(client_for, owner, ids, content_type, body) -> None:
    client = client_for(owner)
    before = _stored()
    for name, key in PAGES:
        response = client.generic("POST", _page(name, key, ids), body, content_type=content_type)
        assert 400 <= response.status_code < 500, (name, response.status_code)
        assert response["Content-Type"].startswith("text/html"), (name, response["Content-Type"])
    assert _stored() == before


def test_it_refuses_a_nul_in_a_header_before_anything_stores_it(client, owner) -> None:
    """django-axes stores a failed login's User-Agent: with a NUL in it, PostgreSQL answered 500."""
    before = _stored()
    page = client.post(reverse("login"), {"username": "alice", "password": "wrong"}, HTTP_USER_AGENT="evil\x00agent")
    assert page.status_code == 400 and "The User-Agent header holds a NUL character." in page.content.decode()
    api = APIClient().post(f"{API}/auth/token/", {"username": "alice", "password": "wrong"}, format="json",
                           HTTP_USER_AGENT="evil\x00agent")
    assert _assert_api_error(api, 400)["message"] == "The User-Agent header holds a NUL character."
    assert _stored() == before and not AccessAttempt.objects.exists()


# --- Batch CSVs --------------------------------------------------------------------------------


def _zip(members: dict[str, bytes]) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return SimpleUploadedFile("session.zip", buffer.getvalue(), content_type="application/zip")


BAD_CSVS = {
    # The attacker's three, then their neighbours.
    "cell over the csv module's limit": (
        b"file,patient\na.png," + b"x" * 140_000 + b"\n",
        f"cell longer than {CSV_MAX_CELL_CHARS} characters on line 2",
    ),
    "bare CR in an unquoted cell": (b"file,patient,lesion\na.png,MRN-001\rX,Spot\n", "carriage return (CR)"),
    "NUL in a cell": (b"file,patient,lesion\na.png,MRN-001\x00,Spot\n", "control character (U+0000) on line 2"),
    "NUL in the header": (b"fi\x00le,patient\na.png,MRN-001\n", "control character (U+0000) on line 1"),
    "other control character": (b"file,patient,lesion\na.png,MRN-001,Sp\x1bot\n", "control character (U+001B)"),
    "DEL": (b"file,patient,lesion\na.png,MRN-001,Spot\x7f\n", "control character (U+007F)"),
    "bare CR in a quoted cell": (b'file,patient,lesion\na.png,"MRN\r-001",Spot\n', "carriage return (CR)"),
    "CR-only line ends": (b"file,patient,lesion\ra.png,MRN-001,Spot\r", "carriage return (CR) that does not end a line on line 1"),
    "cell over the portal's limit": (
        b"file,patient,lesion\na.png,MRN-001," + b"L" * (CSV_MAX_CELL_CHARS + 1) + b"\n",
        f"lesion cell longer than {CSV_MAX_CELL_CHARS} characters on line 2",
    ),
    "quoted cell over several lines": (b'file,patient,lesion\na.png,MRN-001,"Sp\not"\n', "runs over several lines"),
    "quote the csv module refuses": (b'file,patient\n"a.png"x"\n' + b"a" * 10, "could not be read"),
    "unterminated quote": (b'file,patient,lesion\na.png,MRN-001,"Spot\n', "could not be read"),
    "not UTF-8": (b"file,patient\n\xff\xfe.png,x\n", "not UTF-8"),
    "no file column": (b"patient,lesion\nMRN-001,Spot\n", "needs a 'file' column"),
}


@pytest.mark.parametrize("case", list(BAD_CSVS))
def test_it_refuses_a_csv_it_cannot_read_with_a_clear_message_and_stores_nothing(
    api, client_for, owner, ids, run_on_commit, case
) -> None:
    csv_bytes, message = BAD_CSVS[case]
    before = _stored()
    members = {"a.png": image_bytes(RED), "b.png": image_bytes(GREEN), "where.csv": csv_bytes}
    with run_on_commit():
        response = api.post(f"{API}/batches/", {"lesion": ids["lesion_id"], "archive": _zip(members)}, format="multipart")
    error = _assert_api_error(response, 400)
    assert message in error["message"], error
    assert list(error["fields"]) == ["archive"]
    with run_on_commit():
        page = client_for(owner).post(
            reverse("batch-create"), {"lesion": ids["lesion_id"], "archive": _zip(members), "captured_at": "2024-05-01"}
        )
    assert page.status_code == 400 and message in page.content.decode().replace("&#x27;", "'")
    assert _stored() == before


def test_it_refuses_a_csv_with_more_rows_than_a_batch_holds(api, ids, settings) -> None:
    settings.SKINPORTAL_MAX_FILES_PER_BATCH = 3
    rows = "".join(f"{i}.png,MRN-001,Spot\n" for i in range(4))
    archive = _zip({"a.png": image_bytes(RED), "where.csv": f"file,patient,lesion\n{rows}".encode()})
    response = api.post(f"{API}/batches/", {"lesion": ids["lesion_id"], "archive": archive}, format="multipart")
    assert "lists more than 3 files" in _assert_api_error(response, 400)["message"]


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"])
def test_it_still_reads_a_csv_with_either_line_end_a_bom_and_quotes(api, ids, run_on_commit, line_end) -> None:
    csv_bytes = b"\xef\xbb\xbf" + line_end.join(
        [b"file,patient,lesion,body_site", b'a.png,MRN-001,"Spot, left",back', b"b.png,MRN-001,\"Spot, left\",back", b""]
    )
    archive = _zip({"a.png": image_bytes(RED), "b.png": image_bytes(GREEN), "where.csv": csv_bytes})
    with run_on_commit():
        response = api.post(f"{API}/batches/", {"archive": archive}, format="multipart")
    assert response.status_code == 201, response.content
    assert response.json()["rejected"] == []
    assert Lesion.objects.filter(label="Spot, left").count() == 1


# --- Fuzzing each parser ----------------------------------------------------------------------

FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

CHARSETS = ["", "; charset=utf-8", "; charset=latin-1", "; charset=utf-16", "; charset=hex", "; charset=bz2_codec",
            "; charset=nonsense", '; charset="utf-8"']
# Text an attacker likes: control characters, NUL, quotes, lone surrogates' UTF-8 bytes, long runs.
HOSTILE_TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["\x00", "\r", "\r\n", "\n", "\\", '"', "'", "%00", "%ff", "&", "=", ";", "\u2028", "\ufeff",
                     "../../etc/passwd", "a" * 300]),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | HOSTILE_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(HOSTILE_TEXT, children, max_size=4),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from(["external_id", "name", "notes", "label", "body_site", "patient", "lesion", "image",
                               "diagnosis", "comment", "username", "password", "organisation", "captured_at",
                               "images", "archive", "sex", "date_of_birth"]) | HOSTILE_TEXT


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["value", "object", "mutated", "deep", "bytes"]))
    if kind == "value":
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "object":
        return json.dumps(draw(st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=6))).encode()
    if kind == "deep":
        opening = draw(st.integers(1, 3_000))
        return (draw(st.sampled_from(["[", '{"a":'])) * opening + "]" * draw(st.integers(0, opening))).encode()
    if kind == "mutated":  # a valid body with a slice cut out or garbage put in
        text = json.dumps(draw(st.dictionaries(FIELD_NAMES, JSON_VALUES, min_size=1, max_size=4))).encode()
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.binary(max_size=8)) + text[at + draw(st.integers(0, 8)):]
    return draw(st.binary(max_size=200))


@st.composite
def form_bodies(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    pairs = draw(st.lists(st.tuples(FIELD_NAMES, HOSTILE_TEXT), max_size=8))
    separator = draw(st.sampled_from(["&", ";", "&&", "="]))
    return separator.join(f"{k}={v}" for k, v in pairs).encode("utf-8", "surrogatepass")


@st.composite
def multipart_bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    """A multipart form that is sometimes right and often wrong: its boundary, its part headers
    (names, file names with NUL and paths, encodings), the data (sometimes a real PNG) and its end."""
    boundary = draw(st.sampled_from(["x", "----b0undary", "a" * 70, "é", " ", '"q"', ""]))
    declared = draw(st.sampled_from([boundary, boundary, "other", None]))
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(FIELD_NAMES)
        headers = [f'Content-Disposition: form-data; name="{name}"']
        if draw(st.booleans()):
            filename = draw(st.sampled_from(["a.png", "a\x00b.png", "../../x.png", "é.png", "", "a" * 300 + ".png"]))
            headers[0] += draw(st.sampled_from([f'; filename="{filename}"', f"; filename*=UTF-8''{filename}"]))
            headers.append(draw(st.sampled_from(["Content-Type: image/png", "Content-Type: text/plain; charset=rot13",
                                                 "Content-Transfer-Encoding: base64", "X: y"])))
        if draw(st.booleans()):
            headers = [draw(st.sampled_from(["Content-Disposition: attachment", "Content-Disposition: form-data",
                                             "Content-Disposition: form-data; name=", "garbage", ""]))]
        data = draw(st.one_of(st.binary(max_size=64), st.just(image_bytes(RED)), HOSTILE_TEXT.map(
            lambda text: text.encode("utf-8", "surrogatepass"))))
        parts.append("\r\n".join(headers).encode("utf-8", "surrogatepass") + b"\r\n\r\n" + data)
    delimiter = b"--" + boundary.encode()
    body = b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in parts) + delimiter + b"--\r\n"
    body = body[: draw(st.integers(0, len(body)))] if draw(st.booleans()) else body  # truncated
    content_type = "multipart/form-data" + ("" if declared is None else f"; boundary={declared}")
    return content_type + draw(st.sampled_from(CHARSETS)), body


def _api_answers_sanely(api: APIClient, method: str, path: str, content_type: str, body: bytes) -> None:
    """One example, rolled back: no 5xx; an error in the envelope; a refusal stores nothing."""
    with transaction.atomic():
        before = _stored()
        response = api.generic(method, path, body, content_type=content_type)
        assert response.status_code < 500, (method, path, content_type, body[:200], response.content[:300])
        if response.status_code >= 400:
            _assert_api_error(response)
            assert _stored() == before, (method, path, content_type, body[:200])
        transaction.set_rollback(True)


def _page_answers_sanely(client: Client, path: str, content_type: str, body: bytes) -> None:
    with transaction.atomic():
        before = _stored()
        response = client.generic("POST", path, body, content_type=content_type)
        assert response.status_code < 500, (path, content_type, body[:200], response.content[:300])
        if response.status_code >= 400:
            assert response["Content-Type"].startswith("text/html")
            assert _stored() == before, (path, content_type, body[:200])
        transaction.set_rollback(True)


def _operation(ids: dict[str, int], operations: list[tuple[str, str]]) -> st.SearchStrategy[tuple[str, str]]:
    return st.sampled_from([(method, _path(template, ids)) for method, template in operations])


def test_it_answers_any_json_body_on_any_json_operation_without_a_server_error(api, ids, high_rates) -> None:
    @FUZZ_SETTINGS
    @given(operation=_operation(ids, JSON_OPERATIONS), body=json_bodies(), charset=st.sampled_from(CHARSETS))
    def fuzz(operation: tuple[str, str], body: bytes, charset: str) -> None:
        _api_answers_sanely(api, *operation, "application/json" + charset, body)

    fuzz()


def test_it_answers_any_form_body_on_any_form_operation_without_a_server_error(api, ids, high_rates) -> None:
    @FUZZ_SETTINGS
    @given(operation=_operation(ids, FORM_OPERATIONS), body=form_bodies(), charset=st.sampled_from(CHARSETS))
    def fuzz(operation: tuple[str, str], body: bytes, charset: str) -> None:
        _api_answers_sanely(api, *operation, "application/x-www-form-urlencoded" + charset, body)

    fuzz()


def test_it_answers_any_multipart_body_on_any_multipart_operation_without_a_server_error(
    api, ids, high_rates
) -> None:
    @FUZZ_SETTINGS
    @given(operation=_operation(ids, MULTIPART_OPERATIONS), multipart=multipart_bodies())
    def fuzz(operation: tuple[str, str], multipart: tuple[str, bytes]) -> None:
        _api_answers_sanely(api, *operation, *multipart)

    fuzz()


def test_it_answers_any_body_on_the_token_endpoint_without_a_server_error(owner, high_rates) -> None:
    anonymous = APIClient()
    bodies = st.one_of(
        st.tuples(st.just("application/json"), json_bodies()),
        st.tuples(st.just("application/x-www-form-urlencoded"), form_bodies()),
        multipart_bodies(),
        st.tuples(st.just("application/json"), st.just(json.dumps({"username": "alice", "password": PASSWORD}).encode())),
    )

    @FUZZ_SETTINGS
    @given(body=bodies)
    def fuzz(body: tuple[str, bytes]) -> None:
        _api_answers_sanely(anonymous, "POST", f"{API}/auth/token/", *body)

    fuzz()


def test_it_answers_any_form_body_on_the_form_pages_without_a_server_error(client_for, owner, ids) -> None:
    client = client_for(owner)
    bodies = st.one_of(
        st.tuples(st.sampled_from(["application/x-www-form-urlencoded" + c for c in CHARSETS]), form_bodies()),
        multipart_bodies(),
    )

    @FUZZ_SETTINGS
    @given(page=st.sampled_from(PAGES), body=bodies)
    def fuzz(page: tuple[str, str | None], body: tuple[str, bytes]) -> None:
        _page_answers_sanely(client, _page(*page, ids), *body)

    fuzz()
