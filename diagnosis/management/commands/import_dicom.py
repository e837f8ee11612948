"""Import DICOM images (a dermatoscope's or a PACS's export) onto one lesion of one patient.

    python manage.py import_dicom --org "Northside Dermatology" --patient MRN-001 \
        --lesion "Upper back, left" [--body-site back] [--captured-at 2026-11-30] [--dry-run] PATH [PATH ...]

PATH: DICOM files or folders (searched recursively; every file is judged by its bytes, the `DICM`
marker at offset 128, never by its name). Each file goes through the upload checks
(diagnosis.inference.sanitise_upload -> ml.dicom_input: size cap, pixel cap before decoding, one
8-bit frame, uncompressed or JPEG baseline) and is stored as a PNG of its pixels (a JPEG frame as
that JPEG): nothing of its
header is kept, and the patient and lesion are the ones named here, never the header's. The
patient must exist in the organisation; the lesion (by label) is created under it when new, with
--body-site. The capture date is --captured-at, else the file's own (Content, Acquisition, Series or
Study Date), else today. A file already stored (sha256) is skipped; a refused file is reported with its reason
and the others go on; the exit status is 1 when any file was refused. New images are queued for
classification (unless --no-classify). --dry-run checks every file and stores nothing.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from diagnosis import inference, services
from diagnosis.archives import too_large
from diagnosis.models import BodySite, Lesion, Organisation, Patient
from diagnosis.selectors import import_already_present

COMMAND = "import_dicom"
MAX_ERRORS_SHOWN = 50


def dicom_paths(paths: list[Path]) -> list[Path]:
    """The files named, and every file below the folders named (sorted; hidden files skipped)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found.extend(Path(root) / name for name in sorted(names) if not name.startswith("."))
        elif path.is_file():
            found.append(path)
        else:
            raise CommandError(f"{path} is neither a file nor a folder.")
    return found


class Command(BaseCommand):
    help = "Import DICOM images onto one lesion of one patient (pixels only, stored as PNG or JPEG)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path, help="DICOM files or folders of them.")
        parser.add_argument("--org", required=True, help="Organisation name (must exist).")
        parser.add_argument("--patient", required=True, help="The patient's external id (must exist).")
        parser.add_argument("--lesion", required=True, help="Lesion label (created under the patient if new).")
        parser.add_argument(
            "--body-site", default=BodySite.UNKNOWN, choices=BodySite.values, help="Body site of a new lesion."
        )
        parser.add_argument("--captured-at", type=dt.date.fromisoformat, default=None, help="YYYY-MM-DD (default: the file's own date, else today).")
        parser.add_argument("--dry-run", action="store_true", help="Check every file; store nothing.")
        parser.add_argument("--no-classify", action="store_true", help="Store only; run reclassify later.")

    def handle(self, *args, **options) -> None:
        organisation = Organisation.objects.filter(name=options["org"].strip()).first()
        if organisation is None:
            raise CommandError(f"No organisation named {options['org']!r}.")
        patient = Patient.objects.filter(organisation=organisation, external_id=options["patient"].strip()).first()
        if patient is None:
            raise CommandError(f"No patient with the id {options['patient']!r} in {organisation.name!r}.")
        captured_at: dt.date | None = options["captured_at"]
        if captured_at is not None and captured_at > timezone.localdate():
            raise CommandError("The capture date cannot be in the future.")
        label = options["lesion"].strip()
        lesion_exists = Lesion.objects.filter(patient=patient, label=label).exists()
        paths = dicom_paths(options["paths"])
        dry_run = options["dry_run"]
        self.stdout.write(
            f"{len(paths)} file(s); patient {patient.external_id}, lesion {label!r}"
            f"{'' if lesion_exists else ' (new)'}{'; dry run: nothing is stored' if dry_run else ''}."
        )
        batch = None if dry_run else services.imports.import_batch_start(
            organisation=organisation, name=f"{COMMAND}: {label}", rows=len(paths)
        )
        imported, skipped, errors, pending, tasks = 0, 0, [], [], 0
        classify = not options["no_classify"] and not dry_run
        for path in paths:
            try:
                image = self._one(path, organisation=organisation, patient=patient, label=label,
                                  body_site=options["body_site"], captured_at=captured_at, batch=batch,
                                  dry_run=dry_run)
            except (ValidationError, OSError) as exc:
                message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
                errors.append({"name": str(path), "error": message})
                continue
            if image is None:
                skipped += 1
            else:
                imported += 1
                if image is not True:
                    pending.append(image.pk)
            if classify and len(pending) >= settings.SKINPORTAL_MICRO_BATCH:
                tasks += services.classification.classification_enqueue(image_ids=pending)
                pending = []
        if classify and pending:
            tasks += services.classification.classification_enqueue(image_ids=pending)
        if batch is not None:
            services.imports.import_batch_finish(batch=batch, received=imported + len(errors), rejected=errors)
        for error in errors[:MAX_ERRORS_SHOWN]:
            self.stderr.write(f"  {error['name']}: {error['error']}")
        if len(errors) > MAX_ERRORS_SHOWN:
            self.stderr.write(f"  ... and {len(errors) - MAX_ERRORS_SHOWN} more.")
        verb = "Would import" if dry_run else "Imported"
        summary = f"{verb} {imported} image(s), skipped {skipped} already stored, refused {len(errors)} file(s)"
        summary += "." if batch is None else f" (batch #{batch.pk})."
        if classify:
            summary += f" Queued {tasks} classification task(s)."
        self.stdout.write(self.style.WARNING(summary) if errors else self.style.SUCCESS(summary))
        if errors:
            raise CommandError(f"{len(errors)} of {len(paths)} file(s) refused.")

    def _one(self, path: Path, *, organisation, patient, label, body_site, captured_at, batch, dry_run):
        """One file: the stored image, None when already stored, True when it would be (dry run).
        ValidationError or OSError say why not; nothing is stored then."""
        max_bytes = settings.SKINPORTAL_MAX_UPLOAD_BYTES
        if path.stat().st_size > max_bytes:  # before reading it
            raise ValidationError(f"{too_large(max_bytes)}")
        data = path.read_bytes()
        if not (len(data) >= 132 and data[128:132] == b"DICM"):
            raise ValidationError("not a DICOM file (no DICM marker at offset 128)")
        if dry_run:
            if import_already_present(organisation=organisation, data=data):
                return None
            try:
                inference.sanitise_upload(data, name=path.name)
            except (inference.InvalidImageError, inference.BudgetExceeded) as exc:
                raise ValidationError(str(exc)) from exc
            return True
        try:
            return services.imports.image_import(
                organisation=organisation,
                batch=batch,
                command=COMMAND,
                row=services.imports.ImportRow(
                    patient_external_id=patient.external_id,
                    lesion_label=label,
                    body_site=body_site,
                    image_name=path.name,
                    data=data,
                    captured_at=captured_at,
                ),
            )
        except inference.BudgetExceeded as exc:
            raise ValidationError(str(exc)) from exc
