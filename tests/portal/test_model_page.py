"""The served model described, for clinicians (the model page, /model/) and for programs
(GET /api/v1/model/): what it is for, what it answers, and its held-out test figures, all read
from the bundle's manifest. A model whose manifest cannot be read is said so (a message on the
page, a 503 from the API), and a manifest with malformed figures never turns into a 500."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from django.urls import reverse

from diagnosis.interpretation import percent
from ml.classes import CLASSES, MALIGNANT_CLASSES, display_name
from tests.portal.helpers import REPO_ROOT, STAND_IN_VERSION

API = "/api/v1/model/"


def _shipped_manifest(version: str) -> dict:
    return json.loads((REPO_ROOT / "ml" / "models" / version / "manifest.json").read_text())


def _page(client) -> str:
    response = client.get(reverse("model"))
    assert response.status_code == 200
    return response.content.decode()


def test_it_describes_the_shipped_model_with_its_own_test_figures(shipped_model, owner, client_for):
    manifest = _shipped_manifest(shipped_model)
    page = _page(client_for(owner))
    assert f'<code id="model-version">{shipped_model}</code>' in page
    assert "Decision support, not a diagnosis." in page and "not a certified medical device" in page
    assert manifest["intended_use"] in page
    alone, with_context = manifest["metrics"]["test"]["fp32"], manifest["metrics"]["test_with_context"]["fp32"]
    for figures in (alone, with_context):
        low, high = figures["intervals_95"]["balanced_accuracy"]
        assert f"{percent(figures['balanced_accuracy'])} ({percent(low)}–{percent(high)})" in page
        assert f"{figures['malignant_auc']:.3f}" in page and f"{figures['ece']:.3f}" in page
        assert percent(figures["recall"]["mel"]) in page
    assert percent(manifest["variants"]["fp32"]["malignancy_threshold"]) in page
    assert percent(manifest["context"]["malignancy_threshold"]["fp32"]) in page
    assert all(display_name(code) in page for code in CLASSES)
    assert page.count("malignant group</span>") == len(MALIGNANT_CLASSES)
    for code, images in manifest["training_data"]["splits"]["test"]["classes"].items():
        assert f"{display_name(code)}" in page and f"<td>{images}</td>" in page
    assert manifest["training_data"]["licence"] in page


def test_it_answers_the_same_through_the_api(shipped_model, owner, api_for):
    manifest = _shipped_manifest(shipped_model)
    response = api_for(owner).get(API)
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == shipped_model and body["variant"] == "fp32"
    assert (body["input_height"], body["input_width"]) == tuple(manifest["input"]["shape"][1:3])
    assert [c["code"] for c in body["classes"]] == list(CLASSES)
    assert {c["code"] for c in body["classes"] if c["malignant"]} == set(MALIGNANT_CLASSES)
    assert body["context_fields"] == manifest["context"]["fields"]
    assert body["favoured_class"] == manifest["decision"]["favoured_class"]
    alone, with_context = body["test"]
    assert alone["answers"] == "image alone" and with_context["answers"] == "with clinical context"
    assert alone["threshold"] == manifest["variants"]["fp32"]["malignancy_threshold"]
    assert with_context["threshold"] == manifest["context"]["malignancy_threshold"]["fp32"]
    measured = manifest["metrics"]["test_with_context"]["fp32"]
    assert with_context["malignant_sensitivity"] == measured["malignant_sensitivity"]
    assert with_context["recall"] == measured["recall"]
    assert with_context["intervals_95"]["malignant_auc"] == measured["intervals_95"]["malignant_auc"]
    assert body["test_images_per_class"] == manifest["training_data"]["splits"]["test"]["classes"]
    assert "not a certified medical device" in body["notice"]


def test_it_says_when_the_model_has_no_test_figures(owner, outsider, client_for, api_for):
    """The tests' stand-in bundle has none; the page and the API say so. Anyone signed in may
    read it, a member of any organisation alike: the model is not an organisation's record."""
    for user in (owner, outsider):
        page = _page(client_for(user))
        assert STAND_IN_VERSION in page and 'id="no-test-figures"' in page
        body = api_for(user).get(API).json()
        assert body["version"] == STAND_IN_VERSION and body["test"] == []


def test_it_asks_for_a_login(client, api_for):
    response = client.get(reverse("model"))
    assert response.status_code == 302 and reverse("login") in response["Location"]
    assert api_for(None).get(API).status_code == 401


def test_it_says_why_when_the_model_cannot_be_read(settings, tmp_path, owner, client_for, api_for):
    settings.SKINPORTAL_MODEL_DIR = str(tmp_path / "no-such-bundle")
    page = _page(client_for(owner))
    assert 'id="model-unavailable"' in page and "cannot be described" in page
    response = api_for(owner).get(API)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "model_unavailable" and "cannot be described" in error["message"]


@pytest.mark.parametrize(
    "spoil",
    [
        lambda m: m["metrics"].update(test={"fp32": "not a table"}),
        lambda m: m["metrics"].update(test={"fp32": {"n_images": "many"}}),
        lambda m: m.update(decision={"favoured_class": "mel"}),  # no share given
        lambda m: m.update(input={"shape": "150x200"}),
    ],
)
def test_it_never_fails_on_a_manifest_with_malformed_figures(spoil, settings, stand_in_model_dir, tmp_path, owner,
                                                             client_for, api_for):
    bundle = Path(shutil.copytree(stand_in_model_dir, tmp_path / "bundle"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.setdefault("metrics", {})
    spoil(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    settings.SKINPORTAL_MODEL_DIR = str(bundle)
    page = _page(client_for(owner))
    assert 'id="no-test-figures"' in page or 'id="model-unavailable"' in page
    assert api_for(owner).get(API).status_code in (200, 503)
