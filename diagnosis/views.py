"""Server-rendered pages. Thin: fetch through selectors, validate with a form, write with a service.

The object a URL names (`<thing>_id`) was fetched through its scoped selector before the view
ran (ObjectScopeMiddleware): views take it with `url_object(request, "lesion_id")` instead of
fetching it again."""

from __future__ import annotations

import csv

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.core.paginator import Paginator
from django.forms import Form
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from diagnosis import audit, selectors, services
from diagnosis.exports import patient_export_zip
from diagnosis.forms import (
    AuditFilterForm,
    BatchForm,
    LesionForm,
    MemberForm,
    PatientForm,
    PatientSearchForm,
    ReauthForm,
    ReviewForm,
    UploadForm,
)
from diagnosis.models import Lesion, LesionImage, Patient
from diagnosis.permissions import require_admin, require_write
from diagnosis.plots import malignancy_plot
from diagnosis.progress import image_bucket
from diagnosis.scoping import url_object
from skinportal import health

PATIENTS_PER_PAGE = 20


def _add_service_errors(form: Form, exc: ValidationError, field_map: dict[str, str] | None = None) -> None:
    """Show a service's ValidationError on the form, next to the field it concerns."""
    field_map = field_map or {}
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            target = field_map.get(field, field)
            form.add_error(target if target in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)


def _form_status(request: HttpRequest) -> int:
    """A form shown again after a POST is shown because the POST was refused: 400, not 200."""
    return 400 if request.method == "POST" else 200


def _require_write(request: HttpRequest, organisation_id: int) -> None:
    """Before a form is shown: a read-only role gets the 403 page, not a form that would fail."""
    require_write(
        user=request.user, organisation_id=organisation_id, message="Your role in this organisation is read-only."
    )


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "diagnosis/dashboard.html",
        {
            "recent": selectors.classification_list_recent(user=request.user, limit=10),
            "flagged": selectors.lesion_list_flagged(user=request.user),
            "organisations": selectors.organisation_list_for_user(user=request.user),
            "can_write": selectors.user_can_write_anywhere(user=request.user),
        },
    )


# --- Patients ------------------------------------------------------------------------------


@login_required
@require_GET
def patient_list(request: HttpRequest) -> HttpResponse:
    search = PatientSearchForm(request.GET)
    query = search.cleaned_data["q"] if search.is_valid() else ""
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
    )


@login_required
@require_http_methods(["GET", "POST"])
def patient_create(request: HttpRequest) -> HttpResponse:
    organisations = selectors.organisation_list_writable_by_user(user=request.user)
    if not organisations.exists():
        raise PermissionDenied("Your role is read-only: you cannot add patients.")
    form = PatientForm(request.POST or None, organisations=organisations)
    if request.method == "POST" and form.is_valid():
        try:
            patient = services.patients.patient_create(user=request.user, **form.cleaned_data)
        except ValidationError as exc:
            _add_service_errors(form, exc)
        else:
            audit.note(request, patient, "patient")
            messages.success(request, f"Patient {patient.name} created.")
            return redirect("patient-detail", patient_id=patient.pk)
    return render(request, "diagnosis/patient_form.html", {"form": form, "patient": None}, status=_form_status(request))


