"""Charts (matplotlib, Agg backend) and drawings (landscapes, cartoon faces, stick figures)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ml.nonderm.common import add_noise, font, jitter, random_colour, random_size, skin_tone, to_array, words

CHART_STYLES = ("line", "bar", "scatter", "pie", "histogram", "heatmap")


def make_chart(rng: np.random.Generator, index: int) -> np.ndarray:
    """A matplotlib figure (line, bar, scatter, pie, histogram or heatmap) rendered off-screen."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = random_size(rng, 200, 900)
    dpi = 100
    style = CHART_STYLES[index % len(CHART_STYLES)]
    theme = ("default", "ggplot", "bmh", "seaborn-v0_8-whitegrid", "dark_background", "fivethirtyeight")[
        int(rng.integers(6))
    ]
    import matplotlib.style

    with matplotlib.style.context(theme):
        figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
        canvas = FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        n = int(rng.integers(4, 12))
        labels = [w[:8] for w in words(rng, n).split()]
        if style == "line":
            x = np.arange(int(rng.integers(10, 60)))
            for _ in range(int(rng.integers(1, 4))):
                axes.plot(x, np.cumsum(rng.normal(0, 1, len(x))), marker="o" if rng.random() < 0.3 else None)
            axes.set_xlabel(words(rng, 1))
        elif style == "bar":
            values = rng.uniform(1, 100, n)
            (axes.barh if rng.random() < 0.3 else axes.bar)(labels, values, color=[np.array(random_colour(rng)) / 255])
        elif style == "scatter":
            m = int(rng.integers(20, 300))
            axes.scatter(rng.normal(0, 1, m), rng.normal(0, 1, m), c=rng.random(m), s=rng.uniform(5, 60, m), alpha=0.7)
        elif style == "pie":
            axes.pie(rng.uniform(1, 10, min(n, 6)), labels=labels[:6], autopct="%1.0f%%")
        elif style == "histogram":
            axes.hist(rng.normal(0, 1, 500) * rng.uniform(0.5, 3), bins=int(rng.integers(8, 40)))
        else:
            axes.imshow(rng.random((n, n)), cmap=("viridis", "magma", "coolwarm", "Blues")[int(rng.integers(4))])
        title_size = max(6, min(width, height) // 30)
        axes.set_title(words(rng, int(rng.integers(2, 5))).title(), fontsize=title_size)
        axes.tick_params(labelsize=max(5, min(width, height) // 45))
        # Fixed pixel margins for tick labels and title: tight_layout would cost a third of the render time.
        figure.subplots_adjust(
            left=min(0.3, 60 / width),
            right=1 - min(0.1, 15 / width),
            bottom=min(0.3, 45 / height),
            top=1 - min(0.25, (title_size * 2.4 + 8) / height),
        )
        canvas.draw()
        image = np.asarray(canvas.buffer_rgba())[:, :, :3].copy()
    return image


def _landscape(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Sky gradient, sun, layered hills or mountains, trees and sometimes a house."""
    top, bottom = np.array(random_colour(rng, (0.3, 0.8), (0.6, 1.0))), np.array(jitter(rng, (200, 225, 250), 20))
    sky = top + np.linspace(0, 1, height)[:, None, None] * (bottom - top)
    image = Image.fromarray(np.broadcast_to(sky, (height, width, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    r = min(width, height) * rng.uniform(0.05, 0.12)
    sx, sy = rng.uniform(r, width - r), rng.uniform(r, height * 0.35)
    draw.ellipse([sx - r, sy - r, sx + r, sy + r], fill=jitter(rng, (255, 215, 60), 15))
    horizon = height * rng.uniform(0.45, 0.7)
    for layer in range(int(rng.integers(1, 4))):
        xs = np.linspace(0, width, int(rng.integers(3, 9)))
        ys = horizon + layer * height * 0.08 - rng.uniform(0, height * 0.25, len(xs))
        colour = (
            jitter(rng, (70 + 30 * layer, 140 - 10 * layer, 70), 20)
            if rng.random() < 0.7
            else jitter(rng, (110, 110, 125))
        )
        draw.polygon([(0, height)] + list(zip(xs.tolist(), ys.tolist())) + [(width, height)], fill=colour)
    for _ in range(int(rng.integers(0, 8))):
        tx, ty = rng.uniform(0, width), rng.uniform(horizon, height)
        th = rng.uniform(0.05, 0.2) * height
        draw.rectangle([tx - th * 0.06, ty - th * 0.4, tx + th * 0.06, ty], fill=(100, 65, 35))
        draw.ellipse([tx - th * 0.3, ty - th, tx + th * 0.3, ty - th * 0.3], fill=jitter(rng, (40, 120, 50), 20))
    if rng.random() < 0.5:
        hw = width * rng.uniform(0.12, 0.25)
        hx, hy = rng.uniform(0, width - hw), height * rng.uniform(0.7, 0.9)
        draw.rectangle([hx, hy - hw * 0.7, hx + hw, hy], fill=random_colour(rng, (0.2, 0.7), (0.6, 1.0)))
        draw.polygon(
            [(hx - hw * 0.1, hy - hw * 0.7), (hx + hw / 2, hy - hw * 1.2), (hx + hw * 1.1, hy - hw * 0.7)],
            fill=jitter(rng, (170, 50, 40), 20),
        )
        draw.rectangle([hx + hw * 0.4, hy - hw * 0.35, hx + hw * 0.6, hy], fill=(90, 60, 40))
    return image


def _face(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A cartoon face: head, eyes, nose, smile, hair."""
    image = Image.new("RGB", (width, height), random_colour(rng, (0.1, 0.6), (0.7, 1.0)))
    draw = ImageDraw.Draw(image)
    cx, cy, r = width / 2, height / 2, min(width, height) * rng.uniform(0.3, 0.42)
    head = skin_tone(rng) if rng.random() < 0.6 else (255, 220, 0)
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=head, outline=(0, 0, 0), width=3)
    if rng.random() < 0.7:
        draw.chord(
            [cx - r, cy - r * 1.1, cx + r, cy + r * 0.2], 180, 360, fill=random_colour(rng, (0.3, 0.9), (0.1, 0.6))
        )
    for side in (-1, 1):
        ex, ey = cx + side * r * 0.38, cy - r * 0.1
        draw.ellipse(
            [ex - r * 0.14, ey - r * 0.14, ex + r * 0.14, ey + r * 0.14], fill="white", outline=(0, 0, 0), width=2
        )
        draw.ellipse([ex - r * 0.06, ey - r * 0.06, ex + r * 0.06, ey + r * 0.06], fill=(0, 0, 0))
    draw.line([cx, cy, cx - r * 0.08, cy + r * 0.2, cx + r * 0.04, cy + r * 0.22], fill=(0, 0, 0), width=2)
    draw.arc([cx - r * 0.5, cy, cx + r * 0.5, cy + r * 0.65], 20, 160, fill=(150, 30, 30), width=4)
    return image


def _stick_figures(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Stick figures on paper with a caption, as a child or a whiteboard would draw them."""
    image = Image.new("RGB", (width, height), jitter(rng, (250, 250, 248), 4))
    draw = ImageDraw.Draw(image)
    ink = random_colour(rng, (0.5, 1.0), (0.1, 0.7))
    count = int(rng.integers(1, 5))
    for k in range(count):
        h = height * rng.uniform(0.35, 0.6)
        x, y = width * (k + 0.5) / count, height * 0.85
        head = h * 0.12
        draw.ellipse([x - head, y - h, x + head, y - h + 2 * head], outline=ink, width=3)
        draw.line([x, y - h + 2 * head, x, y - h * 0.35], fill=ink, width=3)
        for side in (-1, 1):
            draw.line([x, y - h * 0.35, x + side * h * 0.18, y], fill=ink, width=3)
            draw.line([x, y - h * 0.7, x + side * h * 0.25, y - h * rng.uniform(0.4, 0.9)], fill=ink, width=3)
    draw.text((10, 10), words(rng, 3), fill=ink, font=font(rng, max(10, height // 18)))
    return image


def make_drawing(rng: np.random.Generator, index: int) -> np.ndarray:
    """A drawn landscape (half of them), a cartoon face or stick figures."""
    width, height = random_size(rng)
    maker = (_landscape, _landscape, _face, _stick_figures)[index % 4]
    return add_noise(rng, to_array(maker(rng, width, height)), rng.uniform(0, 2))
