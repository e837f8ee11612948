"""Backup and restore of the whole portal: every database row and every stored image.

A backup is a folder:

    database.json   `dumpdata` of every app, pks kept (the audit trail refers to plain ids); left
                    out: contenttypes and permissions (`migrate` recreates them), sessions and
                    the admin's change log
    media/<name>    every stored file (LesionImage.file) under its storage name, read through the
                    storage (local folder or S3), so restoring writes it back at the same name
    manifest.json   format version, creation time, migration state, row counts per model and the
                    sha256 of database.json and of every media file

Restore is for an empty, freshly migrated database at the same migration state. It checks
everything it can before writing anything (fail closed), and undoes what it wrote when loading
fails, so a refused or failed restore leaves the database and the storage as they were.
docs/backup.md is the operator's guide.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import posixpath
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from django.apps import apps
from django.core.files import File
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.db import connection, models, router, transaction
from django.db.migrations.loader import MigrationLoader

from diagnosis.models import LesionImage

FORMAT = "skinportal-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATABASE = "database.json"
MEDIA = "media"
# Recreated by `migrate` (contenttypes, permissions: referenced by natural key instead, since their
# ids differ between databases) or not worth keeping (sessions: users log in again; the admin's
# change log refers to objects by content type and text id).
EXCLUDED = ("contenttypes", "auth.permission", "sessions", "admin.logentry")
CHUNK = 1024 * 1024


class BackupError(Exception):
    """A backup or restore that was refused or failed; the message says why and what to do."""


@dataclass(frozen=True)
class BackupSummary:
    directory: Path
    rows: dict[str, int]  # model label -> rows
    media_files: int
    media_bytes: int
    database_bytes: int
    manifest_sha256: str
    reused_media: int = 0  # restore: files that were already in the storage with the right content
    warnings: list[str] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def _excluded_labels() -> list[str]:
    """EXCLUDED, less the apps this deployment does not install (dumpdata refuses unknown labels)."""
    installed = {config.label for config in apps.get_app_configs()}
    return [label for label in EXCLUDED if label.split(".")[0] in installed]


def _dumped_models() -> list[type[models.Model]]:
    """The models `dumpdata` serialises with our exclusions (its own rules: no proxies, routed here)."""
    excluded = set(_excluded_labels())
    found: list[type[models.Model]] = []
    for config in apps.get_app_configs():
        if config.models_module is None or config.label in excluded:
            continue
        for model in config.get_models():
            if model._meta.label_lower in excluded or model._meta.proxy:
                continue
            if router.allow_migrate_model(connection.alias, model):
                found.append(model)
    return found


def _row_counts() -> dict[str, int]:
    # The base manager, as dumpdata --all: a custom default manager must not hide rows.
    return {model._meta.label_lower: model._base_manager.count() for model in _dumped_models()}


def _file_fields() -> list[tuple[type[models.Model], models.FileField]]:
    """Every FileField of the backed-up models (today LesionImage.file); all use the default storage."""
    found = []
    for model in _dumped_models():
        for model_field in model._meta.concrete_fields:
            if isinstance(model_field, models.FileField):
                if model_field.storage is not default_storage:
                    raise BackupError(
                        f"{model._meta.label}.{model_field.name} uses its own storage; backups only cover the "
                        "default storage."
                    )
                found.append((model, model_field))
    return found


def _stored_names() -> set[str]:
    names: set[str] = set()
    for model, model_field in _file_fields():
        queryset = model._base_manager.exclude(**{f"{model_field.attname}__isnull": True})
        names.update(queryset.exclude(**{model_field.attname: ""}).values_list(model_field.attname, flat=True))
    return names


def _expected_sha256() -> dict[str, str]:
    """Storage name -> the sha256 recorded for the stored file (LesionImage.sha256), to warn about
    a file that changed in the storage since it was uploaded."""
    return dict(LesionImage._base_manager.values_list("file", "sha256"))


def _migration_state() -> dict[str, str]:
    """Latest applied migration per app (several joined by '+' if an app has unmerged branches)."""
    loader = MigrationLoader(connection, ignore_no_migrations=True)
    applied = {key for key in loader.applied_migrations if key in loader.graph.nodes}
    state: dict[str, str] = {}
    for app_label in sorted({app for app, _ in applied}):
        mine = {key for key in applied if key[0] == app_label}
        leaves = sorted(
            name
            for app, name in mine
            if not any(child.key in mine for child in loader.graph.node_map[(app, name)].children)
        )
        state[app_label] = "+".join(leaves)
    return state


@contextmanager
def _snapshot() -> Iterator[None]:
    """One transaction for the dump, the counts and the file list, so they agree with each other.

    PostgreSQL's default READ COMMITTED takes a new snapshot per statement: rows added while the
    dump runs could appear in one table and not in another. REPEATABLE READ (what pg_dump uses)
    fixes one snapshot for the whole transaction without blocking writers. SQLite's transaction
    is serializable already (writers wait, up to the busy timeout, until the dump is done).
    """
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


# --- Files -------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256_stored(name: str) -> str:
    digest = hashlib.sha256()
    with default_storage.open(name, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _safe_relative(name: str) -> PurePosixPath:
    """A storage name or manifest entry as a path that cannot leave the backup folder."""
    path = PurePosixPath(name)
    if (
        not name
        or "\\" in name
        or path.is_absolute()
        or posixpath.normpath(name) != name
        or any(part in ("", ".", "..") for part in path.parts)
    ):
        raise BackupError(f"Unsafe file name {name!r}: refusing to read or write it.")
    return path


def _copy_from_storage(name: str, target: Path) -> tuple[str, int]:
    """Stream one stored file into the backup; returns (sha256, size)."""
    digest, size = hashlib.sha256(), 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with default_storage.open(name, "rb") as src, target.open("xb") as dst:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            dst.write(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _empty_folder(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


# --- Backup ------------------------------------------------------------------------------------


def backup_create(*, out_dir: Path) -> BackupSummary:
    """Write a complete backup to out_dir, which must not exist or be empty.

    The rows, the counts and the list of files come from one database snapshot. Files are copied
    after it: stored names are generated and never reused, so a file's content cannot change
    between the snapshot and the copy; a file that is missing fails the backup (an incomplete
    backup is worse than none). A failed backup leaves out_dir empty; manifest.json is written
    last, so a folder without it is never mistaken for a complete backup.
    """
    out_dir = out_dir.resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise BackupError(f"{out_dir} exists and is not a folder.")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise BackupError(f"{out_dir} is not empty; back up into a new or empty folder.")
    created_dir = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _backup_into(out_dir)
    except BaseException:
        if created_dir:
            shutil.rmtree(out_dir, ignore_errors=True)
        else:
            _empty_folder(out_dir)
        raise


def _backup_into(out_dir: Path) -> BackupSummary:
    database_path = out_dir / DATABASE
    with _snapshot():
        migrations = _migration_state()
        rows = _row_counts()
        names = _stored_names()
        expected_sha256 = _expected_sha256()
        call_command(
            "dumpdata",
            exclude=_excluded_labels(),
            natural_foreign=True,  # contenttypes and permissions by natural key: their ids differ per database
            use_base_manager=True,
            format="json",
            output=str(database_path),
            verbosity=0,
            stdout=io.StringIO(),  # no progress bar
        )
    files = {DATABASE: _sha256_file(database_path)}
    media_bytes, missing, warnings = 0, [], []
    for name in sorted(names):
        relative = PurePosixPath(MEDIA) / _safe_relative(name)
        try:
            sha256, size = _copy_from_storage(name, out_dir / relative)
        except FileNotFoundError:
            missing.append(name)
            continue
        files[str(relative)] = sha256
        media_bytes += size
        if expected_sha256.get(name, sha256) != sha256:
            warnings.append(f"{name}: the stored file differs from the sha256 recorded for it (copied as it is).")
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise BackupError(
            f"{len(missing)} stored file(s) are missing from the storage: {shown}. Nothing was backed up."
        )

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "database_vendor": connection.vendor,
        "migrations": migrations,
        "rows": rows,
        "files": files,
    }
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    partial = out_dir / f"{MANIFEST}.partial"
    partial.write_bytes(manifest_bytes)
    partial.rename(out_dir / MANIFEST)
    return BackupSummary(
        directory=out_dir,
        rows=rows,
        media_files=len(files) - 1,
        media_bytes=media_bytes,
        database_bytes=database_path.stat().st_size,
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        warnings=warnings,
    )


# --- Restore -----------------------------------------------------------------------------------


def _read_manifest(source_dir: Path) -> dict[str, Any]:
    path = source_dir / MANIFEST
    if not path.is_file():
        raise BackupError(f"{source_dir} has no {MANIFEST}: not a SkinPortal backup, or the backup did not finish.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BackupError(f"Cannot read {path}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path} is not a SkinPortal backup manifest.")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(
            f"{path} has format version {manifest.get('format_version')!r}; this SkinPortal reads version "
            f"{FORMAT_VERSION}. Restore with the SkinPortal version that made the backup."
        )
    for key, kind in (("migrations", dict), ("rows", dict), ("files", dict)):
        if not isinstance(manifest.get(key), kind):
            raise BackupError(f"{path} has no valid {key!r}.")
    if DATABASE not in manifest["files"]:
        raise BackupError(f"{path} does not list {DATABASE}.")
    return manifest


def _verify_files(source_dir: Path, files: dict[str, str]) -> int:
    """Every listed file present with its sha256; returns the media bytes. Reads, never writes."""
    problems, media_bytes = [], 0
    for relative, expected in sorted(files.items()):
        if relative != DATABASE and not relative.startswith(f"{MEDIA}/"):
            raise BackupError(f"The manifest lists {relative!r}, which is neither {DATABASE} nor under {MEDIA}/.")
        path = source_dir / _safe_relative(relative)
        if not path.is_file():
            problems.append(f"{relative} (missing)")
        elif _sha256_file(path) != expected:
            problems.append(f"{relative} (sha256 differs from the manifest)")
        elif relative != DATABASE:
            media_bytes += path.stat().st_size
    if problems:
        shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise BackupError(f"The backup in {source_dir} is damaged, nothing was restored: {shown}.")
    return media_bytes


def _check_migrations(recorded: dict[str, str]) -> None:
    current = _migration_state()
    if current == recorded:
        return
    differences = [
        f"{app}: backup {recorded.get(app, '(none)')}, database {current.get(app, '(none)')}"
        for app in sorted(set(current) | set(recorded))
        if current.get(app) != recorded.get(app)
    ]
    raise BackupError(
        "The backup was made at a different migration state than this database has ("
        + "; ".join(differences)
        + "). Migrate the empty database to the backup's state first (run `migrate` with the SkinPortal "
        "version that made the backup, or `migrate <app> <migration>`), restore, then `migrate` to the current "
        "version. Nothing was restored."
    )


def _check_database_empty() -> None:
    # loaddata overwrites rows with the same pk: any existing row would be changed or mixed in.
    filled = {label: count for label, count in _row_counts().items() if count}
    if filled:
        shown = ", ".join(f"{label}: {count}" for label, count in sorted(filled.items()))
        raise BackupError(
            f"This database already holds data ({shown}). Restore only into an empty, freshly migrated "
            "database (create it, run `migrate`, do not log in or create users). Nothing was changed."
        )


def _media_names(files: dict[str, str]) -> dict[str, str]:
    """Storage name -> manifest entry, for the media files."""
    prefix = f"{MEDIA}/"
    return {relative[len(prefix) :]: relative for relative in files if relative.startswith(prefix)}


def _check_storage(media: dict[str, str], files: dict[str, str]) -> set[str]:
    """Names already in the storage: fine with the backup's content (kept, e.g. a surviving S3
    bucket), refused otherwise (restore never overwrites a stored file)."""
    present, conflicts = set(), []
    for name, relative in sorted(media.items()):
        if default_storage.exists(name):
            if _sha256_stored(name) == files[relative]:
                present.add(name)
            else:
                conflicts.append(name)
    if conflicts:
        shown = ", ".join(conflicts[:10]) + (f" and {len(conflicts) - 10} more" if len(conflicts) > 10 else "")
        raise BackupError(
            f"The storage already holds different files at {len(conflicts)} of the backup's names ({shown}); "
            "restore into an empty storage. Nothing was changed."
        )
    return present


def _write_media(source_dir: Path, media: dict[str, str], skip: set[str], written: list[str]) -> None:
    for name, relative in sorted(media.items()):
        if name in skip:
            continue
        with (source_dir / relative).open("rb") as fh:
            stored = default_storage.save(name, File(fh, name=PurePosixPath(name).name))
        written.append(stored)  # before the check: a renamed copy is ours to delete as well
        if stored != name:
            raise BackupError(f"The storage saved {name} as {stored}; images must keep their names.")


def _check_loaded(manifest: dict[str, Any], media: dict[str, str]) -> None:
    """After loaddata, inside its transaction: the rows are the backup's, every file is there."""
    counts, recorded = _row_counts(), manifest["rows"]
    wrong = [
        f"{label}: {counts.get(label, 'no such model')} instead of {recorded.get(label, 0)}"
        for label in sorted(set(counts) | set(recorded))
        if counts.get(label) != recorded.get(label, 0)
    ]
    if wrong:
        raise BackupError("After loading, the row counts differ from the manifest: " + "; ".join(wrong) + ".")
    unlisted = sorted(_stored_names() - set(media))
    if unlisted:
        raise BackupError(f"The database refers to files the backup does not hold: {', '.join(unlisted[:10])}.")


