"""The API documentation a newcomer reads is what the API does.

* docs/api.md's sample answers are recorded from a real walkthrough (the curl steps of the page,
  made with the test client against the shipped model, ml/models/CURRENT), so they show the
  model version and threshold actually served. Each sample sits under a marker:

      <!-- sample: image-upload -->
      ```json
      {...}
      ```

  Ids come from a fresh database (sequences reset); what changes on every run is replaced by
  fixed example values (VOLATILE below: tokens, timestamps, uuids, hashes, timings), and numbers
  are rounded to 4 decimals in the page and compared to within 1e-3.
  Rewrite the samples with `.venv/bin/python scripts/api_samples.py` (the same as
  UPDATE_API_SAMPLES=1 on this test), e.g. after the served model changes.
* The ReDoc and Swagger UI pages and the OpenAPI schema point to no other host (the CSP would
  block it and log a console error), and the ReDoc bundle is our copy without the CDN logo
  (scripts/redoc_bundle.py).
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import re
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest
from django.contrib.staticfiles import finders
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from rest_framework.test import APIClient

from tests.portal.helpers import PASSWORD, REPO_ROOT

API_DOC = REPO_ROOT / "docs" / "api.md"
HOST = "127.0.0.1:8000"  # the address of `make run`, as in the page's curl examples
API = "/api/v1"
UPDATE_ENV = "UPDATE_API_SAMPLES"
REGENERATE = (
    f"regenerate them with `.venv/bin/python scripts/api_samples.py` (or {UPDATE_ENV}=1 .venv/bin/python -m pytest "
    "tests/portal/test_api_docs.py) and commit docs/api.md"
)
SAMPLE_BLOCK = re.compile(r"(<!-- sample: (?P<name>[a-z0-9-]+) -->\n```json\n)(?P<body>.*?)(\n```)", re.DOTALL)

# --- What changes from run to run, and the fixed example value the page shows instead ---------

EXAMPLE_TOKEN = "6f9a2ed73b6d92026edcef4e9258379bcedb4ef7a81c3d05e6f1b2a9c4d7e8f0"
EXAMPLE_SHA256 = "cb4a5e0f" * 8
EXAMPLE_UUID = "3f2b8c1e-7d4a-4e5b-9c6d-0a1b2c3d4e5f"
EXAMPLE_MS = 9.5
DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?P<fraction>\.\d+)?(?P<zone>Z|[+-]\d\d:\d\d)?$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
VOLATILE_KEYS: dict[str, Any] = {"token": EXAMPLE_TOKEN, "sha256": EXAMPLE_SHA256, "inference_ms": EXAMPLE_MS}


def normalised(value: Any, key: str | None = None) -> Any:
    """`value` with every volatile field replaced by its fixed example value and numbers rounded."""
    if isinstance(value, dict):
        return {k: normalised(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    if key in VOLATILE_KEYS and value is not None:
        return VOLATILE_KEYS[key]
    if isinstance(value, str):
        if match := DATETIME.match(value):
            fraction = "." + "0" * (len(match["fraction"]) - 1) if match["fraction"] else ""
            return f"2024-05-01T09:30:00{fraction}{match['zone'] or ''}"
        if UUID.match(value):
            return EXAMPLE_UUID
    if isinstance(value, float):
        return round(value, 4)
    return value


def differences(documented: Any, answered: Any, path: str = "$") -> list[str]:
    """Where the page's sample and the (normalised) answer differ; floats to within 1e-3."""
    if isinstance(documented, dict) and isinstance(answered, dict):
        found = [f"{path}.{k}: in the page, not in the answer" for k in documented if k not in answered]
        found += [f"{path}.{k}: in the answer, not in the page" for k in answered if k not in documented]
        for k in documented.keys() & answered.keys():
            found += differences(documented[k], answered[k], f"{path}.{k}")
        return found
    if isinstance(documented, list) and isinstance(answered, list) and len(documented) == len(answered):
        return [d for i, (a, b) in enumerate(zip(documented, answered)) for d in differences(a, b, f"{path}[{i}]")]
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (documented, answered))
    if numbers and math.isclose(documented, answered, rel_tol=0, abs_tol=1e-3):
        return []
    if documented == answered and type(documented) is type(answered):
        return []
    return [f"{path}: the page says {json.dumps(documented)}, the API answers {json.dumps(answered)}"]


