"""`python -m ml predict` and `python -m ml explain` (ml/cli.py) over folders of generated images,
in-process with a tiny bundle, and in a subprocess to show neither loads TensorFlow."""

import csv
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from ml.__main__ import main
from ml.classes import CLASSES
from ml.screening import MIN_IMAGE_SIDE, WARNING_CODES
from tests.conftest import REPO, encode, make_image
from tests.tinymodel import write_tiny_bundle

HEADER = "image_id,top_class,p_akiec,p_bcc,p_bkl,p_df,p_mel,p_nv,p_vasc,malignancy_score,malignant,warnings,context,error"
FIGURES = ["top_class", *(f"p_{c}" for c in CLASSES), "malignancy_score", "malignant"]
RED, DARK_BLUE = (200, 40, 40), (20, 20, 120)


def textured(colour, width=160, height=120, seed=0) -> np.ndarray:
    """One colour with a smooth texture, big enough to classify."""
    noise = make_image(width, height, seed=seed).astype(np.int16) // 8 - 16
    return np.clip(np.array(colour, np.int16) + noise, 0, 255).astype(np.uint8)


def write(folder, name: str, data: bytes) -> None:
    with open(os.path.join(folder, name), "wb") as fh:
        fh.write(data)


@pytest.fixture
def warning_bundle(tmp_path):
    """Red is the only dermoscopic colour, and an image darker than mean luma 60 is too dark:
    a dark blue image gets two warnings, a red one none."""
    return write_tiny_bundle(
        str(tmp_path / "bundle"), dermoscopic_colours=[RED], ood_threshold=0.5,
        quality={"min_brightness": 60.0, "max_brightness": 255.0, "max_saturated": 1.0, "min_contrast": 0.0,
                 "min_sharpness": 0.0, "percentile": 0.5},
    )


@pytest.fixture
def images(tmp_path):
    """Good images under every accepted extension and case, a bad one, a small one, and files
    and a folder that are not images."""
    folder = tmp_path / "images"
    folder.mkdir()
    write(folder, "red_1.jpg", encode(textured(RED, seed=1)))
    write(folder, "Red_2.JPEG", encode(textured(RED, 120, 160, seed=2)))
    write(folder, "blue.png", encode(textured(DARK_BLUE, seed=3), ".png"))
    write(folder, "red_3.PNG", encode(textured(RED, 200, 150, seed=4), ".png"))
    write(folder, "broken.jpg", b"\xff\xd8\xff\xe0 this is not a JPEG")
    write(folder, "small.png", encode(textured(RED, MIN_IMAGE_SIDE - 1, 300, seed=5), ".png"))
    write(folder, "notes.txt", b"not an image")
    write(folder, "photo.gif", b"GIF89a")
    (folder / "folder.jpg").mkdir()
    return str(folder)


GOOD = ["Red_2", "blue", "red_1", "red_3"]
BAD = ["broken", "small"]


def read_csv(path) -> tuple[str, list[dict]]:
    with open(path, newline="") as fh:
        header = fh.readline().strip()
        fh.seek(0)
        return header, list(csv.DictReader(fh))


