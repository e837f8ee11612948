"""Explicit input and output serializers of the REST API (no ModelSerializer magic)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from diagnosis import agreement
from diagnosis.api.waiting import MAX_WAIT_SECONDS
from diagnosis.inference import CLASSES, WARNING_CODES, model_performance
from diagnosis.interpretation import LEVELS, level_of, read_result
from diagnosis.limits import LONG_TEXT_MAX_CHARS, PASSWORD_MAX_CHARS, SEARCH_MAX_CHARS
from diagnosis.models import (
    DIAGNOSIS_CHOICES,
    BodySite,
    ClassificationStatus,
    Laterality,
    LesionOutcome,
    MapView,
    Role,
    Sex,
)
from diagnosis.selectors import FOLLOW_UP_STATES, follow_up_state, follow_up_suggestion, image_latest_classification

NOTICE = (
    "Decision support, not a diagnosis. SkinPortal is research and education software, not a certified medical device."
)

# Ids are 64-bit (BigAutoField). A larger or non-positive number in a filter or a reference is a
# 400, never a database error: the fuzz found ?patient=<40 digits> answered 500 (OverflowError in
# SQLite on a lookup across a relation; Django only guards lookups on the field itself).
MAX_ID = 2**63 - 1


class IdField(serializers.IntegerField):
    """An object id in a request: a query filter or a reference in a body."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(min_value=1, max_value=MAX_ID, **kwargs)


# --- Auth ----------------------------------------------------------------------------------


class TokenInput(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False,
                                     max_length=PASSWORD_MAX_CHARS)


class TokenOutput(serializers.Serializer):
    token = serializers.CharField(
        source="key",
        help_text="The key: send it as `Authorization: Token <key>`. Shown this once: only its digest is stored.",
    )
    expiry = serializers.DateTimeField(
        help_text="When the key stops working; a password change or reset ends it sooner."
    )


class ApiTokenOutput(serializers.Serializer):
    key = serializers.CharField(
        source="token_key", help_text="The key's first 15 characters: name the token when you revoke or rotate it."
    )
    created = serializers.DateTimeField()
    expiry = serializers.DateTimeField()
    current = serializers.SerializerMethodField(help_text="Whether this request was authenticated with it.")

    def get_current(self, token: Any) -> bool:
        request = self.context.get("request")
        used = getattr(request, "auth", None)
        return getattr(used, "digest", None) == token.digest


class MembershipOutput(serializers.Serializer):
    organisation = serializers.IntegerField(source="organisation_id")
    organisation_name = serializers.CharField(source="organisation.name")
    role = serializers.ChoiceField(choices=Role.choices)
    can_write = serializers.BooleanField()