def render(value: Any, indent: int = 0, prefix: int = 0, width: int = 110) -> str:
    """JSON as a person would lay it out: a value on one line when it fits in `width`."""
    flat = json.dumps(value, ensure_ascii=False)
    if not isinstance(value, (dict, list)) or not value or indent + prefix + len(flat) + 1 <= width:
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        lines = [
            f"{pad}{json.dumps(k)}: {render(v, indent + 2, len(json.dumps(k)) + 2, width)}" for k, v in value.items()
        ]
        return "{\n" + ",\n".join(lines) + "\n" + " " * indent + "}"
    lines = [pad + render(v, indent + 2, 0, width) for v in value]
    return "[\n" + ",\n".join(lines) + "\n" + " " * indent + "]"


def documented_samples(text: str) -> dict[str, str]:
    return {m["name"]: m["body"] for m in SAMPLE_BLOCK.finditer(text)}


# --- The walkthrough of docs/api.md, made for real ----------------------------------------------


def dermatoscopy_jpeg(*, size: tuple[int, int] = (600, 450), seed: int = 0, tone: int = 0) -> bytes:
    """A made-up dermatoscopic picture: a brown blotch with a darker centre on skin, as a JPEG."""
    width, height = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = width * (0.5 + 0.04 * seed), height * (0.5 - 0.03 * seed)
    r = np.sqrt(((xx - cx) / (0.28 * width)) ** 2 + ((yy - cy) / (0.3 * height)) ** 2)
    lesion = np.clip(1.4 - r, 0, 1)[..., None] ** 0.7
    core = np.clip(1.0 - 2.2 * r, 0, 1)[..., None]
    skin = np.array([214, 168, 150], np.float32) - tone
    brown = np.array([128, 82, 62], np.float32) - tone
    dark = np.array([70, 44, 38], np.float32)
    rgb = skin * (1 - lesion) + brown * lesion
    rgb = rgb * (1 - core) + dark * core
    rgb += rng.normal(0, 6, rgb.shape)
    rgb = cv2.GaussianBlur(np.clip(rgb, 0, 255).astype(np.uint8), (5, 5), 0)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return data.tobytes()


def _jpeg(name: str, **kwargs: Any) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, dermatoscopy_jpeg(**kwargs), content_type="image/jpeg")


