"""Comparing two visits of a lesion (issue 14, part 2): the plain change maths, the page and the API
(defaults, ids of another lesion, another organisation), the alignment for display."""

from __future__ import annotations

import datetime as dt

import pytest

from diagnosis.compare import (
    CompareError,
    Visit,
    compare_visits,
    interval_words,
    parse_image_id,
    percent_change_text,
    relative_change,
    view_box,
)
from diagnosis.models import Classification
from tests.portal.test_segmentation_storage import classical_segmenter, lesion_png, upload_with_scale  # noqa: F401

# --- The maths (no Django) -----------------------------------------------------------------


def _seg(area_px: float, **extra) -> dict:
    return {"fallback": False, "area_px": area_px, "diameter_px": 40.0, "asymmetry": 0.1, "border_irregularity": 1.2,
            "solidity": 0.9, "colours": 2, "bbox": [10, 20, 40, 30], "centroid": [30, 35], **extra}


def test_it_computes_relative_changes():
    assert relative_change(100, 138) == pytest.approx(0.38)
    assert relative_change(0.2, 0.1) == pytest.approx(-0.5)
    assert relative_change(0, 5) is None and relative_change(None, 5) is None and relative_change(5, None) is None
    assert percent_change_text(0.38) == "+38%"
    assert percent_change_text(-0.125) == "\u221212%" or percent_change_text(-0.125) == "\u221213%"
    assert percent_change_text(0.001) == "no change"
    assert percent_change_text(None) == "n/a"


@pytest.mark.parametrize(("days", "words"), [
    (0, "the same day"), (1, "1 day"), (10, "10 days"), (21, "3 weeks"), (182, "6 months"), (365, "1 year"),
    (426, "1 year 2 months"), (800, "2 years 2 months"),
])
def test_it_says_the_interval_in_words(days, words):
    assert interval_words(days) == words


def test_it_summarises_area_and_score_in_plain_words():
    before = Visit(1, dt.date(2026, 1, 10), 0.21, "v1", _seg(1000))
    after = Visit(2, dt.date(2026, 7, 10), 0.34, "v1", _seg(1380))
    comparison = compare_visits(after, before)  # ordered by date whatever the order asked
    assert comparison.before.image_id == 1 and comparison.days == 181
    assert comparison.summary.startswith("Area +38% in 6 months (in pixels: the images have no scale); "
                                         "malignancy score 0.21 \u2192 0.34")
    assert "not a diagnosis" in comparison.summary
    assert comparison.area_in_pixels and comparison.area.unit == "px"
    assert any("no scale" in note for note in comparison.notes)
    assert {c.key for c in comparison.changes} == {"area", "diameter", "asymmetry", "border_irregularity",
                                                   "solidity", "colours"}
    assert comparison.score.relative == pytest.approx(0.13 / 0.21)


def test_it_compares_in_mm_when_both_images_have_a_scale():
    before = Visit(1, dt.date(2026, 1, 1), 0.3, "v1", _seg(1000, area_mm2=10.0, diameter_mm=4.0), 10.0)
    after = Visit(2, dt.date(2026, 2, 1), 0.3, "v1", _seg(1500, area_mm2=9.0, diameter_mm=4.0), 12.0)
    comparison = compare_visits(before, after)
    assert not comparison.area_in_pixels and comparison.area.unit == "mm²"
    assert comparison.area.relative == pytest.approx(-0.1)
    assert not any("no scale" in note for note in comparison.notes)


def test_it_leaves_out_missing_and_fallback_outlines_and_says_so():
    before = Visit(1, dt.date(2026, 1, 1), 0.3, "v1", None)
    after = Visit(2, dt.date(2026, 2, 1), None, "", _seg(1000, fallback=True))
    comparison = compare_visits(before, after)
    assert comparison.area.relative is None and comparison.score.relative is None
    assert comparison.summary.startswith("Nothing could be measured on both images")
    assert len(comparison.notes) == 3


def test_it_notes_scores_of_different_model_versions():
    comparison = compare_visits(Visit(1, dt.date(2026, 1, 1), 0.3, "v1", _seg(10)),
                                Visit(2, dt.date(2026, 3, 1), 0.4, "v2", _seg(12)))
    assert any("different model versions" in note for note in comparison.notes)


def test_it_refuses_the_same_image_twice_and_bad_ids():
    with pytest.raises(CompareError):
        compare_visits(Visit(1, dt.date(2026, 1, 1)), Visit(1, dt.date(2026, 1, 1)))
    assert parse_image_id(None, "a") is None and parse_image_id(" ", "a") is None and parse_image_id("12", "a") == 12
    for bad in ("x", "-1", "1.5", "١٢", "9" * 30):
        with pytest.raises(CompareError):
            parse_image_id(bad, "a")


def test_it_aligns_each_lesion_in_a_square_twice_its_size():
    box = view_box(_seg(1, bbox=[10, 20, 40, 30], centroid=[30, 35]), 100, 80)
    assert (box.x, box.y, box.width, box.height) == (-10, -5, 80, 80)
    whole = view_box(None, 100, 80)
    assert (whole.x, whole.y, whole.width, whole.height) == (0, 0, 100, 80)
    assert str(view_box(_seg(1, fallback=True), 100, 80)) == "0 0 100 80"


# --- Page and API -------------------------------------------------------------------------------


