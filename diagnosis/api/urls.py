from django.urls import path, re_path, register_converter

from diagnosis.api import agreement as agreement_api
from diagnosis.api import compare as compare_api
from diagnosis.api import dicom as dicom_api
from diagnosis.api import docs, views
from diagnosis.api import reports as report_api
from diagnosis.api.errors import api_not_found
from diagnosis.services.accounts import API_TOKEN_KEY_ID


class ApiTokenKeyConverter:
    """An API token in a URL: the first 15 hex digits of its key; anything else falls through to
    the JSON 404 below (SPECTACULAR_SETTINGS documents the pattern)."""

    regex = API_TOKEN_KEY_ID.pattern

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(ApiTokenKeyConverter, "apitokenkey")


urlpatterns = [
    path("auth/token/", views.AuthTokenApi.as_view(), name="api-token"),
    path("auth/tokens/", views.ApiTokenListApi.as_view(), name="api-token-list"),
    path("auth/tokens/<apitokenkey:token_key>/", views.ApiTokenDetailApi.as_view(), name="api-token-detail"),
    path("auth/tokens/<apitokenkey:token_key>/rotate/", views.ApiTokenRotateApi.as_view(), name="api-token-rotate"),
    path("me/", views.MeApi.as_view(), name="api-me"),
    path("model/", views.ServedModelApi.as_view(), name="api-model"),
    path("patients/", views.PatientListApi.as_view(), name="api-patient-list"),
    path("patients/<int:patient_id>/", views.PatientDetailApi.as_view(), name="api-patient-detail"),
    path("lesions/", views.LesionListApi.as_view(), name="api-lesion-list"),
    path("lesions/<int:lesion_id>/", views.LesionDetailApi.as_view(), name="api-lesion-detail"),
    path("lesions/<int:lesion_id>/report.pdf", report_api.LesionReportApi.as_view(), name="api-lesion-report"),
    path("lesions/<int:lesion_id>/close/", views.LesionCloseApi.as_view(), name="api-lesion-close"),
    path("lesions/<int:lesion_id>/reopen/", views.LesionReopenApi.as_view(), name="api-lesion-reopen"),
    path("lesions/<int:lesion_id>/compare/", compare_api.LesionCompareApi.as_view(), name="api-lesion-compare"),
    path("images/", views.ImageListApi.as_view(), name="api-image-list"),
    path("images/<int:image_id>/", views.ImageDetailApi.as_view(), name="api-image-detail"),
    path("images/<int:image_id>/file/", views.ImageFileApi.as_view(), name="api-image-file"),
    path("images/<int:image_id>/heatmap/", views.ImageHeatmapApi.as_view(), name="api-image-heatmap"),
    path("images/<int:image_id>/mask/", compare_api.ImageMaskApi.as_view(), name="api-image-mask"),
    path("images/<int:image_id>/classify/", views.ImageClassifyApi.as_view(), name="api-image-classify"),
    path("images/<int:image_id>/report.pdf", report_api.ImageReportApi.as_view(), name="api-image-report"),
    path("images/<int:image_id>/dicom/", dicom_api.ImageDicomApi.as_view(), name="api-image-dicom"),
    path("batches/", views.BatchListApi.as_view(), name="api-batch-list"),
    path("batches/<int:batch_id>/", views.BatchDetailApi.as_view(), name="api-batch-detail"),
    path(
        "organisations/<int:organisation_id>/agreement/",
        agreement_api.OrganisationAgreementApi.as_view(),
        name="api-organisation-agreement",
    ),
    path(
        "organisations/<int:organisation_id>/agreement.csv",
        agreement_api.OrganisationAgreementCsvApi.as_view(),
        name="api-organisation-agreement-csv",
    ),
    path("classifications/", views.ClassificationListApi.as_view(), name="api-classification-list"),
    path(
        "classifications/<int:classification_id>/",
        views.ClassificationDetailApi.as_view(),
        name="api-classification-detail",
    ),
    path("reviews/", views.ReviewListApi.as_view(), name="api-review-list"),
    path("reviews/<int:review_id>/", views.ReviewDetailApi.as_view(), name="api-review-detail"),
    path("review-queue/", views.ReviewQueueApi.as_view(), name="api-review-queue"),
    path("follow-ups/", views.FollowUpListApi.as_view(), name="api-follow-up-list"),
    # OpenAPI 3 schema and interactive docs, for signed-in users (diagnosis/api/docs.py says why);
    # all assets are served locally (drf-spectacular-sidecar), and the Swagger UI page loads its
    # set-up script from a URL, not inline (Content-Security-Policy).
    path("schema/", docs.SchemaApi.as_view(), name="api-schema"),
    path("docs/", docs.docs_page, name="api-docs"),
    path("redoc/", docs.redoc_page, name="api-redoc"),
    re_path(r"^.*$", api_not_found),
]
