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
from collections.abc import Callable

from ml.compare import DEFAULT_IMAGES, DEFAULT_METADATA
from ml.data import (
    SPLITS,
    Record,
    carve_selection_set,
    describe_part,
    fold_validation,
    load_metadata,
    read_split_csv,
    records_in,
    write_split_csv,
)
from ml.errors import DatasetError


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split-csv", required=True, help="the split to start from (a bundle's split.csv)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", required=True, help="where to write the new split.csv")
    parser.add_argument("--metadata", default=DEFAULT_METADATA)
    parser.add_argument("--images", default=DEFAULT_IMAGES)


def _write_new_split(parser: argparse.ArgumentParser, args: argparse.Namespace,
                     make: Callable[[list[Record], dict[str, str]], dict[str, str]]) -> int:
    try:
        split_of = read_split_csv(args.split_csv)
        records = load_metadata(args.metadata, [args.images], only=set(split_of))
        new_split = make(records, split_of)
    except (DatasetError, ValueError) as exc:
        parser.error(str(exc))
    write_split_csv(args.out, records, new_split)  # `records` holds exactly the split's images
    for part in SPLITS:
        print(f"{part}: {describe_part(records_in(records, new_split, part))}")
    print(f"written: {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml carve-selection", description=__doc__.split("\n\n")[0])
    _common_arguments(parser)
    parser.add_argument("--fraction", type=float, required=True, help="share of the training lesions to move")
    args = parser.parse_args(argv)
    return _write_new_split(parser, args, lambda records, split_of: carve_selection_set(
        records, split_of, fraction=args.fraction, seed=args.seed))


def fold_main(argv: list[str] | None = None) -> int:
    """python -m ml fold-validation: keep one fold of the validation lesions, train on the others.

    Cross-fitting: with --folds 2, the split for --keep 0 and the one for --keep 1 each move half
    of validation (whole lesions, stratified by diagnosis) into training, and together score every
    validation image with a network that never trained on it.
    """
    parser = argparse.ArgumentParser(prog="python -m ml fold-validation", description=fold_main.__doc__.split("\n\n")[0])
    _common_arguments(parser)
    parser.add_argument("--folds", type=int, default=2, help="how many folds to deal validation into")
    parser.add_argument("--keep", required=True, type=lambda text: None if text == "all" else int(text),
                        help="the fold (0-based) that stays validation, or 'all' to move every fold to training "
                             "(the final network of the cross-fit)")
    args = parser.parse_args(argv)
    return _write_new_split(parser, args, lambda records, split_of: fold_validation(
        records, split_of, folds=args.folds, keep=args.keep, seed=args.seed))
