from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from diagnosis.models import Role
from diagnosis.services.accounts import clinician_create


class Command(BaseCommand):
    help = (
        "Create a login in an organisation (the organisation is created if needed). "
        "An existing user gets the given password and role in that organisation."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help="Organisation (clinic) name.")
        parser.add_argument("--username", required=True)
        parser.add_argument("--password", required=True)
        parser.add_argument("--role", default=Role.CLINICIAN, choices=Role.values, help="Default: clinician.")
        parser.add_argument("--email", default="", help="Used for password reset e-mails.")

    def handle(self, *args, **options) -> None:
        try:
            account = clinician_create(
                organisation_name=options["org"],
                username=options["username"],
                password=options["password"],
                role=options["role"],
                email=options["email"],
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        if account.organisation_created:
            self.stdout.write(f"Created organisation {account.organisation.name!r}.")
        verb = "Created" if account.user_created else "Updated"
        self.stdout.write(
            self.style.SUCCESS(
                f"{verb} user {account.user.get_username()!r} as {account.membership.get_role_display()} "
                f"in {account.organisation.name!r}."
            )
        )
