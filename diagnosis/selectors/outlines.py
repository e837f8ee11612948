"""Reads about stored lesion outlines (imported from here, not re-exported by the package)."""

from __future__ import annotations

from django.db.models import QuerySet

from diagnosis.models import Classification, ClassificationStatus, Organisation


def image_ids_without_outline(*, model_version: str, organisation: Organisation | None = None) -> QuerySet:
    """Ids of images whose successful classification by `model_version` has no stored outline
    (classified before outlines were stored, or the segmentation failed), oldest first."""
    rows = Classification.objects.filter(
        model_version=model_version, status=ClassificationStatus.SUCCEEDED, segmentation__isnull=True
    )
    if organisation is not None:
        rows = rows.filter(image__lesion__patient__organisation=organisation)
    return rows.order_by("image_id").values_list("image_id", flat=True)
