"""Small generated HAM10000-style data sets for training tests (no ../shared needed)."""

from __future__ import annotations

import csv
import os

import numpy as np

from ml.classes import CLASSES
from tests.conftest import encode, make_image


CONTEXT_SITES = ("face", "back", "trunk", "scalp", "lower extremity", "chest", "hand")  # one per class


def generated_dataset(root: str, *, per_class: int = 10, width: int = 80, height: int = 60,
                      context: bool = False) -> tuple[str, str]:
    """(metadata CSV, image folder): `per_class` one-image lesions a class, each class with a colour cue;
    with `context`, also HAM10000's age, sex and localization columns, the site telling the class."""
    images = os.path.join(root, "images")
    os.makedirs(images)
    csv_path = os.path.join(root, "metadata.csv")
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["lesion_id", "image_id", "dx", *(["age", "sex", "localization"] if context else [])])
        for k, dx in enumerate(CLASSES):
            for lesion in range(per_class):
                image_id = f"GEN_{k}_{lesion}"
                img = make_image(width, height, seed=100 * k + lesion)
                img[..., k % 3] = np.clip(img[..., k % 3].astype(int) + 40 * k, 0, 255)  # a class cue
                with open(os.path.join(images, image_id + ".jpg"), "wb") as out:
                    out.write(encode(img))
                extra = [str(20 + 10 * k), ("male", "female")[lesion % 2], CONTEXT_SITES[k]] if context else []
                writer.writerow([f"L_{k}_{lesion}", image_id, dx, *extra])
    return csv_path, images
