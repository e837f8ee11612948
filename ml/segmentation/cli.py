"""`python -m ml segment`: lesion masks (and optionally descriptors) for a folder of images.

    python -m ml segment --images DIR --out DIR [--descriptors CSV] [--pixels-per-mm F]

For each image (*.jpg, *.jpeg, *.png in DIR, sorted by name) writes `<out>/<image_id>.png`: a
one-channel mask at the image's own size, 255 on the lesion and 0 elsewhere. With --descriptors,
one CSV row per image: the descriptors of ml/segmentation/descriptors.py (mm figures only with
--pixels-per-mm, the scale of every image in the folder), `fallback` = 1 when no lesion was
found (the mask is then a centred guess), and `error` for an image that could not be read.
Never stops at a bad image; exits 0 when every image was handled, 1 when some were not, 2 for a
problem with the arguments. No TensorFlow.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import cv2

from ml.cli import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, Progress, image_files, image_id
from ml.errors import InvalidImageError
from ml.segmentation.descriptors import REFERENCE_COLOURS
from ml.segmentation.segmenter import Segmentation, get_segmenter

COLUMNS = ["image_id", "method", "fallback", "height", "width", "area_px", "area_mm2", "asymmetry",
           "asymmetry_major_axis", "asymmetry_minor_axis", "border_irregularity", "solidity", "colours",
           *(f"colour_{name}" for name in REFERENCE_COLOURS), "diameter_px", "diameter_mm", "error"]


def descriptor_row(name: str, result: Segmentation | None, error: str = "") -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(COLUMNS, "")
    row["image_id"], row["error"] = name, error
    if result is None:
        return row
    data = result.to_dict()
    for key in COLUMNS:
        if key in data and data[key] is not None:
            row[key] = data[key]
    row["fallback"] = int(result.fallback)
    if data["asymmetry_axes"]:
        row["asymmetry_major_axis"], row["asymmetry_minor_axis"] = data["asymmetry_axes"]
    for colour, share in data["colour_shares"].items():
        row[f"colour_{colour}"] = share
    return row


def main(argv: list[str] | None = None) -> int:
    from ml.preprocessing import read_image

    parser = argparse.ArgumentParser(prog="python -m ml segment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="folder of *.jpg, *.jpeg, *.png images")
    parser.add_argument("--out", required=True, help="folder for the <image_id>.png masks")
    parser.add_argument("--descriptors", help="also write the descriptors of every image to this CSV")
    parser.add_argument("--pixels-per-mm", type=float, help="the images' scale, for areas in mm² and diameters in mm")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.images):
        print(f"error: {args.images} is not a folder", file=sys.stderr)
        return EXIT_USAGE
    if args.pixels_per_mm is not None and not args.pixels_per_mm > 0:
        print("error: --pixels-per-mm must be positive", file=sys.stderr)
        return EXIT_USAGE
    paths = image_files(args.images)
    if not paths:
        print(f"error: no *.jpg, *.jpeg or *.png images in {args.images}", file=sys.stderr)
        return EXIT_USAGE
    os.makedirs(args.out, exist_ok=True)
    segmenter, progress, failures, rows = get_segmenter(), Progress(len(paths), "segment"), 0, []
    for path in paths:
        name = image_id(path)
        try:
            image = read_image(path)
        except (InvalidImageError, OSError) as exc:
            failures += 1
            print(f"{os.path.basename(path)}: {exc}", file=sys.stderr)
            rows.append(descriptor_row(name, None, f"unreadable image: {exc}"))
            progress.step()
            continue
        result = segmenter.analyse(image, pixels_per_mm=args.pixels_per_mm)
        if not cv2.imwrite(os.path.join(args.out, name + ".png"), result.mask):
            failures += 1
            rows.append(descriptor_row(name, None, "the mask could not be written"))
        else:
            rows.append(descriptor_row(name, result))
        progress.step()
    if args.descriptors:
        os.makedirs(os.path.dirname(os.path.abspath(args.descriptors)), exist_ok=True)
        with open(args.descriptors, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    print(f"{len(paths) - failures} of {len(paths)} images segmented; masks in {args.out}", file=sys.stderr)
    return EXIT_SOME_FAILED if failures else EXIT_OK
