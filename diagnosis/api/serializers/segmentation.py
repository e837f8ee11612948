"""Serializers of the lesion outline stored with a classification (diagnosis.inference.segment_image)
and of the comparison of two visits (diagnosis/compare.py)."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from diagnosis.api.serializers.common import _absolute


class SegmentationOutput(serializers.Serializer):
    method = serializers.CharField(help_text="Which segmenter drew the outline, e.g. 'classical-otsu-v1'.")
    fallback = serializers.BooleanField(
        help_text="No lesion was found: the outline is a centred guess and the measurements mean nothing.")
    width = serializers.IntegerField(help_text="The image's own width: the unit of the coordinates below.")
    height = serializers.IntegerField()
    area_px = serializers.IntegerField(help_text="Lesion area in the stored image's pixels.")
    area_mm2 = serializers.FloatField(allow_null=True, help_text="In mm², when the image was uploaded with a scale.")
    diameter_px = serializers.FloatField(allow_null=True, help_text="Largest diameter (maximum Feret), pixels.")
    diameter_mm = serializers.FloatField(allow_null=True)
    pixels_per_mm = serializers.FloatField(allow_null=True, help_text="The image's scale, when given.")
    asymmetry = serializers.FloatField(allow_null=True, help_text="0 symmetric .. 1 no overlap with its mirror image.")
    asymmetry_axes = serializers.ListField(child=serializers.FloatField(), allow_null=True,
                                           help_text="Across the major and the minor axis.")
    border_irregularity = serializers.FloatField(allow_null=True, help_text="perimeter² / (4π area): 1 for a disc.")
    solidity = serializers.FloatField(allow_null=True, help_text="Area / convex hull area: 1 convex.")
    colours = serializers.IntegerField(help_text="How many of the six dermoscopic colours cover ≥ 5% of the lesion.")
    colour_shares = serializers.DictField(child=serializers.FloatField())
    centroid = serializers.ListField(child=serializers.FloatField(), allow_null=True, help_text="[x, y], pixels.")
    bbox = serializers.ListField(child=serializers.FloatField(), allow_null=True,
                                 help_text="[x, y, width, height] of the lesion, pixels.")
    outline = serializers.ListField(child=serializers.ListField(child=serializers.FloatField()),
                                    help_text="The outline's polygon [[x, y], ...] in the image's pixels (simplified).")
    mask_url = serializers.SerializerMethodField(
        help_text="The mask as a PNG (255 lesion, 0 background), at most 1024 px on the long side, same aspect.")

    @extend_schema_field(serializers.CharField())
    def get_mask_url(self, obj: dict[str, Any]) -> str:
        return _absolute(self.context.get("request"), reverse("api-image-mask", args=[self.context["image_id"]]))

    def to_representation(self, instance: dict[str, Any]) -> dict[str, Any]:
        # Stored rows may lack a key a later version added: missing means null, never a 500.
        filled = {name: instance.get(name) for name in self.fields if name != "mask_url"}
        filled["outline"] = filled["outline"] or []
        filled["colour_shares"] = filled["colour_shares"] or {}
        filled["colours"] = filled["colours"] or 0
        filled["area_px"] = filled["area_px"] or 0
        return {**super().to_representation(filled), "mask_url": self.get_mask_url(instance)}


def segmentation_data(classification, context: dict[str, Any]) -> dict[str, Any] | None:
    """A succeeded classification's outline for the API; None without one."""
    if classification is None or not classification.succeeded or not classification.segmentation:
        return None
    return SegmentationOutput(classification.segmentation, context={**context, "image_id": classification.image_id}).data


class CompareQuery(serializers.Serializer):
    a = serializers.CharField(required=False, help_text="Image id of this lesion (default: its first image).")
    b = serializers.CharField(required=False, help_text="Image id of this lesion (default: its latest image).")


class CompareVisitOutput(serializers.Serializer):
    image = serializers.IntegerField(source="image.pk")
    captured_at = serializers.DateField(source="image.captured_at")
    pixels_per_mm = serializers.FloatField(source="image.pixels_per_mm", allow_null=True)
    malignancy_score = serializers.SerializerMethodField()
    top_class = serializers.SerializerMethodField()
    model_version = serializers.SerializerMethodField()
    outline_found = serializers.SerializerMethodField(help_text="An outline was stored and a lesion found.")
    view_box = serializers.SerializerMethodField(
        help_text="[x, y, width, height] in the image's pixels: the square around the lesion that shows both "
        "visits' lesions at one size (the whole image without an outline).")
    image_url = serializers.SerializerMethodField()

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_malignancy_score(self, obj) -> float | None:
        return obj.succeeded.malignancy_score if obj.succeeded else None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_top_class(self, obj) -> str | None:
        return obj.succeeded.top_class if obj.succeeded else None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_model_version(self, obj) -> str | None:
        return obj.succeeded.model_version if obj.succeeded else None

    def get_outline_found(self, obj) -> bool:
        return bool(obj.outline_points)

    @extend_schema_field(serializers.ListField(child=serializers.FloatField()))
    def get_view_box(self, obj) -> list[float]:
        box = obj.view_box
        return [box.x, box.y, box.width, box.height]

    def get_image_url(self, obj) -> str:
        return _absolute(self.context.get("request"), reverse("api-image-detail", args=[obj.image.pk]))


class ChangeOutput(serializers.Serializer):
    key = serializers.CharField(help_text="area, diameter, asymmetry, border_irregularity, solidity, colours, "
                                "malignancy_score.")
    label = serializers.CharField()
    unit = serializers.CharField(help_text="mm² / mm when both images have a scale, else px; empty for ratios.")
    before = serializers.FloatField(allow_null=True)
    after = serializers.FloatField(allow_null=True)
    absolute_change = serializers.FloatField(allow_null=True)
    relative_change = serializers.FloatField(allow_null=True,
                                             help_text="(after − before) / before; null when either is missing.")


class CompareOutput(serializers.Serializer):
    lesion = serializers.IntegerField(source="lesion.pk")
    before = CompareVisitOutput(help_text="The earlier of the two images (by capture date).")
    after = CompareVisitOutput()
    days = serializers.IntegerField(source="comparison.days", help_text="Days between the two visits.")
    interval = serializers.CharField(source="comparison.interval", help_text="The same in words, e.g. '6 months'.")
    area_in_pixels = serializers.BooleanField(
        source="comparison.area_in_pixels",
        help_text="True when the images lack a scale: the area is in pixels and changes with the zoom.")
    changes = serializers.SerializerMethodField()
    summary = serializers.CharField(source="comparison.summary")
    notes = serializers.ListField(child=serializers.CharField(), source="comparison.notes")
    notice = serializers.SerializerMethodField()

    @extend_schema_field(ChangeOutput(many=True))
    def get_changes(self, obj) -> list[dict[str, Any]]:
        comparison = obj.comparison
        return [change.to_dict() for change in (*comparison.changes, comparison.score)]

    def get_notice(self, obj) -> str:
        from diagnosis.compare import NOTICE

        return NOTICE