class MeOutput(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    memberships = MembershipOutput(many=True)


# --- Patients ------------------------------------------------------------------------------


class PatientFilter(serializers.Serializer):
    q = serializers.CharField(
        required=False, allow_blank=True, max_length=SEARCH_MAX_CHARS, help_text="Matches name or external id."
    )
    organisation = IdField(required=False)


class PatientCreateInput(serializers.Serializer):
    organisation = IdField(
        required=False, help_text="Organisation id; optional when you can write to exactly one organisation."
    )
    external_id = serializers.CharField(max_length=64)
    name = serializers.CharField(max_length=200)
    date_of_birth = serializers.DateField(required=False, allow_null=True)
    sex = serializers.ChoiceField(choices=Sex.choices, required=False, default=Sex.UNKNOWN)
    notes = serializers.CharField(required=False, allow_blank=True, default="", max_length=LONG_TEXT_MAX_CHARS)


class PatientUpdateInput(serializers.Serializer):
    external_id = serializers.CharField(max_length=64, required=False)
    name = serializers.CharField(max_length=200, required=False)
    date_of_birth = serializers.DateField(required=False, allow_null=True)
    sex = serializers.ChoiceField(choices=Sex.choices, required=False)
    notes = serializers.CharField(required=False, allow_blank=True, max_length=LONG_TEXT_MAX_CHARS)


class PatientOutput(serializers.Serializer):
    id = serializers.IntegerField()
    organisation = serializers.IntegerField(source="organisation_id")
    organisation_name = serializers.CharField(source="organisation.name")
    external_id = serializers.CharField()
    name = serializers.CharField()
    date_of_birth = serializers.DateField(allow_null=True)
    sex = serializers.ChoiceField(choices=Sex.choices)
    notes = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


# --- Lesions -------------------------------------------------------------------------------


class LesionFilter(serializers.Serializer):
    patient = IdField(required=False)


MAP_VIEW_HELP = "Body map drawing the lesion is placed on; null (or empty) when not placed."
MAP_X_HELP = "Place on the drawing, 0 (its left edge) to 1 (its right edge); null when not placed."
MAP_Y_HELP = "Place on the drawing, 0 (its top) to 1 (its bottom); null when not placed."
MAP_RULE = " map_view, map_x and map_y go together: all three, or none."


def _map_view_field(**kwargs) -> serializers.ChoiceField:
    return serializers.ChoiceField(
        choices=MapView.choices, allow_blank=True, allow_null=True, help_text=MAP_VIEW_HELP + MAP_RULE, **kwargs
    )


def _map_coordinate_field(help_text: str, **kwargs) -> serializers.FloatField:
    return serializers.FloatField(allow_null=True, min_value=0.0, max_value=1.0, help_text=help_text, **kwargs)


class LesionCreateInput(serializers.Serializer):
    patient = IdField()
    body_site = serializers.ChoiceField(choices=BodySite.choices, help_text="HAM10000 anatomic-site vocabulary.")
    laterality = serializers.ChoiceField(
        choices=Laterality.choices, required=False, default=Laterality.UNKNOWN, help_text="Side of the body."
    )
    label = serializers.CharField(max_length=200)
    notes = serializers.CharField(required=False, allow_blank=True, default="", max_length=LONG_TEXT_MAX_CHARS)
    map_view = _map_view_field(required=False, default="")
    map_x = _map_coordinate_field(MAP_X_HELP, required=False, default=None)
    map_y = _map_coordinate_field(MAP_Y_HELP, required=False, default=None)


class LesionUpdateInput(serializers.Serializer):
    body_site = serializers.ChoiceField(choices=BodySite.choices, required=False)
    laterality = serializers.ChoiceField(choices=Laterality.choices, required=False)
    label = serializers.CharField(max_length=200, required=False)
    notes = serializers.CharField(required=False, allow_blank=True, max_length=LONG_TEXT_MAX_CHARS)
    follow_up_on = serializers.DateField(
        required=False, allow_null=True,
        help_text="When to see the lesion again (YYYY-MM-DD, today or later; null: none planned). Refused on a "
        "closed lesion.")
    map_view = _map_view_field(required=False)
    map_x = _map_coordinate_field(MAP_X_HELP, required=False)
    map_y = _map_coordinate_field(MAP_Y_HELP, required=False)


class LesionOutput(serializers.Serializer):
    id = serializers.IntegerField()
    patient = serializers.IntegerField(source="patient_id")
    body_site = serializers.ChoiceField(choices=BodySite.choices)
    laterality = serializers.ChoiceField(choices=Laterality.choices, help_text="Side of the body.")
    label = serializers.CharField()
    notes = serializers.CharField()
    map_view = serializers.ChoiceField(
        choices=MapView.choices, allow_null=True, help_text="Body map drawing the lesion is placed on; null if not placed."
    )
    map_x = serializers.FloatField(allow_null=True, help_text=MAP_X_HELP)
    map_y = serializers.FloatField(allow_null=True, help_text=MAP_Y_HELP)
    latest_image = serializers.IntegerField(source="latest_image_id", allow_null=True, default=None)
    latest_captured_at = serializers.DateField(allow_null=True, default=None)
    latest_top_class = serializers.CharField(allow_null=True, default=None)
    latest_malignancy_score = serializers.FloatField(allow_null=True, default=None)
    latest_malignant = serializers.BooleanField(allow_null=True, default=None)
    follow_up_on = serializers.DateField(allow_null=True, help_text="The planned follow-up; null when none.")
    follow_up_state = serializers.SerializerMethodField(
        help_text="overdue (the date has passed), due (within 14 days), or null (none planned, later, or closed).")
    suggested_follow_up_on = serializers.SerializerMethodField(
        help_text="Suggested when none is planned and the latest result is flagged: 3 months after that visit.")
    closed_on = serializers.DateField(allow_null=True, help_text="When the lesion was closed; null while open.")
    outcome = serializers.ChoiceField(
        choices=LesionOutcome.choices, allow_blank=True, help_text="How a closed lesion ended; empty while open.")
    outcome_note = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def to_representation(self, instance) -> dict:
        data = super().to_representation(instance)
        data["map_view"] = data["map_view"] or None  # stored blank: "not placed" reads null, like x and y
        return data

    @extend_schema_field(serializers.ChoiceField(choices=list(FOLLOW_UP_STATES), allow_null=True))
    def get_follow_up_state(self, obj) -> str | None:
        return follow_up_state(lesion=obj)

    @extend_schema_field(serializers.DateField(allow_null=True))
    def get_suggested_follow_up_on(self, obj) -> str | None:
        suggestion = follow_up_suggestion(lesion=obj)
        return suggestion.isoformat() if suggestion else None


class LesionCloseInput(serializers.Serializer):
    outcome = serializers.ChoiceField(choices=LesionOutcome.choices)
    closed_on = serializers.DateField(required=False, help_text="YYYY-MM-DD, not in the future; default today.")
    outcome_note = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=LONG_TEXT_MAX_CHARS,
        help_text="e.g. the histopathology report's conclusion.")


