"""Flagged images on the dashboard, the batch page and the lesion chart (issue 12): a result whose
image is in doubt is listed apart and never ranked or trended with the others, nothing with a
warning is shown green, and every visit shows how sure the model is.

The stand-in model: RED -> melanoma (flagged), GREEN -> nevus (reassuring), BLUE -> vascular with
not_dermoscopic. Warnings the stand-in does not produce on demand (low_confidence, or an image
warning on a flagged result) are written onto the classification row, as a fixture."""

from __future__ import annotations

import datetime as dt
import itertools
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from diagnosis import selectors, services
from diagnosis.models import Classification, LesionImage
from diagnosis.plots import LABEL_WIDTH, malignancy_plot
from tests.portal.helpers import BLUE, GREEN, RED, image_bytes

pytestmark = pytest.mark.django_db

GREEN_BADGES = ("badge ok", "badge reassuring")


def _section(html: str, section_id: str) -> str:
    """The HTML of <section ... id="section_id"> ... </section> (sections are not nested)."""
    match = re.search(rf'<section[^>]*id="{section_id}"[^>]*>(.*?)</section>', html, re.DOTALL)
    assert match, f"no section {section_id}"
    return match.group(1)


def _row(html: str, image_id: int) -> str:
    match = re.search(rf'<tr data-image="{image_id}">(.*?)</tr>', html, re.DOTALL)
    assert match, f"no row for image {image_id}"
    return match.group(1)


def _warn(image: LesionImage, *codes: str) -> Classification:
    """Give an image's result these warnings (a fixture: the stand-in makes some on demand only)."""
    classification = image.classifications.get()
    classification.warnings = list(codes)
    classification.save(update_fields=["warnings"])
    return classification


@pytest.fixture
def lesions(owner, patient):
    """Three more lesions of the patient, by the colour their latest image will have."""
    return {
        colour: services.patients.lesion_create(user=owner, patient=patient, body_site="back", label=label)
        for colour, label in (("red", "Red one"), ("green", "Green one"), ("blue", "Blue one"))
    }


# --- Dashboard -------------------------------------------------------------------------------


def test_it_lists_a_not_dermatoscopic_result_apart_from_the_flagged_ranking(client_for, colleague, upload, lesions):
    red = upload(image_bytes(RED), target=lesions["red"])
    upload(image_bytes(GREEN), target=lesions["green"])
    blue = upload(image_bytes(BLUE), target=lesions["blue"])
    assert blue.classifications.get().warnings[0] == "not_dermoscopic"

    html = client_for(colleague).get(reverse("dashboard")).content.decode()
    flagged, needing = _section(html, "flagged"), _section(html, "needs-image")
    assert "Red one" in flagged and reverse("image-detail", args=[red.pk]) in flagged
    assert "Blue one" not in flagged and "Green one" not in flagged
    assert "Results that need a better image" in html
    assert "Blue one" in needing and "not dermatoscopic" in needing
    assert reverse("image-detail", args=[blue.pk]) in needing  # to the result, to re-take the picture
    assert "Red one" not in needing and "Green one" not in needing


def test_it_does_not_rank_a_flagged_score_from_an_image_in_doubt(client_for, colleague, upload, lesions):
    image = upload(image_bytes(RED), target=lesions["red"])
    assert _warn(image, "too_dark").malignant
    html = client_for(colleague).get(reverse("dashboard")).content.decode()
    assert "Red one" not in _section(html, "flagged")
    assert "Red one" in _section(html, "needs-image") and "too dark" in _section(html, "needs-image")
    assert [lesion.pk for lesion in selectors.lesion_list_flagged(user=colleague)] == []
    assert [lesion.pk for lesion in selectors.lesion_list_needing_image(user=colleague)] == [lesions["red"].pk]


def test_it_keeps_a_flagged_low_confidence_result_in_the_flagged_list_with_an_uncertain_badge(
    client_for, colleague, upload, lesions
):
    _warn(upload(image_bytes(RED), target=lesions["red"]), "low_confidence")
    html = client_for(colleague).get(reverse("dashboard")).content.decode()
    flagged = _section(html, "flagged")
    assert "Red one" in flagged and 'class="badge uncertain"' in flagged and ">uncertain<" in flagged
    assert "Red one" not in _section(html, "needs-image")


