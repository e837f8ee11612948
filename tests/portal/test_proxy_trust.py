"""Who the client is, behind a reverse proxy and without one (issue 13, defect 11).

The documented recipe once bound gunicorn to 0.0.0.0:8000 and trusted one proxy: anyone who
reached that port wrote their own X-Forwarded-For and picked the address that the login lockout,
the token rate and the audit trail key on. X-Forwarded-For is now believed only from a trusted
proxy's address (SKINPORTAL_TRUSTED_PROXY_ADDRESSES, default this machine), and only when
SKINPORTAL_TRUSTED_PROXIES says there is one (default none).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse
from rest_framework.test import APIClient

from diagnosis.models import AuditEvent
from skinportal import accounts
from tests.portal.helpers import PASSWORD, REPO_ROOT

pytestmark = pytest.mark.django_db

ATTACKER = "198.51.100.9"  # reaches gunicorn directly, past the proxy
PROXY = "10.0.0.2"


@pytest.fixture
def behind_one_proxy(settings) -> None:
    """The production recipe: one proxy on this machine (default SKINPORTAL_TRUSTED_PROXY_ADDRESSES)."""
    settings.SKINPORTAL_TRUSTED_PROXIES = 1


def _forged(n: int) -> str:
    return f"203.0.113.{n}"


def test_it_records_the_peer_not_a_forged_address_in_the_audit_trail(behind_one_proxy, owner, patient):
    client = Client(REMOTE_ADDR=ATTACKER)
    client.force_login(owner)
    response = client.get(reverse("patient-detail", args=[patient.pk]), HTTP_X_FORWARDED_FOR=_forged(66))
    assert response.status_code == 200
    assert AuditEvent.objects.get(request_id=response["X-Request-ID"]).ip == ATTACKER


def test_it_locks_out_the_peer_whatever_forwarded_for_it_forges(behind_one_proxy, owner):
    client = Client(REMOTE_ADDR=ATTACKER)
    login = reverse("login")
    guesses = [  # a fresh forged address on every guess
        client.post(login, {"username": "alice", "password": "wrong"}, HTTP_X_FORWARDED_FOR=_forged(n)).status_code
        for n in range(5)
    ]
    assert guesses == [200, 200, 200, 200, 429]  # the fifth failure locks the attacker's own address
    locked = client.post(login, {"username": "alice", "password": PASSWORD}, HTTP_X_FORWARDED_FOR=_forged(99))
    assert locked.status_code == 429
    assert set(AuditEvent.objects.filter(action="login_failed").values_list("ip", flat=True)) == {ATTACKER}
    # The real user behind the real proxy is not locked out with the attacker.
    assert (
        Client(REMOTE_ADDR="127.0.0.1")
        .post(login, {"username": "alice", "password": PASSWORD}, HTTP_X_FORWARDED_FOR=_forged(7))
        .status_code
        == 302
    )


def test_it_throttles_token_requests_per_peer_whatever_forwarded_for_it_forges(behind_one_proxy, settings, owner):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "NUM_PROXIES": 1,  # as settings.py sets it from SKINPORTAL_TRUSTED_PROXIES
        "DEFAULT_THROTTLE_RATES": {"token": "3/minute", "uploads": "2/minute"},
    }
    api = APIClient(REMOTE_ADDR=ATTACKER)
    login = {"username": "alice", "password": "x"}
    statuses = [
        api.post("/api/v1/auth/token/", login, format="json", HTTP_X_FORWARDED_FOR=_forged(n)).status_code
        for n in range(4)
    ]
    assert statuses[-1] == 429 and 429 not in statuses[:3], statuses


def test_it_still_reads_the_client_behind_a_trusted_proxy(behind_one_proxy, settings, owner, patient):
    client = Client()  # the test client's peer is 127.0.0.1: the proxy on this machine
    client.force_login(owner)
    response = client.get(reverse("patient-detail", args=[patient.pk]), HTTP_X_FORWARDED_FOR=f"6.6.6.6, {_forged(7)}")
    assert AuditEvent.objects.get(request_id=response["X-Request-ID"]).ip == _forged(7)  # the rightmost hop
    settings.SKINPORTAL_TRUSTED_PROXY_ADDRESSES = ["10.0.0.0/24"]  # a proxy on another machine
    factory = RequestFactory()
    assert accounts.client_ip(factory.get("/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=_forged(8))) == _forged(8)
    assert accounts.client_ip(factory.get("/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=_forged(8))) == "127.0.0.1"


@pytest.mark.parametrize(
    ("proxies", "peer", "expected"),
    [
        (0, "127.0.0.1", "127.0.0.1"),  # no proxy configured: the header is never read
        (1, "127.0.0.1", "203.0.113.7"),
        (1, "::1", "203.0.113.7"),
        (1, "::ffff:127.0.0.1", "203.0.113.7"),  # a dual-stack socket's loopback
        (1, ATTACKER, ATTACKER),
        (1, "not-an-address", "not-an-address"),  # whatever the server says; the audit trail drops it
        (2, ATTACKER, ATTACKER),
    ],
)
def test_it_believes_forwarded_for_only_from_a_trusted_proxy(settings, proxies, peer, expected):
    settings.SKINPORTAL_TRUSTED_PROXIES = proxies
    request = RequestFactory().get("/", REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.7")
    assert accounts.client_ip(request) == expected


def test_it_warns_once_about_forwarded_for_from_an_unlisted_peer(behind_one_proxy, caplog):
    accounts._untrusted_forwarders_logged.discard("192.0.2.44")
    for _ in range(3):
        accounts.client_ip(RequestFactory().get("/", REMOTE_ADDR="192.0.2.44", HTTP_X_FORWARDED_FOR="6.6.6.6"))
    warnings = [r for r in caplog.records if "X-Forwarded-For from 192.0.2.44 ignored" in r.getMessage()]
    assert len(warnings) == 1 and "SKINPORTAL_TRUSTED_PROXY_ADDRESSES" in warnings[0].getMessage()


# --- Settings ------------------------------------------------------------------------------------


def _settings(env: dict[str, str], expression: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SKINPORTAL_TRUSTED", "SECURE_", "CACHE_URL"))}
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); from django.conf import settings; print({expression})"],
        cwd=REPO_ROOT,
        env=clean | {"DJANGO_SETTINGS_MODULE": "skinportal.settings"} | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_it_trusts_no_proxy_by_default_even_behind_tls():
    result = _settings(
        {"SECURE_PROXY_SSL_HEADER": "true"},
        "settings.SKINPORTAL_TRUSTED_PROXIES, settings.SKINPORTAL_TRUSTED_PROXY_ADDRESSES",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0 ['127.0.0.1/32', '::1/128']"


def test_it_reads_trusted_proxy_addresses_and_refuses_a_bad_one():
    result = _settings(
        {"SKINPORTAL_TRUSTED_PROXY_ADDRESSES": "10.0.0.5, 10.1.0.0/16 ,fd00::/8"},
        "settings.SKINPORTAL_TRUSTED_PROXY_ADDRESSES",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['10.0.0.5/32', '10.1.0.0/16', 'fd00::/8']"
    bad = _settings({"SKINPORTAL_TRUSTED_PROXY_ADDRESSES": "10.0.0.5,my-proxy"}, "1")
    assert bad.returncode != 0
    assert (
        "SKINPORTAL_TRUSTED_PROXY_ADDRESSES must list IP addresses or networks" in bad.stderr
        and "'my-proxy'" in bad.stderr
    )
