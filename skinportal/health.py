"""Probes for load balancers and orchestrators, and the queue figures shown to staff.

    GET /healthz   200 "ok" while the process answers (no dependencies checked: liveness)
    GET /readyz    200 when the database, the cache, the broker and the model are usable, else
                   503; the JSON body is {"status": "ready" | "not ready"} for anyone, and says
                   which check failed and why only to staff or to a monitor that sends
                   `Authorization: Bearer <SKINPORTAL_MONITORING_TOKEN>` (readiness)

Both answer without a login, because load balancers probe them (over plain HTTP inside the
network), so an anonymous caller learns nothing but the status: the details name the database
engine, the broker, the model version and, on a failure, file paths. Both are cheap: the model
check reads the manifest and re-hashes the ONNX file only when it changes; the broker check
opens one connection with a short timeout.

The project's own checks are the database and the broker; an app adds its own with
`readiness_check_register` when it is ready (diagnosis adds the model's), so this module
imports no app.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)

BROKER_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


def database_check() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - any driver error means: not ready
        return Check(False, f"database unreachable: {type(exc).__name__}: {exc}")
    return Check(True, connection.vendor)


def cache_check() -> Check:
    """The cache holds the rate counters; a database cache's table missing (no `migrate` since
    CACHE_URL changed) or Redis away would fail every throttled request."""
    try:
        cache.get("skinportal:readyz")
    except Exception as exc:  # noqa: BLE001 - any backend error means: not ready
        return Check(False, f"cache unusable: {type(exc).__name__}: {exc}")
    return Check(True, settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1])


def _broker_connection():
    from skinportal.celery import app

    return app.connection_for_write()


def broker_check() -> Check:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return Check(True, "embedded: tasks run in the web process (no broker)")
    try:
        with _broker_connection() as conn:
            conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_S)
            conn.default_channel  # noqa: B018 - opens a channel (Redis: PING)
    except Exception as exc:  # noqa: BLE001 - kombu raises many unrelated types: all mean not ready
        return Check(False, f"broker unreachable: {type(exc).__name__}: {exc}")
    return Check(True, f"{conn.transport_cls} broker reachable")


@dataclass(frozen=True)
class QueueStats:
    available: bool
    queue: str
    waiting: int | None  # messages not yet taken by a worker
    unacked: int | None  # taken by a worker, not yet acknowledged (running or prefetched)
    detail: str = ""


def queue_stats() -> QueueStats:
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return QueueStats(True, queue, 0, 0, "embedded: no queue, tasks run in the web process")
    try:
        with _broker_connection() as conn:
            conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_S)
            channel = conn.default_channel
            waiting = channel.queue_declare(queue=queue, passive=True).message_count
            unacked = None
            client = getattr(channel, "client", None)
            if client is not None and hasattr(channel, "unacked_key"):
                unacked = int(client.hlen(channel.unacked_key))
    except Exception as exc:  # noqa: BLE001 - shown to staff as "broker unreachable"
        return QueueStats(False, queue, None, None, f"{type(exc).__name__}: {exc}")
    return QueueStats(True, queue, int(waiting), unacked)


@never_cache
@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok\n", content_type="text/plain")


_READINESS_CHECKS: dict[str, Callable[[], Check]] = {
    "database": database_check,
    "cache": cache_check,
    "broker": broker_check,
}


def readiness_check_register(name: str, check: Callable[[], Check]) -> None:
    """Add a check to /readyz and the operations page (an app's AppConfig.ready)."""
    _READINESS_CHECKS[name] = check


def readiness_checks() -> dict[str, Check]:
    """Every registered check, run now, in the order registered."""
    return {name: check() for name, check in _READINESS_CHECKS.items()}


def may_see_details(request: HttpRequest) -> bool:
    """Staff (a session), or a monitor with the configured token (`Authorization: Bearer ...`)."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    expected: str | None = settings.SKINPORTAL_MONITORING_TOKEN
    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    if not expected or scheme.lower() != "bearer" or not sent:
        return False
    return hmac.compare_digest(sent.strip().encode(), expected.encode())


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks = readiness_checks()
    ready = all(check.ok for check in checks.values())
    if not ready:
        logger.warning("not ready: %s", {name: c.detail for name, c in checks.items() if not c.ok})
    body: dict[str, object] = {"status": "ready" if ready else "not ready"}
    if may_see_details(request):
        body["checks"] = {name: asdict(c) for name, c in checks.items()}
    return JsonResponse(body, status=200 if ready else 503)