def record_walkthrough() -> dict[str, Any]:
    """Make docs/api.md's requests in its order; sample name -> the JSON answered."""
    call_command("demo", password="demo-walkthrough-password", stdout=io.StringIO())
    api = APIClient(HTTP_HOST=HOST)
    answers: dict[str, Any] = {}

    def call(name: str, status: int, method: str, path: str, data: Any = None, encoding: str | None = None) -> Any:
        response = getattr(api, method)(f"{API}{path}", data, format=encoding)
        assert response.status_code == status, (name, response.status_code, response.content[:2000])
        answers[name] = response.json()
        return answers[name]

    login = {"username": "demo", "password": "demo-walkthrough-password"}
    api.credentials(HTTP_AUTHORIZATION=f"Token {call('token', 200, 'post', '/auth/token/', login, 'json')['token']}")
    call("me", 200, "get", "/me/")
    patient = {"external_id": "MRN-1001", "name": "Jane Doe", "date_of_birth": "1980-02-03", "sex": "female"}
    patient_id = call("patient-create", 201, "post", "/patients/", patient, "json")["id"]
    lesion = {"patient": patient_id, "body_site": "back", "label": "Left scapula"}
    lesion_id = call("lesion-create", 201, "post", "/lesions/", lesion, "json")["id"]
    upload = {"lesion": lesion_id, "image": _jpeg("dermatoscopy.jpg"), "captured_at": "2024-05-01"}
    image_id = call("image-upload", 201, "post", "/images/", upload, "multipart")["id"]
    call("classification-list", 200, "get", "/classifications/", {"patient": patient_id})
    review = {"image": image_id, "diagnosis": "nv", "histopathology_confirmed": False, "comment": "Stable since 2023"}
    call("review-create", 201, "post", "/reviews/", review, "json")
    files = [
        _jpeg("a.jpg", size=(450, 450), seed=1, tone=20),
        _jpeg("b.jpg", size=(600, 400), seed=2, tone=-15),
        SimpleUploadedFile("notes.txt", b"follow-up in 6 months\n", content_type="text/plain"),
    ]
    batch = {"lesion": lesion_id, "captured_at": "2024-05-01", "images": files}
    call("batch-create", 201, "post", "/batches/", batch, "multipart")
    not_an_image = SimpleUploadedFile("lesion.txt", b"not an image", content_type="text/plain")
    call("error", 400, "post", "/images/", {"lesion": lesion_id, "image": not_an_image}, "multipart")
    call("model", 200, "get", "/model/")
    return answers


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, reset_sequences=True)
def test_the_api_pages_samples_are_what_the_shipped_model_answers(shipped_model, settings):
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, HOST.split(":")[0]]
    answers = {name: normalised(value) for name, value in record_walkthrough().items()}
    served = answers["image-upload"]["classification"]
    assert served["status"] == "succeeded" and served["model_version"] == shipped_model, served
    text = API_DOC.read_text(encoding="utf-8")
    documented = documented_samples(text)
    missing = [name for name in answers if name not in documented]
    unknown = [name for name in documented if name not in answers]
    assert not missing and not unknown, (
        f"docs/api.md: samples without a `<!-- sample: NAME -->` + ```json block: {missing}; "
        f"markers this test does not record: {unknown}"
    )

    if os.environ.get(UPDATE_ENV) == "1":
        rewritten = SAMPLE_BLOCK.sub(lambda m: m[1] + render(answers[m["name"]]) + m[4], text)
        if rewritten != text:
            API_DOC.write_text(rewritten, encoding="utf-8")
        text = rewritten
        documented = documented_samples(text)

    stale = {}
    for name, answer in answers.items():
        try:
            found = differences(json.loads(documented[name]), answer)
        except json.JSONDecodeError as error:
            found = [f"not JSON: {error}"]
        if found:
            stale[name] = found
    report = "\n".join(f"  {name}: " + "; ".join(found[:6]) for name, found in stale.items())
    assert not stale, (
        f"docs/api.md's samples are not what the API answers now (served model {shipped_model}, "
        f"threshold {served['threshold']}):\n{report}\n{REGENERATE}"
    )
    # The page's prose names no other model than the one served (a segmenter's "seg-..." is another kind).
    versions = set(re.findall(r"(?<!seg-)mnv2-ham10000-v[\w.-]*\w", text))
    assert versions <= {shipped_model}, f"docs/api.md names {sorted(versions - {shipped_model})}; {REGENERATE}"


def test_the_sample_normalisation_keeps_what_matters():
    answer = {
        "token": "0123456789abcdef0123456789abcdef01234567",
        "created_at": "2026-12-01T23:59:01.123456Z",
        "classification": {"model_version": "mnv2-ham10000-v2", "threshold": 0.123456, "inference_ms": 3.21},
    }
    shown = normalised(answer)
    assert shown == {
        "token": EXAMPLE_TOKEN,
        "created_at": "2024-05-01T09:30:00.000000Z",
        "classification": {"model_version": "mnv2-ham10000-v2", "threshold": 0.1235, "inference_ms": EXAMPLE_MS},
    }
    assert differences(json.loads(render(shown)), shown) == []
    other_model = {**shown, "classification": {**shown["classification"], "model_version": "mnv2-ham10000-v3"}}
    assert differences(shown, other_model) == [
        '$.classification.model_version: the page says "mnv2-ham10000-v2", the API answers "mnv2-ham10000-v3"'
    ]
    assert differences({"threshold": 0.35}, {"threshold": 0.3512}) == [
        "$.threshold: the page says 0.35, the API answers 0.3512"
    ]


