import csv
import os
import shutil

import pytest

from ml.classes import CLASSES
from ml.data import (
    carve_selection_set,
    fold_validation,
    load_metadata,
    read_split_csv,
    split_by_lesion,
    write_split_csv,
)
from ml.errors import DatasetError
from tests.conftest import HAM_IMAGES, HAM_METADATA, encode, make_image, needs_ham10000


def write_dataset(root, rows, *, folders=("a",), header=("lesion_id", "image_id", "dx")):
    """rows: (lesion_id, image_id, dx); images spread over ``folders`` round-robin."""
    dirs = [os.path.join(root, f) for f in folders]
    for d in dirs:
        os.makedirs(d, exist_ok=True)
    for i, (lesion, image, dx, *_) in enumerate(rows):
        with open(os.path.join(dirs[i % len(dirs)], f"{image}.jpg"), "wb") as fh:
            fh.write(encode(make_image(seed=i)))
    csv_path = os.path.join(root, "meta.csv")
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            writer.writerow(row[: len(header)])
    return csv_path, dirs


def synthetic_rows(lesions_per_class=20, images_per_lesion=(1, 3)):
    rows, n = [], 0
    for dx in CLASSES:
        for lesion in range(lesions_per_class):
            for _ in range(images_per_lesion[lesion % 2]):
                rows.append((f"L_{dx}_{lesion}", f"IMG_{n:05d}", dx))
                n += 1
    return rows


def test_it_finds_images_in_any_of_several_folders(tmp_path):
    csv_path, dirs = write_dataset(tmp_path, synthetic_rows(2), folders=("part_1", "part_2"))
    records = load_metadata(csv_path, dirs)
    assert len(records) == len(synthetic_rows(2))
    assert {os.path.basename(os.path.dirname(r.path)) for r in records} == {"part_1", "part_2"}
    assert {r.dx_type for r in records} == {""}  # no dx_type column: unknown


def test_it_reads_how_each_diagnosis_was_confirmed_when_the_csv_says(tmp_path):
    rows = [(lesion, image, dx, "histo" if k % 2 else "follow_up") for k, (lesion, image, dx)
            in enumerate(synthetic_rows(1))]
    csv_path, dirs = write_dataset(tmp_path, rows, header=("lesion_id", "image_id", "dx", "dx_type"))
    records = load_metadata(csv_path, dirs)
    assert [r.dx_type for r in records] == [row[3] for row in rows]


def test_it_names_a_missing_image(tmp_path):
    csv_path, dirs = write_dataset(tmp_path, synthetic_rows(1))
    os.remove(os.path.join(dirs[0], "IMG_00002.jpg"))
    with pytest.raises(DatasetError, match="IMG_00002"):
        load_metadata(csv_path, dirs)


def test_it_loads_only_the_images_asked_for_and_needs_no_others(tmp_path):
    csv_path, dirs = write_dataset(tmp_path, synthetic_rows(1))
    os.remove(os.path.join(dirs[0], "IMG_00002.jpg"))  # e.g. a test image left off a training machine
    records = load_metadata(csv_path, dirs, only={"IMG_00000", "IMG_00001"})
    assert [r.image_id for r in records] == ["IMG_00000", "IMG_00001"]
    with pytest.raises(DatasetError, match="IMG_00002"):
        load_metadata(csv_path, dirs, only={"IMG_00000", "IMG_00002"})


def test_it_names_a_missing_column(tmp_path):
    csv_path, dirs = write_dataset(tmp_path, synthetic_rows(1), header=("lesion_id", "image_id"))
    with pytest.raises(DatasetError, match="missing column.*dx"):
        load_metadata(csv_path, dirs)


def test_it_names_an_unknown_diagnosis(tmp_path):
    csv_path, dirs = write_dataset(tmp_path, [("L1", "IMG_1", "nv"), ("L2", "IMG_2", "melanoma")])
    with pytest.raises(DatasetError, match="melanoma"):
        load_metadata(csv_path, dirs)