class FollowUpFilter(serializers.Serializer):
    state = serializers.ChoiceField(
        choices=list(FOLLOW_UP_STATES), required=False,
        help_text="overdue: the date has passed; due: today or within 14 days; absent: both.")


# --- Classifications -----------------------------------------------------------------------


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


def _absolute(request, url: str) -> str:
    return request.build_absolute_uri(url) if request else url


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


class ClassificationOutput(serializers.Serializer):
    id = serializers.IntegerField()
    image = serializers.IntegerField(source="image_id")
    lesion = serializers.IntegerField(source="image.lesion_id")
    patient = serializers.IntegerField(source="image.lesion.patient_id")
    status = serializers.ChoiceField(choices=ClassificationStatus.choices)
    model_version = serializers.CharField()
    model_variant = serializers.CharField()
    probabilities = serializers.SerializerMethodField()
    top_class = serializers.CharField(help_text="Class code, e.g. 'mel'.")
    top_class_name = serializers.CharField(help_text="e.g. 'Melanoma (mel)'.")
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
    heatmap_url = serializers.SerializerMethodField(
        help_text="PNG of the class activation map over the image (null when this result has none).")
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
        performance = model_performance(obj.model_version, obj.model_variant or "fp32") if obj.succeeded else None
        return None if performance is None else asdict(performance)

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_heatmap_url(self, obj) -> str | None:
        if not (obj.succeeded and obj.activation_map):
            return None
        return _absolute(self.context.get("request"), reverse("api-image-heatmap", args=[obj.image_id]))

    def get_notice(self, obj) -> str:
        return NOTICE


# --- Images --------------------------------------------------------------------------------


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
        help_text="JPEG or PNG. Its metadata (EXIF, GPS, ICC, text) is removed; its image data is kept as it is."
    )
    captured_at = serializers.DateField(required=False, help_text="Capture date (YYYY-MM-DD); default today.")


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


