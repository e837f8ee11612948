"""Shared helpers for the non-dermatoscopic corpus: sizes, colours, words, fonts and a "photographed" look.

Every generator takes a NumPy ``Generator`` and draws all its randomness from it, so an image
depends only on (seed, kind, index).
"""

from __future__ import annotations

import glob
import os
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

MIN_SIDE, MAX_SIDE = 120, 900
MIN_ASPECT, MAX_ASPECT = 0.5, 2.0  # width / height

# A built-in word list: clinic paperwork words mixed with everyday ones, so the text looks like
# something a clinician might photograph (referral letters, invoices, forms, e-mails).
_WORD_TEXT = """patient referral clinic dermatology appointment follow-up history examination report summary
    treatment medication dose daily twice weekly review result normal stable advised discussed plan
    consent signature date address telephone insurance number invoice payment total amount due balance
    account service consultation fee tax order delivery item quantity price discount reference please
    thank you kind regards dear doctor nurse hospital ward department laboratory sample received
    the and of to in for with on at by from this that which will be is are was were has have not
    meeting agenda project schedule budget update minutes action owner status pending complete draft
    weather garden coffee lunch train ticket holiday family school homework recipe butter flour sugar
    hours morning evening monday tuesday wednesday thursday friday january march june october
    system login password settings profile message inbox search download upload file folder window
    blood pressure allergy none known smoker height weight pulse temperature diagnosis impression"""
WORDS: tuple[str, ...] = tuple(_WORD_TEXT.split())
FIRST_NAMES = ("Anna", "Ben", "Clara", "David", "Eva", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kemal", "Lena")
LAST_NAMES = ("Meyer", "Novak", "Okafor", "Peters", "Quinn", "Rossi", "Schmidt", "Tanaka", "Usman", "Vogel")

# Skin tones (roughly Fitzpatrick I-VI) and browns: a detector must not accept an image for its colour.
SKIN_TONES = np.array(
    [(255, 224, 196), (241, 194, 167), (224, 172, 138), (198, 134, 103), (161, 102, 74), (110, 70, 50), (80, 52, 38)]
)
BROWNS = np.array([(92, 58, 36), (120, 75, 45), (60, 38, 25), (140, 95, 60), (75, 45, 40), (45, 30, 28)])


# ------------------------------------------------------------------------------------------ sizes


def random_size(rng: np.random.Generator, lo: int = MIN_SIDE, hi: int = MAX_SIDE) -> tuple[int, int]:
    """(width, height) with both sides in [lo, hi] and an aspect ratio in [1:2, 2:1]."""
    width = int(rng.integers(lo, hi + 1))
    aspect = float(np.exp(rng.uniform(np.log(MIN_ASPECT), np.log(MAX_ASPECT))))
    height = int(np.clip(round(width / aspect), lo, hi))
    return width, height


def fit(image: np.ndarray) -> np.ndarray:
    """Force an image into the corpus contract: RGB uint8, sides in range, aspect in [1:2, 2:1]."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = image[:, :, :3]
    h, w = image.shape[:2]
    if w > MAX_ASPECT * h:  # too wide: centre crop
        new_w = int(MAX_ASPECT * h)
        image = image[:, (w - new_w) // 2 : (w - new_w) // 2 + new_w]
    elif h > w / MIN_ASPECT:  # too tall
        new_h = int(w / MIN_ASPECT)
        image = image[(h - new_h) // 2 : (h - new_h) // 2 + new_h]
    h, w = image.shape[:2]
    scale = min(1.0, MAX_SIDE / max(h, w))
    scale = max(scale, MIN_SIDE / min(h, w))
    if scale != 1.0:
        size = (int(np.clip(round(w * scale), MIN_SIDE, MAX_SIDE)), int(np.clip(round(h * scale), MIN_SIDE, MAX_SIDE)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    return np.ascontiguousarray(image)


# ---------------------------------------------------------------------------------------- colours


def rgb(values) -> tuple[int, int, int]:
    """A PIL colour tuple from anything array-like."""
    r, g, b = (int(np.clip(v, 0, 255)) for v in values)
    return r, g, b


def random_colour(
    rng: np.random.Generator, saturation: tuple[float, float] = (0.2, 1.0), value: tuple[float, float] = (0.2, 1.0)
) -> tuple[int, int, int]:
    """Any hue, with saturation and brightness drawn from the given ranges."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*saturation) * 255, rng.uniform(*value) * 255]]], np.uint8)
    return rgb(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def jitter(rng: np.random.Generator, colour, amount: float = 12) -> tuple[int, int, int]:
    return rgb(np.asarray(colour, float) + rng.normal(0, amount, 3))


def skin_tone(rng: np.random.Generator) -> tuple[int, int, int]:
    return jitter(rng, SKIN_TONES[rng.integers(len(SKIN_TONES))])


def brown(rng: np.random.Generator) -> tuple[int, int, int]:
    return jitter(rng, BROWNS[rng.integers(len(BROWNS))], 10)


def paper_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """White, off-white or slightly yellowed paper."""
    base = 255 - rng.uniform(0, 18)
    return rgb((base, base - rng.uniform(0, 6), base - rng.uniform(0, 22)))


# ------------------------------------------------------------------------------------------- text


def words(rng: np.random.Generator, count: int) -> str:
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), count))


