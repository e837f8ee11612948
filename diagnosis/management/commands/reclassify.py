"""After a model upgrade: queue every image that has no result by the current model version.

    python manage.py reclassify [--model-version V] [--org NAME] [--dry-run] [--outlines]

Earlier versions' results stay (the history); pages show the newest and, on demand, the rest.
Images whose classification by V failed are queued again too. Workers classify with the model
they load, so upgrade the workers' bundle (ml/models/CURRENT or SKINPORTAL_MODEL_DIR) first.
With --outlines, images whose result by V has no lesion outline (classified before outlines were
stored) are classified again too, so they get one.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from diagnosis import inference, services
from diagnosis.models import Organisation


class Command(BaseCommand):
    help = "Queue classification of every image without a result by the current (or given) model version."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model-version", default="", help="Default: the version of the configured model.")
        parser.add_argument("--org", default="", help="Only this organisation's images.")
        parser.add_argument("--dry-run", action="store_true", help="Count, queue nothing.")
        parser.add_argument("--outlines", action="store_true",
                            help="Also classify again the images whose result by the version has no lesion outline.")

    def handle(self, *args, **options) -> None:
        try:
            current = inference.current_model_version()
        except inference.MLError as exc:
            if not options["model_version"]:
                raise CommandError(f"No model is configured ({exc}); give --model-version.") from exc
            current = ""
        version = options["model_version"] or current
        if current and version != current:
            self.stderr.write(
                f"Note: the configured model here is {current!r}; workers store results under the version they load."
            )
        organisation = None
        if options["org"]:
            organisation = Organisation.objects.filter(name=options["org"].strip()).first()
            if organisation is None:
                raise CommandError(f"No organisation named {options['org']!r}.")
        count = services.classification.classification_enqueue_missing(
            model_version=version, organisation=organisation, dry_run=options["dry_run"]
        )
        scope = f" in {organisation.name!r}" if organisation else ""
        verb = "Would queue" if options["dry_run"] else "Queued"
        self.stdout.write(self.style.SUCCESS(f"{verb} {count} image(s){scope} without a result by {version!r}."))
        if options["outlines"]:
            outlines = services.classification.classification_enqueue_missing_outlines(
                model_version=version, organisation=organisation, dry_run=options["dry_run"]
            )
            self.stdout.write(self.style.SUCCESS(f"{verb} {outlines} image(s){scope} without a lesion outline."))
