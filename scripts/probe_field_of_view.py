"""Validation only (or the second selection set, `--split select`): how bundles cope with the
dark circular frame that many dermatoscopes (and phone adapters) leave around the field of view,
and what the crop to the field of view (ml.field_of_view) gives back.

HAM10000's copies are mostly cropped to the skin; images from other sources often are not. Each
validation image is framed synthetically, as a dermatoscope's round field of view would frame it,
and scored image alone (plain argmax, calibrated probabilities) by each bundle through its own
preprocessing (a bundle whose manifest declares `field_of_view` crops the frame itself):

- "contact": `ml.screening.perturb.round_field_of_view`, the stand-in `ml screening-report`
  measures the not_dermoscopic check on (a centred square, black outside its inscribed circle);
- "rim cut": black outside a circle of 1.15x half the image's shorter side (the corners and the
  ends of the long side go dark, and the skin there is lost);
- "padded 1.2" / "padded 1.5": the whole image on a black canvas 1.2x / 1.5x its size, black
  outside the circle inscribed in the canvas (the view is smaller in the frame; at 1.5 only the
  image's own corners are lost, at 1.2 its ends too).

`--looks` adds other dermatoscopes' looks without a frame (`ml.screening.perturb`, fixed
parameters): a warm and a cool white balance (per-channel gains 1.15 / 1.0 / 0.85 and the
reverse), a higher magnification (the centre 70% of each side) and hard JPEG (quality 30).

    .venv/bin/python scripts/probe_field_of_view.py --models ml/models/<base> [ml/models/<other> ...] \\
        [--crop-in-front] [--looks] [--bootstrap 1000]

Prints how many of all the images have dark corners already, and a table of balanced accuracy /
malignant AUC per condition and bundle; `--crop-in-front` adds the first bundle with the crop run
in front of its preprocessing (the first probe's column), `--bootstrap N` the share of N lesion
resamples in which each later bundle beats the first (ml.compare.paired_bootstrap). Needs no
TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ml.compare import DEFAULT_IMAGES, DEFAULT_METADATA, figures, paired_bootstrap, share_of_resamples
from ml.data import load_metadata, read_split_csv, records_in
from ml.field_of_view import crop_to_field_of_view
from ml.inference import Classifier
from ml.preprocessing import read_image
from ml.screening.perturb import colour_cast, framed, jpeg_compressed, round_field_of_view, zoomed


def dark_corner_count(image_rgb: np.ndarray, threshold: float = 30.0) -> int:
    """How many of the four corner patches (1/15 of the shorter side) are on average darker than
    `threshold`."""
    grey = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
    k = max(2, min(grey.shape) // 15)
    patches = (grey[:k, :k], grey[:k, -k:], grey[-k:, :k], grey[-k:, -k:])
    return sum(float(patch.mean()) < threshold for patch in patches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="bundle folders; the first is the baseline")
    parser.add_argument("--metadata", default=DEFAULT_METADATA)
    parser.add_argument("--images", default=DEFAULT_IMAGES)
    parser.add_argument("--split-csv", help="default: the first bundle's split.csv")
    parser.add_argument("--split", default="val", choices=["val", "select"],
                        help="select: the second selection set of a split made by `ml carve-selection`")
    parser.add_argument("--crop-in-front", action="store_true",
                        help="also score the first bundle with the crop run in front of its preprocessing")
    parser.add_argument("--looks", action="store_true",
                        help="also other dermatoscopes' looks without a frame: white balance, magnification, JPEG")
    parser.add_argument("--bootstrap", type=int, default=0, help="lesion resamples for the paired comparison")
    parser.add_argument("--seed", type=int, default=20261125)
    args = parser.parse_args()

    records = load_metadata(args.metadata, [args.images])
    judged = records_in(records, read_split_csv(args.split_csv or os.path.join(args.models[0], "split.csv")), args.split)
    if not judged:
        parser.error(f"the split has no {args.split} images")
    corners = np.zeros(5, int)
    for record in records:
        corners[dark_corner_count(read_image(record.path))] += 1
    print(f"all {len(records)} images, by number of dark corners 0-4: {corners.tolist()}\n")

    labels = np.array([record.label for record in judged])
    lesions = [record.lesion_id for record in judged]
    classifiers = [Classifier(model) for model in args.models]
    images = [read_image(record.path) for record in judged]

    def probabilities(classifier: Classifier, batch: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([
            classifier.probabilities(np.stack([classifier.prepare(image) for image in batch[start:start + 64]]))
            for start in range(0, len(batch), 64)])

    def cell(probs: np.ndarray) -> str:
        measured = figures(labels, probs)
        return f"{measured['balanced_accuracy']:.3f} / {measured['malignant_auc']:.3f}"

    conditions = {
        "as stored": lambda image: image,
        "contact (screening-report's)": round_field_of_view,
        "rim cut": lambda image: framed(image, 1.0, radius_scale=1.15),
        "padded 1.2": lambda image: framed(image, 1.2),
        "padded 1.5": lambda image: framed(image, 1.5),
    }
    if args.looks:
        conditions |= {
            "warm white balance": lambda image: colour_cast(image, (1.15, 1.0, 0.85)),
            "cool white balance": lambda image: colour_cast(image, (0.85, 1.0, 1.15)),
            "magnified (centre 70%)": lambda image: zoomed(image, 0.7),
            "JPEG quality 30": lambda image: jpeg_compressed(image, 30),
        }
    names = [classifier.model_version for classifier in classifiers]
    columns = [f"{names[0]} + crop in front"] if args.crop_in_front else []
    columns += names[1:]
    wins = [f"{name} higher in (bal. acc. / AUC)" for name in names[1:]] if args.bootstrap else []
    print(f"{'validation' if args.split == 'val' else 'selection set'} ({len(judged)} images), image alone, plain argmax; "
          "cells: balanced accuracy / malignant AUC")
    print(f"| condition | {names[0]} | " + " | ".join(columns + wins + ["images the crop changes"]) + " |")
    print("|---" * (3 + len(columns) + len(wins)) + "|")
    for name, make in conditions.items():
        shown = [make(image) for image in images]
        cropped = [crop_to_field_of_view(image)[0] for image in shown]
        changed = sum(a is not b for a, b in zip(shown, cropped))
        base = probabilities(classifiers[0], shown)
        others = [probabilities(classifier, shown) for classifier in classifiers[1:]]
        cells = [cell(base)] + ([cell(probabilities(classifiers[0], cropped))] if args.crop_in_front else [])
        cells += [cell(probs) for probs in others]
        for probs in others if args.bootstrap else []:
            share = paired_bootstrap(labels, lesions, base, probs, n_resamples=args.bootstrap, seed=args.seed)
            cells.append(f"{share_of_resamples(share['balanced_accuracy'])} / {share_of_resamples(share['malignant_auc'])}")
        print(f"| {name} | " + " | ".join(cells + [str(changed)]) + " |")


if __name__ == "__main__":
    main()
