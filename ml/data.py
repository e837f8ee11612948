"""HAM10000-style metadata: loading, locating images, and the lesion-level split.

The split is by lesion, never by image: HAM10000 has several photographs of most
malignant lesions, and an image-level split lets the model recognise the lesion rather
than the disease. Byte-identical images filed under different lesion ids are merged into
one group as well, so no copy of a picture can sit on both sides of the split.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ml.classes import CLASSES
from ml.context import NO_CONTEXT, ClinicalContext
from ml.errors import DatasetError

REQUIRED_COLUMNS: tuple[str, ...] = ("lesion_id", "image_id", "dx")
# "select": a second selection set, lesions carved out of a split's training part
# (`carve_selection_set`); training never reads it, so a candidate and the served recipe, both
# retrained without it, can be compared on images neither side's choices were fitted on.
SPLITS: tuple[str, ...] = ("train", "val", "test", "select")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.70, 0.15, 0.15)
DEFAULT_SPLIT_SEED = 20261125
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Record:
    image_id: str
    lesion_id: str
    dx: str
    path: str
    # How the diagnosis was confirmed (HAM10000's dx_type: histo, follow_up, consensus, confocal);
    # "" when the CSV has no such column.
    dx_type: str = ""
    # The clinical context beside the image (HAM10000's age, sex, localization); unknown fields,
    # or a CSV without those columns, leave it empty (ml.context).
    context: ClinicalContext = NO_CONTEXT

    @property
    def label(self) -> int:
        return CLASSES.index(self.dx)


def index_image_folders(image_dirs: Sequence[str]) -> dict[str, str]:
    """image_id -> path for every image file in the folders (first folder wins on a clash)."""
    found: dict[str, str] = {}
    for folder in image_dirs:
        if not os.path.isdir(folder):
            raise DatasetError(f"image folder not found: {folder}")
        for name in sorted(os.listdir(folder)):
            stem, ext = os.path.splitext(name)
            if ext.lower() in IMAGE_EXTENSIONS:
                found.setdefault(stem, os.path.join(folder, name))
    return found


def read_csv_rows(csv_path: str, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV as dicts, after checking the file and its header."""
    if not os.path.isfile(csv_path):
        raise DatasetError(f"metadata CSV not found: {csv_path}")
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise DatasetError(f"{csv_path}: missing column(s) {', '.join(missing)}; found {', '.join(header) or 'none'}")
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    if not rows:
        raise DatasetError(f"{csv_path}: no rows")
    return rows


def check_label(dx: str, where: str) -> str:
    if dx not in CLASSES:
        raise DatasetError(f"{where}: unknown diagnosis {dx!r}; expected one of {', '.join(CLASSES)}")
    return dx


def parse_age(text: str | None) -> float | None:
    """An age in years from a CSV cell; None when empty or not a number."""
    try:
        return float(text) if text else None
    except ValueError:
        return None


CONTEXT_COLUMNS: tuple[str, ...] = ("age", "sex", "localization")


def read_contexts(csv_path: str) -> dict[str, ClinicalContext]:
    """image_id -> the clinical context in a CSV's HAM10000-style age, sex and localization
    columns (ml.context); empty when it has none of them."""
    rows = read_csv_rows(csv_path, ("image_id",))
    if not any(column in rows[0] for column in CONTEXT_COLUMNS):
        return {}
    return {row["image_id"]: row_context(row) for row in rows}


def row_context(row: dict[str, str]) -> ClinicalContext:
    """The clinical context in one CSV row's age, sex and localization cells (absent ones: unknown)."""
    return ClinicalContext(age=parse_age(row.get("age")), sex=(row.get("sex") or "").lower(),
                           site=(row.get("localization") or "").lower())


