"""Organisations (clinics) and their members' roles."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    ADMIN = "admin", "Owner / admin"
    CLINICIAN = "clinician", "Clinician"
    READONLY = "readonly", "Read-only"


# Roles that may create and change patients, lesions, images and reviews.
WRITE_ROLES: frozenset[str] = frozenset({Role.ADMIN, Role.CLINICIAN})


class Organisation(models.Model):
    """A clinic or practice: the unit that owns patients and whose members see them."""

    name = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.CLINICIAN)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "organisation"], name="membership_unique_user_org")]
        ordering = ["organisation__name", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} in {self.organisation} ({self.get_role_display()})"

    @property
    def can_write(self) -> bool:
        return self.role in WRITE_ROLES
