"""Patients and their lesions: where on the body, and how a lesion's follow-up ended."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from diagnosis.models.organisations import Organisation


class Sex(models.TextChoices):
    FEMALE = "female", "Female"
    MALE = "male", "Male"
    OTHER = "other", "Other"
    UNKNOWN = "unknown", "Unknown"


class MapView(models.TextChoices):
    """Which drawing of the body map a lesion is placed on (diagnosis/body_map.py)."""

    FRONT = "front", "Front"
    BACK = "back", "Back"


class BodySite(models.TextChoices):
    """The HAM10000 `localization` vocabulary (values stored verbatim)."""

    ABDOMEN = "abdomen", "Abdomen"
    ACRAL = "acral", "Acral"
    BACK = "back", "Back"
    CHEST = "chest", "Chest"
    EAR = "ear", "Ear"
    FACE = "face", "Face"
    FOOT = "foot", "Foot"
    GENITAL = "genital", "Genital"
    HAND = "hand", "Hand"
    LOWER_EXTREMITY = "lower extremity", "Lower extremity"
    NECK = "neck", "Neck"
    SCALP = "scalp", "Scalp"
    TRUNK = "trunk", "Trunk"
    UPPER_EXTREMITY = "upper extremity", "Upper extremity"
    UNKNOWN = "unknown", "Unknown"


class Laterality(models.TextChoices):
    """Which side of the body the lesion is on (the body site says where)."""

    LEFT = "left", "Left"
    RIGHT = "right", "Right"
    MIDLINE = "midline", "Midline"
    UNKNOWN = "unknown", "Unknown"


class LesionOutcome(models.TextChoices):
    """How a closed lesion ended; an open one has none."""

    EXCISED = "excised", "Excised, with histopathology"
    DISCHARGED = "discharged", "Discharged"


# Months after a flagged result at which a follow-up is suggested (the clinician may change it).
FOLLOW_UP_SUGGESTED_MONTHS = 3


class Patient(models.Model):
    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="patients")
    external_id = models.CharField(
        max_length=64, help_text="The clinic's own identifier (record number); unique within the organisation."
    )
    name = models.CharField(max_length=200)
    date_of_birth = models.DateField(null=True, blank=True)
    sex = models.CharField(max_length=10, choices=Sex.choices, default=Sex.UNKNOWN)
    notes = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organisation", "external_id"], name="patient_unique_external_id_per_org")
        ]
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.external_id})"


class Lesion(models.Model):
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="lesions")
    body_site = models.CharField(max_length=20, choices=BodySite.choices, default=BodySite.UNKNOWN)
    laterality = models.CharField(max_length=10, choices=Laterality.choices, default=Laterality.UNKNOWN)
    label = models.CharField(
        max_length=200, help_text="How the clinic refers to it, e.g. 'left shoulder, 2 cm below acromion'."
    )
    notes = models.TextField(blank=True)
    follow_up_on = models.DateField(
        null=True, blank=True, help_text="When to see the lesion again; empty when none is planned."
    )
    closed_on = models.DateField(null=True, blank=True, help_text="When the lesion was closed; empty while open.")
    outcome = models.CharField(
        max_length=12, choices=LesionOutcome.choices, blank=True, help_text="How a closed lesion ended."
    )
    outcome_note = models.TextField(blank=True, help_text="e.g. the histopathology report's conclusion.")
    # Its place on the body map: 0-1 across and down the chosen drawing; all empty while not placed
    # (the service keeps the three together).
    map_view = models.CharField(
        max_length=5, choices=MapView.choices, blank=True, help_text="Body map drawing; empty when not placed."
    )
    map_x = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="0 (left edge of the drawing) to 1 (right edge).",
    )
    map_y = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="0 (top of the drawing) to 1 (bottom).",
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["patient_id", "label", "id"]
        indexes = [models.Index(fields=["follow_up_on"], name="lesion_follow_up_on")]

    @property
    def closed(self) -> bool:
        return self.closed_on is not None

    @property
    def placed_on_map(self) -> bool:
        return bool(self.map_view) and self.map_x is not None and self.map_y is not None

    @property
    def side_and_site(self) -> str:
        """'Left · Upper extremity'; the site alone while the side is unknown."""
        site = self.get_body_site_display()
        return site if self.laterality == Laterality.UNKNOWN else f"{self.get_laterality_display()} · {site}"

    def __str__(self) -> str:
        return f"{self.label} ({self.get_body_site_display()})"

    @property
    def organisation_id(self) -> int:
        return self.patient.organisation_id