# --- The documentation pages load nothing from elsewhere ----------------------------------------

URL = re.compile(r"""https?://[^\s"'<>)\\]+""")


# "cdn" as a word or host label, not inside a random token.
CDN_MENTION = re.compile(r"(?<![a-z0-9])cdn(?![a-z0-9])", re.IGNORECASE)
# Names reserved for examples (RFC 2606) point to no one's server: DRF's pagination schema shows
# "next": "http://api.example.org/accounts/?page=4" as an example value, which nothing loads.
EXAMPLE_HOST = re.compile(r"^([\w-]+\.)*example\.(org|com|net)$")


def _outside_urls(text: str, own_host: str) -> list[str]:
    hosts = {url: urlsplit(url).hostname or "" for url in URL.findall(text)}
    return sorted(
        url for url, host in hosts.items() if urlsplit(url).netloc != own_host and not EXAMPLE_HOST.match(host)
    )


def test_the_api_docs_pages_and_schema_point_to_no_other_host(owner, client_for):
    client = client_for(owner)
    pages = {
        "Swagger UI": client.get(f"{API}/docs/"),
        "Swagger UI set-up script": client.get(f"{API}/docs/", {"script": ""}),
        "ReDoc": client.get(f"{API}/redoc/"),
        "schema (YAML)": client.get(f"{API}/schema/"),
        "schema (JSON)": client.get(f"{API}/schema/", {"format": "json"}),
    }
    for name, response in pages.items():
        assert response.status_code == 200, name
        text = response.content.decode()
        assert _outside_urls(text, "testserver") == [], name
        # "cdn" as a word or host label, not inside the page's random CSRF token (which once held "...hcdnl...").
        assert not CDN_MENTION.search(text), name
    schema = pages["schema (JSON)"].json()
    assert all(not urlsplit(server["url"]).netloc for server in schema.get("servers", [])), schema["servers"]

    # The scripts the two pages load are served from here; ReDoc's is our copy without the CDN logo.
    scripts = re.findall(
        r'<script src="([^"]+)"', pages["ReDoc"].content.decode() + pages["Swagger UI"].content.decode()
    )
    assert scripts and all(not urlsplit(src).netloc for src in scripts), scripts
    redoc_scripts = re.findall(r'<script src="([^"]+)"', pages["ReDoc"].content.decode())
    assert redoc_scripts == ["/static/redoc/redoc.standalone.js"], redoc_scripts
    bundle = finders.find("redoc/redoc.standalone.js")
    assert bundle, "static/redoc/redoc.standalone.js is missing: run .venv/bin/python scripts/redoc_bundle.py"
    # The sidecar's own bundle loads its side menu's logo from cdn.redoc.ly; the copy served does not.
    with open(bundle, encoding="utf-8") as served:
        assert "https://cdn.redoc.ly/" not in served.read()


