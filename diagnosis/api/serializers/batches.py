"""Serializers of batches and their images."""

from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from diagnosis.api.serializers.common import IdField
from diagnosis.inference import WARNING_CODES
from diagnosis.interpretation import LEVELS


class BatchCreateInput(serializers.Serializer):
    organisation = IdField(
        required=False, help_text="Organisation id; optional with a lesion, or when you can write to one organisation."
    )
    lesion = IdField(required=False, help_text="Where the images go (ZIP: the files its CSV does not list).")
    images = serializers.ListField(
        child=serializers.FileField(), required=False, allow_empty=True, help_text="Several JPEG, PNG or DICOM files."
    )
    archive = serializers.FileField(
        required=False,
        help_text="A ZIP of JPEG, PNG or DICOM files, optionally with one CSV: file, patient (external id), lesion (label), "
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
