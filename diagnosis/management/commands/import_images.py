"""Bulk import of an image archive described by a HAM10000-style metadata CSV.

    python manage.py import_images --org "Northside Dermatology" \
        --metadata HAM10000_metadata.csv --images part_1/ part_2/

CSV columns: lesion_id and image_id (required); optional patient column (patient_id or patient;
without one, each lesion is its own patient, named by its lesion id), localization (body site),
sex, and captured_at. The image file is <image_id>.jpg/.jpeg/.png anywhere below the folders.
Re-running imports nothing twice (the sha256 of each file is remembered); a bad row is reported
and skipped, never fatal. New images are queued for classification (unless --no-classify).
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from diagnosis import services
from diagnosis.models import Sex

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
PATIENT_COLUMNS = ("patient_id", "patient", "patient_external_id")
SEXES = {"male": Sex.MALE, "female": Sex.FEMALE, "m": Sex.MALE, "f": Sex.FEMALE}
MAX_ERRORS_SHOWN = 50


def index_images(folders: list[Path]) -> dict[str, Path]:
    """image id (file name without suffix) -> path, searched recursively."""
    found: dict[str, Path] = {}
    for folder in folders:
        for root, _, names in os.walk(folder):
            for name in names:
                stem, suffix = os.path.splitext(name)
                if suffix.lower() in IMAGE_SUFFIXES:
                    found.setdefault(stem, Path(root) / name)
    return found


class ProgressBar:
    def __init__(self, out, total: int, width: int = 30) -> None:
        self.out, self.total, self.width = out, max(total, 1), width
        self.tty = getattr(out, "isatty", lambda: False)()
        self._last_shown = -1

    def show(self, done: int, note: str) -> None:
        percent = int(100 * done / self.total)
        if not self.tty and percent == self._last_shown and done != self.total:
            return  # logs and pipes get one line per percent, not one per image
        self._last_shown = percent
        filled = int(self.width * done / self.total)
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} {percent:3d}%  {note}"
        self.out.write(("\r" + line) if self.tty else line, ending="" if self.tty else "\n")
        self.out.flush()

    def close(self) -> None:
        if self.tty:
            self.out.write("")


class Command(BaseCommand):
    help = "Import images and their patients and lesions from a HAM10000-style metadata CSV."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help="Organisation name (created if new).")
        parser.add_argument("--metadata", required=True, type=Path, help="CSV with lesion_id, image_id, ...")
        parser.add_argument("--images", required=True, nargs="+", type=Path, help="Folder(s) holding the images.")
        parser.add_argument("--patient-column", default="", help=f"Default: the first of {', '.join(PATIENT_COLUMNS)}.")
        parser.add_argument("--no-classify", action="store_true", help="Store only; run reclassify later.")
        parser.add_argument("--limit", type=int, default=0, help="Import at most this many rows (testing).")

    def handle(self, *args, **options) -> None:
        metadata: Path = options["metadata"]
        folders: list[Path] = options["images"]
        rows, patient_column = _read_metadata(metadata, folders, patient_column=options["patient_column"])
        if options["limit"]:
            rows = rows[: options["limit"]]
        try:
            organisation, created = services.accounts.organisation_get_or_create(name=options["org"])
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        if created:
            self.stdout.write(f"Created organisation {organisation.name!r}.")
        files = index_images(folders)
        self.stdout.write(f"{len(rows)} rows in {metadata.name}; {len(files)} image files found.")
        batch = services.imports.import_batch_start(organisation=organisation, name=metadata.name, rows=len(rows))

        classify = not options["no_classify"]
        imported, skipped, errors, pending, tasks = 0, 0, [], [], 0
        bar = ProgressBar(self.stdout, len(rows))
        for number, row in enumerate(rows, start=2):  # line 1 is the header
            try:
                image = _import_row(
                    row, organisation=organisation, batch=batch, files=files, patient_column=patient_column
                )
            except (ValidationError, ValueError, OSError) as exc:
                message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
                errors.append({"name": f"line {number} ({row.get('image_id', '') or '?'})", "error": message})
            else:
                if image is None:
                    skipped += 1
                else:
                    imported += 1
                    pending.append(image.pk)
            if classify and len(pending) >= settings.SKINPORTAL_MICRO_BATCH:
                tasks += services.classification.classification_enqueue(image_ids=pending)
                pending = []
            bar.show(number - 1, f"imported {imported}, already there {skipped}, errors {len(errors)}")
        if pending and classify:
            tasks += services.classification.classification_enqueue(image_ids=pending)
        bar.close()
        services.imports.import_batch_finish(batch=batch, received=imported + len(errors), rejected=errors)
        self._report(imported=imported, skipped=skipped, errors=errors, tasks=tasks if classify else None, batch=batch)

    def _report(self, *, imported: int, skipped: int, errors: list[dict[str, str]], tasks: int | None, batch) -> None:
        for error in errors[:MAX_ERRORS_SHOWN]:
            self.stderr.write(f"  {error['name']}: {error['error']}")
        if len(errors) > MAX_ERRORS_SHOWN:
            self.stderr.write(f"  ... and {len(errors) - MAX_ERRORS_SHOWN} more (see batch #{batch.pk}).")
        summary = (
            f"Imported {imported} image(s), skipped {skipped} already imported, {len(errors)} bad row(s) "
            f"into {batch.organisation.name!r} (batch #{batch.pk})."
        )
        if tasks is not None:
            summary += f" Queued {tasks} classification task(s)."
        self.stdout.write(self.style.SUCCESS(summary) if not errors else self.style.WARNING(summary))


def _read_metadata(metadata: Path, folders: list[Path], *, patient_column: str) -> tuple[list[dict[str, str]], str]:
    """The CSV's rows (stripped) and the column naming each row's patient ("" : the lesion id)."""
    for folder in folders:
        if not folder.is_dir():
            raise CommandError(f"{folder} is not a folder.")
    try:
        with metadata.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CommandError(f"Cannot read {metadata}: {exc}") from exc
    missing = [c for c in ("lesion_id", "image_id") if c not in columns]
    if missing:
        raise CommandError(f"{metadata} has no {' or '.join(missing)} column (found: {', '.join(columns)}).")
    if patient_column and patient_column not in columns:
        raise CommandError(f"{metadata} has no column {patient_column!r}.")
    return rows, patient_column or next((c for c in PATIENT_COLUMNS if c in columns), "")


def _import_row(row: dict[str, str], *, organisation, batch, files: dict[str, Path], patient_column: str):
    """Store one row's image (None: already stored); ValidationError, ValueError or OSError say why not."""
    image_id = row.get("image_id", "")
    path = files.get(image_id)
    if not image_id or path is None:
        raise ValidationError(f"no image file {image_id or '(empty image_id)'}.jpg/.png in the folders")
    captured = row.get("captured_at") or row.get("date") or ""
    return services.imports.image_import(
        organisation=organisation,
        batch=batch,
        row=services.imports.ImportRow(
            patient_external_id=row.get(patient_column, "") if patient_column else row["lesion_id"],
            lesion_label=row["lesion_id"],
            body_site=row.get("localization") or row.get("body_site") or "",
            image_name=path.name,
            data=path.read_bytes(),
            sex=SEXES.get(row.get("sex", "").lower(), Sex.UNKNOWN),
            captured_at=dt.date.fromisoformat(captured) if captured else None,
        ),
    )
