"""Restore a backup made by `backup` into an empty, freshly migrated database.

    python manage.py migrate && python manage.py restore /backups/skinportal-2026-05-01

Every file is checked against the manifest before anything is written; a database that already
holds data, or one at another migration state, is refused. docs/backup.md has the details.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from diagnosis.archives import human_size
from diagnosis.backup import BackupError, backup_restore


class Command(BaseCommand):
    help = "Restore a backup folder (database rows and stored images) into an empty, migrated database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", type=Path, help="The backup folder (holding manifest.json).")
        parser.add_argument(
            "--manifest-sha256",
            default="",
            help="The manifest's sha256 printed by `backup`: refuse a changed manifest.",
        )

    def handle(self, *args, **options) -> None:
        try:
            summary = backup_restore(source_dir=options["source"], manifest_sha256=options["manifest_sha256"])
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        if options["verbosity"] == 0:
            return
        if options["verbosity"] >= 2:
            for label, count in sorted(summary.rows.items()):
                self.stdout.write(f"  {label}: {count}")
        reused = f", {summary.reused_media} of them already in the storage" if summary.reused_media else ""
        self.stdout.write(
            self.style.SUCCESS(
                f"Restored {summary.total_rows} rows ({len(summary.rows)} models) and {summary.media_files} image "
                f"file(s) ({human_size(summary.media_bytes)}{reused}) from {summary.directory}."
            )
        )
        self.stdout.write("Sessions are not part of a backup: everyone logs in again.")
