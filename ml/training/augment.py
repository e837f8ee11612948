"""Image-space augmentation for training (NumPy + OpenCV, uint8 RGB in and out).

Dermatoscopic images have no canonical orientation, so every flip and rotation is a
valid view; random-resized crops with aspect jitter cover other cameras' framing
(HAM10000 is 4:3, many sources are square); colour jitter covers other dermatoscopes and
lighting; an occasional down-and-up resample covers lower-resolution sources; a random round
frame (`light_framed`, `light_framed_quarter`) covers dermatoscopes that leave a black frame
around their field of view; another white balance and harder JPEG (`light_looks`) cover other
dermatoscopes' and cameras' colour and compression.
"""

from __future__ import annotations

from functools import partial

import cv2
import numpy as np

from ml.screening.perturb import colour_cast, framed, jpeg_compressed


def random_resized_crop(img: np.ndarray, rng: np.random.Generator, scale=(0.55, 1.0), ratio=(3 / 4, 4 / 3)) -> np.ndarray:
    h, w = img.shape[:2]
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        cw = int(round(np.sqrt(target * aspect)))
        ch = int(round(np.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            x = int(rng.integers(0, w - cw + 1))
            y = int(rng.integers(0, h - ch + 1))
            return img[y : y + ch, x : x + cw]
    return img


def random_rotate(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    angle = float(rng.uniform(0, 360))
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    # Reflect rather than fill black: black corners would be a shortcut feature.
    return cv2.warpAffine(img, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def colour_jitter(img: np.ndarray, rng: np.random.Generator, brightness=0.2, contrast=0.2, saturation=0.2, hue=8) -> np.ndarray:
    out = img.astype(np.float32)
    out = out * rng.uniform(1 - brightness, 1 + brightness)
    mean = out.mean()
    out = (out - mean) * rng.uniform(1 - contrast, 1 + contrast) + mean
    hsv = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 1] *= rng.uniform(1 - saturation, 1 + saturation)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-hue, hue)) % 180  # OpenCV hue is 0..179
    hsv = np.clip(hsv, 0, [179, 255, 255]).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def maybe_resample(img: np.ndarray, rng: np.random.Generator, p: float = 0.2) -> np.ndarray:
    """With probability p, down-sample and back up: a lower-resolution source."""
    if rng.random() >= p:
        return img
    h, w = img.shape[:2]
    f = rng.uniform(0.5, 0.9)
    small = cv2.resize(img, (max(8, int(w * f)), max(8, int(h * f))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random training view of an RGB uint8 image."""
    out = random_resized_crop(img, rng)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.5:
        out = out[::-1, :]
    out = random_rotate(np.ascontiguousarray(out), rng)
    out = colour_jitter(out, rng)
    return np.ascontiguousarray(maybe_resample(out, rng))


def random_affine(img: np.ndarray, rng: np.random.Generator, max_shear: float = 0.15,
                  scale=(0.9, 1.1)) -> np.ndarray:
    """One warp: an arbitrary rotation, a small shear and scale, about the image centre."""
    h, w = img.shape[:2]
    angle = np.deg2rad(rng.uniform(0, 360))
    cos, sin = np.cos(angle), np.sin(angle)
    shear = rng.uniform(-max_shear, max_shear)
    zoom = rng.uniform(*scale)
    linear = zoom * np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]])
    centre = np.array([w / 2, h / 2])
    matrix = np.hstack([linear, (centre - linear @ centre)[:, None]]).astype(np.float32)
    return cv2.warpAffine(img, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def cutout(img: np.ndarray, rng: np.random.Generator, max_fraction: float = 0.25) -> np.ndarray:
    """Grey out one random rectangle (up to `max_fraction` of each side), so that no single
    patch of the lesion is indispensable."""
    h, w = img.shape[:2]
    ch = int(rng.integers(1, max(2, int(h * max_fraction)) + 1))
    cw = int(rng.integers(1, max(2, int(w * max_fraction)) + 1))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = img.copy()
    out[y : y + ch, x : x + cw] = np.uint8(127)
    return out


def augment_end_to_end(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random view for end-to-end training, drawn fresh every epoch (RGB uint8 in and out).

    Random resized crop, flips, 90-degree turns, an arbitrary rotation with shear and scale,
    brightness / contrast / saturation / hue jitter, an occasional down-and-up resample and
    cutout. Deterministic for a given generator state.
    """
    out = random_resized_crop(img, rng, scale=(0.4, 1.0))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.5:
        out = out[::-1, :]
    out = np.rot90(out, int(rng.integers(0, 4)))
    out = random_affine(np.ascontiguousarray(out), rng)
    out = colour_jitter(out, rng, brightness=0.25, contrast=0.25, saturation=0.25, hue=10)
    out = maybe_resample(out, rng)
    if rng.random() < 0.5:
        out = cutout(out, rng)
    return np.ascontiguousarray(out)


def augment_light(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A mild view (RGB uint8 in and out): flips, 90-degree turns and a little colour jitter; no
    crop, warp, resample or cutout, so the lesion keeps the scale and sharpness it has at
    inference. For the last epochs of a run, after training on `augment_end_to_end`'s views.
    Deterministic for a given generator state.

    A fourth channel (the lesion mask, `with_mask`) takes the same flips and turns and no colour
    change; the RGB view is the one the same generator state gives without it."""
    out = img
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.5:
        out = out[::-1, :]
    out = np.rot90(out, int(rng.integers(0, 4)))
    rgb = colour_jitter(np.ascontiguousarray(out[..., :3]), rng, brightness=0.1, contrast=0.1, saturation=0.1, hue=4)
    if out.shape[2] > 3:
        rgb = np.concatenate([rgb, out[..., 3:]], axis=2)
    return np.ascontiguousarray(rgb)


def random_frame(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A dermatoscope's black frame around a round field of view (ml.screening.perturb), at random:
    a circle that cuts the image's corners and ends, or the image on a larger black canvas."""
    if rng.random() < 0.5:
        return framed(img, 1.0, radius_scale=float(rng.uniform(1.0, 1.25)))
    return framed(img, float(rng.uniform(1.1, 1.5)), radius_scale=float(rng.uniform(0.95, 1.1)))


def augment_light_framed(img: np.ndarray, rng: np.random.Generator, p_frame: float = 0.5) -> np.ndarray:
    """`augment_light`'s view, framed by `random_frame` with probability `p_frame`: for a bundle that
    crops to the field of view (the crop then runs in preprocessing, as at inference), so the
    network learns the views a round frame leaves, skin cut away and corners filled.
    Deterministic for a given generator state."""
    out = augment_light(img, rng)
    if rng.random() < p_frame:
        out = random_frame(out, rng)
    return out


def random_look(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another dermatoscope's look at random: half the time another white balance (each channel's
    gain log-uniform in 0.8-1.25), a quarter of the time harder JPEG (quality 20-70)."""
    out = img
    if rng.random() < 0.5:
        out = colour_cast(out, tuple(float(g) for g in np.exp(rng.uniform(np.log(0.8), np.log(1.25), 3))))
    if rng.random() < 0.25:
        out = jpeg_compressed(out, int(rng.integers(20, 71)))
    return out


def augment_light_looks(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`augment_light`'s view in another dermatoscope's look (`random_look`): a colour jitter of
    10% leaves a network trained on two clinics' dermatoscopes reading a 15% white-balance shift as
    another lesion (validation AUC 0.903 to 0.745 for v3m.12). Deterministic for a given generator state."""
    return random_look(augment_light(img, rng), rng)


def with_mask(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The RGB image with its lesion mask (uint8, 255 = lesion; resized to the image if it differs)
    as a fourth channel, for the views that carry a mask (MASKED_AUGMENTATIONS)."""
    if mask.shape[:2] != img.shape[:2]:
        mask = cv2.resize(mask, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(np.concatenate([img, mask.reshape(*img.shape[:2], 1)], axis=2))


# End-to-end training's views by name (EndToEndConfig.augmentation, `ml train --augmentation`).
# The framed views (half, or a quarter, of them in a frame) are for a bundle that crops to the field
# of view: without the crop the network would learn the black frames themselves.
AUGMENTATIONS = {"full": augment_end_to_end, "light": augment_light, "light_framed": augment_light_framed,
                 "light_framed_quarter": partial(augment_light_framed, p_frame=0.25),
                 "light_looks": augment_light_looks}
FRAMED_AUGMENTATIONS: tuple[str, ...] = ("light_framed", "light_framed_quarter")
# The views whose geometry a lesion mask can follow (a fourth channel, see `with_mask`).
MASKED_AUGMENTATIONS: tuple[str, ...] = ("light",)