def test_it_writes_one_row_per_image_in_name_order(warning_bundle, images, tmp_path, capsys):
    out = tmp_path / "out" / "predictions.csv"
    code = main(["predict", "--images", images, "--model", warning_bundle, "--csv", str(out)])
    assert code == 1  # two images could not be classified
    header, rows = read_csv(out)
    assert header == HEADER
    names = [n for n in os.listdir(images) if n.lower().endswith((".jpg", ".jpeg", ".png")) and n != "folder.jpg"]
    assert [r["image_id"] for r in rows] == [os.path.splitext(n)[0] for n in sorted(names)]
    assert sorted(r["image_id"] for r in rows) == sorted(GOOD + BAD)
    by_id = {r["image_id"]: r for r in rows}
    for image_id in GOOD:
        row = by_id[image_id]
        assert row["error"] == "" and row["top_class"] in CLASSES
        probs = [float(row[f"p_{c}"]) for c in CLASSES]
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)
        assert row["top_class"] == CLASSES[int(np.argmax(probs))]
        assert float(row["malignancy_score"]) == pytest.approx(
            sum(float(row[f"p_{c}"]) for c in ("akiec", "bcc", "mel")), abs=1e-5)
        assert row["malignant"] in ("0", "1")
    assert by_id["blue"]["warnings"] == "not_dermoscopic;too_dark"
    assert all(by_id[i]["warnings"] == "" for i in ("red_1", "Red_2", "red_3"))
    for image_id in BAD:
        row = by_id[image_id]
        assert row["error"] and all(row[k] == "" for k in [*FIGURES, "warnings"])
    assert "unreadable" in by_id["broken"]["error"]
    assert "too small" in by_id["small"]["error"] and f"{MIN_IMAGE_SIDE - 1}x300" in by_id["small"]["error"]
    assert "4 of 6 images classified" in capsys.readouterr().err


def test_it_exits_0_when_every_image_was_classified(warning_bundle, tmp_path):
    folder = tmp_path / "good"
    folder.mkdir()
    write(folder, "a.jpg", encode(textured(RED, seed=6)))
    write(folder, "b.png", encode(textured(DARK_BLUE, seed=7), ".png"))
    out = tmp_path / "p.csv"
    assert main(["predict", "--images", str(folder), "--model", warning_bundle, "--csv", str(out)]) == 0
    _, rows = read_csv(out)
    assert [r["image_id"] for r in rows] == ["a", "b"] and all(r["error"] == "" for r in rows)
    codes = rows[1]["warnings"].split(";")
    assert codes == [c for c in WARNING_CODES if c in codes]  # in the fixed order


def test_it_runs_many_images_in_chunks_in_order(tmp_path, monkeypatch):
    from ml import cli

    monkeypatch.setattr(cli, "CHUNK", 2)
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(5):
        write(folder, f"img_{i}.png", encode(textured(RED, seed=10 + i), ".png"))
    write(folder, "img_2b.jpg", b"broken")
    out = tmp_path / "p.csv"
    assert main(["predict", "--images", str(folder), "--model", write_tiny_bundle(str(tmp_path / "b")),
                 "--csv", str(out)]) == 1
    _, rows = read_csv(out)
    assert [r["image_id"] for r in rows] == ["img_0", "img_1", "img_2", "img_2b", "img_3", "img_4"]
    assert [bool(r["error"]) for r in rows] == [False, False, False, True, False, False]


def test_it_exits_2_for_a_missing_folder_no_images_or_a_broken_bundle(warning_bundle, images, tmp_path, capsys):
    out = str(tmp_path / "p.csv")
    assert main(["predict", "--images", str(tmp_path / "nowhere"), "--model", warning_bundle, "--csv", out]) == 2
    assert "is not a folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    assert main(["predict", "--images", str(empty), "--model", warning_bundle, "--csv", out]) == 2
    assert "no *.jpg" in capsys.readouterr().err
    assert main(["explain", "--images", str(empty), "--model", warning_bundle, "--out", str(tmp_path / "maps")]) == 2
    with open(os.path.join(warning_bundle, "model.onnx"), "ab") as fh:
        fh.write(b"tampered")
    assert main(["predict", "--images", images, "--model", warning_bundle, "--csv", out]) == 2
    assert "sha256" in capsys.readouterr().err
    assert main(["predict", "--images", images, "--model", str(tmp_path / "no_bundle"), "--csv", out]) == 2
    assert not os.path.exists(out)
    with pytest.raises(SystemExit) as exited:  # a required argument missing: argparse's own exit 2
        main(["predict", "--images", images])
    assert exited.value.code == 2


