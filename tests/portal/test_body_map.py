"""The body map (issue 14, part 5): a lesion's place on the front or back drawing, set on the lesion
form (a click, or typed) and through the API, shown on the patient page coloured by the latest result."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from diagnosis import services
from diagnosis.body_map import LEVEL_WORDS
from diagnosis.interpretation import level_of
from diagnosis.models import Lesion
from tests.portal.helpers import RED, REPO_ROOT, image_bytes

pytestmark = pytest.mark.django_db

FORM = {"label": "Left shoulder", "body_site": "back", "laterality": "left"}


def _place(lesion: Lesion) -> tuple[str, float | None, float | None]:
    lesion.refresh_from_db()
    return lesion.map_view, lesion.map_x, lesion.map_y


def test_it_places_a_lesion_through_the_page_form_and_shows_it_when_editing(owner, patient, client_for):
    client = client_for(owner)
    created = client.post(
        reverse("lesion-create", kwargs={"patient_id": patient.pk}),
        {**FORM, "map_view": "back", "map_x": "0.3", "map_y": "0.25"},
    )
    assert created.status_code == 302
    lesion = patient.lesions.get(label="Left shoulder")
    assert _place(lesion) == ("back", 0.3, 0.25)
    form = client.get(reverse("lesion-edit", kwargs={"lesion_id": lesion.pk})).content.decode()
    # The marker stands on the back drawing at 30, 55 (of 100 x 220) and the front one has none shown.
    assert re.search(r'data-view="back".*?class="map-marker" r="4" cx="30.0" cy="55.0"', form, re.S)
    assert re.search(r'data-view="front".*?class="map-marker off"', form, re.S)
    assert "js/body_map.js" in form and "<script>" not in form
    edit_url = reverse("lesion-edit", kwargs={"lesion_id": lesion.pk})
    moved = client.post(edit_url, {**FORM, "map_view": "front", "map_x": "1", "map_y": "0"})
    assert moved.status_code == 302 and _place(lesion) == ("front", 1.0, 0.0)
    cleared = client.post(edit_url, FORM)
    assert cleared.status_code == 302 and _place(lesion) == ("", None, None)


@pytest.mark.parametrize(
    "place",
    [
        {"map_view": "front", "map_x": "1.5", "map_y": "0.5"},
        {"map_view": "front", "map_x": "0.5"},
        {"map_x": "0.5", "map_y": "0.5"},
        {"map_view": "front"},
        {"map_view": "side", "map_x": "0.5", "map_y": "0.5"},
    ],
)
def test_it_refuses_a_place_that_is_not_whole_or_off_the_drawing_on_the_form(owner, lesion, client_for, place):
    services.patients.lesion_update(user=owner, lesion=lesion, data={"map_view": "back", "map_x": 0.1, "map_y": 0.2})
    response = client_for(owner).post(reverse("lesion-edit", kwargs={"lesion_id": lesion.pk}), {**FORM, **place})
    assert response.status_code == 400
    assert 'class="error"' in response.content.decode()
    assert _place(lesion) == ("back", 0.1, 0.2)


def test_it_places_and_clears_through_the_api(owner, patient, api_for):
    api = api_for(owner)
    created = api.post(
        "/api/v1/lesions/",
        {"patient": patient.pk, "body_site": "face", "label": "Cheek",
         "map_view": "front", "map_x": 0.45, "map_y": 0.07},
        format="json",
    )
    assert created.status_code == 201
    body = created.json()
    assert (body["map_view"], body["map_x"], body["map_y"]) == ("front", 0.45, 0.07)
    lesion = Lesion.objects.get(pk=body["id"])
    assert _place(lesion) == ("front", 0.45, 0.07)
    moved = api.patch(f"/api/v1/lesions/{lesion.pk}/", {"map_x": 0.55}, format="json")  # the others stand
    assert moved.status_code == 200 and _place(lesion) == ("front", 0.55, 0.07)
    cleared = api.patch(
        f"/api/v1/lesions/{lesion.pk}/", {"map_view": None, "map_x": None, "map_y": None}, format="json"
    )
    assert cleared.status_code == 200
    assert (cleared.json()["map_view"], cleared.json()["map_x"], cleared.json()["map_y"]) == (None, None, None)
    assert _place(lesion) == ("", None, None)


@pytest.mark.parametrize(
    "place",
    [
        {"map_view": "front", "map_x": 1.5, "map_y": 0.5},
        {"map_view": "front", "map_x": 0.5},
        {"map_x": 0.5, "map_y": 0.5},
        {"map_view": "front"},
        {"map_view": "front", "map_x": "NaN", "map_y": 0.5},
    ],
)
def test_it_answers_400_to_a_bad_place_through_the_api_and_changes_nothing(owner, patient, lesion, api_for, place):
    api = api_for(owner)
    before = Lesion.objects.count()
    created = api.post(
        "/api/v1/lesions/", {"patient": patient.pk, "body_site": "face", "label": "Cheek", **place}, format="json"
    )
    assert created.status_code == 400 and Lesion.objects.count() == before
    assert api.patch(f"/api/v1/lesions/{lesion.pk}/", place, format="json").status_code == 400
    assert _place(lesion) == ("", None, None)


def test_it_keeps_the_three_together_in_the_service(owner, lesion):
    for data in ({"map_x": 0.5}, {"map_view": "back"}, {"map_view": "back", "map_x": -0.1, "map_y": 0.5},
                 {"map_view": "back", "map_x": float("inf"), "map_y": 0.5}):
        with pytest.raises(ValidationError):
            services.patients.lesion_update(user=owner, lesion=lesion, data=data)
    assert _place(lesion) == ("", None, None)


def test_it_shows_a_marker_per_placed_lesion_coloured_by_its_latest_result(owner, patient, lesion, upload, client_for):
    services.patients.lesion_update(user=owner, lesion=lesion, data={"map_view": "back", "map_x": 0.4, "map_y": 0.3})
    result = upload(image_bytes(RED)).classifications.get()
    level = level_of(malignant=bool(result.malignant), warnings=result.warnings)
    waiting = services.patients.lesion_create(
        user=owner, patient=patient, body_site="face", label="Nose", map_view="front", map_x=0.5, map_y=0.08
    )
    unplaced = services.patients.lesion_create(user=owner, patient=patient, body_site="foot", label="Heel")
    page = client_for(owner).get(reverse("patient-detail", kwargs={"patient_id": patient.pk})).content.decode()
    section = page[page.index('id="body-map"'):]
    links = re.findall(r'<a class="map-link" href="([^"]+)" aria-label="([^"]+)"><title>[^<]+</title>'
                       r'<circle class="map-dot ([a-z]+)" cx="([^"]+)" cy="([^"]+)"', section)
    assert sorted(links) == sorted([
        (f"/lesions/{lesion.pk}/", f"Upper back, left · Back · {LEVEL_WORDS[level]}", level, "40.0", "66.0"),
        (f"/lesions/{waiting.pk}/", "Nose · Face · no result yet", "unclassified", "50.0", "17.6"),
    ])
    assert f'Not placed on the map:</strong>\n  <a href="/lesions/{unplaced.pk}/">Heel</a>' in section


def test_it_shows_no_one_elses_lesions_on_the_map(owner, outsider, patient, lesion, client_for):
    services.patients.lesion_update(user=owner, lesion=lesion, data={"map_view": "back", "map_x": 0.4, "map_y": 0.3})
    response = client_for(outsider).get(reverse("patient-detail", kwargs={"patient_id": patient.pk}))
    assert response.status_code == 404
    assert lesion.label not in response.content.decode()


def test_it_draws_the_map_without_external_assets_or_inline_styles():
    for name in ("templates/diagnosis/_body_map.html", "templates/diagnosis/_body_outline.svg"):
        text = (REPO_ROOT / name).read_text()
        assert "http" not in text and "style=" not in text and "<script" not in text
    script = (REPO_ROOT / "static/js/body_map.js").read_text()
    assert "http" not in script and "innerHTML" not in script