@pytest.fixture
def two_visits(owner, lesion, run_on_commit):
    first = upload_with_scale(owner, lesion, run_on_commit, lesion_png(axes=(50, 40), seed=1),
                              captured_at=dt.date(2026, 1, 10))
    second = upload_with_scale(owner, lesion, run_on_commit, lesion_png(axes=(60, 46), seed=2),
                               captured_at=dt.date(2026, 7, 10))
    return first, second


def test_it_compares_the_first_and_latest_images_by_default(owner, colleague, lesion, two_visits, api_for):
    first, second = two_visits
    for user in (owner, colleague):
        body = api_for(user).get(f"/api/v1/lesions/{lesion.pk}/compare/")
        assert body.status_code == 200, body.content
        data = body.json()
        assert (data["before"]["image"], data["after"]["image"]) == (first.pk, second.pk)
    assert data["days"] == 181 and data["interval"] == "6 months" and data["area_in_pixels"] is True
    area = next(c for c in data["changes"] if c["key"] == "area")
    assert area["relative_change"] == pytest.approx((60 * 46) / (50 * 40) - 1, abs=0.05)
    assert data["summary"].startswith("Area +")
    assert next(c for c in data["changes"] if c["key"] == "malignancy_score")["before"] is not None
    assert data["before"]["outline_found"] and len(data["before"]["view_box"]) == 4
    assert "not a diagnosis" in data["notice"]


def test_it_refuses_images_not_of_this_lesion(owner, outsider, patient, lesion, two_visits, api_for, client_for,
                                              run_on_commit):
    from diagnosis import services

    other_lesion = services.patients.lesion_create(user=owner, patient=patient, body_site="back", label="Other")
    stranger = upload_with_scale(owner, other_lesion, run_on_commit, lesion_png(seed=9))
    first, _ = two_visits
    for query in (f"a={stranger.pk}", f"b={stranger.pk}", "a=999999", "a=abc", f"a={first.pk}&b={first.pk}"):
        response = api_for(owner).get(f"/api/v1/lesions/{lesion.pk}/compare/?{query}")
        assert response.status_code == 400, query
        assert response.json()["error"]["code"] == "cannot_compare"
        page = client_for(owner).get(f"/lesions/{lesion.pk}/compare/?{query}")
        assert page.status_code == 400 and b'id="compare-error"' in page.content
    assert b"is not an image of this lesion" in client_for(owner).get(
        f"/lesions/{lesion.pk}/compare/?a={stranger.pk}").content


def test_it_hides_another_organisations_lesion(outsider, lesion, two_visits, api_for, client_for):
    assert api_for(outsider).get(f"/api/v1/lesions/{lesion.pk}/compare/").status_code == 404
    assert client_for(outsider).get(f"/lesions/{lesion.pk}/compare/").status_code == 404


def test_it_shows_the_page_with_aligned_images_outlines_and_changes(owner, lesion, two_visits, client_for):
    first, second = two_visits
    client = client_for(owner)
    html = client.get(f"/lesions/{lesion.pk}/compare/").content.decode()
    assert 'id="summary"' in html and "Area +" in html and "malignancy score" in html
    assert html.count('class="compare-view"') == 2 and html.count('class="outline"') == 2
    assert 'id="compare-heatmaps"' in html and 'class="heatmap"' in html  # the stand-in model has maps
    assert f'/images/{first.pk}/file/' in html and f'/images/{second.pk}/file/' in html
    assert "no scale" in html and "not a diagnosis" in html
    lesion_page = client.get(f"/lesions/{lesion.pk}/").content.decode()
    assert 'id="compare-link"' in lesion_page


def test_it_says_a_lesion_needs_two_images(owner, lesion, upload, client_for, api_for):
    upload(lesion_png())
    page = client_for(owner).get(f"/lesions/{lesion.pk}/compare/")
    assert page.status_code == 400 and b"fewer than two images" in page.content
    assert 'id="compare-link"' not in client_for(owner).get(f"/lesions/{lesion.pk}/").content.decode()
    assert api_for(owner).get(f"/api/v1/lesions/{lesion.pk}/compare/").status_code == 400


def test_it_compares_results_without_outlines_without_errors(owner, lesion, two_visits, api_for, client_for):
    Classification.objects.filter(image__lesion=lesion).update(segmentation=None)
    data = api_for(owner).get(f"/api/v1/lesions/{lesion.pk}/compare/").json()
    assert next(c for c in data["changes"] if c["key"] == "area")["relative_change"] is None
    assert data["summary"].startswith("Malignancy score")
    page = client_for(owner).get(f"/lesions/{lesion.pk}/compare/")
    assert page.status_code == 200 and b"No outline: the whole image is shown" in page.content


def test_it_is_in_the_openapi_schema(owner, client_for):
    schema = client_for(owner).get("/api/v1/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/lesions/{lesion_id}/compare/"]["get"]
    assert "CompareOutput" in str(operation["responses"]["200"])
    assert "/api/v1/images/{image_id}/mask/" in schema["paths"]


def test_it_keeps_the_change_maths_free_of_django():
    import subprocess
    import sys

    from tests.portal.helpers import REPO_ROOT

    code = "import sys, diagnosis.compare; assert not [m for m in sys.modules if m.split('.')[0] == 'django'], 'django'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, env={"PATH": "/usr/bin:/bin"})
