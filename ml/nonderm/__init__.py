"""A labelled corpus of NON-dermatoscopic images, generated offline and deterministically from a seed.

It measures the out-of-distribution check ("does this look like a dermatoscopic image of a skin
lesion?") on the kinds of wrong uploads a clinic produces: documents and invoices (often phone
photos of them), screenshots, charts, drawings, other medical images, real photographs, and
synthetic gradients, noise, shapes, patterns and flat fields, some in skin and brown tones.

    python -m ml nonderm --out DIR [--per-kind N] [--seed S] [--kinds document,photo]

Each image depends only on (seed, kind, index), so a corpus of 50 per kind is the first 50 of a
corpus of 100. No TensorFlow; scikit-image (``dev`` extra) is needed only for the photo kinds.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from ml.nonderm.common import fit
from ml.nonderm.documents import make_document, make_invoice, make_screenshot, make_sketch
from ml.nonderm.graphics import make_chart, make_drawing
from ml.nonderm.medical import make_histology, make_radiology
from ml.nonderm.photos import make_photo, make_photo_crop, skimage_available
from ml.nonderm.synthetic import make_flat, make_gradient, make_noise, make_pattern, make_shapes

DEFAULT_SEED = 20261202
DEFAULT_PER_KIND = 100

Maker = Callable[[np.random.Generator, int], "np.ndarray | None"]
_MAKERS: dict[str, Maker] = {
    "document": make_document,
    "invoice": make_invoice,
    "screenshot": make_screenshot,
    "sketch": make_sketch,
    "chart": make_chart,
    "drawing": make_drawing,
    "gradient": make_gradient,
    "noise": make_noise,
    "shapes": make_shapes,
    "pattern": make_pattern,
    "flat": make_flat,
    "radiology": make_radiology,
    "histology": make_histology,
    "photo": make_photo,
    "photo_crop": make_photo_crop,
}
KINDS: tuple[str, ...] = tuple(_MAKERS)
PHOTO_KINDS: tuple[str, ...] = ("photo", "photo_crop")
# Continuous-tone kinds are written as JPEG (what phones and most uploads produce; PNG of noisy pixels is
# huge and slow); crisp graphics as lossless PNG, so those files hold exactly the generated pixels.
JPEG_KINDS: frozenset[str] = frozenset(
    {"photo", "photo_crop", "noise", "histology", "radiology", "gradient", "flat", "sketch"}
)
JPEG_QUALITY = 92


@dataclass(frozen=True)
class NondermImage:
    name: str  # unique, e.g. "document-0007"
    kind: str  # one of KINDS
    image: np.ndarray  # RGB uint8, H x W x 3


def image_rng(seed: int, kind: str, index: int) -> np.random.Generator:
    """The generator for one image: keyed by kind name (not position), so adding kinds changes nothing."""
    return np.random.default_rng([int(seed), zlib.crc32(kind.encode()), int(index)])


def generate(
    per_kind: int = DEFAULT_PER_KIND, seed: int = DEFAULT_SEED, kinds: tuple[str, ...] | list[str] = KINDS
) -> Iterator[NondermImage]:
    """Yield ``per_kind`` images of each kind, kind by kind; the photo kinds yield none without scikit-image."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown kinds {unknown}; choose from {', '.join(KINDS)}")
    for kind in kinds:
        for index in range(per_kind):
            image = _MAKERS[kind](image_rng(seed, kind, index), index)
            if image is None:  # a photo kind without its source photos
                break
            yield NondermImage(name=f"{kind}-{index:04d}", kind=kind, image=fit(image))


def file_name(item: NondermImage) -> str:
    return f"{item.kind}/{item.name}.{'jpg' if item.kind in JPEG_KINDS else 'png'}"


def write_corpus(
    out_dir: str, per_kind: int = DEFAULT_PER_KIND, seed: int = DEFAULT_SEED, kinds: tuple[str, ...] | list[str] = KINDS
) -> dict[str, int]:
    """Write ``<kind>/<name>.png|.jpg`` and ``index.csv`` (name,kind,file,width,height); return counts per kind."""
    counts = {kind: 0 for kind in kinds}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "index.csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "kind", "file", "width", "height"])
        for item in generate(per_kind, seed, kinds):
            relative = file_name(item)
            path = os.path.join(out_dir, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            params = (
                [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if path.endswith(".jpg") else [cv2.IMWRITE_PNG_COMPRESSION, 1]
            )
            if not cv2.imwrite(path, cv2.cvtColor(item.image, cv2.COLOR_RGB2BGR), params):
                raise OSError(f"could not write {path}")
            height, width = item.image.shape[:2]
            writer.writerow([item.name, item.kind, relative, width, height])
            counts[item.kind] += 1
    missing = [kind for kind in kinds if kind in PHOTO_KINDS and per_kind and not counts[kind]]
    if missing and not skimage_available():
        print(
            f"note: scikit-image is not installed, so {', '.join(missing)} are empty "
            "(pip install the 'dev' extra for them)",
            file=sys.stderr,
        )
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml nonderm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--per-kind", type=int, default=DEFAULT_PER_KIND, help="images per kind (default %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default %(default)s)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of: %(default)s")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if args.per_kind < 0 or set(kinds) - set(KINDS):
        parser.error(f"--per-kind must be >= 0 and --kinds a subset of {','.join(KINDS)}")
    started = time.perf_counter()
    counts = write_corpus(args.out, args.per_kind, args.seed, kinds)
    for kind, count in counts.items():
        print(f"{kind:12s} {count:5d}")
    print(f"{sum(counts.values())} images in {time.perf_counter() - started:.1f} s -> {args.out}")
    return 0
