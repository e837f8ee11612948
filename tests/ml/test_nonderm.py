"""ml.nonderm: the offline, seeded corpus of non-dermatoscopic images for the out-of-distribution check."""

from __future__ import annotations

import csv
import os

import cv2
import numpy as np
import pytest

from ml import nonderm
from ml.__main__ import main as ml_main
from ml.nonderm import photos
from ml.nonderm.common import MAX_ASPECT, MAX_SIDE, MIN_ASPECT, MIN_SIDE

PER_KIND = 3
needs_skimage = pytest.mark.skipif(not photos.skimage_available(), reason="scikit-image ('dev' extra) not installed")


@pytest.fixture(scope="module")
def corpus() -> list[nonderm.NondermImage]:
    return list(nonderm.generate(per_kind=PER_KIND))


def _by_name(items):
    return {item.name: item for item in items}


def test_it_yields_every_kind(corpus):
    expected = set(nonderm.KINDS) if photos.skimage_available() else set(nonderm.KINDS) - set(nonderm.PHOTO_KINDS)
    counts = {kind: sum(item.kind == kind for item in corpus) for kind in nonderm.KINDS}
    assert {kind for kind, count in counts.items() if count} == expected
    assert all(counts[kind] == PER_KIND for kind in expected)
    assert len(nonderm.KINDS) >= 12


def test_it_makes_rgb_uint8_images_of_bounded_size_and_shape(corpus):
    for item in corpus:
        image = item.image
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, item.name
        height, width = image.shape[:2]
        assert MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE, (item.name, image.shape)
        assert MIN_ASPECT * 0.98 <= width / height <= MAX_ASPECT * 1.02, (item.name, image.shape)
        assert item.kind in nonderm.KINDS and item.name.startswith(item.kind + "-")
        assert image.std() > 0.5, f"{item.name} is constant"


def test_it_gives_unique_names(corpus):
    names = [item.name for item in corpus]
    assert len(names) == len(set(names))


def test_it_is_byte_identical_for_the_same_seed(corpus):
    again = _by_name(nonderm.generate(per_kind=PER_KIND))
    assert again.keys() == _by_name(corpus).keys()
    for item in corpus:
        assert np.array_equal(item.image, again[item.name].image), item.name


def test_it_differs_for_another_seed(corpus):
    other = _by_name(nonderm.generate(per_kind=PER_KIND, seed=nonderm.DEFAULT_SEED + 1))
    for item in corpus:
        twin = other[item.name].image
        assert twin.shape != item.image.shape or not np.array_equal(twin, item.image), item.name


def test_it_keeps_each_image_when_per_kind_changes(corpus):
    fewer = _by_name(nonderm.generate(per_kind=1, kinds=["chart", "noise", "document"]))
    for name, item in fewer.items():
        assert np.array_equal(item.image, _by_name(corpus)[name].image), name


def test_it_rejects_unknown_kinds():
    with pytest.raises(ValueError, match="unknown kinds"):
        list(nonderm.generate(per_kind=1, kinds=["selfie"]))


@needs_skimage
def test_it_uses_only_bundled_photos():
    names = [name for name, _ in photos.source_photos()]
    assert len(names) >= 15 and "skin" not in names  # skimage's "skin" needs a download
    assert all(image.dtype == np.uint8 and image.ndim == 3 for _, image in photos.source_photos())


def test_it_leaves_photo_kinds_empty_without_scikit_image(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(photos, "source_photos", lambda: ())
    monkeypatch.setattr(nonderm, "skimage_available", lambda: False)
    counts = nonderm.write_corpus(str(tmp_path), per_kind=1, kinds=["photo", "photo_crop", "flat"])
    assert counts == {"photo": 0, "photo_crop": 0, "flat": 1}
    assert "scikit-image is not installed" in capsys.readouterr().err


def test_it_writes_files_and_a_matching_index(tmp_path, corpus):
    counts = nonderm.write_corpus(str(tmp_path), per_kind=2)
    with open(tmp_path / "index.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert sum(counts.values()) == len(rows) and set(counts) == set(nonderm.KINDS)
    assert {row["kind"] for row in rows} == {kind for kind, count in counts.items() if count}
    generated = _by_name(corpus)
    for row in rows:
        path = tmp_path / row["file"]
        assert path.is_file() and row["file"] == f"{row['kind']}/{row['name']}{path.suffix}"
        assert path.suffix == (".jpg" if row["kind"] in nonderm.JPEG_KINDS else ".png")
        decoded = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert decoded.shape == (int(row["height"]), int(row["width"]), 3)
        if path.suffix == ".png":  # lossless: the file is exactly the generated image
            assert np.array_equal(decoded, generated[row["name"]].image), row["name"]


def test_it_runs_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "corpus"
    assert ml_main(["nonderm", "--out", str(out), "--per-kind", "1", "--kinds", "document,gradient,shapes"]) == 0
    assert "3 images" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["document", "gradient", "index.csv", "shapes"]
    assert nonderm.main(["--out", str(tmp_path / "seeded"), "--per-kind", "2", "--seed", "7", "--kinds", "flat"]) == 0
    assert len(os.listdir(tmp_path / "seeded" / "flat")) == 2
    with pytest.raises(SystemExit):
        nonderm.main(["--out", str(tmp_path), "--kinds", "selfie"])
