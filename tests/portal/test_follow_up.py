"""Follow-up: a planned date per lesion (suggested 3 months after a flagged visit), the due and
overdue lists (dashboard and API), and closing a lesion with its outcome (page and API)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from django.utils import timezone

from diagnosis import selectors, services
from diagnosis.limits import LONG_TEXT_MAX_CHARS
from diagnosis.models import Lesion
from diagnosis.selectors.records import _months_later
from tests.portal.helpers import GREEN, RED, image_bytes

pytestmark = pytest.mark.django_db


def _today() -> dt.date:
    return timezone.localdate()


def _plan(lesion: Lesion, day: dt.date) -> None:
    """A date in the past can only be kept, not set: written directly to make an overdue one."""
    Lesion.objects.filter(pk=lesion.pk).update(follow_up_on=day)


def test_it_plans_changes_and_clears_a_follow_up(owner, lesion):
    day = _today() + dt.timedelta(days=30)
    assert services.patients.lesion_follow_up_set(user=owner, lesion=lesion, follow_up_on=day).follow_up_on == day
    assert services.patients.lesion_follow_up_set(user=owner, lesion=lesion, follow_up_on=None).follow_up_on is None


def test_it_refuses_a_past_date_a_closed_lesion_and_the_read_only_role(owner, reader, lesion):
    with pytest.raises(ValidationError, match="past"):
        services.patients.lesion_follow_up_set(user=owner, lesion=lesion, follow_up_on=_today() - dt.timedelta(1))
    with pytest.raises(PermissionDenied):
        services.patients.lesion_follow_up_set(user=reader, lesion=lesion, follow_up_on=_today())
    services.patients.lesion_close(user=owner, lesion=lesion, outcome="discharged")
    with pytest.raises(ValidationError, match="closed"):
        services.patients.lesion_follow_up_set(user=owner, lesion=lesion, follow_up_on=_today())


def test_it_suggests_three_months_after_a_flagged_visit_only(owner, lesion, upload):
    upload(image_bytes(GREEN), captured_at=_today() - dt.timedelta(days=10))
    assert selectors.follow_up_suggestion(lesion=selectors.lesion_get(user=owner, lesion_id=lesion.pk)) is None
    visit = _today() - dt.timedelta(days=5)
    upload(image_bytes(RED), captured_at=visit)
    suggestion = selectors.follow_up_suggestion(lesion=selectors.lesion_get(user=owner, lesion_id=lesion.pk))
    assert suggestion is not None and 89 <= (suggestion - visit).days <= 92
    _plan(lesion, _today())
    assert selectors.follow_up_suggestion(lesion=selectors.lesion_get(user=owner, lesion_id=lesion.pk)) is None


def test_it_adds_months_to_the_last_day_of_a_shorter_month():
    assert _months_later(dt.date(2025, 11, 30), 3) == dt.date(2026, 2, 28)
    assert _months_later(dt.date(2024, 1, 31), 1) == dt.date(2024, 2, 29)


def test_it_lists_due_and_overdue_open_lesions_of_the_users_organisations(owner, outsider, patient, lesion):
    due = services.patients.lesion_create(user=owner, patient=patient, body_site="face", label="Due")
    later = services.patients.lesion_create(user=owner, patient=patient, body_site="face", label="Later")
    closed = services.patients.lesion_create(user=owner, patient=patient, body_site="face", label="Closed")
    _plan(lesion, _today() - dt.timedelta(days=3))
    _plan(due, _today() + dt.timedelta(days=5))
    _plan(later, _today() + dt.timedelta(days=60))
    _plan(closed, _today() - dt.timedelta(days=1))
    services.patients.lesion_close(user=owner, lesion=closed, outcome="excised", outcome_note="BCC, clear margins")
    assert [x.pk for x in selectors.follow_up_list(user=owner, state="overdue")] == [lesion.pk]
    assert [x.pk for x in selectors.follow_up_list(user=owner, state="due")] == [due.pk]
    assert [x.pk for x in selectors.follow_up_list(user=owner)] == [lesion.pk, due.pk]
    assert list(selectors.follow_up_list(user=outsider)) == []
    assert selectors.follow_up_state(lesion=Lesion.objects.get(pk=later.pk)) is None


def test_it_closes_a_lesion_once_with_its_outcome(owner, lesion, upload):
    upload(image_bytes(RED))
    _plan(lesion, _today())
    closed = services.patients.lesion_close(user=owner, lesion=lesion, outcome="excised", outcome_note=" melanoma ")
    assert closed.closed_on == _today() and closed.outcome == "excised" and closed.outcome_note == "melanoma"
    assert closed.follow_up_on is None
    assert list(selectors.review_queue(user=owner)) == []  # a closed lesion leaves the queue
    with pytest.raises(ValidationError, match="closed on"):
        services.patients.lesion_close(user=owner, lesion=closed, outcome="discharged")


def test_it_refuses_an_unknown_outcome_and_a_future_closing_date(owner, lesion):
    with pytest.raises(ValidationError):
        services.patients.lesion_close(user=owner, lesion=lesion, outcome="vanished")
    with pytest.raises(ValidationError, match="future"):
        services.patients.lesion_close(
            user=owner, lesion=lesion, outcome="discharged", closed_on=_today() + dt.timedelta(days=1)
        )


def test_it_bounds_the_closing_note_on_the_page_and_in_the_api(owner, lesion, client_for, api_for):
    too_long = "x" * (LONG_TEXT_MAX_CHARS + 1)
    url = f"/api/v1/lesions/{lesion.pk}/close/"
    page = client_for(owner).post(
        reverse("lesion-close", kwargs={"lesion_id": lesion.pk}),
        {"outcome": "discharged", "closed_on": _today().isoformat(), "outcome_note": too_long},
    )
    api = api_for(owner).post(url, {"outcome": "discharged", "outcome_note": too_long}, format="json")
    nul = api_for(owner).post(url, {"outcome": "discharged", "outcome_note": "a\x00b"}, format="json")
    assert (page.status_code, api.status_code, nul.status_code) == (400, 400, 400)
    lesion.refresh_from_db()
    assert lesion.closed_on is None


def test_it_plans_a_follow_up_on_the_page_with_the_suggestion_filled_in(owner, lesion, upload, client_for):
    upload(image_bytes(RED))
    client = client_for(owner)
    url = reverse("lesion-follow-up", kwargs={"lesion_id": lesion.pk})
    suggestion = selectors.follow_up_suggestion(lesion=selectors.lesion_get(user=owner, lesion_id=lesion.pk))
    form = client.get(url).content.decode()
    assert f'value="{suggestion:%Y-%m-%d}"' in form and "suggested" in form
    day = _today() + dt.timedelta(days=7)
    assert client.post(url, {"follow_up_on": day.isoformat()}).status_code == 302
    lesion.refresh_from_db()
    assert lesion.follow_up_on == day
    refused = client.post(url, {"follow_up_on": "2001-01-01"})
    assert refused.status_code == 400 and "cannot be in the past" in refused.content.decode()
    detail = client.get(reverse("lesion-detail", kwargs={"lesion_id": lesion.pk})).content.decode()
    assert f"{day:%Y-%m-%d}" in detail and "Due" in detail
    dashboard = client.get(reverse("dashboard")).content.decode()
    assert f'data-lesion="{lesion.pk}" data-follow-up="due"' in dashboard


def test_it_closes_a_lesion_on_the_page(owner, reader, lesion, client_for):
    url = reverse("lesion-close", kwargs={"lesion_id": lesion.pk})
    assert client_for(reader).get(url).status_code == 403
    client = client_for(owner)
    assert client.post(url, {"outcome": "", "closed_on": _today().isoformat()}).status_code == 400
    response = client.post(url, {"outcome": "discharged", "closed_on": _today().isoformat(), "outcome_note": ""})
    assert response.status_code == 302
    detail = client.get(reverse("lesion-detail", kwargs={"lesion_id": lesion.pk})).content.decode()
    assert "Closed" in detail and "Discharged" in detail


def test_it_lists_follow_ups_plans_and_closes_through_the_api(owner, outsider, lesion, api_for):
    api = api_for(owner)
    day = _today() + dt.timedelta(days=3)
    patched = api.patch(f"/api/v1/lesions/{lesion.pk}/", {"follow_up_on": day.isoformat()}, format="json")
    assert patched.status_code == 200 and patched.json()["follow_up_state"] == "due"
    assert api.patch(f"/api/v1/lesions/{lesion.pk}/", {"follow_up_on": "2001-01-01"}, format="json").status_code == 400
    assert [r["id"] for r in api.get("/api/v1/follow-ups/", {"state": "due"}).json()["results"]] == [lesion.pk]
    assert api.get("/api/v1/follow-ups/", {"state": "overdue"}).json()["count"] == 0
    assert api.get("/api/v1/follow-ups/", {"state": "someday"}).status_code == 400
    assert api_for(outsider).get("/api/v1/follow-ups/").json()["count"] == 0
    assert api_for(outsider).post(f"/api/v1/lesions/{lesion.pk}/close/", {"outcome": "discharged"},
                                  format="json").status_code == 404
    closed = api.post(f"/api/v1/lesions/{lesion.pk}/close/", {"outcome": "excised", "outcome_note": "naevus"},
                      format="json")
    assert closed.status_code == 200, closed.content
    body = closed.json()
    assert body["outcome"] == "excised" and body["closed_on"] == _today().isoformat() and body["follow_up_on"] is None
    again = api.post(f"/api/v1/lesions/{lesion.pk}/close/", {"outcome": "discharged"}, format="json")
    assert again.status_code == 400
    assert api.get("/api/v1/follow-ups/").json()["count"] == 0


def test_it_reopens_a_closed_lesion_keeping_its_outcome_in_the_notes(owner, reader, outsider, lesion, client_for,
                                                                        api_for):
    services.patients.lesion_close(user=owner, lesion=lesion, outcome="excised", outcome_note="Naevus, benign.")
    page_url = reverse("lesion-reopen", kwargs={"lesion_id": lesion.pk})
    api_url = f"/api/v1/lesions/{lesion.pk}/reopen/"
    assert client_for(reader).post(page_url).status_code == 403
    assert api_for(reader).post(api_url).status_code == 403
    assert api_for(outsider).post(api_url).status_code == 404
    lesion.refresh_from_db()
    assert lesion.closed_on is not None  # nothing changed by the refused requests

    client = client_for(owner)
    detail = client.get(reverse("lesion-detail", kwargs={"lesion_id": lesion.pk})).content.decode()
    assert f'href="{page_url}"' in detail
    assert client.post(page_url).status_code == 302
    lesion.refresh_from_db()
    assert (lesion.closed_on, lesion.outcome, lesion.outcome_note) == (None, "", "")
    assert "Excised, with histopathology" in lesion.notes and "Naevus, benign." in lesion.notes
    assert f"reopened {_today():%Y-%m-%d}" in lesion.notes
    # Open now: the page goes back to the lesion, the API refuses with a 400 and changes nothing.
    assert client.get(page_url).status_code == 302
    refused = api_for(owner).post(api_url)
    assert refused.status_code == 400 and refused.json()["error"]["message"]

    services.patients.lesion_close(user=owner, lesion=lesion, outcome="discharged")
    reopened = api_for(owner).post(api_url)
    assert reopened.status_code == 200 and reopened.json()["closed_on"] is None
    lesion.refresh_from_db()
    assert lesion.notes.count("reopened") == 2  # both closings kept, one line each
