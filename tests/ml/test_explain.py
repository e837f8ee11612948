"""Class activation maps as pictures (ml/explain.py): scaling, orientation, blending, PNG."""

import cv2
import numpy as np
import pytest

from ml.classes import CLASSES
from ml.explain import colourise, encode_png, heat_grid, heat_map, overlay
from ml.inference import Classifier
from ml.preprocessing import input_is_turned, resize
from tests.conftest import make_image
from tests.tinymodel import WEIGHTS, write_tiny_bundle


def random_cam(shape=(4, 4), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(*shape, len(CLASSES))).astype(np.float32)


@pytest.mark.parametrize("image_shape", [(120, 90), (90, 120), (64, 64), (37, 301), (1, 1)])
@pytest.mark.parametrize("grid", [(4, 4), (5, 7), (7, 5)])
def test_it_returns_a_float32_map_in_0_1_at_the_images_own_size(image_shape, grid):
    cam = random_cam(grid)
    for index in range(len(CLASSES)):
        heat = heat_map(cam, index, image_shape)
        assert heat.shape == image_shape and heat.dtype == np.float32
        assert heat.min() >= 0.0 and heat.max() <= 1.0
        assert heat.flags["C_CONTIGUOUS"]


def test_it_scales_the_grid_by_its_peak_and_drops_negative_evidence():
    cam = np.zeros((2, 3, len(CLASSES)), np.float32)
    cam[..., 1] = [[-2.0, 0.0, 1.0], [2.0, 4.0, -8.0]]
    np.testing.assert_allclose(heat_grid(cam, 1), [[0.0, 0.0, 0.25], [0.5, 1.0, 0.0]])


def test_it_gives_an_all_zero_map_for_a_class_with_no_positive_evidence():
    cam = random_cam((5, 7), seed=1)
    cam[..., 2] = -np.abs(cam[..., 2]) - 0.1
    heat = heat_map(cam, 2, (150, 200))
    assert heat.dtype == np.float32 and heat.shape == (150, 200)
    assert not heat.any()
    assert not heat_map(np.zeros_like(cam), 0, (150, 200)).any()


def test_it_shows_where_the_evidence_for_each_colour_lies_on_the_tiny_bundle(tmp_path):
    classifier = Classifier(write_tiny_bundle(str(tmp_path / "bundle"), size=32))
    red, green = np.array([220, 20, 20]), np.array([20, 220, 20])
    # The tiny model's cam is the scaled colour of each cell times WEIGHTS: the class most in
    # favour of red over green, and the reverse.
    preference = (red / 127.5 - 1.0) @ WEIGHTS - (green / 127.5 - 1.0) @ WEIGHTS  # the bundle's own scaling
    red_class, green_class = int(np.argmax(preference)), int(np.argmin(preference))

    image = np.zeros((120, 160, 3), np.uint8)
    image[:, :80] = red
    image[:, 80:] = green
    prediction = classifier.predict(image)
    assert prediction.image_size == (120, 160)
    left, right = slice(None, 80), slice(80, None)
    for index, hot, cold, far in ((red_class, left, right, slice(120, None)), (green_class, right, left, slice(None, 40))):
        heat = heat_map(prediction.cam, index, prediction.image_size)
        assert heat.shape == (120, 160)
        assert heat[:, hot].mean() > 0.5 > heat[:, cold].mean()
        assert heat[:, hot].min() >= heat[:, cold].max()
        assert not heat[:, far].any()  # far from the border the cold side has no evidence at all


def quadrant(shape: tuple[int, int], point: tuple[int, int]) -> tuple[int, int]:
    """(0 top / 1 bottom, 0 left / 1 right) of a point in an image of `shape`."""
    return int(point[0] >= shape[0] / 2), int(point[1] >= shape[1] / 2)


CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))


