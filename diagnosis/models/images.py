"""Stored lesion images and the batches they arrived in."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from diagnosis.models.organisations import Organisation
from diagnosis.models.patients import Lesion


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
