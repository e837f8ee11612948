"""Serializers of images and their classifications: readings, warnings, uncertainty, heatmaps."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from diagnosis.api.serializers.common import NOTICE, IdField, _absolute
from diagnosis.api.serializers.segmentation import SegmentationOutput, segmentation_data
from diagnosis.api.waiting import MAX_WAIT_SECONDS
from diagnosis.inference import CLASSES, WARNING_CODES, model_performance, stored_field_of_view
from diagnosis.interpretation import LEVELS, read_result
from diagnosis.models import (
    PIXELS_PER_MM_MAX,
    PIXELS_PER_MM_MIN,
    ClassificationStatus,
)
from diagnosis.selectors import image_latest_classification


class ClassificationFilter(serializers.Serializer):
    patient = IdField(required=False)
    lesion = IdField(required=False)
    image = IdField(required=False)
    flagged = serializers.BooleanField(
        required=False,
        allow_null=True,
        default=None,
        help_text="true: succeeded and at/above threshold; false: succeeded and below.",
    )
    status = serializers.ChoiceField(choices=ClassificationStatus.choices, required=False)
    date_from = serializers.DateField(required=False, help_text="Image captured on or after (YYYY-MM-DD).")
    date_to = serializers.DateField(required=False, help_text="Image captured on or before (YYYY-MM-DD).")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("date_from") and attrs.get("date_to") and attrs["date_from"] > attrs["date_to"]:
            raise serializers.ValidationError({"date_to": "date_to is before date_from."})
        return attrs


class WarningOutput(serializers.Serializer):
    code = serializers.ChoiceField(choices=list(WARNING_CODES))
    message = serializers.CharField()


class ReadingOutput(serializers.Serializer):
    level = serializers.ChoiceField(choices=list(LEVELS))
    headline = serializers.CharField()
    details = serializers.ListField(child=serializers.CharField())


class UncertaintyOutput(serializers.Serializer):
    top_two_margin = serializers.FloatField(help_text="Top probability minus the second.")
    runner_up = serializers.CharField(help_text="Class code of the second most likely class.")
    runner_up_probability = serializers.FloatField()
    entropy = serializers.FloatField(allow_null=True, help_text="Of the probabilities, normalised to [0, 1].")
    low_confidence = serializers.BooleanField()


class PerformanceOutput(serializers.Serializer):
    model_version = serializers.CharField()
    threshold = serializers.FloatField()
    sensitivity = serializers.FloatField(help_text="Share of malignant test lesions flagged.")
    sensitivity_interval = serializers.ListField(child=serializers.FloatField(), allow_null=True)
    specificity = serializers.FloatField(help_text="Share of benign test lesions not flagged.")
    specificity_interval = serializers.ListField(child=serializers.FloatField(), allow_null=True)
    balanced_accuracy = serializers.FloatField()
    test_images = serializers.IntegerField()
    evaluated_on = serializers.CharField()


class FieldOfViewOutput(serializers.Serializer):
    top = serializers.IntegerField(help_text="First row of the crop, in pixels of the stored image.")
    left = serializers.IntegerField(help_text="First column of the crop.")
    height = serializers.IntegerField()
    width = serializers.IntegerField()
    image_height = serializers.IntegerField(help_text="The stored image's height the box is measured in.")
    image_width = serializers.IntegerField()


class ClassificationOutput(serializers.Serializer):
    id = serializers.IntegerField()
    image = serializers.IntegerField(source="image_id")
    lesion = serializers.IntegerField(source="image.lesion_id")
    patient = serializers.IntegerField(source="image.lesion.patient_id")
    status = serializers.ChoiceField(choices=ClassificationStatus.choices)
    model_version = serializers.CharField()
    model_variant = serializers.CharField()
    probabilities = serializers.SerializerMethodField()
    top_class = serializers.CharField(
        help_text="The suggested class's code, e.g. 'mel': the most probable class, or melanoma when the model's "
        "operating point favours it (see `favoured_over_most_likely`).")
    top_class_name = serializers.CharField(help_text="e.g. 'Melanoma (mel)'.")
    favoured_over_most_likely = serializers.BooleanField(
        help_text="True when `top_class` is not the most probable class: the model suggests melanoma whenever its "
        "probability comes close to the top class's, so that fewer melanomas are missed (`reading.details` says "
        "so in words; the probabilities are unchanged).")
    malignancy_score = serializers.FloatField(allow_null=True, help_text="P(mel) + P(bcc) + P(akiec).")
    malignant = serializers.BooleanField(help_text="malignancy_score >= threshold.")
    threshold = serializers.FloatField(allow_null=True)
    error_message = serializers.CharField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    inference_ms = serializers.FloatField(allow_null=True)
    created_at = serializers.DateTimeField()
    warnings = serializers.SerializerMethodField(
        help_text="Screening warnings, most fundamental first; empty when none. A result with any warning is "
        "never a reassurance.")
    reading = serializers.SerializerMethodField(
        help_text="What the result means in words (null unless succeeded): `level` is unreliable (the image is in "
        "doubt), flagged (at or above the threshold), uncertain (below, but the top classes are close) or "
        "reassuring (below, nothing to doubt).")
    uncertainty = serializers.SerializerMethodField(help_text="How sure the model is (null unless succeeded).")
    screening = serializers.JSONField(
        help_text="The measures behind the warnings: brightness, saturated, contrast, sharpness, margin, entropy, "
        "feature_distance.")
    model_performance = serializers.SerializerMethodField(
        help_text="The served model's measured flag sensitivity and specificity at its threshold on held-out test "
        "images, with 95% intervals over lesions (null for results of another model version).")
    context = serializers.JSONField(
        help_text="The clinical context the model weighed with the image, as used: `age` (a band such as "
        "'60-69', on the day the image was taken), `sex`, `site` (body site); empty when it read the image alone "
        "(none of them recorded, or a model without a context table). `model_performance` then gives the figures "
        "of answers like this one.")
    heatmap_url = serializers.SerializerMethodField(
        help_text="PNG of the class activation map over the image (null when this result has none).")
    field_of_view = serializers.SerializerMethodField(
        help_text="The part of the image the model read: its crop to the dermatoscope's round field of view, "
        "the dark frame around it left out (skin under the frame was not seen; the heatmap lies inside this box). "
        "Null when the model read the whole image.")
    segmentation = serializers.SerializerMethodField(
        help_text="The lesion's outline and ABCD-style measurements, computed with this result (null for results "
        "from before outlines were stored, or when the segmentation failed).")
    notice = serializers.SerializerMethodField()

    @extend_schema_field({"type": "object", "properties": {c: {"type": "number"} for c in CLASSES}})
    def get_probabilities(self, obj) -> dict[str, float]:
        return {code: float(obj.probabilities[code]) for code in CLASSES if code in obj.probabilities}

    @extend_schema_field(WarningOutput(many=True))
    def get_warnings(self, obj) -> list[dict[str, str]]:
        return [{"code": code, "message": message} for code, message in obj.warning_messages]

    @extend_schema_field(ReadingOutput(allow_null=True))
    def get_reading(self, obj) -> dict[str, Any] | None:
        reading = read_result(obj)
        return None if reading is None else {"level": reading.level, "headline": reading.headline,
                                             "details": reading.details}

    @extend_schema_field(UncertaintyOutput(allow_null=True))
    def get_uncertainty(self, obj) -> dict[str, Any] | None:
        if obj.margin is None:
            return None
        code, _, probability = obj.runner_up
        return {"top_two_margin": round(obj.margin, 4), "runner_up": code, "runner_up_probability": round(probability, 4),
                "entropy": (obj.screening or {}).get("entropy"), "low_confidence": "low_confidence" in (obj.warnings or [])}

    @extend_schema_field(PerformanceOutput(allow_null=True))
    def get_model_performance(self, obj) -> dict[str, Any] | None:
        performance = model_performance(obj.model_version, obj.model_variant or "fp32",
                                        with_context=bool(obj.context)) if obj.succeeded else None
        return None if performance is None else asdict(performance)

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_heatmap_url(self, obj) -> str | None:
        if not (obj.succeeded and obj.activation_map):
            return None
        return _absolute(self.context.get("request"), reverse("api-image-heatmap", args=[obj.image_id]))

    @extend_schema_field(FieldOfViewOutput(allow_null=True))
    def get_field_of_view(self, obj) -> dict[str, int] | None:
        return stored_field_of_view(obj.field_of_view) if obj.succeeded else None

    @extend_schema_field(SegmentationOutput(allow_null=True))
    def get_segmentation(self, obj) -> dict[str, Any] | None:
        return segmentation_data(obj, self.context)

    def get_notice(self, obj) -> str:
        return NOTICE


class ImageFilter(serializers.Serializer):
    lesion = IdField(required=False)
    patient = IdField(required=False)
    batch = IdField(required=False, help_text="Only the images of this batch (its results, page by page).")


class WaitQuery(serializers.Serializer):
    wait = serializers.FloatField(
        required=False,
        min_value=0,
        max_value=MAX_WAIT_SECONDS,
        help_text=f"Seconds (at most {MAX_WAIT_SECONDS}) to wait for the queued or running classifications to "
        "finish before answering.",
    )


class HeatmapQuery(serializers.Serializer):
    def get_fields(self) -> dict[str, serializers.Field]:
        # The parameter is called "class", a Python keyword, so it cannot be a class attribute.
        return {"class": serializers.ChoiceField(
            choices=list(CLASSES), required=False,
            help_text="Class whose evidence to show (default: the result's top class).")}


class ImageCreateInput(serializers.Serializer):
    lesion = IdField()
    image = serializers.FileField(
        help_text="JPEG, PNG or DICOM (one 8-bit frame: uncompressed or JPEG baseline). Its metadata (EXIF, GPS, "
        "ICC, text; a DICOM header) is removed; its image data is kept as it is."
    )
    captured_at = serializers.DateField(required=False, help_text="Capture date (YYYY-MM-DD); default today.")
    pixels_per_mm = serializers.FloatField(
        required=False, allow_null=True, min_value=PIXELS_PER_MM_MIN, max_value=PIXELS_PER_MM_MAX,
        help_text="Optional scale of the image, pixels per mm: the lesion's area is then also given in mm².")


class ImageOutput(serializers.Serializer):
    id = serializers.IntegerField()
    lesion = serializers.IntegerField(source="lesion_id")
    patient = serializers.IntegerField(source="lesion.patient_id")
    captured_at = serializers.DateField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    size_bytes = serializers.IntegerField()
    sha256 = serializers.CharField()
    source_format = serializers.CharField()
    pixels_per_mm = serializers.FloatField(allow_null=True, help_text="The scale given at upload (null: none).")
    uploaded_by = serializers.CharField(source="uploaded_by.username", allow_null=True, default=None)
    uploaded_at = serializers.DateTimeField()
    file_url = serializers.SerializerMethodField()
    classification = serializers.SerializerMethodField()

    def get_file_url(self, obj) -> str:
        return _absolute(self.context.get("request"), reverse("api-image-file", kwargs={"image_id": obj.pk}))

    @extend_schema_field(ClassificationOutput(allow_null=True))
    def get_classification(self, obj) -> dict[str, Any] | None:
        """The newest classification; null while it is still queued."""
        classification = image_latest_classification(image=obj)
        return ClassificationOutput(classification, context=self.context).data if classification else None
