"""The dashboard, and the operations page for staff."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from diagnosis import selectors
from diagnosis.progress import result_badge, warning_badges
from skinportal import health


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    # Lesions come with their latest result's warning badges, results with theirs: a flagged
    # score from an image in doubt is listed apart, and nothing with a warning is shown green.
    flagged = selectors.lesion_list_flagged(user=request.user)
    needing_image = selectors.lesion_list_needing_image(user=request.user)
    recent = selectors.classification_list_recent(user=request.user, limit=10)
    return render(
        request,
        "diagnosis/dashboard.html",
        {
            "recent": [(c, result_badge(c)) for c in recent],
            "flagged": [(lesion, warning_badges(lesion.latest_warnings)) for lesion in flagged],
            "needing_image": [(lesion, warning_badges(lesion.latest_warnings)) for lesion in needing_image],
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