def test_it_reports_a_missing_csv_and_folder(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_metadata(str(tmp_path / "nope.csv"), [str(tmp_path)])
    csv_path, _ = write_dataset(tmp_path, synthetic_rows(1))
    with pytest.raises(DatasetError, match="folder not found"):
        load_metadata(csv_path, [str(tmp_path / "missing")])


def test_it_keeps_every_lesion_in_one_split_and_is_deterministic(tmp_path):
    rows = synthetic_rows(20)
    csv_path, dirs = write_dataset(tmp_path, rows)
    records = load_metadata(csv_path, dirs)
    split = split_by_lesion(records, seed=7)
    lesion_splits = {}
    for r in records:
        lesion_splits.setdefault(r.lesion_id, set()).add(split[r.image_id])
    assert all(len(s) == 1 for s in lesion_splits.values())
    assert set(split.values()) == {"train", "val", "test"}
    # Every class is stratified into every split (20 lesions a class, 70/15/15).
    for dx in CLASSES:
        assert {split[r.image_id] for r in records if r.dx == dx} == {"train", "val", "test"}
    assert split_by_lesion(list(reversed(records)), seed=7) == split
    assert split_by_lesion(records, seed=8) != split


def test_it_merges_byte_identical_images_of_different_lesions(tmp_path):
    rows = synthetic_rows(20)
    csv_path, dirs = write_dataset(tmp_path, rows)
    # The same picture filed under two lesion ids of the same class, as HAM10000 does twice.
    shutil.copy(os.path.join(dirs[0], "IMG_00000.jpg"), os.path.join(dirs[0], "IMG_00001.jpg"))
    records = load_metadata(csv_path, dirs)
    assert records[0].lesion_id != records[1].lesion_id
    for seed in range(10):
        split = split_by_lesion(records, seed=seed)
        assert split["IMG_00000"] == split["IMG_00001"]


def test_it_writes_an_auditable_split_csv(tmp_path):
    csv_path, dirs = write_dataset(tmp_path, synthetic_rows(5))
    records = load_metadata(csv_path, dirs)
    split = split_by_lesion(records)
    out = tmp_path / "split.csv"
    write_split_csv(str(out), records, split)
    assert read_split_csv(str(out)) == split
    with open(out) as fh:
        assert next(csv.reader(fh)) == ["image_id", "lesion_id", "split"]


@needs_ham10000
def test_it_splits_ham10000_by_lesion_with_no_leak():
    records = load_metadata(HAM_METADATA, [HAM_IMAGES])
    assert len(records) == 10015
    assert {r.dx_type for r in records} == {"histo", "follow_up", "consensus", "confocal"}
    split = split_by_lesion(records)
    by_lesion = {}
    for r in records:
        by_lesion.setdefault(r.lesion_id, set()).add(split[r.image_id])
    assert max(len(s) for s in by_lesion.values()) == 1
    # The two known byte-identical pairs land together.
    assert split["ISIC_0024366"] == split["ISIC_0029861"]
    assert split["ISIC_0024777"] == split["ISIC_0029938"]
    counts = {s: sum(1 for v in split.values() if v == s) for s in ("train", "val", "test")}
    assert 0.66 < counts["train"] / len(records) < 0.74


def carved_fixture(tmp_path, **kwargs):
    csv_path, dirs = write_dataset(tmp_path, synthetic_rows(20))
    records = load_metadata(csv_path, dirs)
    split = split_by_lesion(records, seed=7)
    return records, split, carve_selection_set(records, split, **{"fraction": 0.25, "seed": 3, **kwargs})


def test_it_carves_a_selection_set_out_of_the_training_lesions_only(tmp_path):
    records, split, carved = carved_fixture(tmp_path)
    assert set(carved) == set(split)
    # Validation and test keep every image; the selection set comes out of training alone.
    assert all(carved[i] == s for i, s in split.items() if s != "train")
    assert {split[i] for i, s in carved.items() if s == "select"} == {"train"}
    # Whole lesions, every diagnosis represented, about a quarter of each class's training lesions.
    lesion_parts = {}
    for r in records:
        lesion_parts.setdefault(r.lesion_id, set()).add(carved[r.image_id])
    assert all(len(parts) == 1 for parts in lesion_parts.values())
    for dx in CLASSES:
        train_lesions = {r.lesion_id for r in records if r.dx == dx and split[r.image_id] == "train"}
        selected = {r.lesion_id for r in records if r.dx == dx and carved[r.image_id] == "select"}
        assert selected and len(selected) == round(0.25 * len(train_lesions))
    # Deterministic for a seed whatever the order; another seed draws other lesions.
    assert carve_selection_set(list(reversed(records)), split, fraction=0.25, seed=3) == carved
    assert carve_selection_set(records, split, fraction=0.25, seed=4) != carved


def test_it_keeps_byte_identical_training_images_together_when_carving(tmp_path):
    csv_path, dirs = write_dataset(tmp_path, synthetic_rows(20))
    shutil.copy(os.path.join(dirs[0], "IMG_00000.jpg"), os.path.join(dirs[0], "IMG_00001.jpg"))
    records = load_metadata(csv_path, dirs)
    split = {r.image_id: "train" for r in records}
    for seed in range(10):
        carved = carve_selection_set(records, split, fraction=0.5, seed=seed)
        assert carved["IMG_00000"] == carved["IMG_00001"]


def test_it_refuses_a_carve_it_cannot_make_cleanly(tmp_path):
    records, split, carved = carved_fixture(tmp_path)
    with pytest.raises(DatasetError, match="already has a selection set"):
        carve_selection_set(records, carved, fraction=0.25, seed=3)
    for fraction in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="between 0 and 1"):
            carve_selection_set(records, split, fraction=fraction, seed=3)
    # A lesion with images on both sides of the split would be cut in two: refused, not guessed.
    first, second = [r.image_id for r in records if r.lesion_id == "L_akiec_1"][:2]
    torn = {**split, first: "train", second: "val"}
    with pytest.raises(DatasetError, match="in training and in another part"):
        carve_selection_set(records, torn, fraction=0.25, seed=3)


