"""Small frictions (issue 14, part 7): the capture date filled in, a repeated upload refused with a
link to the image it repeats, images that open enlarged without a script, chart dates that never
print over each other."""

from __future__ import annotations

import datetime as dt
import itertools
import random
import re
from types import SimpleNamespace

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from diagnosis import services
from diagnosis.models import LesionImage
from diagnosis.plots import LABEL_WIDTH, malignancy_plot
from diagnosis.selectors import TimelinePoint
from tests.portal.helpers import GREEN, RED, REPO_ROOT, image_bytes

pytestmark = pytest.mark.django_db


def test_it_fills_in_todays_date_as_the_capture_date(colleague, lesion, client_for):
    page = client_for(colleague).get(reverse("lesion-upload", args=[lesion.pk])).content.decode()
    (field,) = re.findall(r'<input type="date" name="captured_at"[^>]*>', page)
    assert f'value="{timezone.localdate():%Y-%m-%d}"' in field  # the format a date input shows
    batch = client_for(colleague).get(reverse("batch-create") + f"?lesion={lesion.pk}").content.decode()
    assert f'value="{timezone.localdate():%Y-%m-%d}"' in batch


def test_it_refuses_a_file_already_on_the_lesion_and_names_the_image(owner, patient, lesion, upload):
    first = upload(image_bytes(RED))
    with pytest.raises(services.uploads.DuplicateUpload) as refused:
        upload(image_bytes(RED))
    assert refused.value.existing == [("photo.png", first)]
    assert f"already image {first.pk} of this lesion" in str(refused.value)
    assert LesionImage.objects.count() == 1
    other = services.patients.lesion_create(user=owner, patient=patient, body_site="face", label="Nose")
    assert upload(image_bytes(RED), target=other).lesion_id == other.pk  # another lesion: fine


def test_it_links_the_repeated_image_on_the_upload_page(colleague, lesion, upload, client_for, run_on_commit):
    first = upload(image_bytes(RED))
    client = client_for(colleague)
    files = [SimpleUploadedFile("again.png", image_bytes(RED), content_type="image/png"),
             SimpleUploadedFile("new.png", image_bytes(GREEN), content_type="image/png")]
    with run_on_commit():
        response = client.post(reverse("lesion-upload", args=[lesion.pk]),
                               {"images": files, "captured_at": "2024-05-01"})
    assert response.status_code == 400
    html = response.content.decode()
    assert f'href="{reverse("image-detail", args=[first.pk])}"' in html and "again.png" in html
    assert LesionImage.objects.count() == 1  # nothing of the upload stored


def test_it_answers_409_naming_the_existing_images_url_in_the_api(colleague, lesion, upload, api_for):
    first = upload(image_bytes(RED))
    response = api_for(colleague).post(
        "/api/v1/images/",
        {"lesion": lesion.pk, "image": SimpleUploadedFile("x.png", image_bytes(RED), content_type="image/png")},
        format="multipart",
    )
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "duplicate_image"
    assert error["message"].endswith(f"/api/v1/images/{first.pk}/")


def test_it_opens_images_enlarged_without_a_script(colleague, lesion, upload, client_for):
    image = upload(image_bytes(RED))
    client = client_for(colleague)
    for url in (reverse("image-detail", args=[image.pk]), reverse("lesion-detail", args=[lesion.pk])):
        html = client.get(url).content.decode()
        assert f'href="#zoom-{image.pk}"' in html and f'id="zoom-{image.pk}"' in html, url
        assert re.search(rf'id="zoom-{image.pk}"[^>]*>\s*<img src="{reverse("image-file", args=[image.pk])}"', html)
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script: the CSP forbids it"
    assert ".lightbox:target" in (REPO_ROOT / "static" / "css" / "portal.css").read_text()


def _timeline(dates: list[dt.date]) -> list[TimelinePoint]:
    points = []
    for index, day in enumerate(sorted(dates)):
        classification = SimpleNamespace(
            succeeded=True, malignancy_score=0.3, malignant=False, warnings=[], threshold=0.5,
            top_class_name="Melanocytic nevus (nv)", margin=0.2,
        )
        points.append(TimelinePoint(image=SimpleNamespace(pk=index + 1, captured_at=day),
                                    classification=classification))
    return points


def _lefts(plot) -> list[float]:
    return [{"start": label.x, "middle": label.x - LABEL_WIDTH / 2, "end": label.x - LABEL_WIDTH}[label.anchor]
            for label in plot.x_labels]


@pytest.mark.parametrize("seed", range(40))
def test_it_never_prints_chart_dates_over_each_other(seed):
    rng = random.Random(seed)
    start = dt.date(2024, 1, 1)
    span = rng.choice([1, 3, 20, 90, 400, 2000])
    dates = [start + dt.timedelta(days=rng.randint(0, span)) for _ in range(rng.randint(1, 40))]
    plot = malignancy_plot(_timeline(dates))
    lefts = _lefts(plot)
    assert all(b - a >= LABEL_WIDTH for a, b in itertools.pairwise(lefts)), (dates, lefts)
    assert all(0 <= left and left + LABEL_WIDTH <= plot.width for left in lefts)
    texts = [label.text for label in plot.x_labels]
    assert texts[-1] == f"{max(dates):%Y-%m-%d}" and len(set(texts)) == len(texts)
