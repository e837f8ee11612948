"""Lesion segmentation (ml/segmentation): the classical segmenter on generated dermoscopy-like
images, descriptors of shapes with known answers, the `segment` CLI, and Dice on real HAM10000
images when ../shared is there. NumPy and OpenCV only; no TensorFlow. The trained segmenter
(served by default when ml/models/SEGMENTER names a bundle) has its own tests in
test_segmentation_model.py; here the classical one is pinned ($SKINPORTAL_SEGMENTER_DIR=classical)."""

import csv
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from ml.__main__ import COMMANDS, USAGE, main
from ml.segmentation import CLASSICAL_METHOD, analyse, segment
from ml.segmentation.classical import ClassicalConfig, field_of_view, segment_classical
from ml.segmentation.descriptors import REFERENCE_COLOURS, describe
from ml.segmentation.report import dice, iou
from tests.conftest import HAM_IMAGES, HAM_METADATA, REPO, encode, needs_ham10000

SKIN = (225, 170, 150)


@pytest.fixture(autouse=True)
def classical_segmenter(monkeypatch):
    """get_segmenter() (and the `segment` CLI, also in a subprocess) serve the classical segmenter."""
    from ml.segmentation.segmenter import reset_segmenter

    monkeypatch.setenv("SKINPORTAL_SEGMENTER_DIR", "classical")
    reset_segmenter()
    yield
    reset_segmenter()
LESION = (120, 70, 50)