def split_on_disk(tmp_path):
    """(records, their lesion-level split, the split's CSV, the data arguments of a command)."""
    csv_path, dirs = write_dataset(tmp_path, synthetic_rows(20))
    records = load_metadata(csv_path, dirs)
    split = split_by_lesion(records, seed=7)
    source = tmp_path / "split.csv"
    write_split_csv(str(source), records, split)
    return records, split, source, ["--metadata", csv_path, "--images", dirs[0]]


def test_it_writes_and_reads_a_split_with_a_selection_set_from_the_command_line(tmp_path, capsys):
    from ml.__main__ import main as ml_main

    records, split, source, data = split_on_disk(tmp_path)
    out = tmp_path / "carved" / "split.csv"
    argv = ["carve-selection", "--split-csv", str(source), "--fraction", "0.25", "--seed", "3", "--out", str(out), *data]
    assert ml_main(argv) == 0
    assert read_split_csv(str(out)) == carve_selection_set(records, split, fraction=0.25, seed=3)
    printed = capsys.readouterr().out
    assert "select: " in printed and f"written: {out}" in printed
    # Carving the carved split again, or an impossible share, is a usage error (exit 2), not a traceback.
    for bad in (["--split-csv", str(out)], ["--fraction", "1.5"]):
        with pytest.raises(SystemExit) as exc:
            ml_main([*argv, *bad])
        assert exc.value.code == 2


def test_it_folds_validation_into_whole_lesion_halves_that_partition_it(tmp_path):
    csv_path, dirs = write_dataset(tmp_path, synthetic_rows(20))
    records = load_metadata(csv_path, dirs)
    split = split_by_lesion(records, seed=7)
    kept = [fold_validation(records, split, folds=2, keep=k, seed=5) for k in (0, 1)]
    val = {i for i, s in split.items() if s == "val"}
    for folded in kept:
        assert set(folded) == set(split)
        # Test and training keep every image; what leaves validation goes to training.
        assert all(folded[i] == s for i, s in split.items() if s != "val")
        assert {folded[i] for i in val} == {"train", "val"}
        lesion_parts = {}
        for r in records:
            lesion_parts.setdefault(r.lesion_id, set()).add(folded[r.image_id])
        assert all(len(parts) == 1 for parts in lesion_parts.values())
    # The two kept folds partition validation, and each is about half of it within every diagnosis.
    kept_val = [{i for i, s in folded.items() if s == "val"} for folded in kept]
    assert kept_val[0].isdisjoint(kept_val[1]) and kept_val[0] | kept_val[1] == val
    for dx in CLASSES:
        lesions = [{r.lesion_id for r in records if r.dx == dx and r.image_id in part} for part in kept_val]
        assert abs(len(lesions[0]) - len(lesions[1])) <= 1
    # Deterministic for a seed whatever the order; another seed deals other folds.
    assert fold_validation(list(reversed(records)), split, folds=2, keep=0, seed=5) == kept[0]
    assert fold_validation(records, split, folds=2, keep=0, seed=6) != kept[0]
    # keep=None: the final network's split, every validation image in training, the rest as it was.
    final = fold_validation(records, split, folds=2, keep=None, seed=5)
    assert {final[i] for i in val} == {"train"} and all(final[i] == s for i, s in split.items() if s != "val")


def test_it_refuses_a_fold_it_cannot_make_cleanly(tmp_path):
    csv_path, dirs = write_dataset(tmp_path, synthetic_rows(20))
    records = load_metadata(csv_path, dirs)
    split = split_by_lesion(records, seed=7)
    for folds, keep in ((1, 0), (2, 2), (3, -1)):
        with pytest.raises(ValueError, match="at least 2 folds"):
            fold_validation(records, split, folds=folds, keep=keep, seed=5)
    with pytest.raises(DatasetError, match="no validation images"):
        fold_validation(records, {i: "train" for i in split}, folds=2, keep=0, seed=5)
    first, second = [r.image_id for r in records if r.lesion_id == "L_akiec_1"][:2]
    with pytest.raises(DatasetError, match="in validation and in another part"):
        fold_validation(records, {**split, first: "val", second: "test"}, folds=2, keep=0, seed=5)


def test_it_writes_a_folded_split_from_the_command_line(tmp_path, capsys):
    from ml.__main__ import main as ml_main

    records, split, source, data = split_on_disk(tmp_path)
    out = tmp_path / "fold1" / "split.csv"
    argv = ["fold-validation", "--split-csv", str(source), "--keep", "1", "--seed", "5", "--out", str(out), *data]
    assert ml_main(argv) == 0
    assert read_split_csv(str(out)) == fold_validation(records, split, folds=2, keep=1, seed=5)
    assert f"written: {out}" in capsys.readouterr().out
    argv_all = [*argv, "--keep", "all"]
    assert ml_main(argv_all) == 0
    assert "val" not in read_split_csv(str(out)).values()
    for bad in ("2", "half"):  # a fold that does not exist is a usage error, not a traceback
        with pytest.raises(SystemExit) as exc:
            ml_main([*argv, "--keep", bad])
        assert exc.value.code == 2
