"""The project's own app: start-up checks (skinportal/checks.py) and the database cache's table.

It has no models; it exists so Django runs its `ready()` in every process (web, worker, commands).
"""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core.management import call_command
from django.db.models.signals import post_migrate


class SkinPortalConfig(AppConfig):
    name = "skinportal"
    verbose_name = "SkinPortal"

    def ready(self) -> None:
        from skinportal import checks  # noqa: F401  (registers the checks)

        post_migrate.connect(_create_cache_table, dispatch_uid="skinportal_create_cache_table")


def _create_cache_table(sender: Any, using: str = "default", **kwargs: Any) -> None:
    """`migrate` also creates the table of a database cache (CACHE_URL=dbcache://..., the production
    default), so the rate counters work without a separate `createcachetable` step. Idempotent;
    nothing for Redis or memory caches."""
    call_command("createcachetable", database=using, verbosity=0)