def dermoscopy_like(width: int = 240, height: int = 180, seed: int = 0, *, centre=None, axes=None,
                    angle: float = 20.0, hairs: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, bool truth): a dark ellipse on skin-coloured noise, a black round vignette and hairs."""
    rng = np.random.default_rng(seed)
    image = np.clip(np.array(SKIN, np.int16) + rng.integers(-12, 13, (height, width, 3)), 0, 255).astype(np.uint8)
    centre = centre or (width // 2 + 8, height // 2 - 5)
    axes = axes or (width // 4, height // 5)
    truth = np.zeros((height, width), np.uint8)
    cv2.ellipse(truth, centre, axes, angle, 0, 360, 1, -1)
    lesion = np.clip(np.array(LESION, np.int16) + rng.integers(-15, 16, (height, width, 3)), 0, 255).astype(np.uint8)
    image[truth > 0] = lesion[truth > 0]
    image = cv2.GaussianBlur(image, (3, 3), 0)
    for _ in range(hairs):  # hairs: thin dark lines crossing lesion and skin
        p1 = (int(rng.integers(0, width)), 0)
        p2 = (int(rng.integers(0, width)), height - 1)
        cv2.line(image, p1, p2, (40, 30, 25), 1, cv2.LINE_AA)
    ring = np.zeros((height, width), np.uint8)
    cv2.circle(ring, (width // 2, height // 2), int(0.62 * width), 1, -1)
    image[ring == 0] = (5, 5, 5)  # dark corners of a round field of view
    return image, truth > 0


def disc(radius: int, shape=(200, 260)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.circle(mask, (shape[1] // 2, shape[0] // 2), radius, 255, -1)
    return mask


# --- The classical segmenter -----------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_it_finds_a_dark_ellipse_through_vignette_and_hairs(seed):
    image, truth = dermoscopy_like(seed=seed)
    result = segment_classical(image)
    assert not result.fallback
    assert dice(result.mask > 127, truth) > 0.9


def test_it_works_at_the_images_own_size_whatever_it_is():
    image, truth = dermoscopy_like(width=900, height=600, seed=3, axes=(200, 120))
    mask = segment(image)
    assert mask.shape == truth.shape and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    assert dice(mask > 127, truth) > 0.9


def test_it_keeps_the_dark_corners_out_of_the_field_of_view():
    image, _ = dermoscopy_like(seed=4)
    view = field_of_view(image)
    assert not view[0, 0] and not view[-1, -1] and view[90, 120]


def test_it_prefers_the_central_component_to_a_larger_one_at_the_edge():
    image, truth = dermoscopy_like(seed=5, axes=(35, 28), centre=(120, 90), hairs=0)
    cv2.rectangle(image, (0, 60), (22, 179), LESION, -1)  # a dark strip along the left edge
    mask = segment_classical(image, ClassicalConfig()).mask > 127
    assert dice(mask, truth) > 0.85


def test_it_falls_back_to_a_flagged_centred_ellipse_when_there_is_no_lesion():
    image = np.full((150, 200, 3), 180, np.uint8)
    result = segment_classical(image)
    assert result.fallback and result.mask[75, 100] == 255 and result.mask[0, 0] == 0
    assert analyse(image).fallback


def test_it_refuses_what_is_not_an_rgb_uint8_image():
    with pytest.raises(ValueError):
        segment_classical(np.zeros((50, 50), np.uint8))


def test_dice_and_iou_of_known_overlaps():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[:, :5], b[:, 2:7] = True, True  # 50 and 50 pixels, 30 shared
    assert dice(a, b) == pytest.approx(0.6) and iou(a, b) == pytest.approx(30 / 70)
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0 and dice(a & False, b & False) == 1.0


# --- Descriptors -----------------------------------------------------------------------------


@pytest.mark.parametrize("radius", [15, 40, 90])
def test_a_circle_is_symmetric_compact_and_as_wide_as_its_diameter(radius):
    mask = disc(radius)
    d = describe(np.full(mask.shape + (3,), 200, np.uint8), mask)
    assert d.asymmetry < 0.02 and max(d.asymmetry_axes) < 0.02
    assert d.border_irregularity == pytest.approx(1.0, abs=0.06 if radius < 20 else 0.03)
    assert d.solidity > (0.95 if radius < 20 else 0.98)
    assert d.diameter_px == pytest.approx(2 * radius, abs=1.0)
    assert d.area_px == pytest.approx(np.pi * radius ** 2, rel=0.05)


def test_an_ellipse_is_symmetric_about_its_turned_axes_and_its_diameter_is_the_major_axis():
    mask = np.zeros((300, 400), np.uint8)
    cv2.ellipse(mask, (200, 150), (120, 50), 30, 0, 360, 255, -1)
    d = describe(np.full((300, 400, 3), 200, np.uint8), mask, pixels_per_mm=10.0)
    assert d.asymmetry < 0.02
    assert d.diameter_px == pytest.approx(240, abs=2) and d.diameter_mm == pytest.approx(24, abs=0.2)
    assert d.area_mm2 == pytest.approx(np.pi * 120 * 50 / 100, rel=0.02)
    assert 1.25 < d.border_irregularity < 1.4  # Ramanujan's perimeter of a 2.4:1 ellipse gives 1.31


def test_ragged_and_lopsided_shapes_score_higher():
    shape = (300, 300)
    star = np.zeros(shape, np.uint8)
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    radii = np.where(np.arange(24) % 2 == 0, 110, 60)
    points = np.stack([150 + radii * np.cos(angles), 150 + radii * np.sin(angles)], axis=1).astype(np.int32)
    cv2.fillPoly(star, [points], 255)
    lopsided = np.zeros(shape, np.uint8)
    cv2.circle(lopsided, (140, 150), 80, 255, -1)
    cv2.circle(lopsided, (215, 100), 40, 255, -1)
    grey = np.full(shape + (3,), 200, np.uint8)
    circle = describe(grey, disc(100, shape))
    assert describe(grey, star).border_irregularity > 1.5 > circle.border_irregularity
    assert describe(grey, star).solidity < 0.85
    assert describe(grey, lopsided).asymmetry > 0.05 > circle.asymmetry


def test_a_two_colour_lesion_counts_two_colours():
    image = np.full((200, 200, 3), SKIN, np.uint8)
    mask = disc(70, (200, 200))
    image[mask > 0] = REFERENCE_COLOURS["dark_brown"]
    image[(mask > 0) & (np.arange(200)[None, :] > 100)] = REFERENCE_COLOURS["black"]
    d = describe(image, mask)
    assert d.colours == 2
    assert d.colour_shares["dark_brown"] == pytest.approx(0.5, abs=0.02)
    assert d.colour_shares["black"] == pytest.approx(0.5, abs=0.02)


def test_a_colour_under_the_minimum_share_does_not_count():
    image = np.full((200, 200, 3), REFERENCE_COLOURS["light_brown"], np.uint8)
    image[:4] = REFERENCE_COLOURS["black"]  # 2% of the lesion
    assert describe(image, np.full((200, 200), 255, np.uint8)).colours == 1


def test_an_empty_mask_has_no_shape_descriptors_and_a_bad_scale_is_refused():
    image = np.zeros((50, 60, 3), np.uint8)
    d = describe(image, np.zeros((50, 60), np.uint8))
    assert d.area_px == 0 and d.asymmetry is None and d.diameter_px is None and d.colours == 0
    with pytest.raises(ValueError):
        describe(image, np.zeros((50, 60), np.uint8), pixels_per_mm=0)
    with pytest.raises(ValueError):
        describe(image, np.zeros((40, 60), np.uint8))


def test_a_segmentation_is_stored_as_json_with_its_mask_as_png():
    image, _ = dermoscopy_like(seed=6)
    result = analyse(image, pixels_per_mm=20.0)
    data = json.loads(json.dumps(result.to_dict(with_mask=True)))
    assert data["method"] == CLASSICAL_METHOD and data["fallback"] is False
    assert (data["height"], data["width"]) == image.shape[:2]
    assert data["area_mm2"] == pytest.approx(data["area_px"] / 400, rel=1e-3)
    assert {"asymmetry", "border_irregularity", "colours", "diameter_px", "diameter_mm"} <= set(data)
    decoded = cv2.imdecode(np.frombuffer(result.mask_png(), np.uint8), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(decoded, result.mask)


# --- The CLI ---------------------------------------------------------------------------------


def test_the_segment_command_writes_masks_at_each_images_own_size(tmp_path, capsys):
    folder, out = tmp_path / "images", tmp_path / "masks"
    folder.mkdir()
    sizes = {"a": (240, 180), "b": (200, 150), "c": (150, 200)}
    for k, (name, (w, h)) in enumerate(sizes.items()):
        image, _ = dermoscopy_like(width=w, height=h, seed=10 + k, axes=(w // 5, h // 5))
        ext = ".png" if name == "b" else ".jpg"
        (folder / f"{name}{ext}").write_bytes(encode(image, ext))
    (folder / "broken.jpg").write_bytes(b"not an image")
    table = tmp_path / "d.csv"
    code = main(["segment", "--images", str(folder), "--out", str(out), "--descriptors", str(table),
                 "--pixels-per-mm", "15"])
    assert code == 1  # one image could not be read
    for name, (w, h) in sizes.items():
        mask = cv2.imread(str(out / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255} and (mask == 255).any()
    assert not (out / "broken.png").exists()
    rows = {row["image_id"]: row for row in csv.DictReader(table.open())}
    assert set(rows) == {"a", "b", "c", "broken"} and rows["broken"]["error"] and not rows["broken"]["area_px"]
    assert rows["a"]["fallback"] == "0" and float(rows["a"]["diameter_mm"]) == pytest.approx(
        float(rows["a"]["diameter_px"]) / 15, rel=1e-3)
    assert "3 of 4 images segmented" in capsys.readouterr().err


def test_the_segment_commands_are_listed_and_load_no_tensorflow(tmp_path):
    assert COMMANDS["segment"] == "ml.segmentation.cli" and "segment-report" in COMMANDS
    assert "segment " in USAGE and "segment-report" in USAGE
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "x.png").write_bytes(encode(dermoscopy_like(seed=7)[0], ".png"))
    code = ("import sys; from ml.__main__ import main\n"
            f"assert main(['segment', '--images', {str(folder)!r}, '--out', {str(tmp_path / 'out')!r}]) == 0\n"
            "import ml.segmentation.report\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'tf2onnx', 'scipy', 'ml.training') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- Real data -------------------------------------------------------------------------------

# The classical segmenter's mean Dice on the classifier's test split: 0.814 on all 1,454 images
# (docs/model.md, "Segmentation"), 0.862 on these 50 (every 29th by image id); the floor leaves
# room for a change of OpenCV version, and catches a broken segmenter (plain Otsu scores 0.77).
REAL_DICE_FLOOR = 0.80


@needs_ham10000
def test_it_segments_real_test_split_images_about_as_well_as_reported():
    from ml.data import load_metadata, read_split_csv, records_in
    from ml.manifest import MODELS_DIR, shipped_model_dir
    from ml.segmentation.report import classical, sample, score

    masks = os.path.join(os.path.dirname(HAM_METADATA), "masks")
    if not os.path.isdir(masks):
        pytest.skip(f"HAM10000 lesion masks not found at {masks} (../shared holds them; a fresh clone has none)")
    if not os.path.isfile(os.path.join(MODELS_DIR, "CURRENT")):
        pytest.skip("no shipped model (ml/models/CURRENT), so no split.csv to take the test split from")
    split_of = read_split_csv(os.path.join(shipped_model_dir(), "split.csv"))
    records = [r for r in load_metadata(HAM_METADATA, [HAM_IMAGES]) if r.image_id in split_of]
    test = records_in(records, split_of, "test")
    figures = score(sample(test, 50), masks, classical(ClassicalConfig()))
    assert figures["images"] == 50
    assert figures["dice_mean"] > REAL_DICE_FLOOR
