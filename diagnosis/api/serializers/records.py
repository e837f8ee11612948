"""Serializers of patients and lesions: body map placement, follow-up, closing."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from diagnosis.api.serializers.common import IdField
from diagnosis.limits import LONG_TEXT_MAX_CHARS, SEARCH_MAX_CHARS
from diagnosis.models import (
    BodySite,
    Laterality,
    LesionOutcome,
    MapView,
    Sex,
)
from diagnosis.selectors import FOLLOW_UP_STATES, follow_up_state, follow_up_suggestion


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