def _delete_stored(names: list[str]) -> list[str]:
    """Undo what a failed restore wrote; returns the names that could not be deleted."""
    left = []
    for name in names:
        try:
            default_storage.delete(name)
        except Exception:  # noqa: BLE001 - keep undoing the rest; the caller reports what is left
            left.append(name)
    return left


def backup_restore(*, source_dir: Path, manifest_sha256: str = "") -> BackupSummary:
    """Restore a backup into an empty, migrated database and its storage.

    Order matters: first everything that only reads (manifest, every sha256, migration state, the
    database is empty, the storage has no conflicting file), so a refusal changes nothing; then
    the media through the storage at their original names (rows refer to them by name); then the
    rows in one transaction, checked against the manifest before commit. If that fails, the
    media written here are deleted again.

    The manifest protects every other file; manifest_sha256 (printed by the backup, noted
    elsewhere) protects the manifest itself.
    """
    source_dir = source_dir.resolve()
    if not source_dir.is_dir():
        raise BackupError(f"{source_dir} is not a folder.")
    if manifest_sha256 and (source_dir / MANIFEST).is_file():
        actual = _sha256_file(source_dir / MANIFEST)
        if actual != manifest_sha256.strip().lower():
            raise BackupError(
                f"{MANIFEST} has sha256 {actual}, not the {manifest_sha256} noted at backup time: the backup was "
                "changed. Nothing was restored."
            )
    manifest = _read_manifest(source_dir)
    files: dict[str, str] = manifest["files"]
    media_bytes = _verify_files(source_dir, files)
    _check_migrations(manifest["migrations"])
    _check_database_empty()
    media = _media_names(files)
    present = _check_storage(media, files)

    written: list[str] = []
    try:
        _write_media(source_dir, media, present, written)
        with transaction.atomic():
            call_command("loaddata", str(source_dir / DATABASE), verbosity=0, stdout=io.StringIO())
            _check_loaded(manifest, media)
    except Exception as exc:
        left = _delete_stored(written)
        outcome = (
            "Nothing was restored."
            if not left
            else f"The database was not changed, but these files could not be deleted again: {', '.join(left)}."
        )
        if isinstance(exc, BackupError):
            raise BackupError(f"{exc} {outcome}") from exc
        raise BackupError(f"Restore failed: {exc}. {outcome}") from exc
    return BackupSummary(
        directory=source_dir,
        rows=dict(manifest["rows"]),
        media_files=len(media),
        media_bytes=media_bytes,
        database_bytes=(source_dir / DATABASE).stat().st_size,
        manifest_sha256=_sha256_file(source_dir / MANIFEST),
        reused_media=len(present),
    )
