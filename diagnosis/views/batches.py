"""Batches: the list, the upload form (several files or a ZIP with a CSV), the progress page."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from diagnosis import audit, selectors, services
from diagnosis.api.throttling import page_upload_throttled
from diagnosis.forms import (
    BatchForm,
)
from diagnosis.inference import WARNING_CODES
from diagnosis.progress import LEVEL_LABELS, warning_badges
from diagnosis.scoping import url_object
from diagnosis.views.common import PATIENTS_PER_PAGE, add_service_errors, form_status, require_page_write

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
        require_page_write(request, lesion.patient.organisation_id)
    context = {"lesion": lesion, "patient": lesion.patient if lesion else None}
    form_options = {
        "organisations": organisations,
        "has_lesion": lesion is not None,
        "initial": {"lesion": lesion.pk if lesion else None},
    }
    throttled = page_upload_throttled(request)  # the API's per-user bucket: uploads add up
    if throttled is not None:
        messages.error(request, throttled.message)
        form = BatchForm(**form_options)
        response = render(request, "diagnosis/batch_form.html", {**context, "form": form}, status=429)
        response["Retry-After"] = str(throttled.wait)
        return response
    form = BatchForm(request.POST or None, request.FILES or None, **form_options)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        archive = data.get("archive")
        try:
            batch = services.batches.batch_create(
                user=request.user,
                organisation=None if lesion else data.get("organisation"),
                lesion=lesion,
                files=[services.uploads.ImageUpload.from_file(f) for f in data["images"]],
                archive=archive,
                archive_name=(archive.name or "") if archive else "",
                captured_at=data.get("captured_at"),
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            audit.note(request, batch, "batch")
            progress = selectors.batch_progress(batch=batch)
            text = f"{progress.total} image{'s' if progress.total != 1 else ''} stored and queued."
            if batch.rejected:
                messages.warning(request, f"{text} {len(batch.rejected)} file(s) were refused: see below.")
            else:
                messages.success(request, text)
            return redirect("batch-detail", batch_id=batch.pk)
    return render(request, "diagnosis/batch_form.html", {**context, "form": form}, status=form_status(request))


@login_required
@require_GET
def batch_detail(request: HttpRequest, batch_id: int) -> HttpResponse:
    batch = url_object(request, "batch_id")
    sort = request.GET.get("sort", "")
    sort = sort if sort in selectors.BATCH_SORTS else next(iter(selectors.BATCH_SORTS))
    show = request.GET.get("show", "")
    show = show if show in selectors.BATCH_FILTERS else next(iter(selectors.BATCH_FILTERS))
    return render(
        request,
        "diagnosis/batch_detail.html",
        {
            "batch": batch,
            "progress": selectors.batch_progress(batch=batch),
            "rows": selectors.batch_image_rows(batch=batch, sort=sort, show=show),
            "sort": sort,
            "show": show,
            "sorts": selectors.BATCH_SORTS.items(),
            "filters": selectors.BATCH_FILTERS.items(),
            # The words batch.js needs for images that finish while the page is open.
            "warning_vocabulary": warning_badges(WARNING_CODES),
            "level_labels": LEVEL_LABELS.items(),
        },
    )
