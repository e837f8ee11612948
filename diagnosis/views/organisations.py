"""An organisation's page (its members, managed by its admins), its audit log, and how the model
agrees with its clinicians' reviews."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from diagnosis import agreement, audit, selectors, services
from diagnosis.exports import csv_lines
from diagnosis.forms import (
    AgreementFilterForm,
    AuditFilterForm,
    MemberForm,
)
from diagnosis.permissions import ADMIN_ONLY_AUDIT, require_admin
from diagnosis.responses import agreement_csv_response
from diagnosis.scoping import url_object
from diagnosis.views.common import add_service_errors

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
                add_service_errors(form, exc)
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
    require_admin(user=request.user, organisation_id=organisation.pk, message=ADMIN_ONLY_AUDIT)
    form = AuditFilterForm(request.GET)
    filters = form.cleaned_data if form.is_valid() else {}
    events = selectors.audit_event_list(organisation=organisation, filters=filters)
    if request.GET.get("format") == "csv":
        audit.note_action(request, "export")
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
    def rows():
        for event in events.iterator(chunk_size=2000):
            values = [getattr(event, column) for column in AUDIT_CSV_COLUMNS]
            values[0] = event.at.isoformat()
            if event.action == audit.STARTED:  # no outcome yet: its request's next event has it
                values[AUDIT_CSV_COLUMNS.index("outcome")] = ""
            yield values

    # csv_lines neutralises cells a spreadsheet would run as formulas (usernames, request ids).
    response = StreamingHttpResponse(csv_lines(AUDIT_CSV_COLUMNS, rows()), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="audit-organisation-{organisation_id}.csv"'
    return response


# --- Agreement: the model against this organisation's reviews ----------------------------------


@login_required
@require_GET
def organisation_agreement(request: HttpRequest, organisation_id: int) -> HttpResponse:
    """The model's top class against the organisation's clinician reviews, and its malignancy flag
    against histopathology-confirmed diagnoses, for every member of the organisation: each of them
    already reads every review and result the figures are counted from. `?format=csv` downloads
    them; an unknown model version is the page again with the error (400), figures for all versions."""
    organisation = url_object(request, "organisation_id")
    versions = selectors.agreement_model_versions(organisation=organisation)
    form = AgreementFilterForm(request.GET, versions=versions)
    valid = form.is_valid()
    model_version = form.cleaned_data.get("model_version") if valid else None
    report = selectors.agreement_report(organisation=organisation, model_version=model_version, versions=versions)
    if valid and request.GET.get("format") == "csv":
        audit.note_action(request, "export")
        return agreement_csv_response(report, organisation_id=organisation.pk)
    query = request.GET.copy()
    query.pop("format", None)
    return render(
        request,
        "diagnosis/organisation_agreement.html",
        {
            "organisation": organisation,
            "form": form,
            "report": report,
            "sections": [
                ("all_reviews", "All reviews", report.all_reviews),
                ("confirmed", "Histopathology-confirmed reviews only", report.confirmed),
            ],
            "notice": agreement.NOTICE,
            "pairing": agreement.PAIRING,
            "malignant_group": agreement.MALIGNANT_GROUP_NOTE,
            "small_sample": agreement.SMALL_SAMPLE,
            "query": query.urlencode(),
        },
        status=200 if valid else 400,
    )
