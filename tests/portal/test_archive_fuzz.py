"""Hypothesis-generated ZIP archives into the batch endpoint (issue 13, defect 4).

Each archive holds a few members (real PNGs, a PNG too small to classify, a truncated one,
random bytes, an empty file) under generated names, and sometimes a CSV saying where each goes,
its cells drawn from the right values (the patient's external id, the lesion's label, a body
site, a date) and from hostile ones (NUL and other control characters, a bare CR, quotes,
commas, cells past every limit, text that is not UTF-8), with either line end, sometimes a BOM;
sometimes the ZIP itself is cut short or has a byte changed.

Whatever comes in: the answer is 201 or a 400 in the error format, never a 500; a refused batch
leaves every row and every stored file as it was; a stored batch holds at least one image, is
finished once its classifications ran (never left running) and created no lesion without an
image. Each example is rolled back, so all start from the same patient and lesion.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diagnosis import selectors
from diagnosis.archives import CSV_MAX_CELL_CHARS
from diagnosis.models import Batch, Lesion, LesionImage
from tests.portal.helpers import GREEN, RED, image_bytes
from tests.portal.test_malformed_input import _assert_api_error, _stored

pytestmark = pytest.mark.django_db

API = "/api/v1"
# Each example stores and classifies up to a few images (the stand-in model): about 0.1-0.3 s.
MAX_EXAMPLES = 60

PNG_RED, PNG_GREEN = image_bytes(RED), image_bytes(GREEN)


# Half the archives are what a clinic sends (real images with plain names, a sound CSV, the odd bad
# file among them: a partly stored batch), half are hostile in every part, so both the stored and
# the refused path are exercised.
GOOD_DATA = st.sampled_from([PNG_RED, PNG_GREEN, PNG_GREEN, PNG_RED, PNG_RED[:300]])
HOSTILE_DATA = st.sampled_from(
    [PNG_RED, image_bytes(RED, size=(40, 40)), PNG_RED[:300], b"", b"\x89PNG\r\n\x1a\n"]
) | st.binary(max_size=64)
GOOD_NAMES = st.sampled_from(["a.png", "b.png", "dir/c.png", "C.PNG", "é.png", "sp ace.png"])
HOSTILE_NAMES = st.sampled_from(
    ["a.png", "__MACOSX/._a.png", ".hidden.png", "../up.png", "/abs.png", "win\\path.png", "x" * 300 + ".png",
     "notes.txt", "a\x00b.png"]
) | st.text(min_size=1, max_size=12).filter(lambda name: name.split("\x00")[0])  # zipfile cuts at NUL
GOOD_CELLS = {
    "patient": st.sampled_from(["MRN-001", ""]),
    "lesion": st.sampled_from(["Upper back, left", "", "New spot", "Spot, with a comma"]),
    "body_site": st.sampled_from(["back", "", "BACK", "face"]),
    "date": st.sampled_from(["2024-05-01", ""]),
}
HOSTILE_CELLS = st.sampled_from(
    ["\x00", "a\x00b", "\r", "a\rb", "\x1b[31m", "\x7f", '"', 'a"b', ",", "\n", "\ufeff", "\u2028", "NOPE",
     "nowhere", "3000-01-01", "01/05/2024", "L" * (CSV_MAX_CELL_CHARS + 1), "x" * 140_000, "=1+1", "   "]
) | st.text(max_size=20)
GOOD_HEADER = ["file", "patient", "lesion", "body_site", "captured_at"]
HOSTILE_HEADERS = st.sampled_from(
    [GOOD_HEADER, ["filename", "patient_id", "label", "site", "date"], ["Image", "External ID", "Lesion"], ["file"],
     ["patient", "lesion"], ["file", "file", "patient"], []]
)


def _column(header: str) -> str:
    header = header.lower()
    return next((key for key in GOOD_CELLS if key in header or (key == "date" and "captured" in header)), "file")


@st.composite
def csvs(draw: st.DrawFn, names: list[str], *, hostile: bool) -> bytes:
    header = draw(HOSTILE_HEADERS) if hostile else GOOD_HEADER
    rows = []
    for _ in range(draw(st.integers(0 if hostile else 1, 5))):
        cells = []
        for column in map(_column, header):
            good = st.sampled_from([*names, "missing.png"]) if column == "file" else GOOD_CELLS[column]
            cells.append(draw(HOSTILE_CELLS if hostile and draw(st.integers(0, 2)) == 0 else good))
        rows.append(cells)
    buffer = io.StringIO(newline="")
    line_ends = ["\n", "\r\n", "\r"] if hostile else ["\n", "\r\n"]
    writer = csv.writer(buffer, lineterminator=draw(st.sampled_from(line_ends)),
                        quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])))
    writer.writerows([header, *rows] if header else rows)
    text = buffer.getvalue()
    encodings = ["utf-8", "bom", "latin-1", "garbled"] if hostile else ["utf-8", "bom"]
    match draw(st.sampled_from(encodings)):
        case "bom":
            return b"\xef\xbb\xbf" + text.encode("utf-8", "surrogatepass")
        case "latin-1":
            return text.encode("latin-1", "replace")
        case "garbled":
            encoded = text.encode("utf-8", "surrogatepass")
            at = draw(st.integers(0, len(encoded)))
            return encoded[:at] + draw(st.binary(min_size=1, max_size=4)) + encoded[at:]
    return text.encode("utf-8", "surrogatepass")


@st.composite
def archives(draw: st.DrawFn) -> bytes:
    hostile = draw(st.booleans())
    names, data = (HOSTILE_NAMES, HOSTILE_DATA) if hostile else (GOOD_NAMES, GOOD_DATA)
    members = draw(st.dictionaries(names, data, min_size=1, max_size=4))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))) as archive:
        for name, member in members.items():
            archive.writestr(name, member)
        if draw(st.integers(0, 2)):  # two in three carry a CSV
            csv_bytes = draw(csvs([name.split("\x00")[0] for name in members], hostile=hostile))
            archive.writestr(draw(st.sampled_from(["where.csv", "dir/WHERE.CSV"])), csv_bytes)
    whole = buffer.getvalue()
    match draw(st.sampled_from(["whole", "cut", "flipped"])) if hostile else "whole":
        case "cut":
            return whole[: draw(st.integers(0, len(whole)))]
        case "flipped":
            at = draw(st.integers(0, len(whole) - 1))
            return whole[:at] + bytes([whole[at] ^ 0xFF]) + whole[at + 1 :]
    return whole


def _files(media_root: Path) -> set[Path]:
    return {path for path in media_root.rglob("*") if path.is_file()} if media_root.exists() else set()


@pytest.fixture
def high_rates(settings) -> None:
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "uploads": "100000/minute"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}


def test_it_answers_any_generated_archive_without_a_server_error_or_a_half_stored_batch(
    api_for, owner, lesion, run_on_commit, high_rates, _media_root
) -> None:
    api = api_for(owner)

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(archive=archives(), with_lesion=st.sampled_from([True, True, False]))
    def fuzz(archive: bytes, with_lesion: bool) -> None:
        payload: dict[str, Any] = {"archive": SimpleUploadedFile("session.zip", archive, content_type="application/zip")}
        if with_lesion:
            payload["lesion"] = lesion.pk
        with transaction.atomic():
            before, files_before = _stored(), _files(_media_root)
            with run_on_commit():
                response = api.post(f"{API}/batches/", payload, format="multipart")
            assert response.status_code in (201, 400), (response.status_code, response.content[:500])
            if response.status_code == 400:
                _assert_api_error(response, 400)
                assert _stored() == before, response.json()
                assert _files(_media_root) == files_before
            else:
                batch = Batch.objects.get(pk=response.json()["id"])
                progress = selectors.batch_progress(batch=batch)
                assert progress.total >= 1 and progress.queued == progress.running == 0, progress
                assert all(set(r) == {"name", "error"} and r["error"] for r in batch.rejected)
                new_lesions = Lesion.objects.exclude(pk__in=[row["id"] for row in before["Lesion"]])
                assert not new_lesions.exclude(images__batch=batch).exists(), "a lesion created without an image"
            assert not Batch.objects.exclude(pk__in=LesionImage.objects.values("batch")).exists(), "an empty batch"
            transaction.set_rollback(True)

    fuzz()


def test_it_creates_no_lesion_for_a_file_it_refuses(api_for, owner, lesion, run_on_commit) -> None:
    """Found by the fuzz above (on PostgreSQL): the lesion a CSV row names was created before its
    file was checked, and stayed when the file was refused and the rest of the batch stored."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("good.png", PNG_RED)
        archive.writestr("cut.png", PNG_RED[:300])
        archive.writestr("where.csv", 'file,patient,lesion\ngood.png,MRN-001,"Upper back, left"\ncut.png,MRN-001,New spot\n')
    zipped = SimpleUploadedFile("session.zip", buffer.getvalue(), content_type="application/zip")
    with run_on_commit():
        response = api_for(owner).post(f"{API}/batches/", {"archive": zipped}, format="multipart")
    assert response.status_code == 201 and [r["name"] for r in response.json()["rejected"]] == ["cut.png"]
    assert not Lesion.objects.filter(label="New spot").exists()
