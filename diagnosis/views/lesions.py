"""Lesion pages (create, edit, the timeline, upload) and an image's result page, file, review and
re-classification."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from diagnosis import audit, inference, selectors, services
from diagnosis.api.throttling import page_upload_throttled
from diagnosis.forms import (
    FollowUpForm,
    LesionCloseForm,
    LesionForm,
    ReviewForm,
    UploadForm,
)
from diagnosis.interpretation import context_now
from diagnosis.models import FOLLOW_UP_SUGGESTED_MONTHS, Lesion, LesionImage, Patient
from diagnosis.plots import malignancy_plot
from diagnosis.responses import heatmap_response, image_file_response
from diagnosis.scoping import url_object
from diagnosis.views.common import add_service_errors, form_status, require_page_write

# --- Lesions -------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def lesion_create(request: HttpRequest, patient_id: int) -> HttpResponse:
    patient = url_object(request, "patient_id")
    require_page_write(request, patient.organisation_id)
    form = LesionForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            lesion = services.patients.lesion_create(user=request.user, patient=patient, **form.cleaned_data)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            audit.note(request, lesion, "lesion")
            messages.success(request, f"Lesion '{lesion.label}' added. Upload its first image.")
            return redirect("lesion-upload", lesion_id=lesion.pk)
    return render(
        request,
        "diagnosis/lesion_form.html",
        {"form": form, "patient": patient, "lesion": None},
        status=form_status(request),
    )


@login_required
@require_http_methods(["GET", "POST"])
def lesion_edit(request: HttpRequest, lesion_id: int) -> HttpResponse:
    lesion = url_object(request, "lesion_id")
    require_page_write(request, lesion.patient.organisation_id)
    form = LesionForm(
        request.POST or None, initial={field: getattr(lesion, field) for field in services.patients.LESION_FIELDS}
    )
    if request.method == "POST" and form.is_valid():
        try:
            services.patients.lesion_update(user=request.user, lesion=lesion, data=form.cleaned_data)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, "Lesion saved.")
            return redirect("lesion-detail", lesion_id=lesion.pk)
    return render(
        request,
        "diagnosis/lesion_form.html",
        {"form": form, "patient": lesion.patient, "lesion": lesion},
        status=form_status(request),
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
            "follow_up_state": selectors.follow_up_state(lesion=lesion),
            "follow_up_suggestion": selectors.follow_up_suggestion(lesion=lesion),
            "can_write": selectors.user_can_write(user=request.user, organisation_id=lesion.patient.organisation_id),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def lesion_follow_up(request: HttpRequest, lesion_id: int) -> HttpResponse:
    """Plan (or change, or clear) the lesion's follow-up date; a flagged latest result suggests one."""
    lesion = url_object(request, "lesion_id")
    require_page_write(request, lesion.patient.organisation_id)
    suggested = selectors.follow_up_suggestion(lesion=lesion)
    form = FollowUpForm(request.POST or None, initial={"follow_up_on": lesion.follow_up_on or suggested})
    if request.method == "POST" and form.is_valid():
        try:
            services.patients.lesion_follow_up_set(
                user=request.user, lesion=lesion, follow_up_on=form.cleaned_data["follow_up_on"]
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            date = form.cleaned_data["follow_up_on"]
            messages.success(request, f"Follow-up planned for {date:%Y-%m-%d}." if date else "No follow-up planned.")
            return redirect("lesion-detail", lesion_id=lesion.pk)
    intro = (f"Its latest result is above the threshold: a follow-up is suggested on {suggested:%Y-%m-%d}, "
             f"{FOLLOW_UP_SUGGESTED_MONTHS} months after that visit. Change it as you see fit."
             if suggested else "The lesion appears in the dashboard's follow-up lists when it is due.")
    return _lesion_step(request, lesion, form, heading="Follow-up", intro=intro, button="Save the follow-up date")


@login_required
@require_http_methods(["GET", "POST"])
def lesion_close(request: HttpRequest, lesion_id: int) -> HttpResponse:
    """Close the lesion with its outcome: excised (with histopathology) or discharged."""
    lesion = url_object(request, "lesion_id")
    require_page_write(request, lesion.patient.organisation_id)
    form = LesionCloseForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.patients.lesion_close(user=request.user, lesion=lesion, **form.cleaned_data)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, "Lesion closed.")
            return redirect("lesion-detail", lesion_id=lesion.pk)
    intro = ("A closed lesion leaves the follow-up lists and the review queue; its images and results stay. "
             "Its follow-up date is cleared.")
    return _lesion_step(request, lesion, form, heading="Close the lesion", intro=intro, button="Close the lesion")


