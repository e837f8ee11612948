"""Other medical images a clinician might pick by mistake: radiographs, MRI, ultrasound, histology.

They share the clinical context (and, for histology, pink/purple/brown colours) with dermoscopy,
which makes them useful hard negatives. All synthetic except the MRI slice matplotlib ships.
"""

from __future__ import annotations

import gzip
import itertools
import os
from functools import lru_cache

import cv2
import numpy as np

from ml.nonderm.common import add_noise, random_size
from ml.nonderm.synthetic import value_noise


@lru_cache(maxsize=1)
def _mri_slice() -> np.ndarray | None:
    """The 256x256 head MRI in matplotlib's sample data (big-endian uint16), scaled to [0, 1]."""
    import matplotlib

    path = os.path.join(matplotlib.get_data_path(), "sample_data", "s1045.ima.gz")
    if not os.path.isfile(path):
        return None
    with gzip.open(path) as handle:
        pixels = np.frombuffer(handle.read(), ">u2").reshape(256, 256).astype(np.float32)
    return pixels / max(float(np.percentile(pixels, 99.5)), 1.0)


def _chest_xray(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A crude frontal chest radiograph: body, dark lungs, spine, ribs, heart, clavicles."""
    image = np.zeros((height, width), np.float32)
    cx = width / 2 + rng.normal(0, width * 0.02)
    cv2.ellipse(image, (int(cx), int(height * 0.6)), (int(width * 0.42), int(height * 0.55)), 0, 0, 360, 0.45, -1)
    for side in (-1, 1):
        lung = (int(cx + side * width * 0.17), int(height * 0.5))
        cv2.ellipse(image, lung, (int(width * 0.13), int(height * 0.3)), side * 5, 0, 360, 0.15, -1)
        for k in range(int(rng.integers(8, 12))):  # ribs: arches from the spine, out and down the side
            y = int(height * (0.24 + 0.055 * k))
            centre = (int(cx + side * width * 0.14), y + int(height * 0.05))
            start, end = (200, 360) if side > 0 else (180, 340)  # upper half of an ellipse, open towards the spine
            cv2.ellipse(
                image,
                centre,
                (int(width * (0.16 + 0.005 * k)), int(height * 0.07)),
                0,
                start,
                end,
                0.6,
                max(2, width // 90),
            )
        cv2.line(
            image,
            (int(cx), int(height * 0.18)),
            (int(cx + side * width * 0.3), int(height * 0.14)),
            0.75,
            max(3, width // 60),
        )
    cv2.ellipse(
        image, (int(cx + width * 0.05), int(height * 0.62)), (int(width * 0.12), int(height * 0.14)), 0, 0, 360, 0.6, -1
    )
    cv2.rectangle(image, (int(cx - width * 0.025), 0), (int(cx + width * 0.025), height), 0.8, -1)
    image = cv2.GaussianBlur(image, (0, 0), max(1.0, width / 120))
    return image * (0.85 + 0.3 * value_noise(rng, width, height, 3, 3))


def _hand_xray(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Finger and metacarpal bones as bright rods inside a grey soft-tissue outline."""
    image = np.zeros((height, width), np.float32)
    wrist = (width / 2, height * 0.95)
    for k in range(5):
        angle = np.deg2rad(-60 + k * 28 + rng.normal(0, 4))
        length = height * (0.28 if k == 0 else 0.42) * rng.uniform(0.9, 1.1)
        direction = np.array([np.sin(angle), -np.cos(angle)])
        start = np.array(wrist) + direction * height * 0.1
        joints = [start + direction * length * f for f in (0, 0.45, 0.7, 0.88, 1.0)]
        tip = joints[-1] + direction * height * 0.03
        cv2.line(image, tuple(map(int, start)), tuple(map(int, tip)), 0.3, max(10, width // 9))
        gap = height * 0.012
        for a, b in itertools.pairwise(joints):
            cv2.line(
                image,
                tuple(map(int, a + direction * gap)),
                tuple(map(int, b - direction * gap)),
                0.85,
                max(4, width // 28),
            )
    cv2.ellipse(image, (int(wrist[0]), int(height * 0.88)), (int(width * 0.22), int(height * 0.16)), 0, 0, 360, 0.3, -1)
    return cv2.GaussianBlur(image, (0, 0), max(1.0, width / 200))


def _ultrasound(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A B-mode sector: speckle inside a fan on black, with a few dark cyst-like regions."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    apex = (width / 2, -height * 0.05)
    radius, angle = np.hypot(xs - apex[0], ys - apex[1]), np.arctan2(xs - apex[0], ys - apex[1])
    fan = (np.abs(angle) < np.deg2rad(rng.uniform(30, 45))) & (radius > height * 0.08) & (radius < height * 0.98)
    speckle = rng.rayleigh(0.35, (height, width)).astype(np.float32)
    speckle = cv2.GaussianBlur(speckle, (0, 0), 1.2) * (0.4 + 0.8 * value_noise(rng, width, height, 3, 3))
    for _ in range(int(rng.integers(1, 4))):
        c = (int(rng.uniform(0.3, 0.7) * width), int(rng.uniform(0.3, 0.8) * height))
        cv2.ellipse(
            speckle,
            c,
            (int(width * rng.uniform(0.04, 0.12)), int(height * rng.uniform(0.03, 0.08))),
            float(rng.uniform(0, 180)),
            0,
            360,
            0.05,
            -1,
        )
    return np.where(fan, speckle * np.exp(-radius / (height * 1.5)), 0)


def make_radiology(rng: np.random.Generator, index: int) -> np.ndarray:
    """Greyscale radiology: a chest or hand radiograph, an ultrasound sector, or the sample MRI slice."""
    width, height = random_size(rng, 160, 800)
    style = index % 4
    if style == 3 and _mri_slice() is not None:
        mri = _mri_slice()
        angle, zoom = rng.uniform(-15, 15), rng.uniform(0.8, 1.2)
        matrix = cv2.getRotationMatrix2D((128, 128), angle, zoom)
        mri = cv2.warpAffine(mri, matrix, (256, 256))
        image = np.clip(cv2.resize(mri, (width, height), interpolation=cv2.INTER_CUBIC), 0, None) ** rng.uniform(
            0.7, 1.3
        )
    elif style == 2:
        image = _ultrasound(rng, width, height)
    elif style == 1:
        image = _hand_xray(rng, width, height)
    else:
        image = _chest_xray(rng, width, height)
    grey = np.clip(image * 255, 0, 255)
    if style < 2 and rng.random() < 0.3:
        grey = 255 - grey  # some viewers invert radiographs
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    if rng.random() < 0.2:
        rgb = rgb * np.array([1.0, 0.95, 0.85])  # a monitor's warm cast in a phone photo
    return add_noise(rng, rgb, rng.uniform(1, 6))


def make_histology(rng: np.random.Generator, index: int) -> np.ndarray:
    """An H&E-like section (pink stroma, purple nuclei, white spaces) or, every third, brown IHC staining."""
    width, height = random_size(rng)
    ihc = index % 3 == 2
    background = np.array((235, 238, 240) if ihc else (240, 200, 220), np.float32)
    stroma = np.array((200, 190, 200) if ihc else (225, 130, 175), np.float32) + rng.normal(0, 8, 3)
    nucleus = np.array((70, 80, 150) if ihc else (90, 40, 130), np.float32) + rng.normal(0, 8, 3)
    field = value_noise(rng, width, height, 5, int(rng.integers(3, 8)))
    tissue = (field > rng.uniform(0.25, 0.45)).astype(np.float32)
    fibres = value_noise(rng, width, height, 2, 16) * 0.35
    image = background + (tissue * (0.65 + fibres))[:, :, None] * (stroma - background)
    canvas = image.astype(np.float32)
    count = int(width * height / rng.uniform(250, 900))
    centres = rng.random((count, 2)) * [width, height]
    keep = tissue[centres[:, 1].astype(int), centres[:, 0].astype(int)] > 0
    for x, y in centres[keep]:
        axes = (int(rng.uniform(2, 6)), int(rng.uniform(2, 5)))
        colour = nucleus
        if ihc and rng.random() < 0.4:
            colour = np.array((120, 75, 40), np.float32) + rng.normal(0, 10, 3)  # DAB-positive brown
        cv2.ellipse(canvas, (int(x), int(y)), axes, float(rng.uniform(0, 180)), 0, 360, colour.tolist(), -1)
    canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.6, 1.4))
    return add_noise(rng, canvas, rng.uniform(2, 6))
