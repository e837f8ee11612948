from __future__ import annotations

import secrets

from django.core.management.base import BaseCommand, CommandParser

from diagnosis.models import Role
from diagnosis.services.accounts import clinician_create

DEMO_ORGANISATION = "Demo Clinic"
DEMO_USERNAME = "demo"


class Command(BaseCommand):
    help = (
        "Create (or refresh) the demo organisation and clinician and print the login. "
        "Run `manage.py migrate` first. Each run sets a new random password unless --password is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--password", default=None, help="Use this password instead of a random one.")

    def handle(self, *args, **options) -> None:
        password = options["password"] or secrets.token_urlsafe(12)
        account = clinician_create(
            organisation_name=DEMO_ORGANISATION,
            username=DEMO_USERNAME,
            password=password,
            role=Role.ADMIN,
            validate=options["password"] is None,  # a chosen demo password is the operator's call
        )
        self.stdout.write(f"Organisation: {account.organisation.name}")
        self.stdout.write(f"Username:     {account.user.get_username()}")
        self.stdout.write(f"Password:     {password}")
        self.stdout.write("Log in at http://127.0.0.1:8000/ (research and education use only; not a medical device).")