@login_required
@require_GET
def patient_detail(request: HttpRequest, patient_id: int) -> HttpResponse:
    patient = url_object(request, "patient_id")
    return render(
        request,
        "diagnosis/patient_detail.html",
        {
            "patient": patient,
            "lesions": selectors.lesion_list(user=request.user, patient_id=patient.pk),
            "can_write": selectors.user_can_write(user=request.user, organisation_id=patient.organisation_id),
            "is_admin": selectors.user_is_admin(user=request.user, organisation_id=patient.organisation_id),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def patient_edit(request: HttpRequest, patient_id: int) -> HttpResponse:
    patient = url_object(request, "patient_id")
    _require_write(request, patient.organisation_id)
    initial = {field: getattr(patient, field) for field in services.patients.PATIENT_FIELDS}
    form = PatientForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            services.patients.patient_update(user=request.user, patient=patient, data=form.cleaned_data)
        except ValidationError as exc:
            _add_service_errors(form, exc)
        else:
            messages.success(request, "Patient details saved.")
            return redirect("patient-detail", patient_id=patient.pk)
    return render(
        request, "diagnosis/patient_form.html", {"form": form, "patient": patient}, status=_form_status(request)
    )


def _confirmation_needed(request: HttpRequest, patient: Patient, *, what: str) -> HttpResponse | None:
    """None once the user has typed their password again (a valid POST); otherwise the
    confirmation page to answer with (400 after a wrong password)."""
    form = ReauthForm(request.POST or None, request=request)
    if request.method == "POST" and form.is_valid():
        return None
    context = {"patient": patient, "form": form, "what": what}
    return render(request, "diagnosis/patient_confirm.html", context, status=_form_status(request))


@login_required
@require_http_methods(["GET", "POST"])
def patient_delete(request: HttpRequest, patient_id: int) -> HttpResponse:
    """Organisation admins only, after typing their password again."""
    patient = url_object(request, "patient_id")
    require_admin(
        user=request.user,
        organisation_id=patient.organisation_id,
        message="Only an owner/admin of this organisation can delete a patient.",
    )
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
    _require_write(request, patient.organisation_id)
    if (page := _confirmation_needed(request, patient, what="export")) is not None:
        return page
    response = HttpResponse(patient_export_zip(patient=patient), content_type="application/zip")
    # The file name carries the record's id, not the patient's name.
    response["Content-Disposition"] = f'attachment; filename="patient-{patient.pk}.zip"'
    return response


# --- Lesions -------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def lesion_create(request: HttpRequest, patient_id: int) -> HttpResponse:
    patient = url_object(request, "patient_id")
    _require_write(request, patient.organisation_id)
    form = LesionForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            lesion = services.patients.lesion_create(user=request.user, patient=patient, **form.cleaned_data)
        except ValidationError as exc:
            _add_service_errors(form, exc)
        else:
            audit.note(request, lesion, "lesion")
            messages.success(request, f"Lesion '{lesion.label}' added. Upload its first image.")
            return redirect("lesion-upload", lesion_id=lesion.pk)
    return render(
        request,
        "diagnosis/lesion_form.html",
        {"form": form, "patient": patient, "lesion": None},
        status=_form_status(request),
    )


@login_required
@require_http_methods(["GET", "POST"])
def lesion_edit(request: HttpRequest, lesion_id: int) -> HttpResponse:
    lesion = url_object(request, "lesion_id")
    _require_write(request, lesion.patient.organisation_id)
    form = LesionForm(
        request.POST or None, initial={field: getattr(lesion, field) for field in services.patients.LESION_FIELDS}
    )
    if request.method == "POST" and form.is_valid():
        try:
            services.patients.lesion_update(user=request.user, lesion=lesion, data=form.cleaned_data)
        except ValidationError as exc:
            _add_service_errors(form, exc)
        else:
            messages.success(request, "Lesion saved.")
            return redirect("lesion-detail", lesion_id=lesion.pk)
    return render(
        request,
        "diagnosis/lesion_form.html",
        {"form": form, "patient": lesion.patient, "lesion": lesion},
        status=_form_status(request),
    )


@login_required
@require_GET
def lesion_detail(request: HttpRequest, lesion_id: int) -> HttpResponse:
    lesion = url_object(request, "lesion_id")
    timeline = selectors.lesion_timeline(lesion=lesion)
    return render(
        request,
        "diagnosis/lesion_detail.html",
        {
            "lesion": lesion,
            "patient": lesion.patient,
            "timeline": timeline,
            "plot": malignancy_plot(timeline),
            "can_write": selectors.user_can_write(user=request.user, organisation_id=lesion.patient.organisation_id),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def lesion_upload(request: HttpRequest, lesion_id: int) -> HttpResponse:
    lesion = url_object(request, "lesion_id")
    _require_write(request, lesion.patient.organisation_id)
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        files = [_read_upload(f) for f in form.cleaned_data["images"]]
        try:
            images = services.uploads.lesion_image_upload(
                user=request.user, lesion=lesion, files=files, captured_at=form.cleaned_data["captured_at"]
            )
        except ValidationError as exc:
            _add_service_errors(form, exc, field_map={"image": "images"})
        else:
            if len(images) == 1:
                return redirect("image-detail", image_id=images[0].pk)
            messages.success(request, f"{len(images)} images uploaded and classified.")
            return redirect("lesion-detail", lesion_id=lesion.pk)
    return render(
        request,
        "diagnosis/upload.html",
        {"form": form, "lesion": lesion, "patient": lesion.patient},
        status=_form_status(request),
    )


def _read_upload(uploaded: UploadedFile) -> services.uploads.ImageUpload:
    # One byte past the cap is enough for the service to say the file is too large.
    return services.uploads.ImageUpload(
        name=uploaded.name or "", data=uploaded.read(settings.SKINPORTAL_MAX_UPLOAD_BYTES + 1)
    )


# --- Images, results, reviews --------------------------------------------------------------


def _image_page(request: HttpRequest, image: LesionImage, review_form: ReviewForm, status: int = 200) -> HttpResponse:
    lesion: Lesion = image.lesion
    patient: Patient = lesion.patient
    shown = selectors.image_latest_classification(image=image)
    return render(
        request,
        "diagnosis/result.html",
        {
            "image": image,
            "lesion": lesion,
            "patient": patient,
            "classification": shown,
            # Every other version's result (and a run in progress), shown on demand.
            "earlier": [c for c in image.classifications.all() if c != shown],
            "reviews": selectors.review_list(user=request.user, image_id=image.pk),
            "review_form": review_form,
            "can_write": selectors.user_can_write(user=request.user, organisation_id=patient.organisation_id),
        },
        status=status,
    )


@login_required
@require_GET
def image_detail(request: HttpRequest, image_id: int) -> HttpResponse:
    image = url_object(request, "image_id")
    return _image_page(request, image, ReviewForm())


@login_required
@require_GET
def image_file(request: HttpRequest, image_id: int) -> FileResponse:
    """The stored pixels, only for members of the patient's organisation (no public media URL)."""
    image = url_object(request, "image_id")
    try:
        handle = image.file.open("rb")
    except OSError as exc:
        raise Http404("The image file is missing.") from exc
    response = FileResponse(handle, content_type=image.stored_content_type)
    return response


@login_required
@require_POST
def image_review(request: HttpRequest, image_id: int) -> HttpResponse:
    image = url_object(request, "image_id")
    _require_write(request, image.lesion.patient.organisation_id)
    form = ReviewForm(request.POST)
    if form.is_valid():
        try:
            services.reviews.review_create(user=request.user, image=image, **form.cleaned_data)
        except ValidationError as exc:
            _add_service_errors(form, exc)
        else:
            messages.success(request, "Your review was saved.")
            return redirect("image-detail", image_id=image.pk)
    return _image_page(request, image, form, status=400)


@login_required
@require_POST
def image_classify(request: HttpRequest, image_id: int) -> HttpResponse:
    image = url_object(request, "image_id")
    services.classification.classification_request(user=request.user, image=image)
    messages.info(request, "Classification requested.")
    return redirect("image-detail", image_id=image.pk)


# --- Organisations and members -------------------------------------------------------------


def _organisation_page(request: HttpRequest, organisation, form: MemberForm, status: int = 200) -> HttpResponse:
    return render(
        request,
        "diagnosis/organisation_detail.html",
        {
            "organisation": organisation,
            "memberships": selectors.membership_list(organisation=organisation),
            "is_admin": selectors.user_is_admin(user=request.user, organisation_id=organisation.pk),
            "form": form,
        },
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def organisation_detail(request: HttpRequest, organisation_id: int) -> HttpResponse:
    organisation = url_object(request, "organisation_id")
    form = MemberForm(request.POST or None)
    if request.method == "POST":
        require_admin(user=request.user, organisation_id=organisation.pk)
        if form.is_valid():
            try:
                membership = services.accounts.membership_grant(
                    actor=request.user, organisation=organisation, **form.cleaned_data
                )
            except ValidationError as exc:
                _add_service_errors(form, exc)
            else:
                messages.success(request, f"{membership.user.get_username()} is now {membership.get_role_display()}.")
                return redirect("organisation-detail", organisation_id=organisation.pk)
        return _organisation_page(request, organisation, form, status=400)
    return _organisation_page(request, organisation, form)


@login_required
@require_POST
def organisation_member_remove(request: HttpRequest, organisation_id: int, membership_id: int) -> HttpResponse:
    organisation = url_object(request, "organisation_id")
    membership = url_object(request, "membership_id")
    try:
        services.accounts.membership_revoke(actor=request.user, membership=membership)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"{membership.user.get_username()} was removed from {organisation.name}.")
    return redirect("organisation-detail", organisation_id=organisation.pk)


AUDIT_EVENTS_PER_PAGE = 50
AUDIT_CSV_COLUMNS = (
    "at", "actor_id", "actor_username", "action", "object_type", "object_id", "surface", "route",
    "method", "status_code", "outcome", "ip", "request_id",
)  # fmt: skip


@login_required
@require_GET
def organisation_audit(request: HttpRequest, organisation_id: int) -> HttpResponse:
    """The organisation's audit log for its admins: filter, page through, or download as CSV."""
    organisation = url_object(request, "organisation_id")
    require_admin(
        user=request.user,
        organisation_id=organisation.pk,
        message="Only an owner/admin of this organisation can see its audit log.",
    )
    form = AuditFilterForm(request.GET)
    filters = form.cleaned_data if form.is_valid() else {}
    events = selectors.audit_event_list(organisation=organisation, filters=filters)
    if request.GET.get("format") == "csv":
        return _audit_csv(events, organisation_id=organisation.pk)
    page = Paginator(events, AUDIT_EVENTS_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "diagnosis/audit_log.html",
        {"organisation": organisation, "form": form, "page": page, "query": query.urlencode()},
        status=200 if form.is_valid() else 400,
    )


def _audit_csv(events, *, organisation_id: int) -> StreamingHttpResponse:
    class _Echo:
        def write(self, value: str) -> str:
            return value

    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(AUDIT_CSV_COLUMNS)
        for event in events.iterator(chunk_size=2000):
            values = [getattr(event, column) for column in AUDIT_CSV_COLUMNS]
            values[0] = event.at.isoformat()
            yield writer.writerow(["" if v is None else v for v in values])

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="audit-organisation-{organisation_id}.csv"'
    return response


# --- Batches -------------------------------------------------------------------------------


@login_required
@require_GET
def batch_list(request: HttpRequest) -> HttpResponse:
    page = Paginator(selectors.batch_list(user=request.user), PATIENTS_PER_PAGE).get_page(request.GET.get("page"))
    rows = [(batch, selectors.batch_progress(batch=batch)) for batch in page]
    return render(
        request,
        "diagnosis/batch_list.html",
        {"page": page, "rows": rows, "can_write": selectors.user_can_write_anywhere(user=request.user)},
    )


@login_required
@require_http_methods(["GET", "POST"])
def batch_create(request: HttpRequest) -> HttpResponse:
    organisations = selectors.organisation_list_writable_by_user(user=request.user)
    if not organisations.exists():
        raise PermissionDenied("Your role is read-only: you cannot upload images.")
    lesion = None
    lesion_id = request.POST.get("lesion") or request.GET.get("lesion")
    if lesion_id:  # named in the form or the query string, not the URL: fetched here
        lesion = selectors.lesion_get(user=request.user, lesion_id=lesion_id)
        _require_write(request, lesion.patient.organisation_id)
    form = BatchForm(
        request.POST or None,
        request.FILES or None,
        organisations=organisations,
        has_lesion=lesion is not None,
        initial={"lesion": lesion.pk if lesion else None},
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        archive = data.get("archive")
        try:
            batch = services.uploads.batch_create(
                user=request.user,
                organisation=None if lesion else data.get("organisation"),
                lesion=lesion,
                files=[_read_upload(f) for f in data["images"]],
                archive=archive,
                archive_name=(archive.name or "") if archive else "",
                captured_at=data.get("captured_at"),
            )
        except ValidationError as exc:
            _add_service_errors(form, exc)
        else:
            audit.note(request, batch, "batch")
            progress = selectors.batch_progress(batch=batch)
            text = f"{progress.total} image{'s' if progress.total != 1 else ''} stored and queued."
            if batch.rejected:
                messages.warning(request, f"{text} {len(batch.rejected)} file(s) were refused: see below.")
            else:
                messages.success(request, text)
            return redirect("batch-detail", batch_id=batch.pk)
    return render(
        request,
        "diagnosis/batch_form.html",
        {"form": form, "lesion": lesion, "patient": lesion.patient if lesion else None},
        status=_form_status(request),
    )


@login_required
@require_GET
def batch_detail(request: HttpRequest, batch_id: int) -> HttpResponse:
    batch = url_object(request, "batch_id")
    images = list(selectors.batch_images(batch=batch))
    for image in images:
        image.bucket = image_bucket(image.latest_status)
    return render(
        request,
        "diagnosis/batch_detail.html",
        {"batch": batch, "progress": selectors.batch_progress(batch=batch), "images": images},
    )


# --- Operations (staff) ------------------------------------------------------------------------


@login_required
@require_GET
def ops(request: HttpRequest) -> HttpResponse:
    """Queue depth, readiness and classification counts, for staff (the people who run the servers)."""
    if not request.user.is_staff:
        raise PermissionDenied("Only staff can see the operations page.")
    return render(
        request,
        "diagnosis/ops.html",
        {
            "queue": health.queue_stats(),
            "checks": health.readiness_checks(),
            "status_counts": selectors.classification_status_counts(),
        },
    )
