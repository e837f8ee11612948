"""SkinPortal's domain: organisations and their members, patients, lesions, images,
model classifications and clinicians' reviews.

Every patient belongs to exactly one organisation, and everything below a patient inherits
that organisation; selectors scope every read to the user's memberships.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from diagnosis.inference import CLASSES, MALIGNANT_CLASSES, display_name, warning_text


class Role(models.TextChoices):
    ADMIN = "admin", "Owner / admin"
    CLINICIAN = "clinician", "Clinician"
    READONLY = "readonly", "Read-only"


# Roles that may create and change patients, lesions, images and reviews.
WRITE_ROLES: frozenset[str] = frozenset({Role.ADMIN, Role.CLINICIAN})


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


# A clinician's diagnosis: one of the model's seven classes, or something else entirely.
OTHER_DIAGNOSIS = "other"
DIAGNOSIS_CHOICES: list[tuple[str, str]] = [(code, display_name(code)) for code in CLASSES] + [
    (OTHER_DIAGNOSIS, "Other (not one of the seven classes)")
]


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


def image_file_extension(name: str) -> str:
    """jpg or png: a stored image's format, from its file name (files stored before 2026-11, and
    pictures turned upright, are PNG)."""
    return "jpg" if name.lower().endswith(".jpg") else "png"


def lesion_image_path(instance: LesionImage, filename: str) -> str:
    """A generated name: the uploaded file name (which may hold a patient's name) is never used on
    disk. Only the extension is taken from `filename` (the service names it upload.jpg or upload.png)."""
    return f"lesion-images/{timezone.now():%Y/%m}/{uuid.uuid4().hex}.{image_file_extension(filename)}"


class BatchKind(models.TextChoices):
    FILES = "files", "Multi-file upload"
    ARCHIVE = "zip", "ZIP archive"
    IMPORT = "import", "Bulk import"


class Batch(models.Model):
    """Several images received together (a multi-file upload, a ZIP, a bulk import).

    Progress is not stored: it is counted from the member images' classifications, so it can
    never disagree with them. Files that were refused are listed in `rejected`.
    """

    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="batches")
    kind = models.CharField(max_length=10, choices=BatchKind.choices, default=BatchKind.FILES)
    name = models.CharField(max_length=255, blank=True, help_text="e.g. the ZIP file's name.")
    lesion = models.ForeignKey(
        "Lesion",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Where files without a CSV row go.",
    )
    received = models.PositiveIntegerField(default=0, help_text="Files received (images in the ZIP, not the CSV).")
    rejected = models.JSONField(default=list, blank=True, help_text='[{"name": file, "error": why}, ...]')
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "batches"

    def __str__(self) -> str:
        return f"Batch {self.pk} ({self.get_kind_display()}, {self.received} files)"


# An image's scale, pixels per millimetre: 1 is a wide clinical photo, 1000 beyond any dermatoscope
# (about 100 at 20x magnification on a phone); outside this range it is a typing mistake.
PIXELS_PER_MM_MIN = 1.0
PIXELS_PER_MM_MAX = 1000.0


class LesionImage(models.Model):
    lesion = models.ForeignKey(Lesion, on_delete=models.CASCADE, related_name="images")
    batch = models.ForeignKey(Batch, on_delete=models.SET_NULL, null=True, blank=True, related_name="images")
    source_name = models.CharField(
        max_length=255, blank=True, help_text="Name of the uploaded file (for reports only; never used on disk)."
    )
    source_sha256 = models.CharField(
        max_length=64, blank=True, db_index=True, help_text="Of the file as received (bulk import skips repeats)."
    )
    captured_at = models.DateField(default=timezone.localdate, help_text="Date the image was taken (the visit).")
    # The upload's own compressed pixels (JPEG or PNG) without EXIF, GPS, ICC or any other
    # metadata block; a photo with an EXIF orientation is stored upright as PNG. Files stored
    # before 2026-11 are PNG re-encodings. diagnosis.inference.sanitise_upload says how.
    file = models.FileField(upload_to=lesion_image_path, max_length=255)
    sha256 = models.CharField(max_length=64, help_text="Of the stored file (metadata removed).")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    size_bytes = models.PositiveIntegerField()
    source_format = models.CharField(max_length=10, help_text="Format of the upload as judged from its bytes.")
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    uploaded_at = models.DateTimeField(auto_now_add=True)
    # The image's scale when the uploader gives one (a dermatoscope's known field, a ruler): the
    # lesion's area and diameter are then also stored in mm.
    pixels_per_mm = models.FloatField(
        null=True, blank=True, help_text="Image scale, pixels per millimetre.",
        validators=[MinValueValidator(PIXELS_PER_MM_MIN), MaxValueValidator(PIXELS_PER_MM_MAX)],
    )

    class Meta:
        ordering = ["captured_at", "uploaded_at", "id"]
        indexes = [models.Index(fields=["lesion", "captured_at"])]

    def __str__(self) -> str:
        return f"Image {self.pk} of lesion {self.lesion_id} ({self.captured_at})"

    @property
    def stored_extension(self) -> str:
        return image_file_extension(self.file.name)

    @property
    def stored_content_type(self) -> str:
        return "image/jpeg" if self.stored_extension == "jpg" else "image/png"


class ClassificationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class Classification(models.Model):
    """The model's output for one image; one row per image and model version."""

    # Failures before any model could be loaded have no version to record.
    UNKNOWN_MODEL_VERSION = "unknown"

    image = models.ForeignKey(LesionImage, on_delete=models.CASCADE, related_name="classifications")
    model_version = models.CharField(max_length=100)
    model_variant = models.CharField(max_length=20, blank=True)
    status = models.CharField(max_length=10, choices=ClassificationStatus.choices, default=ClassificationStatus.PENDING)
    probabilities = models.JSONField(default=dict, blank=True, help_text="Class code -> probability, all 7 classes.")
    top_class = models.CharField(max_length=10, blank=True)
    malignancy_score = models.FloatField(null=True, blank=True)
    malignant = models.BooleanField(default=False, help_text="Malignancy score at or above the model's threshold.")
    threshold = models.FloatField(null=True, blank=True)
    error_message = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    inference_ms = models.FloatField(null=True, blank=True, help_text="Model time for this image, milliseconds.")
    warnings = models.JSONField(
        default=list, blank=True,
        help_text="Screening warning codes (not_dermoscopic, blurred, too_dark, too_bright, low_contrast, "
                  "low_confidence), most fundamental first; empty when none.",
    )
    screening = models.JSONField(
        default=dict, blank=True,
        help_text="The measures behind the warnings: image quality, top-two margin, entropy, feature distance.",
    )
    activation_map = models.JSONField(
        null=True, blank=True,
        help_text="Class activation map as nested lists [row][column][class], in the model input's orientation.",
    )
    context = models.JSONField(
        default=dict, blank=True,
        help_text="The clinical context that moved the answer (ml.context): age band, sex and body site as used; "
                  "empty when the image was read alone.",
    )
    segmentation = models.JSONField(
        null=True, blank=True,
        help_text="The lesion's outline and ABCD-style descriptors, computed with the classification "
                  "(diagnosis.inference.segment_image); null before it existed or when it failed.",
    )
    # Delivery bookkeeping: the request being served ("<celery task id>:<retry number>") and how
    # many times a worker has started it (a redelivery after a crash keeps the key). Capped by
    # SKINPORTAL_MAX_DELIVERIES.
    task_id = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["image", "model_version"], name="classification_unique_image_model_version")
        ]
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "malignant"])]

    def __str__(self) -> str:
        return f"Classification of image {self.image_id} by {self.model_version}: {self.status}"

    @property
    def succeeded(self) -> bool:
        return self.status == ClassificationStatus.SUCCEEDED

    @property
    def failed(self) -> bool:
        return self.status == ClassificationStatus.FAILED

    @property
    def top_class_name(self) -> str:
        return display_name(self.top_class) if self.top_class in CLASSES else ""

    @property
    def favoured_over_most_likely(self) -> bool:
        """The suggested class is not the most probable one: the model's operating point
        (ml.training.operating_point) suggests melanoma when its probability comes close to the
        top class's, so that fewer melanomas are missed. Said in words wherever it is shown."""
        if not (self.succeeded and self.probabilities):
            return False
        return self.top_class != self.ranked_probabilities()[0][0]

    @property
    def top_class_label(self) -> str:
        return "Suggested" if self.favoured_over_most_likely else "Most likely"

    def ranked_probabilities(self) -> list[tuple[str, str, float]]:
        """(code, readable name, probability), most likely first."""
        rows = [(code, display_name(code), float(self.probabilities.get(code, 0.0))) for code in CLASSES]
        return sorted(rows, key=lambda row: row[2], reverse=True)

    # --- How far to trust it (see ml/screening) ---------------------------------------------

    @property
    def warning_messages(self) -> list[tuple[str, str]]:
        """(code, plain words) of each warning, most fundamental first."""
        return [(code, warning_text(code)) for code in self.warnings or []]

    @property
    def margin(self) -> float | None:
        """Top probability minus the second: how clearly the model prefers its first choice."""
        ranked = self.ranked_probabilities()
        return ranked[0][2] - ranked[1][2] if self.succeeded and self.probabilities else None

    @property
    def runner_up(self) -> tuple[str, str, float] | None:
        ranked = self.ranked_probabilities()
        return ranked[1] if self.succeeded and self.probabilities else None

    @property
    def malignant_group_decides(self) -> bool:
        """Flagged although the single most likely class is benign: the malignant classes
        together reach the threshold. Said in words on every page, so the two don't contradict."""
        return self.succeeded and self.malignant and self.top_class not in MALIGNANT_CLASSES


class ClinicianReview(models.Model):
    """A clinician's own judgement of one image, kept beside the model's."""

    image = models.ForeignKey(LesionImage, on_delete=models.CASCADE, related_name="reviews")
    diagnosis = models.CharField(max_length=10, choices=DIAGNOSIS_CHOICES)
    histopathology_confirmed = models.BooleanField(default=False)
    comment = models.TextField(blank=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Review of image {self.image_id}: {self.diagnosis}"


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