def load_metadata(csv_path: str, image_dirs: Sequence[str], *, only: set[str] | None = None) -> list[Record]:
    """Read a HAM10000-style CSV and find ``<image_id>.jpg`` in any of ``image_dirs``; with `only`,
    the rows of other image ids are checked but not kept, and their images need not exist."""
    rows = read_csv_rows(csv_path, REQUIRED_COLUMNS)
    paths = index_image_folders(image_dirs)
    records: list[Record] = []
    missing: list[str] = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        image_id = row["image_id"]
        if not image_id or not row["lesion_id"]:
            raise DatasetError(f"{csv_path} line {line}: empty image_id or lesion_id")
        if image_id in seen:
            raise DatasetError(f"{csv_path} line {line}: duplicate image_id {image_id}")
        seen.add(image_id)
        dx = check_label(row["dx"], f"{csv_path} line {line}")
        if only is not None and image_id not in only:
            continue
        if image_id not in paths:
            missing.append(image_id)
            continue
        records.append(Record(image_id=image_id, lesion_id=row["lesion_id"], dx=dx, path=paths[image_id],
                              dx_type=(row.get("dx_type") or "").strip(), context=row_context(row)))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetError(
            f"{len(missing)} image(s) listed in {csv_path} not found in {', '.join(image_dirs)}: {shown}"
        )
    return records


def _file_sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def lesion_groups(records: Sequence[Record], *, merge_identical_files: bool = True) -> dict[str, str]:
    """image_id -> group key. A group is a lesion, merged with any lesion sharing identical bytes."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # deterministic representative

    for r in records:
        find(r.lesion_id)
    if merge_identical_files:
        by_hash: dict[str, str] = {}
        for r in records:
            digest = _file_sha256(r.path)
            if digest in by_hash:
                union(by_hash[digest], r.lesion_id)
            else:
                by_hash[digest] = r.lesion_id
    return {r.image_id: find(r.lesion_id) for r in records}


def split_by_lesion(
    records: Sequence[Record],
    *,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    seed: int = DEFAULT_SPLIT_SEED,
    merge_identical_files: bool = True,
) -> dict[str, str]:
    """image_id -> 'train' | 'val' | 'test', by lesion group, stratified by diagnosis.

    Deterministic for a given seed whatever the order of ``records``.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    group_of = lesion_groups(records, merge_identical_files=merge_identical_files)
    rng = np.random.default_rng(seed)
    split_of_group: dict[str, str] = {}
    for groups in groups_by_diagnosis(records, group_of).values():
        order = rng.permutation(len(groups))
        n_val = int(round(fractions[1] * len(groups)))
        n_test = int(round(fractions[2] * len(groups)))
        for rank, idx in enumerate(order):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            split_of_group[groups[idx]] = split
    return {image_id: split_of_group[group] for image_id, group in group_of.items()}


def groups_by_diagnosis(records: Sequence[Record], group_of: dict[str, str]) -> dict[str, list[str]]:
    """diagnosis -> its sorted lesion groups, diagnoses in sorted order (a lesion has one diagnosis)."""
    group_dx: dict[str, str] = {}
    for r in sorted(records, key=lambda r: r.image_id):
        group_dx.setdefault(group_of[r.image_id], r.dx)
    by_dx: dict[str, list[str]] = defaultdict(list)
    for group, dx in group_dx.items():
        by_dx[dx].append(group)
    return {dx: sorted(by_dx[dx]) for dx in sorted(by_dx)}


PART_NAMES: dict[str, str] = {"train": "training", "val": "validation", "test": "test", "select": "the selection set"}


def whole_groups_of_part(records: Sequence[Record], split_of: dict[str, str], part: str, *,
                         merge_identical_files: bool = True) -> tuple[list[Record], dict[str, str]]:
    """(the records of one part of the split, image id -> lesion group of every record the split
    names). Refuses (DatasetError) a lesion group with images in `part` and in another part: moving
    the part's groups elsewhere would cut it in two."""
    known = [r for r in records if r.image_id in split_of]
    group_of = lesion_groups(known, merge_identical_files=merge_identical_files)
    parts_of_group: dict[str, set[str]] = defaultdict(set)
    for r in known:
        parts_of_group[group_of[r.image_id]].add(split_of[r.image_id])
    torn = sorted(g for g, parts in parts_of_group.items() if part in parts and len(parts) > 1)
    if torn:
        raise DatasetError(f"lesion group {torn[0]} has images in {PART_NAMES[part]} and in another part of the split")
    return [r for r in known if split_of[r.image_id] == part], group_of


