"""python -m ml carve-selection: a second selection set, carved out of a split's training part.

    python -m ml carve-selection --split-csv ml/models/<bundle>/split.csv --fraction 0.14 \\
        --seed N --out PATH [--metadata CSV] [--images DIR]

Writes a split.csv in which `fraction` of the training part's lesions (stratified by diagnosis,
byte-identical images kept together) are marked 'select'; validation and test are unchanged.
Training with `--split-csv PATH` never reads the selection set, and a bundle trained on the old
split is refused as a start or soup member (its weights have seen those images), so the whole
lineage is retrained without them; `ml compare --split select` then judges candidates on images
that no threshold, context weight or earlier verdict was fitted on.
"""

from __future__ import annotations

import argparse

from ml.compare import DEFAULT_IMAGES, DEFAULT_METADATA
from ml.data import (
    SPLITS,
    carve_selection_set,
    describe_part,
    load_metadata,
    read_split_csv,
    records_in,
    write_split_csv,
)
from ml.errors import DatasetError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml carve-selection", description=__doc__.split("\n\n")[0])
    parser.add_argument("--split-csv", required=True, help="the split to carve from (a bundle's split.csv)")
    parser.add_argument("--fraction", type=float, required=True, help="share of the training lesions to move")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", required=True, help="where to write the new split.csv")
    parser.add_argument("--metadata", default=DEFAULT_METADATA)
    parser.add_argument("--images", default=DEFAULT_IMAGES)
    args = parser.parse_args(argv)
    try:
        split_of = read_split_csv(args.split_csv)
        records = load_metadata(args.metadata, [args.images], only=set(split_of))
        carved = carve_selection_set(records, split_of, fraction=args.fraction, seed=args.seed)
    except (DatasetError, ValueError) as exc:
        parser.error(str(exc))
    write_split_csv(args.out, records, carved)  # `records` holds exactly the split's images
    for part in SPLITS:
        print(f"{part}: {describe_part(records_in(records, carved, part))}")
    print(f"written: {args.out}")
    return 0
