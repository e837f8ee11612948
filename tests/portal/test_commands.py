"""Operator commands: createclinician and demo."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.management import CommandError, call_command
from django.test import RequestFactory

from diagnosis.models import Membership, Organisation
from skinportal.accounts import login_authenticate

pytestmark = pytest.mark.django_db


def _log_in(username: str, password: str) -> AbstractBaseUser | None:
    """authenticate() as a login does: with the request (django-axes refuses a call without), serialised."""
    return login_authenticate(RequestFactory().post("/accounts/login/"), username=username, password=password)


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_it_creates_a_clinician_and_the_organisation(db):
    output = _run(
        "createclinician", "--org", "Riverside GP", "--username", "dr_who", "--password", "tardis-blue-box-1963"
    )
    assert "Created organisation 'Riverside GP'" in output and "Created user 'dr_who' as Clinician" in output
    membership = Membership.objects.get(user__username="dr_who")
    assert (membership.organisation.name, membership.role) == ("Riverside GP", "clinician")
    assert _log_in("dr_who", "tardis-blue-box-1963") is not None


def test_it_updates_an_existing_clinicians_role_and_password(db):
    _run("createclinician", "--org", "Riverside GP", "--username", "dr_who", "--password", "tardis-blue-box-1963")
    output = _run(
        "createclinician",
        "--org",
        "Riverside GP",
        "--username",
        "dr_who",
        "--password",
        "another-long-one-42",
        "--role",
        "readonly",
    )
    assert "Updated user 'dr_who' as Read-only" in output
    assert Organisation.objects.count() == 1
    assert _log_in("dr_who", "another-long-one-42") is not None


def test_it_refuses_a_weak_password_or_unknown_role(db):
    with pytest.raises(CommandError, match="too short|too common"):
        _run("createclinician", "--org", "X", "--username", "u", "--password", "abc")
    with pytest.raises(CommandError):
        _run("createclinician", "--org", "X", "--username", "u", "--password", "tardis-blue-box-1963", "--role", "god")


def test_it_creates_the_demo_login_idempotently_and_prints_it(db):
    first = _run("demo")
    password = re.search(r"Password:\s+(\S+)", first).group(1)
    assert "Username:     demo" in first and "Demo Clinic" in first
    assert _log_in("demo", password=password) is not None
    second = _run("demo")
    new_password = re.search(r"Password:\s+(\S+)", second).group(1)
    assert new_password != password and _log_in("demo", password=new_password) is not None
    assert Organisation.objects.filter(name="Demo Clinic").count() == 1
    assert Membership.objects.get(user__username="demo").role == "admin"
    assert "demo-pass" in _run("demo", "--password", "demo-pass")
