"""python -m ml int8-check: how often the bundle's int8 variant agrees with fp32 on THIS CPU.

The agreement depends on the CPU's int8 kernels (ml/cpu.py), so the figure measured when the
bundle was packaged holds only for CPUs of the same class. This measures it on the bundle's own
validation split (split.csv) and, with --record, stores it in the manifest under
checks.int8.agreement_by_cpu.<class>, where inference and the tests read it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from ml.cpu import int8_kernel_class
from ml.data import read_split_csv
from ml.inference import Classifier
from ml.manifest import default_model_dir, load_manifest, write_manifest

DEFAULT_IMAGES = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "ham10000", "images")


def measure_agreement(
    model_dir: str, images_dir: str, *, split: str = "val", batch_size: int = 64
) -> tuple[float, int]:
    """(argmax agreement of int8 with fp32, images) on one split of the bundle's split.csv."""
    split_of = read_split_csv(os.path.join(model_dir, "split.csv"))
    image_ids = sorted(image_id for image_id, part in split_of.items() if part == split)
    fp32, int8 = Classifier(model_dir, variant="fp32"), Classifier(model_dir, variant="int8")
    agree = 0
    for start in range(0, len(image_ids), batch_size):
        paths = [Path(images_dir) / f"{image_id}.jpg" for image_id in image_ids[start : start + batch_size]]
        batch = np.stack([fp32.prepare(path.read_bytes()) for path in paths])
        agree += int((fp32.probabilities(batch).argmax(1) == int8.probabilities(batch).argmax(1)).sum())
    return agree / len(image_ids), len(image_ids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml int8-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model bundle (default: the served one)")
    parser.add_argument("--images", default=os.path.normpath(DEFAULT_IMAGES), help="folder with <image_id>.jpg")
    parser.add_argument("--record", action="store_true", help="store the figure in the bundle's manifest")
    args = parser.parse_args(argv)
    model_dir = os.path.abspath(args.model or default_model_dir())
    cpu_class = int8_kernel_class()
    agreement, n_images = measure_agreement(model_dir, args.images)
    print(f"int8 vs fp32 argmax agreement on {n_images} validation images, CPU class {cpu_class}: {agreement:.4f}")
    if args.record:
        manifest = load_manifest(model_dir)
        manifest["checks"]["int8"].setdefault("agreement_by_cpu", {})[cpu_class] = round(agreement, 4)
        print(f"recorded in {write_manifest(model_dir, manifest)}")
    return 0
