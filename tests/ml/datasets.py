"""Small generated HAM10000-style data sets for training tests (no ../shared needed)."""

from __future__ import annotations

import csv
import os

import cv2
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


def disc_mask(height: int, width: int, centre: tuple[int, int], radius: int) -> np.ndarray:
    """A lesion mask (uint8, 255 inside): a filled disc at `centre` (row, column)."""
    mask = np.zeros((height, width), np.uint8)
    cv2.circle(mask, (centre[1], centre[0]), radius, 255, thickness=-1)
    return mask


def generated_masks(images: str, folder: str) -> None:
    """A disc a little off centre for every image in `images`, named as HAM10000's masks are."""
    os.makedirs(folder)
    for name in os.listdir(images):
        image = cv2.imread(os.path.join(images, name))
        height, width = image.shape[:2]
        mask = disc_mask(height, width, (height // 3, width // 3), min(height, width) // 4)
        cv2.imwrite(os.path.join(folder, name.rsplit(".", 1)[0] + "_segmentation.png"), mask)
