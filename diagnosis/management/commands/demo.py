from __future__ import annotations

import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from diagnosis.models import Role
from diagnosis.services.accounts import clinician_create

DEMO_ORGANISATION = "Demo Clinic"
DEMO_USERNAME = "demo"


def _lifetime(seconds: int) -> str:
    return f"{seconds // 86400} day(s)" if seconds >= 86400 else f"{seconds // 3600 or 1} hour(s)"


class Command(BaseCommand):
    help = (
        "Create (or refresh) the demo organisation and clinician and print the login. "
        "Run `manage.py migrate` first. Each run sets a new random password unless --password is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--password", default=None, help="Use this password instead of a random one.")

    def handle(self, *args, **options) -> None:
        password = options["password"] or secrets.token_urlsafe(12)
        try:
            account = clinician_create(
                organisation_name=DEMO_ORGANISATION,
                username=DEMO_USERNAME,
                password=password,
                role=Role.ADMIN,
                validate=options["password"] is None,  # a chosen demo password is the operator's call
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(f"Organisation: {account.organisation.name}")
        self.stdout.write(f"Username:     {account.user.get_username()}")
        self.stdout.write(f"Password:     {password}")
        self.stdout.write("Log in at http://127.0.0.1:8000/ (research and education use only; not a medical device).")
        self.stdout.write(
            "API: create a token on http://127.0.0.1:8000/account/api-tokens/ or with\n"
            "  curl -s -X POST http://127.0.0.1:8000/api/v1/auth/token/ -H 'Content-Type: application/json' \\\n"
            f'       -d \'{{"username": "{account.user.get_username()}", "password": "<the password above>"}}\'\n'
            "and send it as 'Authorization: Token <key>'. A token lasts "
            f"{_lifetime(settings.SKINPORTAL_API_TOKEN_TTL)} and ends sooner when the password changes "
            "(each run of this command changes it)."
        )
