"""What the model said about an image, and what a clinician said about it."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from diagnosis.inference import CLASSES, MALIGNANT_CLASSES, display_name, stored_field_of_view, warning_text
from diagnosis.models.images import LesionImage


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
    field_of_view = models.JSONField(
        null=True, blank=True,
        help_text="The crop to the dermatoscope's field of view the model read and the activation map lies in "
                  "(top, left, height, width in pixels of an image of image_height x image_width; "
                  "ml.field_of_view); null when it read the whole image.",
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
    def field_of_view_note(self) -> str:
        """What the model left out when it read the dermatoscope's field of view only (the result
        page and the PDF report say it alike); '' when it read the whole image."""
        box = stored_field_of_view(self.field_of_view) if self.succeeded else None
        if box is None:
            return ""
        return (f"The model read the dermatoscope's field of view only ({box['width']}×{box['height']} px of the "
                "image): the dark frame around it was left out. Skin the frame covers was not seen.")

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


# A clinician's diagnosis: one of the model's seven classes, or something else entirely.
OTHER_DIAGNOSIS = "other"
DIAGNOSIS_CHOICES: list[tuple[str, str]] = [(code, display_name(code)) for code in CLASSES] + [
    (OTHER_DIAGNOSIS, "Other (not one of the seven classes)")
]


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
