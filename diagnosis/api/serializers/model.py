"""The served model described (GET /api/v1/model/): what it is for, what it answers, how it was
tested and on what data; the same facts as the portal's model page."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from diagnosis.api.serializers.common import NOTICE
from diagnosis.inference import CLASS_NAMES, CLASSES


class ModelClassOutput(serializers.Serializer):
    code = serializers.CharField(help_text="The class code used everywhere in the API, e.g. 'mel'.")
    name = serializers.CharField()
    malignant = serializers.BooleanField(help_text="In the malignant group whose probabilities make the score.")


class HeldOutFiguresOutput(serializers.Serializer):
    answers = serializers.CharField(help_text="'image alone', or 'with clinical context' (age, sex, body site).")
    images = serializers.IntegerField(help_text="Held-out test images (lesions never used for any choice).")
    threshold = serializers.FloatField(help_text="The malignancy threshold these answers are flagged at.")
    balanced_accuracy = serializers.FloatField(help_text="The mean of the classes' recall.")
    malignant_auc = serializers.FloatField(help_text="ROC AUC of the malignancy score, malignant vs benign.")
    malignant_sensitivity = serializers.FloatField(help_text="Share of malignant test images flagged.")
    malignant_specificity = serializers.FloatField(help_text="Share of benign test images not flagged.")
    ece = serializers.FloatField(help_text="Expected calibration error of the probabilities (0 is perfect).")
    recall = serializers.DictField(child=serializers.FloatField(), help_text="Class code -> recall.")
    intervals_95 = serializers.DictField(
        source="intervals",
        child=serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2),
        help_text="Measure -> [low, high], 95% bootstrap interval over lesions, where measured.",
    )


class ServedModelOutput(serializers.Serializer):
    version = serializers.CharField(help_text="The `model_version` new classifications get.")
    variant = serializers.CharField(help_text="fp32 or int8.")
    created = serializers.CharField(help_text="When the bundle was packaged (ISO 8601).")
    intended_use = serializers.CharField()
    input_width = serializers.IntegerField(
        allow_null=True, help_text="Pixels the image is resized to (any upload size is accepted)."
    )
    input_height = serializers.IntegerField(allow_null=True)
    classes = serializers.SerializerMethodField()
    context_fields = serializers.ListField(
        child=serializers.CharField(), help_text="Clinical context it weighs when recorded; [] = the image alone."
    )
    favoured_class = serializers.CharField(
        allow_null=True, help_text="Suggested (`top_class`) whenever its probability is at least "
        "`favoured_when_at_least` times the most probable class's; null = the most probable class."
    )
    favoured_when_at_least = serializers.FloatField(allow_null=True)
    test = HeldOutFiguresOutput(many=True, help_text="Its figures on the held-out test split; the image alone first.")
    test_images_per_class = serializers.DictField(
        child=serializers.IntegerField(), help_text="Class code -> test images each recall is over."
    )
    training_data = serializers.CharField()
    training_data_licence = serializers.CharField()
    citation = serializers.CharField()
    model_licence = serializers.CharField()
    notice = serializers.SerializerMethodField()

    @extend_schema_field(ModelClassOutput(many=True))
    def get_classes(self, obj) -> list[dict[str, Any]]:
        return [{"code": code, "name": CLASS_NAMES[code], "malignant": code in obj.malignant_classes}
                for code in CLASSES]

    def get_notice(self, obj) -> str:
        return NOTICE
