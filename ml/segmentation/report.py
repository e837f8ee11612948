"""`python -m ml segment-report`: Dice and IoU of the segmenter against the HAM10000 lesion masks.

    python -m ml segment-report [--method classical|trained|both] [--segmenter DIR] [--model DIR]
                                [--metadata CSV] [--images DIR] [--masks DIR]
                                [--splits val test] [--limit N] [--json OUT]
    python -m ml segment-report --tune [--limit N]     # the variants, on the training split only
    python -m ml segment-report --by-class --splits val   # median descriptors per diagnosis

The split is the classifier's own: the lesion-level split.csv of the bundle (default: the served
one, ml/models/CURRENT), so a segmenter is never scored on a lesion the classifier trained on
and the trained segmenter to come can be held to exactly the same images. Masks are
`<masks>/<image_id>_segmentation.png` (the shared copies are resized, so they hold grey edge
values: lesion = above 127). Per split: mean and median Dice and IoU, and the share of images
with Dice >= 0.8 (a mask a clinician would accept without redrawing). `--method both` (the
default) scores the classical segmenter and the trained one (the bundle of --segmenter, else
the one ml/models/SEGMENTER names) on the same images, one row each per split.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from ml.data import Record, load_metadata, read_split_csv, records_in
from ml.preprocessing import read_image
from ml.segmentation.classical import ClassicalConfig, segment_classical

HAM_DIR = os.environ.get("SKINPORTAL_HAM10000_DIR") or os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data", "ham10000"))
DEFAULT_METADATA = os.path.join(HAM_DIR, "HAM10000_metadata.csv")
DEFAULT_IMAGES = os.path.join(HAM_DIR, "images")
DEFAULT_MASKS = os.path.join(HAM_DIR, "masks")
GOOD_DICE = 0.8

# Compared with --tune on the training split; the first is ClassicalConfig's defaults.
VARIANTS: dict[str, ClassicalConfig] = {
    "blue, x0.9, flattened, centre weight 8 (default)": ClassicalConfig(),
    "blue, x1.0, not flattened, centre weight 2 (plain Otsu)": ClassicalConfig(
        threshold_scale=1.0, flatten_shading=False, centre_weight=2.0),
    "blue, x0.9, not flattened": ClassicalConfig(flatten_shading=False),
    "blue, x1.0, flattened": ClassicalConfig(threshold_scale=1.0),
    "blue, x0.8, flattened": ClassicalConfig(threshold_scale=0.8),
    "blue, x0.9, flattened, hair removed": ClassicalConfig(remove_hair=True),
    "blue, x0.9, flattened, centre weight 2": ClassicalConfig(centre_weight=2.0),
    "blue, x0.9, flattened, centre weight 4": ClassicalConfig(centre_weight=4.0),
    "blue, x0.9, flattened, centre weight 24": ClassicalConfig(centre_weight=24.0),
    "blue, x0.9, flattened, no centre weight": ClassicalConfig(centre_weight=0.0),
    "skin distance, x0.9, flattened": ClassicalConfig(lesion_map="skin_distance"),
    "gray, x0.9, flattened": ClassicalConfig(lesion_map="gray"),
}


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """2|A∩B| / (|A|+|B|) of two bool masks; 1.0 when both are empty."""
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & truth).sum()) / total


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """|A∩B| / |A∪B| of two bool masks; 1.0 when both are empty."""
    union = int((pred | truth).sum())
    return 1.0 if union == 0 else int((pred & truth).sum()) / union


def read_truth(masks_dir: str, image_id: str, shape: tuple[int, int]) -> np.ndarray | None:
    """The reference mask as bool at (height, width) `shape`; None when missing."""
    mask = cv2.imread(os.path.join(masks_dir, f"{image_id}_segmentation.png"), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        return None
    if mask.shape != shape:
        mask = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return mask > 127


def summarise(dices: Sequence[float], ious: Sequence[float], fallbacks: int) -> dict:
    d, j = np.asarray(dices), np.asarray(ious)
    return {
        "images": len(d),
        "dice_mean": round(float(d.mean()), 4), "dice_median": round(float(np.median(d)), 4),
        "iou_mean": round(float(j.mean()), 4), "iou_median": round(float(np.median(j)), 4),
        f"dice_at_least_{GOOD_DICE:g}": round(float((d >= GOOD_DICE).mean()), 4),
        "fallbacks": fallbacks,
    }


def score(records: Sequence[Record], masks_dir: str, segment: Callable[[np.ndarray], tuple[np.ndarray, bool]]) -> dict:
    """Summary of `segment` (image -> (uint8 mask, fallback)) over `records` that have a reference mask."""
    dices, ious, fallbacks = [], [], 0
    for record in records:
        image = read_image(record.path)
        truth = read_truth(masks_dir, record.image_id, image.shape[:2])
        if truth is None:
            continue
        mask, fallback = segment(image)
        pred = mask > 127
        dices.append(dice(pred, truth))
        ious.append(iou(pred, truth))
        fallbacks += fallback
    if not dices:
        raise ValueError(f"no reference masks found in {masks_dir} for these images")
    return summarise(dices, ious, fallbacks)


def classical(config: ClassicalConfig) -> Callable[[np.ndarray], tuple[np.ndarray, bool]]:
    def run(image: np.ndarray) -> tuple[np.ndarray, bool]:
        result = segment_classical(image, config)
        return result.mask, result.fallback
    return run


def trained(segmenter) -> Callable[[np.ndarray], tuple[np.ndarray, bool]]:
    """A TrainedSegmenter (ml/segmentation/trained.py) as `score` wants it."""
    return segmenter.run


def sample(records: Sequence[Record], limit: int | None) -> list[Record]:
    """Every k-th record (by image id) so a limited run still spans the whole split."""
    ordered = sorted(records, key=lambda r: r.image_id)
    if not limit or limit >= len(ordered):
        return ordered
    return [ordered[int(i * len(ordered) / limit)] for i in range(limit)]


def descriptors_by_class(records: Sequence[Record]) -> dict[str, dict]:
    """Median descriptors of the classical masks per diagnosis (do they carry the ABCD signal?)."""
    from ml.segmentation.descriptors import describe

    by_class: dict[str, list] = {}
    for record in records:
        image = read_image(record.path)
        by_class.setdefault(record.dx, []).append(describe(image, segment_classical(image).mask))
    table = {}
    for dx, found in sorted(by_class.items()):
        table[dx] = {"images": len(found)} | {
            key: round(float(np.median([getattr(d, key) for d in found if getattr(d, key) is not None])), 3)
            for key in ("asymmetry", "border_irregularity", "solidity", "colours", "diameter_px")}
        table[dx]["colours_mean"] = round(float(np.mean([d.colours for d in found])), 2)
    return table


def markdown(results: dict[str, dict]) -> str:
    key = f"dice_at_least_{GOOD_DICE:g}"
    lines = [f"| | images | Dice mean | Dice median | IoU mean | IoU median | Dice >= {GOOD_DICE:g} | fallbacks |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {name} | {r['images']} | {r['dice_mean']:.3f} | {r['dice_median']:.3f} | {r['iou_mean']:.3f} | "
              f"{r['iou_median']:.3f} | {r[key]:.1%} | {r['fallbacks']} |" for name, r in results.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from ml.manifest import default_model_dir

    parser = argparse.ArgumentParser(prog="python -m ml segment-report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="bundle whose split.csv is used (default: ml/models/<CURRENT>)")
    parser.add_argument("--metadata", default=DEFAULT_METADATA)
    parser.add_argument("--images", default=DEFAULT_IMAGES)
    parser.add_argument("--masks", default=DEFAULT_MASKS)
    parser.add_argument("--method", choices=["classical", "trained", "both"], default="both")
    parser.add_argument("--segmenter", help="segmentation bundle (default: ml/models/<SEGMENTER>)")
    parser.add_argument("--splits", nargs="+", default=["val", "test"], choices=["train", "val", "test"])
    parser.add_argument("--tune", action="store_true", help="score the variants on the training split (only)")
    parser.add_argument("--limit", type=int, help="at most N images per split, spread over it (quick runs)")
    parser.add_argument("--by-class", action="store_true", help="median descriptors per diagnosis on the first split")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.masks):
        print(f"error: mask folder not found: {args.masks}", file=sys.stderr)
        return 2
    model_dir = os.path.abspath(args.model or default_model_dir())
    cv2.setNumThreads(1)
    split_of = read_split_csv(os.path.join(model_dir, "split.csv"))
    records = [r for r in load_metadata(args.metadata, [args.images]) if r.image_id in split_of]
    methods = ["classical"] if args.tune else (["classical", "trained"] if args.method == "both" else [args.method])
    segmenter = None
    if "trained" in methods:
        from ml.manifest import named_segmenter_dir
        from ml.segmentation.trained import TrainedSegmenter

        bundle = args.segmenter or named_segmenter_dir()
        if bundle is None:
            print("error: no segmentation bundle named (ml/models/SEGMENTER); pass --segmenter DIR", file=sys.stderr)
            return 2
        segmenter = TrainedSegmenter(bundle)
    runs: dict[str, tuple[str, Callable[[np.ndarray], tuple[np.ndarray, bool]]]] = (
        {f"train: {name}": ("train", classical(config)) for name, config in VARIANTS.items()} if args.tune
        else {(f"{split}: {method}" if len(methods) > 1 else split):
              (split, classical(ClassicalConfig()) if method == "classical" else trained(segmenter))
              for split in args.splits for method in methods})
    results: dict[str, dict] = {}
    for name, (split, run) in runs.items():
        started = time.time()
        results[name] = score(sample(records_in(records, split_of, split), args.limit), args.masks, run)
        results[name]["seconds"] = round(time.time() - started, 1)
        print(f"{name}: {results[name]}", file=sys.stderr, flush=True)
    names = {"classical": f"classical ({ClassicalConfig().to_dict()})",
             "trained": f"trained ({segmenter.method if segmenter else ''})"}
    header = (f"Segmenter(s) {'; '.join(names[m] for m in methods)}"
              f"{' (variants on the training split)' if args.tune else ''}, split of "
              f"{os.path.basename(model_dir)}\n\n")
    print(header + markdown(results))
    if args.by_class:
        split = "train" if args.tune else args.splits[0]
        table = descriptors_by_class(sample(records_in(records, split_of, split), args.limit))
        results["descriptors_by_class"] = table
        print(f"Median descriptors of the classical masks, {split} split (colours: also the mean)\n")
        print("| class | images | asymmetry | border irregularity | solidity | colours (median / mean) "
              "| diameter (px) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for dx, row in table.items():
            print(f"| {dx} | {row['images']} | {row['asymmetry']:.3f} | {row['border_irregularity']:.2f} | "
                  f"{row['solidity']:.3f} | {row['colours']:g} / {row['colours_mean']:.2f} | "
                  f"{row['diameter_px']:.0f} |")
    if args.json:
        with open(args.json, "w") as fh:
            variants = {k: v.to_dict() for k, v in VARIANTS.items()} if args.tune else None
            json.dump({"model_split": os.path.basename(model_dir), "results": results, "variants": variants}, fh,
                      indent=2)
    return 0