def test_it_shows_a_reassuring_result_nowhere_flagged_and_no_warned_result_green(
    client_for, colleague, upload, lesions
):
    green = upload(image_bytes(GREEN), target=lesions["green"])
    blue = upload(image_bytes(BLUE), target=lesions["blue"])
    html = client_for(colleague).get(reverse("dashboard")).content.decode()
    assert "Green one" not in _section(html, "flagged") and "Green one" not in _section(html, "needs-image")
    recent = _section(html, "recent")
    rows = {image.pk: re.search(rf'href="{reverse("image-detail", args=[image.pk])}".*?</tr>', recent, re.DOTALL).group(0)
            for image in (green, blue)}
    assert "badge reassuring" in rows[green.pk]
    assert not any(badge in rows[blue.pk] for badge in GREEN_BADGES)
    assert "badge unreliable" in rows[blue.pk] and "not dermatoscopic" in rows[blue.pk]


def test_it_shows_the_dashboard_in_the_same_number_of_queries_whatever_the_number_of_lesions(
    client_for, colleague, owner, patient, upload
):
    client = client_for(colleague)
    client.get(reverse("dashboard"))  # the first request after a login is not the point
    counts = []
    for _ in range(2):
        for colour in (RED, GREEN, BLUE):
            target = services.patients.lesion_create(user=owner, patient=patient, body_site="back", label="L")
            upload(image_bytes(colour), target=target)
        with CaptureQueriesContext(connection) as captured:
            assert client.get(reverse("dashboard")).status_code == 200
        counts.append(len(captured.captured_queries))
    assert counts[0] == counts[1], counts


# --- Batch page --------------------------------------------------------------------------------


def test_it_marks_each_finished_batch_image_with_its_warnings_and_no_green_for_a_doubtful_one(
    client_for, colleague, lesion, run_on_commit
):
    with run_on_commit():
        batch = services.batches.batch_create(
            user=colleague,
            lesion=lesion,
            files=[services.uploads.ImageUpload(f"{name}.png", image_bytes(colour))
                   for name, colour in (("red", RED), ("green", GREEN), ("blue", BLUE), ("red-blurred", RED))],
        )
    images = {image.source_name: image for image in batch.images.all()}
    _warn(images["red-blurred.png"], "blurred")
    html = client_for(colleague).get(reverse("batch-detail", args=[batch.pk])).content.decode()
    rows = {name: _row(html, image.pk) for name, image in images.items()}

    assert "badge flagged" in rows["red.png"] and not any(b in rows["red.png"] for b in GREEN_BADGES)
    assert "badge reassuring" in rows["green.png"]
    for name in ("blue.png", "red-blurred.png"):
        assert "badge unreliable" in rows[name] and 'class="badge warning"' in rows[name], name
        assert not any(badge in rows[name] for badge in GREEN_BADGES), name
    assert "not dermatoscopic" in rows["blue.png"] and "blurred" in rows["red-blurred.png"]
    # The words batch.js copies for images that finish while the page is open.
    assert '<template id="result-badges">' in html and 'data-warning="not_dermoscopic"' in html


def test_it_gives_the_progress_poll_each_done_image_s_warnings_and_level(colleague, lesion, run_on_commit):
    with run_on_commit():
        batch = services.batches.batch_create(
            user=colleague,
            lesion=lesion,
            files=[services.uploads.ImageUpload(f"{i}.png", image_bytes(colour))
                   for i, colour in enumerate((RED, GREEN, BLUE))],
        )
    statuses = selectors.batch_image_statuses(batch=batch)
    assert [(s.status, s.level) for s in statuses] == [("done", "flagged"), ("done", "reassuring"),
                                                         ("done", "unreliable")]
    assert statuses[2].warnings[0] == "not_dermoscopic" and statuses[1].warnings == ()


# --- Lesion page and chart -----------------------------------------------------------------------


def _lesion_page(client_for, user, lesion) -> str:
    return client_for(user).get(reverse("lesion-detail", args=[lesion.pk])).content.decode()


def test_it_leaves_a_visit_with_an_image_warning_out_of_the_trend_line(client_for, colleague, upload, lesion):
    upload(image_bytes(GREEN), captured_at=dt.date(2024, 1, 5))
    blue = upload(image_bytes(BLUE), captured_at=dt.date(2024, 4, 5))
    upload(image_bytes(RED), captured_at=dt.date(2024, 7, 5))
    plot = malignancy_plot(selectors.lesion_timeline(lesion=lesion))
    warned = next(p for p in plot.points if p.image_id == blue.pk)
    assert warned.marker == "dot unreliable" and not warned.reliable
    joined = plot.polyline.split()
    assert len(joined) == 2 and f"{warned.x},{warned.y}" not in joined

    html = _lesion_page(client_for, colleague, lesion)
    polyline = re.search(r'<polyline class="series" points="([^"]*)"', html).group(1)
    assert f"{warned.x},{warned.y}" not in polyline and len(polyline.split()) == 2
    assert html.count('<circle class="dot unreliable"') == 1 and '<path class="cross"' in html
    assert 'class="plot-legend"' in html and "image in doubt, not joined to the line" in html


