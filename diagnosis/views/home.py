"""The dashboard, and the operations page for staff."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from diagnosis import selectors
from skinportal import health


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