def carve_selection_set(
    records: Sequence[Record],
    split_of: dict[str, str],
    *,
    fraction: float,
    seed: int,
    merge_identical_files: bool = True,
) -> dict[str, str]:
    """A copy of `split_of` with `fraction` of the training part's lesion groups moved to 'select',
    stratified by diagnosis; validation and test keep every image they had.

    Only the training part is drawn from, so a bundle's held-out images stay held out; a group
    holding images of more than one part of the split is refused rather than cut in two.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie between 0 and 1, got {fraction}")
    if "select" in split_of.values():
        raise DatasetError("this split already has a selection set: carve from the split it was drawn from")
    train, group_of = whole_groups_of_part(records, split_of, "train", merge_identical_files=merge_identical_files)
    rng = np.random.default_rng(seed)
    carved: set[str] = set()
    for groups in groups_by_diagnosis(train, group_of).values():
        order = rng.permutation(len(groups))
        carved.update(groups[idx] for idx in order[: round(fraction * len(groups))])
    return {image_id: "select" if image_id in group_of and group_of[image_id] in carved else split
            for image_id, split in split_of.items()}


def fold_validation(
    records: Sequence[Record],
    split_of: dict[str, str],
    *,
    folds: int,
    keep: int | None,
    seed: int,
    merge_identical_files: bool = True,
) -> dict[str, str]:
    """A copy of `split_of` whose validation lesions are dealt into `folds` folds, stratified by
    diagnosis: fold `keep` (0-based) stays 'val', the other folds' images move to 'train';
    `keep=None` moves every fold (the cross-fit's final network, which trains on all of them).

    For cross-fitting: with two folds, the runs on `keep=0` and `keep=1` each train on the other
    half of validation and score the half they never saw. Test (and a selection set) keep every
    image; the same seed deals the same folds for every `keep`, so the kept folds partition
    validation. A lesion group holding validation and other images is refused, as when carving.
    """
    if folds < 2 or not (keep is None or 0 <= keep < folds):
        raise ValueError(f"need at least 2 folds and 0 <= keep < folds, got folds={folds}, keep={keep}")
    val, group_of = whole_groups_of_part(records, split_of, "val", merge_identical_files=merge_identical_files)
    if not val:
        raise DatasetError("this split has no validation images to fold")
    rng = np.random.default_rng(seed)
    moved: set[str] = set()
    offset = 0  # deal each diagnosis on from where the last one stopped, so fold sizes stay even
    for groups in groups_by_diagnosis(val, group_of).values():
        order = rng.permutation(len(groups))
        moved.update(groups[idx] for turn, idx in enumerate(order) if (turn + offset) % folds != keep)
        offset = (offset + len(groups)) % folds
    return {image_id: "train" if image_id in group_of and group_of[image_id] in moved else split
            for image_id, split in split_of.items()}


def describe_part(records: Sequence[Record]) -> str:
    """One part of a split in a line: images, lesions and images per diagnosis."""
    counts = Counter(r.dx for r in records)
    return (f"{len(records)} images, {len({r.lesion_id for r in records})} lesions, "
            + " ".join(f"{c}={counts[c]}" for c in CLASSES))


def write_split_csv(path: str, records: Iterable[Record], split_of: dict[str, str]) -> None:
    """The audit trail of the split: one row per image (ids only; labels stay in the source CSV)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_id", "lesion_id", "split"])
        for r in sorted(records, key=lambda r: r.image_id):
            writer.writerow([r.image_id, r.lesion_id, split_of[r.image_id]])


def read_split_csv(path: str) -> dict[str, str]:
    rows = read_csv_rows(path, ("image_id", "split"))
    bad = sorted({row["split"] for row in rows} - set(SPLITS))
    if bad:
        raise DatasetError(f"{path}: unknown split name(s) {', '.join(bad)}")
    return {row["image_id"]: row["split"] for row in rows}


def records_in(records: Sequence[Record], split_of: dict[str, str], split: str) -> list[Record]:
    return [r for r in records if split_of.get(r.image_id) == split]
