"""Real photographs bundled with scikit-image and matplotlib: whole (``photo``) and cropped (``photo_crop``).

Only images that ship inside the wheels are used (no download). scikit-image is optional (``dev``
extra): without it both kinds yield nothing, because the two or three matplotlib photos alone would
make a lopsided corpus.
"""

from __future__ import annotations

import os
from functools import lru_cache

import cv2
import numpy as np

from ml.nonderm.common import MAX_ASPECT, MAX_SIDE, MIN_ASPECT, MIN_SIDE, fit

# scikit-image loaders whose files are inside the scikit-image wheel. (``skin``, ``eagle``, ``lily`` and
# other data sets are fetched from the internet by pooch, so they are deliberately not listed.)
SKIMAGE_PHOTOS: tuple[str, ...] = (
    "astronaut",
    "brick",
    "camera",
    "cell",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "microaneurysms",
    "moon",
    "page",
    "retina",
    "rocket",
    "stereo_motorcycle",
    "text",
)
MATPLOTLIB_PHOTOS: tuple[str, ...] = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 RGB from grey, boolean, float or RGBA (alpha composited on white)."""
    image = np.asarray(image)
    if image.dtype == bool:
        image = np.where(image, 0, 255).astype(np.uint8)  # scikit-image's horse: True is the silhouette
    elif image.dtype != np.uint8:
        image = np.clip(image * (255 if image.max() <= 1 else 1), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255
        image = (image[:, :, :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(image[:, :, :3])


def skimage_available() -> bool:
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=1)
def source_photos() -> tuple[tuple[str, np.ndarray], ...]:
    """(name, RGB uint8) for every bundled photo that loads here; empty without scikit-image."""
    if not skimage_available():
        return ()
    import matplotlib
    import skimage.data
    from PIL import Image

    photos = []
    for name in SKIMAGE_PHOTOS:
        try:
            image = getattr(skimage.data, name)()
        except Exception:  # noqa: BLE001, S112 - a loader missing or failing in this version: skip that photo
            continue
        photos.append((name, _as_rgb(image[0] if isinstance(image, tuple) else image)))
    for filename in MATPLOTLIB_PHOTOS:
        path = os.path.join(matplotlib.get_data_path(), "sample_data", filename)
        if os.path.isfile(path):
            with Image.open(path) as handle:
                photos.append((os.path.splitext(filename)[0], _as_rgb(np.asarray(handle.convert("RGBA")))))
    return tuple(photos)


def _pad_to_aspect(image: np.ndarray) -> np.ndarray:
    """Extend the edges of a very wide or tall photo (a logo banner) to 2:1, so it stays whole."""
    h, w = image.shape[:2]
    pad_h, pad_w = max(0, int(np.ceil(w / MAX_ASPECT)) - h), max(0, int(np.ceil(h * MIN_ASPECT)) - w)
    if not pad_h and not pad_w:
        return image
    top, left = pad_h // 2, pad_w // 2
    return cv2.copyMakeBorder(image, top, pad_h - top, left, pad_w - left, cv2.BORDER_REPLICATE)


def make_photo(rng: np.random.Generator, index: int) -> np.ndarray | None:
    """A whole source photo at a random size, sometimes rotated by a right angle or mirrored."""
    sources = source_photos()
    if not sources:
        return None
    _, image = sources[index % len(sources)]
    if index >= len(sources):  # the first pass shows every photo upright; later passes vary it
        image = np.rot90(image, int(rng.integers(0, 4))) if rng.random() < 0.5 else image
        image = image[:, ::-1] if rng.random() < 0.5 else image
    image = _pad_to_aspect(np.ascontiguousarray(image))
    h, w = image.shape[:2]
    long_side = rng.uniform(max(MIN_SIDE * max(h, w) / min(h, w), 200), MAX_SIDE)
    scale = long_side / max(h, w)
    stretch = rng.uniform(0.9, 1.1)
    size = (max(MIN_SIDE, int(w * scale * stretch)), max(MIN_SIDE, int(h * scale / stretch)))
    image = cv2.resize(
        np.ascontiguousarray(image), size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    )
    return fit(image)


def _colour_shift(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Hue, saturation, brightness, contrast and gamma changes, plus a tint for grey photos."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[:, :, 0] = (hsv[:, :, 0] + rng.uniform(-15, 15)) % 180
    hsv[:, :, 1] *= rng.uniform(0.6, 1.4)
    image = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    if rng.random() < 0.3:
        image *= rng.uniform(0.8, 1.2, 3)
    image = (image - 128) * rng.uniform(0.7, 1.3) + 128 + rng.uniform(-30, 30)
    image = 255 * (np.clip(image, 0, 255) / 255) ** rng.uniform(0.7, 1.4)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_photo_crop(rng: np.random.Generator, index: int) -> np.ndarray | None:
    """A random crop/zoom of a source photo, turned a little, maybe mirrored, with a colour shift."""
    sources = source_photos()
    if not sources:
        return None
    _, image = sources[index % len(sources)]
    h, w = image.shape[:2]
    area = rng.uniform(0.08, 0.6)
    aspect = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
    crop_w = max(48.0, min(w, np.sqrt(area * w * h * aspect)))
    crop_h = max(48.0, min(h, crop_w / aspect))
    cx, cy = rng.uniform(crop_w / 2, w - crop_w / 2 + 1e-3), rng.uniform(crop_h / 2, h - crop_h / 2 + 1e-3)
    out_w = int(np.clip(crop_w * rng.uniform(0.8, 3.0), MIN_SIDE, MAX_SIDE))
    out_h = int(np.clip(out_w * crop_h / crop_w, MIN_SIDE, MAX_SIDE))
    matrix = cv2.getRotationMatrix2D((cx, cy), rng.uniform(-20, 20) if rng.random() < 0.5 else 0.0, out_w / crop_w)
    matrix[:, 2] += (out_w / 2 - cx, out_h / 2 - cy)
    crop = cv2.warpAffine(image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.2:
        crop = crop[::-1]
    return fit(_colour_shift(rng, np.ascontiguousarray(crop)))
