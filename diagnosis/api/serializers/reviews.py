"""Serializers of clinician reviews, the review queue and the model's agreement with the reviews."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from diagnosis import agreement
from diagnosis.api.serializers.common import NOTICE, IdField
from diagnosis.inference import CLASSES, WARNING_CODES
from diagnosis.interpretation import LEVELS, level_of
from diagnosis.limits import LONG_TEXT_MAX_CHARS
from diagnosis.models import (
    DIAGNOSIS_CHOICES,
)


class ReviewFilter(serializers.Serializer):
    image = IdField(required=False)
    lesion = IdField(required=False)
    patient = IdField(required=False)


class ReviewCreateInput(serializers.Serializer):
    image = IdField()
    diagnosis = serializers.ChoiceField(choices=DIAGNOSIS_CHOICES)
    histopathology_confirmed = serializers.BooleanField(required=False, default=False)
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=LONG_TEXT_MAX_CHARS)


class ReviewOutput(serializers.Serializer):
    id = serializers.IntegerField()
    image = serializers.IntegerField(source="image_id")
    lesion = serializers.IntegerField(source="image.lesion_id")
    diagnosis = serializers.ChoiceField(choices=DIAGNOSIS_CHOICES)
    diagnosis_name = serializers.CharField(source="get_diagnosis_display")
    histopathology_confirmed = serializers.BooleanField()
    comment = serializers.CharField()
    author = serializers.CharField(source="author.username", allow_null=True, default=None)
    created_at = serializers.DateTimeField()


class AgreementQuery(serializers.Serializer):
    model_version = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=100,
        help_text="Count only this model version's results (one listed in `model_versions`); left out or empty: "
        "every version, each image's latest result.",
    )

    def validate_model_version(self, value: str) -> str:
        versions = self.context.get("versions", ())
        if value and value not in versions:
            raise serializers.ValidationError(
                "No reviewed image of this organisation has a result from this model version; asked without "
                "`model_version`, the answer lists those that have in `model_versions`."
            )
        return value


class ProportionOutput(serializers.Serializer):
    count = serializers.IntegerField(help_text="Images that meet the measure.")
    total = serializers.IntegerField(help_text="Images it is counted over.")
    value = serializers.FloatField(allow_null=True, help_text="count / total; null when total is 0.")
    ci95_low = serializers.FloatField(source="low", allow_null=True, help_text="Wilson score 95% interval.")
    ci95_high = serializers.FloatField(source="high", allow_null=True, help_text="Wilson score 95% interval.")
    small_sample = serializers.BooleanField(
        source="small", help_text="Fewer than 50 images: the interval is wide (the page warns)."
    )


class KappaOutput(serializers.Serializer):
    defined = serializers.BooleanField(help_text="False without pairs, or when both used one and the same class.")
    value = serializers.FloatField(allow_null=True, help_text="Cohen's kappa, unweighted; null when not defined.")
    standard_error = serializers.FloatField(allow_null=True, help_text="Fleiss, Cohen & Everitt (1969).")
    ci95_low = serializers.FloatField(source="low", allow_null=True, help_text="kappa - 1.96 SE, at least -1.")
    ci95_high = serializers.FloatField(source="high", allow_null=True, help_text="kappa + 1.96 SE, at most 1.")
    undefined_reason = serializers.CharField(help_text="Why kappa is not defined; empty when it is.")


class ClassAgreementOutput(serializers.Serializer):
    clinician_class = serializers.ChoiceField(
        choices=list(CLASSES), source="code", help_text="The clinician's diagnosis: one of the seven classes."
    )
    agreement = ProportionOutput(help_text="Of the images with this diagnosis, those whose top class it was too.")
    model_count = serializers.IntegerField(help_text="Images whose top class this was, whatever the diagnosis.")


class ConfusionMatrixOutput(serializers.Serializer):
    labels = serializers.ListField(
        child=serializers.CharField(), source="classes", help_text="The seven classes, in row and column order."
    )
    rows = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField()),
        source="matrix",
        help_text="rows[i][j]: images the clinician put in labels[i] and the model in labels[j].",
    )


class AgreementSectionOutput(serializers.Serializer):
    pairs = serializers.IntegerField(help_text="Images compared.")
    small_sample = serializers.BooleanField(source="small", help_text="Fewer than 50 images: intervals are wide.")
    overall_agreement = ProportionOutput(source="overall", help_text="The top class is the clinician's diagnosis.")
    kappa = KappaOutput()
    per_class = ClassAgreementOutput(many=True)
    confusion_matrix = ConfusionMatrixOutput(source="*")


class FlagPerformanceOutput(serializers.Serializer):
    sensitivity = ProportionOutput(help_text="Flagged, of the confirmed malignant (mel, bcc, akiec).")
    specificity = ProportionOutput(help_text="Not flagged, of the confirmed benign (bkl, df, nv, vasc).")
    true_positives = serializers.IntegerField()
    false_negatives = serializers.IntegerField()
    true_negatives = serializers.IntegerField()
    false_positives = serializers.IntegerField()


class ModelVersionCountOutput(serializers.Serializer):
    model_version = serializers.CharField()
    pairs = serializers.IntegerField(help_text="Reviewed images with a succeeded result from this version.")
    confirmed_pairs = serializers.IntegerField(help_text="Of them, with a histopathology-confirmed latest review.")


class AgreementOutput(serializers.Serializer):
    organisation = serializers.SerializerMethodField()
    model_version = serializers.CharField(
        allow_null=True, help_text="The version counted; null: every version, each image's latest result."
    )
    model_versions = ModelVersionCountOutput(source="versions", many=True)
    reviewed_images = serializers.IntegerField(help_text="Images with at least one review.")
    without_result = serializers.IntegerField(help_text="Of them, without a succeeded result (left out).")
    other_diagnosis = serializers.IntegerField(help_text="Compared images whose latest review says 'other' (left out).")
    other_diagnosis_confirmed = serializers.IntegerField(help_text="Of them, histopathology-confirmed.")
    all_reviews = AgreementSectionOutput()
    confirmed = AgreementSectionOutput(help_text="Histopathology-confirmed latest reviews only.")
    malignancy_flag = FlagPerformanceOutput(help_text="Against the histopathology-confirmed diagnoses.")
    pairing = serializers.SerializerMethodField()
    notice = serializers.SerializerMethodField()

    def get_organisation(self, report: Any) -> int:
        return self.context["organisation"].pk

    def get_pairing(self, report: Any) -> str:
        return agreement.PAIRING

    def get_notice(self, report: Any) -> str:
        return agreement.NOTICE


class ReviewQueueOutput(serializers.Serializer):
    image = serializers.IntegerField(source="pk")
    lesion = serializers.IntegerField(source="lesion_id")
    lesion_label = serializers.CharField(source="lesion.label")
    patient = serializers.IntegerField(source="lesion.patient_id")
    patient_name = serializers.CharField(source="lesion.patient.name")
    captured_at = serializers.DateField()
    classification = serializers.IntegerField(source="queue_classification_id")
    top_class = serializers.CharField(source="queue_top_class", help_text="Class code, e.g. 'mel'.")
    malignancy_score = serializers.FloatField(source="queue_score", allow_null=True)
    threshold = serializers.FloatField(source="queue_threshold", allow_null=True)
    level = serializers.SerializerMethodField(
        help_text="flagged (at or above the threshold), unreliable (the image is in doubt) or uncertain (below, "
        "but the top classes are close): never reassuring here.")
    warnings = serializers.ListField(
        source="queue_warnings", child=serializers.ChoiceField(choices=list(WARNING_CODES)),
        help_text="Screening warnings of the result, most fundamental first.")
    url = serializers.SerializerMethodField(help_text="The image's result page, where the review is written.")
    notice = serializers.SerializerMethodField()

    @extend_schema_field(serializers.ChoiceField(choices=list(LEVELS)))
    def get_level(self, obj) -> str:
        return level_of(malignant=bool(obj.queue_malignant), warnings=obj.queue_warnings)

    def get_url(self, obj) -> str:
        return reverse("image-detail", args=[obj.pk])

    def get_notice(self, obj) -> str:
        return NOTICE
