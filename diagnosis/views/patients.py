"""Patient pages: list and search, create, detail, edit, and (after the password again) delete
and export."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from diagnosis import audit, selectors, services
from diagnosis.exports import patient_export_zip
from diagnosis.forms import (
    PatientForm,
    PatientSearchForm,
    ReauthForm,
)
from diagnosis.models import Patient
from diagnosis.permissions import ADMIN_ONLY_DELETE, NO_PATIENTS_ANYWHERE, require_admin
from diagnosis.scoping import url_object
from diagnosis.views.common import PATIENTS_PER_PAGE, add_service_errors, form_status, require_page_write

# --- Patients ------------------------------------------------------------------------------


@login_required
@require_GET
def patient_list(request: HttpRequest) -> HttpResponse:
    search = PatientSearchForm(request.GET)
    valid = search.is_valid()
    query = search.cleaned_data["q"] if valid else ""
    page = Paginator(selectors.patient_list(user=request.user, query=query), PATIENTS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "diagnosis/patient_list.html",
        {
            "page": page,
            "search": search,
            "query": query,
            "can_write": selectors.user_can_write_anywhere(user=request.user),
        },
        # A search that cannot be run (too long, a NUL) says so instead of silently listing everyone.
        status=200 if valid else 400,
    )


@login_required
@require_http_methods(["GET", "POST"])
def patient_create(request: HttpRequest) -> HttpResponse:
    organisations = selectors.organisation_list_writable_by_user(user=request.user)
    if not organisations.exists():
        raise PermissionDenied(NO_PATIENTS_ANYWHERE)
    form = PatientForm(request.POST or None, organisations=organisations)
    if request.method == "POST" and form.is_valid():
        try:
            patient = services.patients.patient_create(user=request.user, **form.cleaned_data)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            audit.note(request, patient, "patient")
            messages.success(request, f"Patient {patient.name} created.")
            return redirect("patient-detail", patient_id=patient.pk)
    return render(request, "diagnosis/patient_form.html", {"form": form, "patient": None}, status=form_status(request))


@login_required
@require_GET
def patient_detail(request: HttpRequest, patient_id: int) -> HttpResponse:
    patient = url_object(request, "patient_id")
    return render(
        request,
        "diagnosis/patient_detail.html",
        {
            "patient": patient,
            "lesions": selectors.with_latest_warnings(selectors.lesion_list(user=request.user, patient_id=patient.pk)),
            "can_write": selectors.user_can_write(user=request.user, organisation_id=patient.organisation_id),
            "is_admin": selectors.user_is_admin(user=request.user, organisation_id=patient.organisation_id),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def patient_edit(request: HttpRequest, patient_id: int) -> HttpResponse:
    patient = url_object(request, "patient_id")
    require_page_write(request, patient.organisation_id)
    initial = {field: getattr(patient, field) for field in services.patients.PATIENT_FIELDS}
    form = PatientForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            services.patients.patient_update(user=request.user, patient=patient, data=form.cleaned_data)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, "Patient details saved.")
            return redirect("patient-detail", patient_id=patient.pk)
    return render(
        request, "diagnosis/patient_form.html", {"form": form, "patient": patient}, status=form_status(request)
    )


def _confirmation_needed(request: HttpRequest, patient: Patient, *, what: str) -> HttpResponse | None:
    """None once the user has typed their password again (a valid POST); otherwise the
    confirmation page to answer with (400 after a wrong password)."""
    form = ReauthForm(request.POST or None, request=request)
    if request.method == "POST" and form.is_valid():
        return None
    context = {"patient": patient, "form": form, "what": what}
    return render(request, "diagnosis/patient_confirm.html", context, status=form_status(request))


@login_required
@require_http_methods(["GET", "POST"])
def patient_delete(request: HttpRequest, patient_id: int) -> HttpResponse:
    """Organisation admins only, after typing their password again."""
    patient = url_object(request, "patient_id")
    require_admin(user=request.user, organisation_id=patient.organisation_id, message=ADMIN_ONLY_DELETE)
    if (page := _confirmation_needed(request, patient, what="delete")) is not None:
        return page
    removed = services.patients.patient_delete(user=request.user, patient=patient)
    messages.success(request, f"Patient {patient.name} and {removed} image(s) were deleted.")
    return redirect("patient-list")


@login_required
@require_http_methods(["GET", "POST"])
def patient_export(request: HttpRequest, patient_id: int) -> HttpResponse:
    """The patient's whole record as a ZIP, for clinicians and admins, after their password again."""
    patient = url_object(request, "patient_id")
    require_page_write(request, patient.organisation_id)
    if (page := _confirmation_needed(request, patient, what="export")) is not None:
        return page
    response = HttpResponse(patient_export_zip(patient=patient), content_type="application/zip")
    # The file name carries the record's id, not the patient's name.
    response["Content-Disposition"] = f'attachment; filename="patient-{patient.pk}.zip"'
    return response