@pytest.mark.parametrize(
    ("image_shape", "input_shape", "grid"),
    [
        ((120, 80), (32, 48), (4, 6)),  # portrait upload, landscape model: turned
        ((80, 120), (48, 32), (6, 4)),  # landscape upload, portrait model: turned
        ((90, 150), (32, 48), (4, 6)),  # landscape upload, landscape model: not turned
        ((150, 200), (150, 200), (5, 7)),  # the shared HAM10000 copies' own geometry
        ((100, 100), (32, 48), (4, 6)),  # a square upload is never turned
    ],
)
def test_it_turns_the_map_back_the_way_preprocessing_turned_the_image(image_shape, input_shape, grid):
    """A marker in each corner of the upload is followed through ml.preprocessing.resize to the
    model input; the grid cell it lands in is made hot, and the map's peak must come back in the
    marker's corner."""
    height, width = image_shape
    assert input_is_turned(image_shape, input_shape) == input_is_turned(image_shape, grid)
    for corner in CORNERS:
        marker = np.zeros((height, width, 3), np.uint8)
        rows = slice(0, height // 5) if corner[0] == 0 else slice(height - height // 5, height)
        cols = slice(0, width // 5) if corner[1] == 0 else slice(width - width // 5, width)
        marker[rows, cols] = 255
        model_input = resize(marker, input_shape)[..., 0].astype(np.float32)
        peak = np.unravel_index(np.argmax(model_input), model_input.shape)
        cell = (peak[0] * grid[0] // input_shape[0], peak[1] * grid[1] // input_shape[1])
        cam = np.zeros((*grid, len(CLASSES)), np.float32)
        cam[cell[0], cell[1], 3] = 1.0
        heat = heat_map(cam, 3, image_shape)
        assert heat.shape == image_shape
        found = np.unravel_index(np.argmax(heat), heat.shape)
        assert quadrant(image_shape, found) == corner, (corner, cell, found)
        # And the map is hot where the marker is: well above its mean there.
        assert heat[rows, cols].mean() > 2 * heat.mean()


@pytest.mark.parametrize("grid", [(4, 6), (2, 2)])  # (2, 2): rounding made the grid square, as MobileNetV2 at 48x64
@pytest.mark.parametrize("corner", CORNERS)
def test_it_puts_the_map_where_the_evidence_is_through_a_non_square_bundle(tmp_path, grid, corner):
    """Classifier.predict on a portrait upload to a 32x48 (landscape) tiny bundle, then heat_map
    with the prediction's cam and image size: the red corner of the upload is where the map peaks."""
    classifier = Classifier(write_tiny_bundle(str(tmp_path / "bundle"), size=32, width=48, grid=grid))
    height, width = 240, 160
    image = np.full((height, width, 3), 20, np.uint8)
    rows = slice(0, height // 2) if corner[0] == 0 else slice(height // 2, height)
    cols = slice(0, width // 2) if corner[1] == 0 else slice(width // 2, width)
    image[rows, cols] = (220, 20, 20)
    prediction = classifier.predict(image)
    assert prediction.cam.shape == (*grid, len(CLASSES)) and prediction.image_size == (height, width)
    heat = heat_map(prediction.cam, 0, prediction.image_size, classifier.config.height_width)  # akiec: red
    assert heat.shape == (height, width)
    opposite = (slice(height // 2, height) if corner[0] == 0 else slice(0, height // 2),
                slice(width // 2, width) if corner[1] == 0 else slice(0, width // 2))
    assert heat[rows, cols].mean() > 0.5 > heat[opposite].mean()
    assert quadrant((height, width), np.unravel_index(np.argmax(heat), heat.shape)) == corner
    if grid != (2, 2):  # the grid alone says which way the input runs
        np.testing.assert_array_equal(heat_map(prediction.cam, 0, prediction.image_size), heat)


def test_it_blends_the_map_over_the_image_only_where_there_is_evidence():
    image = make_image(90, 60, seed=2)
    heat = np.zeros((60, 90), np.float32)
    heat[:, 45:] = np.linspace(0.2, 1.0, 45, dtype=np.float32)[None, :]
    blended = overlay(image, heat)
    assert blended.shape == image.shape and blended.dtype == np.uint8
    assert np.array_equal(blended[:, :45], image[:, :45])
    assert not np.array_equal(blended[:, 45:], image[:, 45:])
    assert np.array_equal(overlay(image, np.zeros((60, 90), np.float32)), image)
    # Fully opaque at the chosen strength: image and colour mixed in that proportion.
    full = overlay(image, np.ones((60, 90), np.float32), alpha=1.0)
    assert np.array_equal(full, colourise(np.ones((60, 90), np.float32)))


def test_it_colours_the_map_from_cold_to_hot():
    colours = colourise(np.array([[0.0, 0.5, 1.0]], np.float32))
    assert colours.shape == (1, 3, 3) and colours.dtype == np.uint8
    cold, hot = colours[0, 0].astype(int), colours[0, 2].astype(int)
    assert cold[2] > cold[0] and hot[0] > hot[2]  # turbo: blue-ish cold, red-ish hot


def test_it_encodes_a_png_that_decodes_back_to_the_same_pixels():
    image = make_image(70, 50, seed=3)
    data = encode_png(image)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(decoded, image)