def test_it_draws_no_line_when_fewer_than_two_visits_are_reliable(client_for, colleague, upload, lesion):
    upload(image_bytes(RED), captured_at=dt.date(2024, 1, 5))
    upload(image_bytes(BLUE), captured_at=dt.date(2024, 7, 5))
    assert malignancy_plot(selectors.lesion_timeline(lesion=lesion)).polyline == ""
    html = _lesion_page(client_for, colleague, lesion)
    assert "<polyline" not in html and html.count('<circle class="dot') == 2


def test_it_draws_a_low_confidence_visit_hollow_with_its_margin_in_the_tooltip(client_for, colleague, upload, lesion):
    _warn(upload(image_bytes(GREEN), captured_at=dt.date(2024, 1, 5)), "low_confidence")
    _warn(upload(image_bytes(RED), captured_at=dt.date(2024, 7, 5)), "low_confidence")
    plot = malignancy_plot(selectors.lesion_timeline(lesion=lesion))
    assert [p.marker for p in plot.points] == ["dot uncertain", "dot flagged uncertain"]
    assert len(plot.polyline.split()) == 2  # the model's doubt is not the image's: still trended
    tooltip = plot.points[0].tooltip
    assert "2024-01-05" in tooltip and "Melanocytic nevus (nv)" in tooltip and "top-two margin" in tooltip
    assert "uncertain" in tooltip

    html = _lesion_page(client_for, colleague, lesion)
    assert '<circle class="dot uncertain"' in html and '<circle class="dot flagged uncertain"' in html
    assert f"<title>{tooltip}</title>" in html
    assert "badge reassuring" not in html and "badge ok" not in html  # below, but unsure: amber


def test_it_shows_no_green_reassurance_on_the_lesion_page_for_a_visit_with_an_image_warning(
    client_for, colleague, upload, lesion
):
    classification = upload(image_bytes(BLUE)).classifications.get()
    assert not classification.malignant  # below the threshold, yet not a reassurance
    html = _lesion_page(client_for, colleague, lesion)
    assert not any(badge in html for badge in GREEN_BADGES)
    assert "badge unreliable" in html and "not dermatoscopic" in html and "Below threshold" not in html


def test_it_shows_a_clear_visit_green_and_a_flagged_one_red(client_for, colleague, upload, lesion):
    upload(image_bytes(GREEN), captured_at=dt.date(2024, 1, 5))
    upload(image_bytes(RED), captured_at=dt.date(2024, 7, 5))
    html = _lesion_page(client_for, colleague, lesion)
    visits = re.findall(r'<figure class="visit">(.*?)</figure>', html, re.DOTALL)
    assert "badge reassuring" in visits[0] and "badge flagged" in visits[1]
    assert "badge reassuring" not in visits[1]


def test_it_thins_date_labels_that_would_print_over_each_other(upload, lesion):
    dates = [dt.date(2024, 1, 1), dt.date(2024, 1, 3), dt.date(2024, 1, 6), dt.date(2024, 6, 1),
             dt.date(2024, 12, 28), dt.date(2024, 12, 31)]
    for seed, day in enumerate(dates):
        upload(image_bytes(GREEN, seed=seed), captured_at=day)
    plot = malignancy_plot(selectors.lesion_timeline(lesion=lesion))
    texts = [label.text for label in plot.x_labels]
    assert len(plot.points) == 6 and len(texts) < 6
    assert texts[0] == "2024-01-01" and texts[-1] == "2024-12-31" and "2024-06-01" in texts
    lefts = [{"start": lb.x, "middle": lb.x - LABEL_WIDTH / 2, "end": lb.x - LABEL_WIDTH}[lb.anchor]
             for lb in plot.x_labels]
    assert all(b - a >= LABEL_WIDTH for a, b in itertools.pairwise(lefts)), lefts
    assert all(0 <= left and left + LABEL_WIDTH <= plot.width for left in lefts)  # none runs off the drawing