@login_required
@require_http_methods(["GET", "POST"])
def lesion_reopen(request: HttpRequest, lesion_id: int) -> HttpResponse:
    """Open a closed lesion again; its outcome is kept as a line of the lesion's notes."""
    lesion = url_object(request, "lesion_id")
    require_page_write(request, lesion.patient.organisation_id)
    if lesion.closed_on is None:
        messages.info(request, "This lesion is open.")
        return redirect("lesion-detail", lesion_id=lesion.pk)
    form = forms.Form()  # nothing to fill in: the page only asks to confirm
    if request.method == "POST":
        services.patients.lesion_reopen(user=request.user, lesion=lesion)
        messages.success(request, "Lesion reopened. Its outcome is kept in the lesion's notes.")
        return redirect("lesion-detail", lesion_id=lesion.pk)
    intro = ("The lesion goes back to the follow-up lists and the review queue. Its outcome "
             f"({lesion.get_outcome_display()}, closed {lesion.closed_on:%Y-%m-%d}) is kept as a line of its notes.")
    return _lesion_step(request, lesion, form, heading="Reopen the lesion", intro=intro, button="Reopen the lesion")


def _lesion_step(request: HttpRequest, lesion: Lesion, form, *, heading: str, intro: str, button: str) -> HttpResponse:
    return render(
        request,
        "diagnosis/lesion_step.html",
        {"lesion": lesion, "patient": lesion.patient, "form": form, "heading": heading, "intro": intro,
         "button": button},
        status=form_status(request),
    )


@login_required
@require_http_methods(["GET", "POST"])
def lesion_upload(request: HttpRequest, lesion_id: int) -> HttpResponse:
    lesion = url_object(request, "lesion_id")
    require_page_write(request, lesion.patient.organisation_id)
    context = {"lesion": lesion, "patient": lesion.patient}
    throttled = page_upload_throttled(request)  # the API's per-user bucket: uploads add up
    if throttled is not None:
        messages.error(request, throttled.message)
        response = render(request, "diagnosis/upload.html", {**context, "form": UploadForm()}, status=429)
        response["Retry-After"] = str(throttled.wait)
        return response
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        files = [services.uploads.ImageUpload.from_file(f) for f in form.cleaned_data["images"]]
        try:
            images = services.uploads.lesion_image_upload(
                user=request.user, lesion=lesion, files=files, captured_at=form.cleaned_data["captured_at"],
                pixels_per_mm=form.cleaned_data.get("pixels_per_mm"),
            )
        except services.uploads.DuplicateUpload as exc:
            add_service_errors(form, exc, field_map={"image": "images"})
            context["repeated"] = [image for _, image in exc.existing]  # linked on the page
        except ValidationError as exc:
            add_service_errors(form, exc, field_map={"image": "images"})
        else:
            if len(images) == 1:
                return redirect("image-detail", image_id=images[0].pk)
            messages.success(request, f"{len(images)} images uploaded and classified.")
            return redirect("lesion-detail", lesion_id=lesion.pk)
    return render(request, "diagnosis/upload.html", {**context, "form": form}, status=form_status(request))


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
            # The records now give another clinical context than the result weighed.
            "context_now": context_now(shown) if shown is not None else None,
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
    return image_file_response(url_object(request, "image_id"))


@login_required
@require_GET
def image_heatmap(request: HttpRequest, image_id: int) -> HttpResponse:
    """PNG overlay of the class activation map (?class=CODE, default the top class)."""
    class_code = request.GET.get("class") or None
    if class_code is not None and class_code not in inference.CLASSES:
        return HttpResponseBadRequest(f"Unknown class; choose one of {', '.join(inference.CLASSES)}.",
                                      content_type="text/plain; charset=utf-8")
    return heatmap_response(url_object(request, "image_id"), class_code)


@login_required
@require_POST
def image_review(request: HttpRequest, image_id: int) -> HttpResponse:
    image = url_object(request, "image_id")
    require_page_write(request, image.lesion.patient.organisation_id)
    form = ReviewForm(request.POST)
    if form.is_valid():
        try:
            services.reviews.review_create(user=request.user, image=image, **form.cleaned_data)
        except ValidationError as exc:
            add_service_errors(form, exc)
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
