"""`manage.py backup` and `manage.py restore`: a round trip, and every refusal leaves things as they were.

"An empty database" is made with `flush` inside the test's transaction (rolled back afterwards), so
these tests need no transactional database; flush's post_migrate recreates contenttypes and
permissions as `migrate` would on a new machine.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.urls import reverse

from diagnosis import services
from diagnosis.models import ClinicianReview, LesionImage
from tests.portal.helpers import GREEN, PASSWORD, RED, image_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _forget_content_type_ids() -> Iterator[None]:
    """flush + post_migrate recreate content types with new ids inside the test's transaction; the
    manager's cache must not hand them to later tests after the rollback."""
    yield
    ContentType.objects.clear_cache()


@pytest.fixture
def populated(owner, colleague, reader, outsider, org, other_org, lesion, upload) -> list[LesionImage]:
    """Two organisations, three patients, four images, a review and an API token."""
    images = [upload(image_bytes(RED)), upload(image_bytes(GREEN), user=colleague)]
    second = services.patients.patient_create(
        user=colleague, organisation=org, external_id="MRN-002", name="Alan Turing"
    )
    second_lesion = services.patients.lesion_create(
        user=colleague, patient=second, body_site="face", label="Left cheek"
    )
    images.append(upload(image_bytes((40, 40, 200)), user=colleague, target=second_lesion))
    theirs = services.patients.patient_create(
        user=outsider, organisation=other_org, external_id="S-1", name="Grace Hopper"
    )
    their_lesion = services.patients.lesion_create(user=outsider, patient=theirs, body_site="back", label="Mid back")
    images.append(upload(image_bytes(RED, size=(120, 120)), user=outsider, target=their_lesion))
    services.reviews.review_create(
        user=colleague, image=images[0], diagnosis="mel", comment="Dermoscopy: atypical network"
    )
    services.accounts.api_token_create(user=owner)
    return images


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def _counts(labels: list[str] | dict[str, int]) -> dict[str, int]:
    return {label: apps.get_model(label)._base_manager.count() for label in labels}


