"""Back up the database and the stored images into a new folder.

    python manage.py backup --out /backups/skinportal-2026-05-01

The folder holds database.json, media/ and manifest.json (sha256 of every file); it contains
patient data: store it encrypted. docs/backup.md explains what is included and how to restore.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from diagnosis.archives import human_size
from diagnosis.backup import BackupError, backup_create


class Command(BaseCommand):
    help = "Back up the database and the stored images into a new (or empty) folder, with a sha256 manifest."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--out", required=True, type=Path, help="Folder to create (or an empty one).")

    def handle(self, *args, **options) -> None:
        try:
            summary = backup_create(out_dir=options["out"])
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        for warning in summary.warnings:
            self.stderr.write(f"Warning: {warning}")
        if options["verbosity"] == 0:
            return
        if options["verbosity"] >= 2:
            for label, count in sorted(summary.rows.items()):
                self.stdout.write(f"  {label}: {count}")
        self.stdout.write(
            self.style.SUCCESS(
                f"Backed up {summary.total_rows} rows ({len(summary.rows)} models, database.json "
                f"{human_size(summary.database_bytes)}) and {summary.media_files} image file(s) "
                f"({human_size(summary.media_bytes)}) to {summary.directory}."
            )
        )
        self.stdout.write(f"manifest.json sha256: {summary.manifest_sha256} (note it to check the backup later)")
        self.stdout.write("The backup contains patient data: store it encrypted.")
