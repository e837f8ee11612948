from django.urls import path, re_path

from diagnosis.fhir import views

# Names start with "api-" (the audit trail files them under the API surface) and every object is
# named by a `<thing>_id` keyword that diagnosis/scoping.py fetches through its scoped selector.
urlpatterns = [
    path("metadata", views.MetadataApi.as_view(), name="api-fhir-metadata"),
    path("Patient", views.PatientSearchApi.as_view(), name="api-fhir-patient-search"),
    path("Patient/<int:patient_id>", views.PatientReadApi.as_view(), name="api-fhir-patient-read"),
    path(
        "Patient/<int:patient_id>/$everything", views.PatientEverythingApi.as_view(), name="api-fhir-patient-everything"
    ),
    path("BodyStructure", views.BodyStructureSearchApi.as_view(), name="api-fhir-bodystructure-search"),
    path("BodyStructure/<int:lesion_id>", views.BodyStructureReadApi.as_view(), name="api-fhir-bodystructure-read"),
    path("Media", views.MediaSearchApi.as_view(), name="api-fhir-media-search"),
    path("Media/<int:image_id>", views.MediaReadApi.as_view(), name="api-fhir-media-read"),
    path("Observation", views.ObservationSearchApi.as_view(), name="api-fhir-observation-search"),
    path("Observation/<int:classification_id>", views.ObservationReadApi.as_view(), name="api-fhir-observation-read"),
    path("DiagnosticReport", views.DiagnosticReportSearchApi.as_view(), name="api-fhir-diagnosticreport-search"),
    path(
        "DiagnosticReport/<int:classification_id>",
        views.DiagnosticReportReadApi.as_view(),
        name="api-fhir-diagnosticreport-read",
    ),
    re_path(r"^.*$", views.fhir_not_found),
]
