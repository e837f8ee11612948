"""API tokens (issue 13, defect 3): django-rest-knox keys, stored as digests, with an expiry, ended
by a password change or reset and by deactivation; a new key at every login; each user lists,
revokes and rotates their own, on a page and through the API; the old clear-text tokens dropped.
"""

from __future__ import annotations

import datetime as dt
import io
import types

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import User
from django.contrib.auth.tokens import default_token_generator
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from knox.models import AuthToken
from rest_framework.test import APIClient

from diagnosis import services
from tests.portal.helpers import PASSWORD

pytestmark = pytest.mark.django_db

API = "/api/v1"
TOKEN = f"{API}/auth/token/"
NEW_PASSWORD = "a-brand-new-passphrase-7"


def _token(username: str = "alice", password: str = PASSWORD, **extra: str):
    return APIClient().post(TOKEN, {"username": username, "password": password}, format="json", **extra)


def _new_key(username: str = "alice", password: str = PASSWORD) -> str:
    response = _token(username, password)
    assert response.status_code == 200, response.content
    return response.json()["token"]


def _me(key: str) -> int:
    return APIClient(HTTP_AUTHORIZATION=f"Token {key}").get(f"{API}/me/").status_code


# --- Tokens end with the credentials that issued them ------------------------------------------


def test_it_revokes_api_tokens_when_the_password_changes(owner, client):
    key = _new_key()
    assert _me(key) == 200
    client.force_login(owner)
    response = client.post(
        reverse("password_change"),
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 302
    assert _me(key) == 401
    assert not AuthToken.objects.filter(user=owner).exists()
    # Logging in again gives a new key, not the old one back.
    again = _new_key(password=NEW_PASSWORD)
    assert again != key and _me(again) == 200


def test_it_revokes_api_tokens_when_the_password_is_reset(owner):
    key = _new_key()
    uid = urlsafe_base64_encode(force_bytes(owner.pk))
    client = Client()
    link = reverse("password_reset_confirm", kwargs={"uidb64": uid, "token": default_token_generator.make_token(owner)})
    form = client.get(link, follow=True)
    response = client.post(form.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert response.status_code == 302
    assert _me(key) == 401


def test_it_revokes_api_tokens_when_the_account_is_deactivated_or_its_password_reset_by_an_operator(owner, colleague):
    owner_key, colleague_key = _new_key(), _new_key("bob")
    owner.is_active = False
    owner.save()
    assert _me(owner_key) == 401 and not AuthToken.objects.filter(user=owner).exists()
    call_command(
        "createclinician", "--org", "Northside Dermatology", "--username", "bob", "--password", NEW_PASSWORD,
        stdout=io.StringIO(),
    )  # fmt: skip
    assert _me(colleague_key) == 401
    bob_again = _new_key("bob", NEW_PASSWORD)
    colleague.refresh_from_db()
    colleague.set_unusable_password()
    colleague.save()
    assert _me(bob_again) == 401


def test_it_revokes_api_tokens_when_the_admin_sets_a_password(owner, colleague):
    key = _new_key("bob")
    staff = User.objects.create_superuser("root", "root@example.org", "a-long-admin-passphrase")
    admin = Client()
    admin.force_login(staff)
    response = admin.post(
        reverse("admin:auth_user_password_change", args=[colleague.pk]),
        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    assert _me(key) == 401


class FewRoundsPBKDF2(PBKDF2PasswordHasher):
    """A newer hasher than the tests' MD5, cheap enough for a test."""

    iterations = 1000


def test_it_keeps_api_tokens_when_a_login_rehashes_the_same_password(owner, settings):
    key = _new_key()
    # A new preferred hasher: the next login stores the same password re-hashed.
    settings.PASSWORD_HASHERS = [f"{__name__}.FewRoundsPBKDF2", "django.contrib.auth.hashers.MD5PasswordHasher"]
    before = User.objects.get(pk=owner.pk).password
    assert Client().post(reverse("login"), {"username": "alice", "password": PASSWORD}).status_code == 302
    assert User.objects.get(pk=owner.pk).password != before  # re-hashed...
    assert _me(key) == 200  # ...and the password did not change, so the token lives on


def test_it_keeps_api_tokens_when_other_fields_change(owner):
    key = _new_key()
    owner.email = "alice@clinic.example"
    owner.save()
    owner.last_login = timezone.now()
    owner.save(update_fields=["last_login"])
    assert _me(key) == 200


# --- Expiry, a new key per login, keys hashed at rest ---------------------------------------------


def test_it_expires_api_tokens(owner, settings):
    assert settings.SKINPORTAL_API_TOKEN_TTL == 30 * 24 * 3600
    before = timezone.now()
    response = _token()
    expiry = dt.datetime.fromisoformat(response.json()["expiry"])
    assert dt.timedelta(days=30) <= expiry - before <= dt.timedelta(days=30, minutes=1)
    key = response.json()["token"]
    token = AuthToken.objects.get(user=owner)
    assert token.expiry == expiry
    token.expiry = timezone.now() - dt.timedelta(seconds=1)
    token.save()
    assert _me(key) == 401
    assert not AuthToken.objects.filter(user=owner).exists()  # knox deletes it on sight


def test_it_takes_the_token_lifetime_from_the_settings(owner, settings):
    settings.SKINPORTAL_API_TOKEN_TTL = 3600
    expiry = services.accounts.api_token_create(user=owner).expiry
    assert dt.timedelta(minutes=59) < expiry - timezone.now() <= dt.timedelta(hours=1)


def test_it_gives_a_new_key_at_every_login(owner):
    first, second = _new_key(), _new_key()
    assert first != second and _me(first) == 200 and _me(second) == 200


def test_it_stores_only_a_digest_of_each_key(owner):
    key = _new_key()
    row = AuthToken.objects.values().get(user=owner)
    assert key not in {str(value) for value in row.values()}
    assert row["token_key"] == key[:15] and len(row["digest"]) == 128  # SHA-512, hex
    assert len(key) == 64 and "authtoken_token" not in connection.introspection.table_names()


def test_it_keeps_the_token_keyword_of_the_authorization_header(owner):
    key = _new_key()
    assert APIClient(HTTP_AUTHORIZATION=f"Token {key}").get(f"{API}/me/").status_code == 200
    for header in (f"Bearer {key}", f"Token {key[:-1]}x", "Token ünïcödé", f"Token {key} extra", "Token"):
        assert APIClient(HTTP_AUTHORIZATION=header).get(f"{API}/me/").status_code == 401, header
    not_utf8 = APIClient(HTTP_AUTHORIZATION="Token " + bytes([0xFF, 0xFE]).decode("latin-1") * 32)
    assert not_utf8.get(f"{API}/me/").status_code == 401


def test_it_refuses_a_token_beyond_the_limit_per_user(owner, settings):
    settings.SKINPORTAL_API_TOKEN_LIMIT = 2
    keys = [_new_key(), _new_key()]
    response = _token()
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "token_limit" and "revoke one" in error["message"]
    AuthToken.objects.filter(token_key=keys[0][:15]).update(expiry=timezone.now() - dt.timedelta(seconds=1))
    assert _token().status_code == 200  # an expired one does not count


# --- The API: list, revoke, rotate ------------------------------------------------------------------


def test_it_lists_revokes_and_rotates_tokens_through_the_api(owner, colleague):
    first, second = _new_key(), _new_key()
    api = APIClient(HTTP_AUTHORIZATION=f"Token {second}")
    listed = api.get(f"{API}/auth/tokens/").json()
    assert listed["count"] == 2
    rows = {row["key"]: row for row in listed["results"]}
    assert set(rows) == {first[:15], second[:15]}
    assert rows[second[:15]]["current"] is True and rows[first[:15]]["current"] is False
    assert first not in str(listed) and second not in str(listed)

    # Rotate the first: a new key with the same expiry; the old key stops working.
    expiry = AuthToken.objects.get(token_key=first[:15]).expiry
    rotated = api.post(f"{API}/auth/tokens/{first[:15]}/rotate/")
    assert rotated.status_code == 200
    new_key = rotated.json()["token"]
    assert new_key != first and _me(first) == 401 and _me(new_key) == 200
    assert AuthToken.objects.get(token_key=new_key[:15]).expiry == expiry

    # Revoke the one this request carries.
    assert api.delete(f"{API}/auth/tokens/{second[:15]}/").status_code == 204
    assert _me(second) == 401 and _me(new_key) == 200


def test_it_answers_404_for_someone_elses_or_a_malformed_token_key(owner, colleague):
    mine, theirs = _new_key(), _new_key("bob")
    api = APIClient(HTTP_AUTHORIZATION=f"Token {mine}")
    for path in (
        f"{theirs[:15]}/",
        f"{theirs[:15]}/rotate/",
        "0123456789abcde/",
        "not-a-key/",
        "%00/",
        f"{mine[:14]}/",
    ):
        method = api.post if path.endswith("rotate/") else api.delete
        response = method(f"{API}/auth/tokens/{path}")
        assert response.status_code == 404, (path, response.status_code)
        assert response.json()["error"]["code"] == "not_found"
    assert _me(theirs) == 200 and _me(mine) == 200  # nothing changed


def test_it_keeps_the_token_management_to_signed_in_users(owner):
    key = _new_key()[:15]
    anonymous = APIClient()
    assert anonymous.get(f"{API}/auth/tokens/").status_code == 401
    assert anonymous.delete(f"{API}/auth/tokens/{key}/").status_code == 401
    assert anonymous.post(f"{API}/auth/tokens/{key}/rotate/").status_code == 401
    assert AuthToken.objects.count() == 1


# --- The page ----------------------------------------------------------------------------------------


def test_it_lets_a_user_create_revoke_and_rotate_tokens_on_their_page(owner, client):
    client.force_login(owner)
    page = client.get(reverse("account-api-tokens"))
    assert page.status_code == 200 and "You have no API tokens." in page.content.decode()

    wrong = client.post(reverse("account-api-tokens"), {"password": "nope"})
    assert wrong.status_code == 400 and "That is not your password." in wrong.content.decode()
    assert not AuthToken.objects.exists()

    created = client.post(reverse("account-api-tokens"), {"password": PASSWORD})
    assert created.status_code == 200
    token = AuthToken.objects.get(user=owner)
    html = created.content.decode()
    key = html.split('<code class="value">')[1].split("</code>")[0]
    assert key.startswith(token.token_key) and len(key) == 64 and _me(key) == 200
    assert "shown this once" in html
    listed = client.get(reverse("account-api-tokens")).content.decode()
    assert token.token_key in listed and key not in listed  # the key itself is never shown again

    confirm = client.get(reverse("account-api-token-rotate"), {"key": token.token_key})
    assert confirm.status_code == 200 and "Confirm with your password" in confirm.content.decode()
    refused = client.post(reverse("account-api-token-rotate"), {"key": token.token_key, "password": "nope"})
    assert refused.status_code == 400 and _me(key) == 200
    rotated = client.post(reverse("account-api-token-rotate"), {"key": token.token_key, "password": PASSWORD})
    assert rotated.status_code == 200 and _me(key) == 401
    new_key = rotated.content.decode().split('<code class="value">')[1].split("</code>")[0]
    assert _me(new_key) == 200

    revoked = client.post(reverse("account-api-token-revoke"), {"key": new_key[:15]}, follow=True)
    assert revoked.status_code == 200 and "was revoked" in revoked.content.decode()
    assert _me(new_key) == 401 and not AuthToken.objects.exists()


def test_it_refuses_a_bad_or_unknown_token_on_the_page_with_a_clear_message(owner, colleague, client):
    theirs = _new_key("bob")[:15]
    client.force_login(owner)
    for data, status in (({}, 400), ({"key": "x" * 500}, 400), ({"key": theirs}, 404)):
        response = client.post(reverse("account-api-token-revoke"), data)
        assert response.status_code == status, data
        assert "Say which token" in response.content.decode() or "You have no API token" in response.content.decode()
    for query in ({"key": theirs}, {"key": "\x00"}, {}):
        assert client.get(reverse("account-api-token-rotate"), query).status_code in (400, 404)
    assert _me(_new_key("bob")) == 200 and AuthToken.objects.filter(token_key=theirs).exists()


def test_it_links_the_token_page_from_every_page(owner, client):
    client.force_login(owner)
    assert f'href="{reverse("account-api-tokens")}"' in client.get(reverse("dashboard")).content.decode()


# --- The admin, and the tokens from before ---------------------------------------------------------


def test_it_lets_staff_see_and_revoke_tokens_but_not_mint_ones_that_never_expire(owner, client):
    _new_key()
    staff = User.objects.create_superuser("root", "root@example.org", "a-long-admin-passphrase")
    client.force_login(staff)
    listing = client.get(reverse("admin:knox_authtoken_changelist"))
    assert listing.status_code == 200 and "alice" in listing.content.decode()
    assert client.get(reverse("admin:knox_authtoken_add")).status_code == 403
    token = AuthToken.objects.get()
    response = client.post(reverse("admin:knox_authtoken_delete", args=[token.pk]), {"post": "yes"})
    assert response.status_code == 302 and not AuthToken.objects.exists()


def test_it_drops_the_clear_text_tokens_of_the_previous_release(owner):
    import importlib

    migration = importlib.import_module("diagnosis.migrations.0006_api_tokens_hashed")
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created timestamp, user_id integer)")
        cursor.execute(
            "INSERT INTO authtoken_token VALUES ('6f9a2ed73b6d92026edcef4e9258379bcedb4ef7', NULL, %s)", [owner.pk]
        )
    editor = types.SimpleNamespace(
        connection=connection,
        quote_name=connection.ops.quote_name,
        execute=lambda sql: connection.cursor().execute(sql),
    )
    migration.drop_clear_text_tokens(None, editor)
    assert "authtoken_token" not in connection.introspection.table_names()
    # The old key is simply unknown now: the integrator asks for a new one.
    assert _me("6f9a2ed73b6d92026edcef4e9258379bcedb4ef7") == 401
    migration.drop_clear_text_tokens(None, editor)  # a database that never had the table: nothing to do