def _stored_sha256(name: str) -> str:
    with default_storage.open(name, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _media_files(media_root: Path) -> dict[str, str]:
    """Every file under MEDIA_ROOT (relative path -> sha256)."""
    if not media_root.exists():
        return {}
    return {
        path.relative_to(media_root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in media_root.rglob("*")
        if path.is_file()
    }


def _back_up(tmp_path: Path) -> tuple[Path, dict]:
    folder = tmp_path / "backup"
    _run("backup", "--out", str(folder))
    return folder, json.loads((folder / "manifest.json").read_text())


def _empty_everything(media_root: Path) -> None:
    """A new machine: an empty, migrated database and an empty storage."""
    # PostgreSQL refuses to TRUNCATE tables with deferred foreign-key checks pending in this
    # transaction (the test's rows): run those checks now.
    connection.check_constraints()
    call_command("flush", interactive=False, verbosity=0)
    shutil.rmtree(media_root, ignore_errors=True)
    assert not User.objects.exists() and not LesionImage.objects.exists()


def _rewrite(folder: Path, change: Callable[[list[dict]], None]) -> None:
    """Edit database.json and give the manifest its new sha256: damage the checksums cannot catch."""
    database = folder / "database.json"
    rows = json.loads(database.read_text())
    change(rows)
    database.write_text(json.dumps(rows))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["database.json"] = hashlib.sha256(database.read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_it_round_trips_the_database_and_the_images(populated, tmp_path, _media_root, client: Client):
    hashes_before = {image.pk: _stored_sha256(image.file.name) for image in LesionImage.objects.all()}
    output = _run("backup", "--out", str(tmp_path / "backup"))
    folder = tmp_path / "backup"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "Backed up" in output and "4 image file(s)" in output and "store it encrypted" in output

    before = _counts(manifest["rows"])
    assert before == manifest["rows"]
    assert {
        label: before[label]
        for label in ("auth.user", "diagnosis.organisation", "diagnosis.patient", "diagnosis.lesionimage")
    } == {"auth.user": 4, "diagnosis.organisation": 2, "diagnosis.patient": 3, "diagnosis.lesionimage": 4}
    assert before["diagnosis.clinicianreview"] == 1 and before["diagnosis.classification"] == 4
    assert before["knox.authtoken"] == 1  # its digest: backups hold no key
    assert before["diagnosis.auditevent"] > 0  # append-only rows load too: loaddata uses save_base(raw=True)
    assert not {"contenttypes.contenttype", "auth.permission", "sessions.session"} & set(manifest["rows"])
    assert manifest["migrations"]["diagnosis"] and manifest["format_version"] == 1
    names = {image.file.name for image in LesionImage.objects.all()}
    assert set(manifest["files"]) == {"database.json"} | {f"media/{name}" for name in names}
    for relative, sha256 in manifest["files"].items():
        assert hashlib.sha256((folder / relative).read_bytes()).hexdigest() == sha256

    _empty_everything(_media_root)
    noted = re.search(r"manifest.json sha256: ([0-9a-f]{64})", output).group(1)
    output = _run("restore", str(folder), "--manifest-sha256", noted)

    assert "Restored" in output
    assert _counts(manifest["rows"]) == before
    for image in LesionImage.objects.all():
        assert _stored_sha256(image.file.name) == image.sha256 == hashes_before[image.pk]
    review = ClinicianReview.objects.get()
    assert (review.author.username, review.image_id, review.diagnosis) == ("bob", populated[0].pk, "mel")
    alice = User.objects.get(username="alice")
    assert alice.check_password(PASSWORD)
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302 and client.session["_auth_user_id"] == str(alice.pk)


def test_it_refuses_a_damaged_backup_and_writes_nothing(populated, tmp_path, _media_root):
    folder, manifest = _back_up(tmp_path)
    tampered, lost = sorted(name for name in manifest["files"] if name.startswith("media/"))[:2]
    data = bytearray((folder / tampered).read_bytes())
    data[-20] ^= 0xFF  # one flipped bit pattern, same size
    (folder / tampered).write_bytes(bytes(data))
    (folder / lost).unlink()
    _empty_everything(_media_root)

    with pytest.raises(CommandError, match="damaged") as refused:
        _run("restore", str(folder))

    assert f"{tampered} (sha256 differs" in str(refused.value) and f"{lost} (missing)" in str(refused.value)
    assert set(_counts(manifest["rows"]).values()) == {0}
    assert _media_files(_media_root) == {}


def test_it_refuses_to_restore_into_a_database_that_holds_data(populated, tmp_path, _media_root):
    folder, manifest = _back_up(tmp_path)
    counts, files = _counts(manifest["rows"]), _media_files(_media_root)

    with pytest.raises(CommandError, match=r"already holds data \(.*diagnosis\.lesionimage: 4"):
        _run("restore", str(folder))
    assert _counts(manifest["rows"]) == counts and _media_files(_media_root) == files

    # One user made by hand on the new machine is enough: loaddata would overwrite it.
    _empty_everything(_media_root)
    User.objects.create_user(username="admin", password=PASSWORD)
    with pytest.raises(CommandError, match=r"already holds data \(auth\.user: 1\)"):
        _run("restore", str(folder))
    assert _media_files(_media_root) == {} and not LesionImage.objects.exists()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(
            lambda rows: next(r for r in rows if r["model"] == "diagnosis.lesion")["fields"].update(patient=999_999),
            id="dangling-foreign-key",
        ),
        pytest.param(
            lambda rows: rows.remove(next(r for r in rows if r["model"] == "diagnosis.clinicianreview")),
            id="row-missing",
        ),
    ],
)
def test_it_deletes_the_images_it_wrote_when_loading_fails(populated, tmp_path, _media_root, damage):
    folder, manifest = _back_up(tmp_path)
    _rewrite(folder, damage)
    _empty_everything(_media_root)

    with pytest.raises(CommandError, match="Nothing was restored"):
        _run("restore", str(folder))

    assert set(_counts(manifest["rows"]).values()) == {0}
    assert _media_files(_media_root) == {}


def test_it_refuses_a_backup_from_another_migration_state(db, tmp_path):
    folder, manifest = _back_up(tmp_path)
    applied = manifest["migrations"]["diagnosis"]
    manifest["migrations"]["diagnosis"] = "9999_from_the_future"
    (folder / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(CommandError, match=f"diagnosis: backup 9999_from_the_future, database {applied}"):
        _run("restore", str(folder))


def test_it_refuses_a_manifest_that_differs_from_the_noted_sha256(db, tmp_path):
    output = _run("backup", "--out", str(tmp_path / "backup"))
    noted = re.search(r"manifest.json sha256: ([0-9a-f]{64})", output).group(1)
    manifest = tmp_path / "backup" / "manifest.json"
    assert hashlib.sha256(manifest.read_bytes()).hexdigest() == noted
    manifest.write_text(manifest.read_text().replace('"format_version": 1', '"format_version": 1 '))

    with pytest.raises(CommandError, match="the backup was changed"):
        _run("restore", str(tmp_path / "backup"), "--manifest-sha256", noted)


def test_it_refuses_manifest_paths_outside_the_backup(db, tmp_path):
    folder, manifest = _back_up(tmp_path)
    (tmp_path / "secret.txt").write_text("not part of the backup")
    manifest["files"]["media/../../secret.txt"] = hashlib.sha256(b"not part of the backup").hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(CommandError, match="Unsafe file name"):
        _run("restore", str(folder))


def test_it_refuses_to_back_up_into_a_folder_that_is_not_empty(db, tmp_path):
    folder = tmp_path / "backup"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")

    with pytest.raises(CommandError, match="not empty"):
        _run("backup", "--out", str(folder))

    assert [path.name for path in folder.iterdir()] == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "keep me"
