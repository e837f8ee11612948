from django.urls import path

from diagnosis import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("patients/", views.patient_list, name="patient-list"),
    path("patients/new/", views.patient_create, name="patient-create"),
    path("patients/<int:patient_id>/", views.patient_detail, name="patient-detail"),
    path("patients/<int:patient_id>/edit/", views.patient_edit, name="patient-edit"),
    path("patients/<int:patient_id>/delete/", views.patient_delete, name="patient-delete"),
    path("patients/<int:patient_id>/export/", views.patient_export, name="patient-export"),
    path("patients/<int:patient_id>/lesions/new/", views.lesion_create, name="lesion-create"),
    path("lesions/<int:lesion_id>/", views.lesion_detail, name="lesion-detail"),
    path("lesions/<int:lesion_id>/edit/", views.lesion_edit, name="lesion-edit"),
    path("lesions/<int:lesion_id>/upload/", views.lesion_upload, name="lesion-upload"),
    path("images/<int:image_id>/", views.image_detail, name="image-detail"),
    path("images/<int:image_id>/file/", views.image_file, name="image-file"),
    path("images/<int:image_id>/review/", views.image_review, name="image-review"),
    path("images/<int:image_id>/classify/", views.image_classify, name="image-classify"),
    path("ops/", views.ops, name="ops"),
    path("batches/", views.batch_list, name="batch-list"),
    path("batches/new/", views.batch_create, name="batch-create"),
    path("batches/<int:batch_id>/", views.batch_detail, name="batch-detail"),
    path("organisations/<int:organisation_id>/", views.organisation_detail, name="organisation-detail"),
    path("organisations/<int:organisation_id>/audit/", views.organisation_audit, name="organisation-audit"),
    path(
        "organisations/<int:organisation_id>/members/<int:membership_id>/remove/",
        views.organisation_member_remove,
        name="organisation-member-remove",
    ),
]
