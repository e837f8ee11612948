"""The append-only audit trail: who did what to which piece of patient data, and when."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class AuditEventQuerySet(models.QuerySet):
    """Append-only: rows can be added and read, never changed or removed through the ORM."""

    def update(self, **kwargs):
        raise PermissionError("Audit events are append-only: they cannot be updated.")

    def delete(self):
        raise PermissionError("Audit events are append-only: they cannot be deleted.")

    def bulk_update(self, objs, fields, batch_size=None):
        raise PermissionError("Audit events are append-only: they cannot be updated.")


class AuditSurface(models.TextChoices):
    PAGE = "page", "Web page"
    API = "api", "REST API"
    ADMIN = "admin", "Admin site"
    TASK = "task", "Background task"
    COMMAND = "command", "Management command"


class AuditOutcome(models.TextChoices):
    OK = "ok", "Done"
    DENIED = "denied", "Denied"  # not authorised: 401, 403, or 404 for another organisation's object
    REFUSED = "refused", "Refused"  # authorised but invalid: 400, 405, 409, 413, 429
    ERROR = "error", "Server error"


class AuditEvent(models.Model):
    """Who did what to which piece of patient data, when, and from where; one row per request
    to a patient-data route, per image a task classifies, and per denied attempt.

    No patient data is stored here: only ids, the route's name and the outcome. Actor and
    organisation are plain ids (not foreign keys), so deleting a user or an organisation can
    never update or remove its history.
    """

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_id = models.BigIntegerField(null=True, blank=True, help_text="User id; empty for background tasks.")
    actor_username = models.CharField(max_length=150, blank=True)
    organisation_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    action = models.CharField(max_length=20)
    object_type = models.CharField(max_length=20, blank=True)
    object_id = models.BigIntegerField(null=True, blank=True)
    surface = models.CharField(max_length=10, choices=AuditSurface.choices)
    route = models.CharField(max_length=100, blank=True, help_text="URL name (never the path: it may hold a search).")
    method = models.CharField(max_length=10, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=10, choices=AuditOutcome.choices, default=AuditOutcome.OK)
    ip = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["organisation_id", "at"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_username or 'system'} {self.action} {self.object_type} {self.object_id or ''}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise PermissionError("Audit events are append-only: they cannot be updated.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("Audit events are append-only: they cannot be deleted.")
