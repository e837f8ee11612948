"""The crop to a dermatoscope's field of view (ml.field_of_view): what it takes away, what it
leaves alone, how a bundle declares it, and how the answer and its heatmap follow it."""

import cv2
import numpy as np
import pytest

from ml.classes import CLASSES
from ml.explain import heat_map
from ml.field_of_view import DARK_LEVEL, FieldOfView, crop_to_field_of_view
from ml.inference import Classifier
from ml.preprocessing import PreprocessConfig, model_view, preprocess
from tests.conftest import encode, make_image
from tests.tinymodel import write_tiny_bundle


def skin(width: int = 120, height: int = 90, seed: int = 0) -> np.ndarray:
    """A smooth random image with no pixel dark enough to count as frame."""
    return np.clip(make_image(width, height, seed), 60, 255).astype(np.uint8)


def padded(image: np.ndarray, top: int, left: int, bottom: int, right: int) -> np.ndarray:
    return cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(0, 0, 0))


def round_frame(image: np.ndarray, radius_scale: float = 1.0) -> np.ndarray:
    """Black outside the circle of `radius_scale` x half the shorter side, centred."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    radius = min(h, w) / 2 * radius_scale
    out = image.copy()
    out[(yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 > radius * radius] = 0
    return out


# --- The crop ---------------------------------------------------------------------------------


def test_it_crops_a_black_border_back_to_the_image_inside_it():
    inner = skin()
    view, box = crop_to_field_of_view(padded(inner, 20, 30, 25, 35))
    assert box == FieldOfView(top=20, left=30, height=90, width=120, image_height=135, image_width=185)
    np.testing.assert_array_equal(view, inner)


def test_it_crops_a_round_view_to_its_box_and_fills_the_corners_with_the_rim_colour():
    framed = padded(round_frame(skin(100, 100, seed=2)), 30, 60, 30, 60)
    view, box = crop_to_field_of_view(framed)
    assert box is not None and abs(box.height - 100) <= 2 and abs(box.width - 100) <= 2
    assert abs(box.top - 30) <= 1 and abs(box.left - 60) <= 1
    grey = cv2.cvtColor(view, cv2.COLOR_RGB2GRAY)
    assert grey.min() > DARK_LEVEL  # no black left in the corners
    centre = slice(box.height // 2 - 10, box.height // 2 + 10), slice(box.width // 2 - 10, box.width // 2 + 10)
    np.testing.assert_array_equal(view[centre], framed[box.top:box.top + box.height, box.left:box.left + box.width][centre])


def test_it_keeps_a_dark_lesion_inside_the_view():
    inner = skin(100, 100, seed=4)
    cv2.circle(inner, (50, 50), 18, (5, 5, 5), -1)  # darker than any frame threshold
    framed = padded(round_frame(inner), 40, 40, 40, 40)
    view, box = crop_to_field_of_view(framed)
    assert box is not None and abs(box.height - 100) <= 2
    lesion = view[box.height // 2 - 8:box.height // 2 + 8, box.width // 2 - 8:box.width // 2 + 8]
    assert lesion.max() <= 10  # the lesion is the image's, not filled with the rim colour


@pytest.mark.parametrize("image", [
    skin(),  # no frame
    np.full((90, 120, 3), 8, np.uint8),  # a dark image, not a frame
    padded(skin(20, 20), 50, 50, 50, 50),  # a bright speck: under a fifth of the image
], ids=["plain", "dark", "speck"])
def test_it_leaves_an_image_without_a_frame_as_it_is(image):
    view, box = crop_to_field_of_view(image)
    assert box is None and view is image


def test_it_is_deterministic():
    framed = padded(round_frame(skin(seed=6), 1.1), 10, 10, 10, 10)
    first, second = crop_to_field_of_view(framed), crop_to_field_of_view(framed)
    assert first[1] == second[1] and np.array_equal(first[0], second[0])


# --- The box ----------------------------------------------------------------------------------


def test_it_stores_the_box_and_refuses_a_malformed_one():
    box = FieldOfView(top=10, left=20, height=30, width=40, image_height=100, image_width=200)
    assert FieldOfView.from_dict(box.to_dict()) == box
    for bad in ({"top": 1}, [1, 2, 3], box.to_dict() | {"top": "10"}, box.to_dict() | {"height": 0},
                box.to_dict() | {"width": 190}, box.to_dict() | {"left": True}):
        with pytest.raises(ValueError):
            FieldOfView.from_dict(bad)


def test_it_scales_the_box_onto_a_smaller_copy_of_the_image():
    box = FieldOfView(top=100, left=200, height=300, width=400, image_height=1000, image_width=2000)
    rows, columns = box.on((100, 200))
    assert (rows.start, rows.stop, columns.start, columns.stop) == (10, 40, 20, 60)
    rows, columns = FieldOfView(0, 0, 1, 1, 1000, 1000).on((10, 10))
    assert rows.stop - rows.start == 1 and columns.stop - columns.start == 1  # never empty


# --- The bundle declares it -------------------------------------------------------------------


def test_it_is_off_unless_the_manifest_says_so():
    old = {"size": 150, "colour": "clahe", "scale": 1 / 127.5, "offset": -1.0, "colour_order": "RGB", "width": 200}
    assert PreprocessConfig.from_dict(old).field_of_view is False
    assert "field_of_view" not in PreprocessConfig.from_dict(old).to_dict()  # old bundles keep their manifest
    on = PreprocessConfig.from_dict(old | {"field_of_view": True})
    assert on.field_of_view is True and PreprocessConfig.from_dict(on.to_dict()) == on
    with pytest.raises(ValueError, match="field_of_view"):
        PreprocessConfig.from_dict(old | {"field_of_view": "yes"})


def test_it_crops_before_the_resize_in_the_one_preprocessing_function():
    inner = skin(160, 120, seed=8)
    framed = padded(inner, 40, 40, 40, 40)
    on, off = PreprocessConfig(size=48, width=64, field_of_view=True), PreprocessConfig(size=48, width=64)
    np.testing.assert_array_equal(preprocess(framed, on), preprocess(inner, off))
    assert not np.array_equal(preprocess(framed, off), preprocess(inner, off))
    view = model_view(framed, on)
    assert view.size == (200, 240) and view.field_of_view.height == 120 and view.image.shape == (48, 64, 3)
    assert model_view(inner, on).field_of_view is None


# --- The answer and its heatmap ---------------------------------------------------------------


def test_it_answers_a_framed_image_as_the_image_inside_the_frame(tmp_path):
    inner = skin(128, 96, seed=9)
    framed = padded(inner, 32, 32, 32, 32)
    cropping = Classifier(write_tiny_bundle(str(tmp_path / "on"), size=32, field_of_view=True))
    plain = Classifier(write_tiny_bundle(str(tmp_path / "off"), size=32))
    on, inside = cropping.predict(encode(framed, ".png")), cropping.predict(encode(inner, ".png"))
    assert on.probabilities == pytest.approx(inside.probabilities, abs=1e-6)
    assert on.field_of_view == FieldOfView(32, 32, 96, 128, 160, 192) and inside.field_of_view is None
    assert on.to_dict()["field_of_view"] == on.field_of_view.to_dict()
    off = plain.predict(encode(framed, ".png"))
    assert off.field_of_view is None
    assert max(abs(off.probabilities[c] - on.probabilities[c]) for c in CLASSES) > 1e-3  # the frame moves it
    # A view made ahead (the portal's memory-saving path) gives the same answer.
    assert cropping.predict(cropping.view(framed)).probabilities == pytest.approx(on.probabilities, abs=1e-6)


def test_it_draws_the_heatmap_inside_the_crop_only():
    rng = np.random.default_rng(0)
    cam = rng.normal(size=(3, 4, len(CLASSES))).astype(np.float32)
    cam[..., 0] = np.abs(cam[..., 0]) + 0.1  # evidence everywhere in the box
    box = FieldOfView(top=20, left=40, height=60, width=80, image_height=100, image_width=160)
    heat = heat_map(cam, 0, (100, 160), field_of_view=box)
    assert heat.shape == (100, 160)
    assert heat[:20].max() == 0 and heat[80:].max() == 0 and heat[:, :40].max() == 0 and heat[:, 120:].max() == 0
    np.testing.assert_array_equal(heat[20:80, 40:120], heat_map(cam, 0, (60, 80)))
    half = heat_map(cam, 0, (50, 80), field_of_view=box)  # a copy at half the size
    assert half[:10].max() == 0 and half[:, :20].max() == 0 and (half[10:40, 20:60] > 0).mean() > 0.9


def test_it_finds_the_round_view_of_the_frames_the_screening_report_draws():
    from ml.screening.perturb import framed

    inner = skin(120, 90, seed=11)
    padded_view = framed(inner, 1.5)  # the image inside the circle, on a black canvas 1.5x its size
    assert padded_view.shape == (135, 180, 3) and padded_view[0, 0].max() == 0
    np.testing.assert_array_equal(padded_view[67, 90], inner[45, 60])
    view, box = crop_to_field_of_view(padded_view)  # back to the image, its cut corners filled
    assert box == FieldOfView(top=22, left=30, height=90, width=120, image_height=135, image_width=180)
    assert cv2.cvtColor(view, cv2.COLOR_RGB2GRAY).min() > DARK_LEVEL
    np.testing.assert_array_equal(view[20:70, 30:90], inner[20:70, 30:90])


def test_it_finds_the_view_of_a_large_upload_on_a_smaller_copy_and_crops_it_at_full_size():
    inner = cv2.resize(skin(120, 90, seed=12), (1600, 1200), interpolation=cv2.INTER_LINEAR)
    framed_upload = padded(round_frame(inner, 1.1), 203, 301, 197, 299)  # 2200 x 1600: every 4th pixel is read
    view, box = crop_to_field_of_view(framed_upload)
    assert box is not None and (box.image_height, box.image_width) == (1600, 2200)
    # The box is found to within the copy's pixel (4 here): the image's height, the circle's width
    # (its diameter of 1.1 x 1200 cuts the image's ends).
    assert abs(box.top - 203) <= 4 and abs(box.left - (301 + 140)) <= 4
    assert abs(box.height - 1200) <= 8 and abs(box.width - 1320) <= 8
    assert view.shape[:2] == (box.height, box.width) and cv2.cvtColor(view, cv2.COLOR_RGB2GRAY).min() > DARK_LEVEL
    centre = framed_upload[box.top + 500:box.top + 700, box.left + 700:box.left + 900]
    np.testing.assert_array_equal(view[500:700, 700:900], centre)
