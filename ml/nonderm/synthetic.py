"""Synthetic images: gradients, noise, shapes, patterns and near-flat colour fields.

Skin-like and brown tones appear on purpose (gradients, flats and a crude "mole drawing" among the
shapes): an out-of-distribution detector must not accept an image for its colours alone.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageDraw

from ml.nonderm.common import add_noise, brown, jitter, random_colour, random_size, skin_tone, to_array


def _palette_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """Mostly any colour; one time in three a skin tone or brown."""
    roll = rng.random()
    return skin_tone(rng) if roll < 0.2 else brown(rng) if roll < 0.33 else random_colour(rng)


def value_noise(rng: np.random.Generator, width: int, height: int, octaves: int = 4, base: int = 4) -> np.ndarray:
    """Perlin-like fractal value noise in [0, 1]: random grids upsampled smoothly and summed by octave."""
    total, amplitude, weight = np.zeros((height, width), np.float32), 1.0, 0.0
    for octave in range(octaves):
        cells = base * 2**octave
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        total += amplitude * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        weight += amplitude
        amplitude *= 0.5
    total /= weight
    return (total - total.min()) / max(float(np.ptp(total)), 1e-6)


def make_gradient(rng: np.random.Generator, index: int) -> np.ndarray:
    """Linear, radial or angular blends of two or three colours."""
    width, height = random_size(rng)
    ys, xs = np.ogrid[0:height, 0:width]
    xs, ys = (xs / width).astype(np.float32), (ys / height).astype(np.float32)
    style = index % 3
    if style == 0:
        angle = rng.uniform(0, 2 * np.pi)
        t = xs * np.cos(angle) + ys * np.sin(angle)
    elif style == 1:
        cx, cy = rng.uniform(0.1, 0.9, 2)
        t = np.hypot(xs - cx, ys - cy)
    else:
        cx, cy = rng.uniform(0.3, 0.7, 2)
        t = (np.arctan2(ys - cy, xs - cx) + np.pi) / (2 * np.pi)
        t = np.minimum(t, 1 - t) * 2  # seamless
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    colours = np.array([_palette_colour(rng) for _ in range(int(rng.integers(2, 4)))], np.float32)
    stops = np.linspace(0, 1, len(colours))
    levels = np.linspace(0, 1, 1024)
    lut = np.stack([np.interp(levels, stops, colours[:, c]) for c in range(3)], axis=1).astype(np.float32)
    image = lut[np.round(t * 1023).astype(np.int32)]  # a colour look-up table: much cheaper than interp per pixel
    return add_noise(rng, image, rng.uniform(0, 3))


def make_noise(rng: np.random.Generator, index: int) -> np.ndarray:
    """Uniform, Gaussian, salt-and-pepper, blurred or fractal (Perlin-like) noise, grey or coloured."""
    width, height = random_size(rng)
    style, shape = index % 6, (height, width, 3)
    if style == 0:
        image = rng.integers(0, 256, shape)
    elif style == 1:
        image = rng.normal(rng.uniform(60, 200), rng.uniform(10, 70), shape)
    elif style == 2:
        image = np.full(shape, _palette_colour(rng), np.float32)
        mask = rng.random((height, width))
        image[mask < 0.05], image[mask > 0.95] = 0, 255
    elif style == 3:
        small = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3)).astype(np.float32)
        image = cv2.GaussianBlur(cv2.resize(small, (width, height)), (0, 0), rng.uniform(1, 8))
    else:
        channels = [value_noise(rng, width, height, int(rng.integers(3, 7)), int(rng.integers(2, 8))) for _ in range(3)]
        field = np.stack(channels, axis=2) if style == 4 else np.repeat(channels[0][:, :, None], 3, axis=2)
        low, high = np.array(_palette_colour(rng), np.float32), np.array(_palette_colour(rng), np.float32)
        image = low + field * (high - low) if style == 5 else field * 255
    if rng.random() < 0.3:
        image = np.repeat(np.asarray(image, np.float32).mean(axis=2, keepdims=True), 3, axis=2)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_shapes(rng: np.random.Generator, index: int) -> np.ndarray:
    """Circles, ellipses, rectangles and polygons on a plain background; every 5th is a crude mole drawing."""
    width, height = random_size(rng)
    if index % 5 == 4:  # a dark brown blob on a skin-coloured field: a drawing, not a dermatoscopic image
        image = Image.new("RGB", (width, height), skin_tone(rng))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(1, 4))):
            rx, ry = width * rng.uniform(0.05, 0.3), height * rng.uniform(0.05, 0.3)
            cx, cy = rng.uniform(rx, width - rx), rng.uniform(ry, height - ry)
            draw.ellipse(
                [cx - rx, cy - ry, cx + rx, cy + ry],
                fill=brown(rng),
                outline=jitter(rng, (30, 20, 15)) if rng.random() < 0.5 else None,
                width=2,
            )
        return to_array(image)
    image = Image.new("RGB", (width, height), _palette_colour(rng) if rng.random() < 0.7 else (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 25))):
        x0, y0 = rng.uniform(-0.1, 1.0) * width, rng.uniform(-0.1, 1.0) * height
        x1, y1 = x0 + rng.uniform(0.05, 0.5) * width, y0 + rng.uniform(0.05, 0.5) * height
        fill = _palette_colour(rng) if rng.random() < 0.8 else None
        outline = random_colour(rng) if fill is None or rng.random() < 0.3 else None
        kind, line = int(rng.integers(4)), int(rng.integers(1, 6))
        if kind == 0:
            draw.ellipse([x0, y0, x1, y1], fill=fill, outline=outline, width=line)
        elif kind == 1:
            draw.rectangle([x0, y0, x1, y1], fill=fill, outline=outline, width=line)
        elif kind == 2:
            corners = rng.uniform(0, 1, (int(rng.integers(3, 8)), 2)) * [x1 - x0, y1 - y0] + [x0, y0]
            draw.polygon([tuple(p) for p in corners.tolist()], fill=fill, outline=outline)
        else:
            draw.line([x0, y0, x1, y1], fill=outline or fill, width=line * 2)
    return to_array(image)


def make_pattern(rng: np.random.Generator, index: int) -> np.ndarray:
    """Checkerboards, stripes, QR-like block codes, dots and tiled textures."""
    width, height = random_size(rng)
    ys, xs = np.ogrid[0:height, 0:width]
    a, b = np.array(_palette_colour(rng), np.float32), np.array(_palette_colour(rng), np.float32)
    style = index % 5
    if style == 0:
        cell = int(rng.integers(4, 80))
        mask = ((xs // cell + ys // cell) % 2).astype(np.float32)
    elif style == 1:
        period, angle = rng.uniform(4, 60), rng.uniform(0, np.pi)
        phase = (xs * np.cos(angle) + ys * np.sin(angle)) / period
        mask = (
            (np.sin(2 * np.pi * phase) > 0).astype(np.float32)
            if rng.random() < 0.6
            else 0.5 + 0.5 * np.sin(2 * np.pi * phase)
        )
    elif style == 2:  # QR-like: random modules with three finder squares, black on white
        modules = int(rng.integers(21, 45))
        code = (rng.random((modules, modules)) < 0.5).astype(np.float32)
        for r, c in ((0, 0), (0, modules - 7), (modules - 7, 0)):
            code[r : r + 7, c : c + 7] = 1
            code[r + 1 : r + 6, c + 1 : c + 6] = 0
            code[r + 2 : r + 5, c + 2 : c + 5] = 1
        side = min(width, height)
        code = cv2.resize(np.pad(code, 4), (side, side), interpolation=cv2.INTER_NEAREST)
        mask = np.zeros((height, width), np.float32)
        mask[(height - side) // 2 : (height - side) // 2 + side, (width - side) // 2 : (width - side) // 2 + side] = (
            code
        )
        a, b = np.array((255, 255, 255), np.float32), np.array((0, 0, 0), np.float32)
    elif style == 3:  # polka dots on a grid
        period = int(rng.integers(10, 70))
        radius = period * rng.uniform(0.15, 0.45)
        mask = (np.hypot(xs % period - period / 2, ys % period - period / 2) < radius).astype(np.float32)
    else:  # a random tile repeated (a wallpaper/fabric print)
        tile_w, tile_h = int(rng.integers(12, 90)), int(rng.integers(12, 90))
        tile = cv2.GaussianBlur(rng.random((tile_h, tile_w)).astype(np.float32), (0, 0), rng.uniform(0.5, 3))
        tile = (tile - tile.min()) / max(float(np.ptp(tile)), 1e-6)
        if rng.random() < 0.5:
            tile = np.maximum(tile, tile[:, ::-1])  # mirror symmetry
        mask = np.tile(tile, (height // tile_h + 1, width // tile_w + 1))[:height, :width]
    image = a + mask[:, :, None] * (b - a)
    return add_noise(rng, image, rng.uniform(0, 4))


def _white(rng: np.random.Generator) -> tuple[int, int, int]:
    return jitter(rng, (250, 250, 250), 4)


def _black(rng: np.random.Generator) -> tuple[int, int, int]:
    return (0, 0, 0)


FLAT_COLOURS = (skin_tone, brown, random_colour, _white, _black)


def make_flat(rng: np.random.Generator, index: int) -> np.ndarray:
    """A near-uniform field (a wall, a blank page, a lens cap, a skin-coloured card) with slight shading and noise."""
    width, height = random_size(rng)
    image = np.full((height, width, 3), FLAT_COLOURS[index % len(FLAT_COLOURS)](rng), np.float32)
    if rng.random() < 0.5:
        image *= 0.85 + 0.15 * value_noise(rng, width, height, 2, 2)[:, :, None]
    return add_noise(rng, image, rng.uniform(0.5, 6))