def sentence(rng: np.random.Generator, lo: int = 4, hi: int = 12) -> str:
    text = words(rng, int(rng.integers(lo, hi + 1)))
    return text[:1].upper() + text[1:] + "."


def person(rng: np.random.Generator) -> str:
    return f"{FIRST_NAMES[rng.integers(len(FIRST_NAMES))]} {LAST_NAMES[rng.integers(len(LAST_NAMES))]}"


def date(rng: np.random.Generator) -> str:
    return f"{rng.integers(1, 29):02d}.{rng.integers(1, 13):02d}.{rng.integers(2015, 2027)}"


@lru_cache(maxsize=1)
def _font_files() -> tuple[str, ...]:
    """DejaVu fonts that matplotlib ships (always here offline); empty if that ever changes."""
    import matplotlib

    files = sorted(glob.glob(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVu*.ttf")))
    return tuple(f for f in files if "Display" not in f)  # the Display faces have almost no glyphs


@lru_cache(maxsize=512)
def _load_font(path: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size) if not path else ImageFont.truetype(path, size)


def font(rng: np.random.Generator, size: int, style: str = "any") -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A font of about ``size`` px: Pillow's default or a DejaVu face; style "bold", "mono" or "any"."""
    files = [
        f
        for f in _font_files()
        if (style == "any")
        or (style == "bold" and "Bold" in f and "Mono" not in f)
        or (style == "mono" and "Mono" in f and "Bold" not in f)
    ]
    choices = ([""] if style == "any" else []) + files
    path = choices[int(rng.integers(len(choices)))] if choices else ""
    return _load_font(path, max(6, int(size)))


def text_width(draw: ImageDraw.ImageDraw, text: str, typeface) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=typeface)
    return int(right - left)


def clip_text(draw: ImageDraw.ImageDraw, text: str, typeface, width: int) -> str:
    """Cut ``text`` to fit ``width`` pixels (tables and bullets must not run off the page)."""
    while len(text) > 1 and text_width(draw, text, typeface) > width:
        text = text[:-1]
    return text


def wrap(draw: ImageDraw.ImageDraw, text: str, typeface, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels."""
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and text_width(draw, candidate, typeface) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + ([line] if line else [])


# ---------------------------------------------------------------------------------- camera effects


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    assert ok
    return cv2.cvtColor(cv2.imdecode(buffer, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def add_noise(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian sensor noise. OpenCV's generator (seeded from ``rng``) is ~3x faster than NumPy's here."""
    image = np.asarray(image, np.float32)
    noise = np.empty((image.shape[0], image.size // image.shape[0]), np.float32)
    cv2.setRNGSeed(int(rng.integers(2**31)))
    cv2.randn(noise, 0.0, float(sigma))
    return np.clip(image + noise.reshape(image.shape), 0, 255).astype(np.uint8)


def shade(rng: np.random.Generator, image: np.ndarray, darkest: float) -> np.ndarray:
    """Multiply by a linear light fall-off in a random direction (a hand or phone shadow)."""
    h, w = image.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.arange(w, dtype=np.float32) / w * np.cos(angle))[None, :] + (
        np.arange(h, dtype=np.float32) / h * np.sin(angle)
    )[:, None]
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    gain = np.float32(darkest) + np.float32(1 - darkest) * ramp
    return np.clip(image * gain[:, :, None], 0, 255).astype(np.uint8)


def photographed(rng: np.random.Generator, page: np.ndarray) -> np.ndarray:
    """A phone photo of a flat thing: perspective tilt on a table, uneven light, blur, sensor noise, JPEG."""
    h, w = page.shape[:2]
    mx, my = int(w * rng.uniform(0.04, 0.2)), int(h * rng.uniform(0.04, 0.2))
    out_w, out_h = w + 2 * mx, h + 2 * my
    table = np.empty((out_h, out_w, 3), np.uint8)
    table[:] = brown(rng) if rng.random() < 0.4 else random_colour(rng, (0.0, 0.4), (0.2, 0.8))
    table = add_noise(rng, table, 6)
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    wobble = rng.uniform(-0.6, 0.6, (4, 2)) * [mx, my]
    dst = np.float32([[mx, my], [mx + w, my], [mx + w, my + h], [mx, my + h]] + wobble)
    matrix = cv2.getPerspectiveTransform(src, dst)
    photo = cv2.warpPerspective(page, matrix, (out_w, out_h), dst=table, borderMode=cv2.BORDER_TRANSPARENT)
    photo = shade(rng, photo, rng.uniform(0.5, 0.9))
    photo = cv2.GaussianBlur(photo, (0, 0), rng.uniform(0.4, 1.4))
    photo = add_noise(rng, photo, rng.uniform(1, 5))
    return jpeg_roundtrip(photo, int(rng.integers(45, 90)))


def to_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)