def test_it_writes_a_png_and_a_map_per_image(warning_bundle, images, tmp_path, capsys):
    out = tmp_path / "maps"
    assert main(["explain", "--images", images, "--model", warning_bundle, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "small.png" in err  # reported, and the run went on
    assert sorted(os.listdir(out)) == sorted([f"{i}.npy" for i in GOOD] + [f"{i}.png" for i in GOOD])
    for name in os.listdir(images):
        image_id = os.path.splitext(name)[0]
        if image_id not in GOOD:
            continue
        original = cv2.imread(os.path.join(images, name), cv2.IMREAD_COLOR)
        heat = np.load(out / f"{image_id}.npy")
        assert heat.dtype == np.float32 and heat.shape == original.shape[:2]
        assert heat.min() >= 0.0 and heat.max() <= 1.0
        picture = cv2.imread(str(out / f"{image_id}.png"), cv2.IMREAD_COLOR)
        assert picture.shape == original.shape


def test_it_explains_the_class_asked_for(warning_bundle, images, tmp_path):
    from ml.inference import Classifier
    from ml.preprocessing import read_image

    top = Classifier(warning_bundle).predict(read_image(os.path.join(images, "red_1.jpg"))).top_class
    other = next(c for c in CLASSES if c != top)
    maps = {}
    for code in (None, top, other):
        out = tmp_path / f"maps_{code}"
        argv = ["explain", "--images", images, "--model", warning_bundle, "--out", str(out)]
        assert main(argv + (["--class", code] if code else [])) == 1
        maps[code] = np.load(out / "red_1.npy")
    assert not np.array_equal(maps[top], maps[other])
    assert np.array_equal(maps[None], maps[top])  # without --class: the top class
    with pytest.raises(SystemExit):
        main(["explain", "--images", images, "--model", warning_bundle, "--out", str(tmp_path / "x"), "--class", "xyz"])


def test_it_turns_the_map_back_for_a_non_square_model_even_with_a_square_grid(tmp_path):
    """A 32x48 model whose map is a 2x2 grid (as MobileNetV2 gives at 48x64): a portrait upload
    was turned to fit it, and its map must be turned back, though the grid alone cannot say so."""
    bundle = write_tiny_bundle(str(tmp_path / "bundle"), size=32, width=48, grid=(2, 2))
    folder = tmp_path / "images"
    folder.mkdir()
    portrait = np.full((240, 160, 3), 20, np.uint8)
    portrait[:120, :80] = RED  # top-left quarter
    write(folder, "portrait.png", encode(portrait, ".png"))
    out = tmp_path / "maps"
    assert main(["explain", "--images", str(folder), "--model", bundle, "--out", str(out), "--class", "akiec"]) == 0
    heat = np.load(out / "portrait.npy")
    assert heat.shape == (240, 160)
    assert heat[:120, :80].mean() > 0.5 > heat[120:, 80:].mean()


def test_it_neither_predicts_nor_explains_with_tensorflow(warning_bundle, images, tmp_path):
    script = (
        "import sys\n"
        "from ml.__main__ import main\n"
        f"assert main(['predict', '--images', {images!r}, '--model', {warning_bundle!r}, '--csv', "
        f"{str(tmp_path / 'p.csv')!r}]) == 1\n"
        f"assert main(['explain', '--images', {images!r}, '--model', {warning_bundle!r}, '--out', "
        f"{str(tmp_path / 'maps')!r}]) == 1\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx'))\n"
        "assert not loaded, loaded\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_it_draws_a_cropping_bundles_map_inside_the_field_of_view(tmp_path):
    bundle = write_tiny_bundle(str(tmp_path / "cropping"), size=32, field_of_view=True)
    folder = tmp_path / "framed"
    folder.mkdir()
    framed = cv2.copyMakeBorder(textured(RED), 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    write(folder, "framed.png", encode(framed, ".png"))
    out = tmp_path / "maps"
    assert main(["explain", "--images", str(folder), "--model", bundle, "--out", str(out), "--class", "mel"]) == 0
    heat = np.load(out / "framed.npy")
    assert heat.shape == (200, 240)
    assert heat[:40].max() == 0 and heat[160:].max() == 0 and heat[:, :40].max() == 0 and heat[:, 200:].max() == 0
    assert heat[40:160, 40:200].max() > 0
