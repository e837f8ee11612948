"""The dashboard, and the operations page for staff."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from diagnosis import selectors
from diagnosis.interpretation import level_of
from diagnosis.progress import LEVEL_LABELS, result_badge, warning_badges
from skinportal import health

REVIEW_QUEUE_SHOWN = 20  # the dashboard's share of the queue; the API pages through all of it
FOLLOW_UPS_SHOWN = 20  # of each follow-up list (GET /api/v1/follow-ups/ has them all)


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    # Lesions come with their latest result's warning badges, results with theirs: a flagged
    # score from an image in doubt is listed apart, and nothing with a warning is shown green.
    flagged = selectors.lesion_list_flagged(user=request.user)
    needing_image = selectors.lesion_list_needing_image(user=request.user)
    recent = selectors.classification_list_recent(user=request.user, limit=10)
    queue = selectors.review_queue(user=request.user)
    queued = list(queue[:REVIEW_QUEUE_SHOWN])
    return render(
        request,
        "diagnosis/dashboard.html",
        {
            "recent": [(c, result_badge(c)) for c in recent],
            "flagged": [(lesion, warning_badges(lesion.latest_warnings)) for lesion in flagged],
            "needing_image": [(lesion, warning_badges(lesion.latest_warnings)) for lesion in needing_image],
            "review_queue": [
                (image, level_of(malignant=bool(image.queue_malignant), warnings=image.queue_warnings),
                 warning_badges(image.queue_warnings))
                for image in queued
            ],
            "review_queue_total": len(queued) if len(queued) < REVIEW_QUEUE_SHOWN else queue.count(),
            "overdue": list(selectors.follow_up_list(user=request.user, state=selectors.OVERDUE)[:FOLLOW_UPS_SHOWN]),
            "due": list(selectors.follow_up_list(user=request.user, state=selectors.DUE)[:FOLLOW_UPS_SHOWN]),
            "due_days": selectors.FOLLOW_UP_DUE_DAYS,
            "organisations": selectors.organisation_list_for_user(user=request.user),
            "can_write": selectors.user_can_write_anywhere(user=request.user),
            "level_labels": LEVEL_LABELS,
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