def test_the_redoc_copy_is_the_installed_sidecars_without_the_logo():
    spec = importlib.util.spec_from_file_location("redoc_bundle", REPO_ROOT / "scripts" / "redoc_bundle.py")
    redoc_bundle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(redoc_bundle)
    stale = redoc_bundle.stale_files()
    assert stale == [], (
        f"static/redoc/ ({', '.join(stale)}) is not the installed drf-spectacular-sidecar's ReDoc minus the CDN "
        "logo: run .venv/bin/python scripts/redoc_bundle.py and commit static/redoc/"
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_browser_opens_the_api_docs_pages_with_no_request_elsewhere_and_no_console_error(
    owner, live_server, browser_page
):
    """What a visitor's browser does: the ReDoc page used to ask cdn.redoc.ly for a logo, which the
    CSP refused with a console error. Skips, saying why, without chromium (as test_browser.py)."""
    own_host = urlsplit(live_server.url).netloc
    elsewhere: list[str] = []
    errors: list[str] = []
    page = browser_page
    page.on(
        "request",
        lambda r: (
            elsewhere.append(r.url)
            if urlsplit(r.url).netloc not in ("", own_host) and urlsplit(r.url).scheme in ("http", "https")
            else None
        ),
    )
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", owner.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    # From here on (the login page's own favicon 404 is not the docs' business).
    page.on(
        "console", lambda m: errors.append(f"{page.url}: {m.text} {m.location}") if m.type == "error" else None
    )
    page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))

    page.goto(f"{live_server.url}{API}/redoc/")
    page.wait_for_selector("text=API docs by Redocly")  # the side menu's footer, where the logo was
    page.wait_for_selector("h1:has-text('SkinPortal API')")
    page.wait_for_load_state("networkidle")
    assert page.locator(".menu-content img").count() == 0

    page.goto(f"{live_server.url}{API}/docs/")
    page.wait_for_selector(".swagger-ui .info")
    page.wait_for_load_state("networkidle")
    assert elsewhere == [] and errors == [], (elsewhere, errors)


# --- What the schema tells, and to whom --------------------------------------------------------


def _schema(api) -> dict[str, Any]:
    response = api.get(f"{API}/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_it_describes_every_operation_for_integrators_never_with_a_base_class_note(owner, api_for):
    """drf-spectacular used the view's docstring, inherited ones included: ScopedApiView's note on
    how scoping works ("after DRF authenticated the caller ... scoped selector ...") was the public
    description of 15 operations. Every operation has its own description now, and none repeats a
    base class's docstring or the code's vocabulary."""
    from rest_framework.views import APIView

    from diagnosis.api.views import PaginatedListMixin, ScopedApiView

    base_notes = [" ".join(c.__doc__.split()) for c in (ScopedApiView, PaginatedListMixin, APIView) if c.__doc__]
    internal_words = re.compile(r"\b(selectors?|ScopedApiView|DRF|[Qq]uery[Ss]et|docstring|middleware|ORM)\b")
    operations = [(p, m, op) for p, ops in _schema(api_for(owner))["paths"].items() for m, op in ops.items()]
    assert operations
    for path, method, operation in operations:
        description = " ".join(operation.get("description", "").split())
        assert description, f"{method.upper()} {path}: no description (diagnosis/api/schema.py OPERATION_DESCRIPTIONS)"
        assert not [note for note in base_notes if note[:60] in description], (method, path)
        assert not internal_words.search(description), (method, path, description)


@pytest.mark.parametrize(
    "version",
    ['1"; filename="evil.html', "1\r\nSet-Cookie: stolen=1", "2", "../../etc/passwd", "", "<script>"],
)
def test_it_refuses_an_unknown_version_instead_of_writing_it_into_a_header(version, owner, api_for):
    response = api_for(owner).get(f"{API}/schema/", {"version": version})
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert "Content-Disposition" not in response
    assert response.json()["error"]["fields"]["version"] == ["Unknown API version; this server documents version 1."]


def test_it_names_the_schema_file_after_the_served_version(owner, api_for):
    api = api_for(owner)
    assert api.get(f"{API}/schema/")["Content-Disposition"] == 'inline; filename="SkinPortal API.yaml"'
    named = api.get(f"{API}/schema/", {"version": "1", "format": "json"})
    assert named.status_code == 200 and named["Content-Disposition"] == 'inline; filename="SkinPortal API (1).json"'


def test_it_shows_the_schema_and_docs_only_after_a_login(client, owner, api_for):
    schema = client.get(f"{API}/schema/")
    assert schema.status_code == 401 and schema.json()["error"]["code"] == "not_authenticated"
    for page in (f"{API}/docs/", f"{API}/redoc/"):
        response = client.get(page)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next="), page
    assert api_for(owner).get(f"{API}/schema/").status_code == 200  # a token holder reads the schema
