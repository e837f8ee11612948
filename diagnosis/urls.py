from django.urls import path

from diagnosis.views import batches, home, lesions, model, organisations, patients, tokens
from diagnosis.views import compare as compare_views
from diagnosis.views import reports as report_views

urlpatterns = [
    path("", home.dashboard, name="dashboard"),
    path("patients/", patients.patient_list, name="patient-list"),
    path("patients/new/", patients.patient_create, name="patient-create"),
    path("patients/<int:patient_id>/", patients.patient_detail, name="patient-detail"),
    path("patients/<int:patient_id>/edit/", patients.patient_edit, name="patient-edit"),
    path("patients/<int:patient_id>/delete/", patients.patient_delete, name="patient-delete"),
    path("patients/<int:patient_id>/export/", patients.patient_export, name="patient-export"),
    path("patients/<int:patient_id>/lesions/new/", lesions.lesion_create, name="lesion-create"),
    path("lesions/<int:lesion_id>/", lesions.lesion_detail, name="lesion-detail"),
    path("lesions/<int:lesion_id>/edit/", lesions.lesion_edit, name="lesion-edit"),
    path("lesions/<int:lesion_id>/upload/", lesions.lesion_upload, name="lesion-upload"),
    path("lesions/<int:lesion_id>/follow-up/", lesions.lesion_follow_up, name="lesion-follow-up"),
    path("lesions/<int:lesion_id>/close/", lesions.lesion_close, name="lesion-close"),
    path("lesions/<int:lesion_id>/reopen/", lesions.lesion_reopen, name="lesion-reopen"),
    path("lesions/<int:lesion_id>/report.pdf", report_views.lesion_report, name="lesion-report"),
    path("lesions/<int:lesion_id>/compare/", compare_views.lesion_compare, name="lesion-compare"),
    path("images/<int:image_id>/", lesions.image_detail, name="image-detail"),
    path("images/<int:image_id>/file/", lesions.image_file, name="image-file"),
    path("images/<int:image_id>/heatmap/", lesions.image_heatmap, name="image-heatmap"),
    path("images/<int:image_id>/mask/", compare_views.image_mask, name="image-mask"),
    path("images/<int:image_id>/review/", lesions.image_review, name="image-review"),
    path("images/<int:image_id>/classify/", lesions.image_classify, name="image-classify"),
    path("images/<int:image_id>/report.pdf", report_views.image_report, name="image-report"),
    path("ops/", home.ops, name="ops"),
    path("model/", model.model_page, name="model"),
    path("account/api-tokens/", tokens.api_tokens, name="account-api-tokens"),
    path("account/api-tokens/revoke/", tokens.api_token_revoke, name="account-api-token-revoke"),
    path("account/api-tokens/rotate/", tokens.api_token_rotate, name="account-api-token-rotate"),
    path("batches/", batches.batch_list, name="batch-list"),
    path("batches/new/", batches.batch_create, name="batch-create"),
    path("batches/<int:batch_id>/", batches.batch_detail, name="batch-detail"),
    path("organisations/<int:organisation_id>/", organisations.organisation_detail, name="organisation-detail"),
    path("organisations/<int:organisation_id>/audit/", organisations.organisation_audit, name="organisation-audit"),
    path(
        "organisations/<int:organisation_id>/agreement/",
        organisations.organisation_agreement,
        name="organisation-agreement",
    ),
    path(
        "organisations/<int:organisation_id>/members/<int:membership_id>/remove/",
        organisations.organisation_member_remove,
        name="organisation-member-remove",
    ),
]