# --- Reviews -------------------------------------------------------------------------------


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


# --- Agreement -----------------------------------------------------------------------------


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


# --- Batches -------------------------------------------------------------------------------


class BatchCreateInput(serializers.Serializer):
    organisation = IdField(
        required=False, help_text="Organisation id; optional with a lesion, or when you can write to one organisation."
    )
    lesion = IdField(required=False, help_text="Where the images go (ZIP: the files its CSV does not list).")
    images = serializers.ListField(
        child=serializers.FileField(), required=False, allow_empty=True, help_text="Several JPEG/PNG files."
    )
    archive = serializers.FileField(
        required=False,
        help_text="A ZIP of JPEG/PNG files, optionally with one CSV: file, patient (external id), lesion (label), "
        "body_site, captured_at.",
    )
    captured_at = serializers.DateField(required=False, help_text="Capture date for files without one; default today.")


class BatchProgressOutput(serializers.Serializer):
    received = serializers.IntegerField(help_text="Files received (stored, refused, or still being stored).")
    total = serializers.IntegerField(help_text="Images stored in the batch.")
    queued = serializers.IntegerField()
    running = serializers.IntegerField()
    done = serializers.IntegerField()
    failed = serializers.IntegerField()
    rejected = serializers.IntegerField(help_text="Files refused at upload (see `rejected`).")
    percent = serializers.IntegerField()


class BatchRejectedOutput(serializers.Serializer):
    name = serializers.CharField()
    error = serializers.CharField()


class BatchImageOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField(source="source_name")
    lesion = serializers.IntegerField(source="lesion_id")
    patient = serializers.IntegerField(source="patient_id")
    captured_at = serializers.DateField()
    status = serializers.CharField(help_text="queued, running, done or failed.")
    warnings = serializers.ListField(
        child=serializers.ChoiceField(choices=list(WARNING_CODES)),
        help_text="Screening warnings of the newest result, most fundamental first; empty until done.")
    level = serializers.ChoiceField(
        choices=list(LEVELS), allow_null=True,
        help_text="How far to trust the result once done: unreliable, flagged, uncertain or reassuring; null before.")
    top_class = serializers.CharField(allow_null=True, help_text="Class code of the newest result; null until done.")
    malignancy_score = serializers.FloatField(allow_null=True, help_text="Of the newest result; null until done.")
    reviewed = serializers.BooleanField(help_text="A clinician has reviewed the image.")
    confirmed_diagnosis = serializers.CharField(
        allow_null=True, help_text="The diagnosis a review confirmed by histopathology; null without one.")
    url = serializers.SerializerMethodField(help_text="The image's result page.")
    file_url = serializers.SerializerMethodField(help_text="The image itself (GET /api/v1/images/{id}/file/).")

    def get_url(self, obj) -> str:
        return reverse("image-detail", args=[obj.id])

    def get_file_url(self, obj) -> str:
        return reverse("api-image-file", args=[obj.id])


class BatchOutput(serializers.Serializer):
    id = serializers.IntegerField()
    organisation = serializers.IntegerField(source="organisation_id")
    kind = serializers.CharField()
    name = serializers.CharField()
    lesion = serializers.IntegerField(source="lesion_id", allow_null=True)
    received = serializers.IntegerField(help_text="Files received.")
    status = serializers.CharField(help_text="running while any image is queued or running, then finished.")
    progress = BatchProgressOutput()
    rejected = BatchRejectedOutput(many=True)
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)
    created_at = serializers.DateTimeField()
    url = serializers.CharField(help_text="The batch's page.")
    images_url = serializers.CharField(
        help_text="The batch's images with their classifications, paginated (GET /api/v1/images/?batch={id})."
    )


class BatchDetailOutput(BatchOutput):
    images = BatchImageOutput(many=True, help_text="Each image's progress; the results are at `images_url`.")


# --- Triage and follow-up ------------------------------------------------------------------


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
