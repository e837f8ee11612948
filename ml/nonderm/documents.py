"""Paperwork and screens: letters, reports, invoices, receipts, UI screenshots, hand-drawn diagrams.

These are the likeliest wrong uploads from a clinic (a scanned referral, a phone photo of a form,
a screenshot of the record system), so about half of the paper ones get a "photographed" look.
"""

from __future__ import annotations

import itertools

import numpy as np
from PIL import Image, ImageDraw

from ml.nonderm.common import (
    add_noise,
    clip_text,
    date,
    font,
    jitter,
    paper_colour,
    person,
    photographed,
    random_colour,
    random_size,
    sentence,
    text_width,
    to_array,
    words,
    wrap,
)


def _portrait_page(rng: np.random.Generator, lo: int = 220, hi: int = 760) -> tuple[int, int]:
    """A page about A4-shaped (or a random shape one time in four)."""
    if rng.random() < 0.25:
        return random_size(rng, lo, hi)
    width = int(rng.integers(lo, int(hi / 1.41)))
    return width, int(width * rng.uniform(1.25, 1.45))


def _table(
    rng: np.random.Generator,
    draw: ImageDraw.ImageDraw,
    x: int,
    y: int,
    width: int,
    rows: list[list[str]],
    size: int,
    ink,
    ruled: bool,
) -> int:
    """Draw a simple table; returns the y below it."""
    typeface, header_font = font(rng, size), font(rng, size, "bold")
    columns = len(rows[0])
    weights = np.array([2.5] + [1.0] * (columns - 1))
    edges = x + np.concatenate([[0], np.cumsum(weights / weights.sum() * width)]).astype(int)
    row_h = int(size * 1.6)
    for r, row in enumerate(rows):
        if r == 0 and rng.random() < 0.6:
            draw.rectangle([x, y, x + width, y + row_h], fill=jitter(rng, (225, 228, 235), 8))
        for c, cell in enumerate(row):
            typeface_here = header_font if r == 0 else typeface
            cell = clip_text(draw, cell, typeface_here, int(edges[c + 1] - edges[c]) - 6)
            draw.text((edges[c] + 4, y + size * 0.3), cell, fill=ink, font=typeface_here)
        if ruled or r == 0:
            draw.line([x, y + row_h, x + width, y + row_h], fill=ink, width=1)
        y += row_h
    if ruled:
        for edge in edges:
            draw.line([edge, y - row_h * len(rows), edge, y], fill=ink, width=1)
    return y


def make_document(rng: np.random.Generator, index: int) -> np.ndarray:
    """A report or letter page: letterhead, heading, paragraphs, sometimes bullets or a table, a signature."""
    width, height = _portrait_page(rng)
    page = Image.new("RGB", (width, height), paper_colour(rng))
    draw = ImageDraw.Draw(page)
    margin, size = int(width * rng.uniform(0.06, 0.12)), int(rng.integers(9, 17))
    ink = (int(rng.integers(0, 60)),) * 3
    y = margin
    if rng.random() < 0.6:  # letterhead band
        band = random_colour(rng, (0.3, 0.9), (0.3, 0.8))
        draw.rectangle([0, 0, width, int(margin * 0.6)], fill=band)
        letterhead_font = font(rng, size + 6, "bold")
        letterhead = f"{person(rng).split()[1]} {words(rng, 2).title()} Clinic"
        letterhead = clip_text(draw, letterhead, letterhead_font, width - 2 * margin)
        draw.text((margin, int(margin * 0.7)), letterhead, fill=band, font=letterhead_font)
        y = int(margin * 0.7) + size * 3
    body = font(rng, size)
    if index % 2:  # letter
        dated = date(rng)
        draw.text((width - margin - text_width(draw, dated, body) - 10, y), dated, fill=ink, font=body)
        y += size * 2
        draw.text((margin, y), f"Dear Dr {person(rng).split()[1]},", fill=ink, font=body)
        y += size * 2
    else:
        heading_font = font(rng, size * 2, "bold")
        heading = clip_text(draw, words(rng, int(rng.integers(2, 5))).title(), heading_font, width - 2 * margin)
        draw.text((margin, y), heading, fill=ink, font=heading_font)
        y += size * 3
    while y < height - margin - size * 4:
        choice = rng.random()
        if choice < 0.15 and y < height * 0.6:
            rows = [[w.title() for w in words(rng, 4).split()]]
            rows += [
                [words(rng, 2)] + [f"{rng.uniform(0, 500):.1f}" for _ in range(3)] for _ in range(rng.integers(2, 6))
            ]
            y = _table(rng, draw, margin, y, width - 2 * margin, rows, size, ink, rng.random() < 0.5) + size
        elif choice < 0.3:
            for _ in range(int(rng.integers(2, 5))):
                draw.ellipse([margin + 2, y + size * 0.35, margin + 2 + size * 0.4, y + size * 0.75], fill=ink)
                line = clip_text(draw, sentence(rng, 3, 7), body, width - 2 * margin - int(size * 1.2))
                draw.text((margin + size * 1.2, y), line, fill=ink, font=body)
                y += int(size * 1.5)
            y += size
        else:
            for line in wrap(
                draw, " ".join(sentence(rng) for _ in range(rng.integers(1, 5))), body, width - 2 * margin
            ):
                if y > height - margin - size * 4:  # keep the foot of the page (signature) clear
                    break
                draw.text((margin, y), line, fill=ink, font=body)
                y += int(size * rng.uniform(1.3, 1.7))
            y += size
    if index % 2:  # signature scribble
        xs = margin + np.cumsum(rng.uniform(2, 9, 25))
        ys = height - margin - size * 2 + rng.normal(0, size * 0.4, 25)
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=(20, 30, 120), width=2)
    image = to_array(page)
    return photographed(rng, image) if rng.random() < 0.5 else image


_PRODUCTS = (
    "Consultation",
    "Dressing pack",
    "Gloves (box)",
    "Sunscreen SPF50",
    "Cream 50 g",
    "Follow-up visit",
    "Biopsy kit",
    "Printer paper",
    "Coffee beans",
    "Bandage",
    "Delivery",
    "Software licence",
)


def make_invoice(rng: np.random.Generator, index: int) -> np.ndarray:
    """An invoice page with an items table and totals, or a narrow shop receipt in a mono font."""
    receipt = index % 3 == 2
    if receipt:
        width = int(rng.integers(160, 320))
        height = int(width * rng.uniform(1.6, 2.0))
    else:
        width, height = _portrait_page(rng, 300, 800)
    page = Image.new("RGB", (width, height), paper_colour(rng))
    draw = ImageDraw.Draw(page)
    size = int(rng.integers(9, 15))
    margin, ink = int(width * 0.08), (int(rng.integers(0, 50)),) * 3
    items = [
        (_PRODUCTS[i], int(rng.integers(1, 6)), float(rng.uniform(1, 120)))
        for i in rng.choice(len(_PRODUCTS), int(rng.integers(3, 8)), replace=False)
    ]
    subtotal = sum(q * p for _, q, p in items)
    if receipt:
        size = min(size, max(6, int((width - 2 * margin) / (0.61 * 28))))  # 28 mono characters must fit
        mono = font(rng, size, "mono")
        rule = "-" * 28
        lines = [words(rng, 2).upper(), f"{rng.integers(1, 200)} {words(rng, 1).title()} St.", date(rng), rule]
        lines += [f"{name[:14]:<14} {q}x{p:7.2f}" for name, q, p in items]
        lines += [rule, f"TOTAL {subtotal * 1.19:>14.2f}", f"CARD  {subtotal * 1.19:>14.2f}", "", "THANK YOU"]
        y = margin
        for line in lines:
            draw.text((margin, y), line, fill=ink, font=mono)
            y += int(size * 1.5)
        if rng.random() < 0.7:  # barcode
            x = margin
            while x < width - margin and y + size * 4 < height:
                bar = int(rng.integers(1, 4))
                draw.rectangle([x, y + size, x + bar - 1, y + size * 4], fill=ink)
                x += bar + int(rng.integers(1, 4))
    else:
        accent = random_colour(rng, (0.4, 1.0), (0.3, 0.8))
        draw.rectangle([margin, margin, margin + size * 3, margin + size * 3], fill=accent)
        company, title_font = f"{words(rng, 2).title()} Ltd", font(rng, size + 6, "bold")
        company_font = font(rng, size + 4, "bold")
        draw.text((margin + size * 4, margin), company, fill=ink, font=company_font)
        y = margin + size * 5
        title_x = width - margin - text_width(draw, "INVOICE", title_font)
        if title_x < margin + size * 5 + text_width(draw, company, company_font):  # no room beside the name
            title_x, y = margin, y + size * 2
        draw.text((title_x, margin if title_x > margin else y - size * 2), "INVOICE", fill=accent, font=title_font)
        details = (("Invoice no.", f"{rng.integers(10000, 99999)}"), ("Date", date(rng)), ("Customer", person(rng)))
        details_font = font(rng, size)
        for label, value in (*details, ("Due", date(rng))):
            draw.text((margin, y), f"{label}: {value}", fill=ink, font=details_font)
            y += int(size * 1.5)
        rows = [["Description", "Qty", "Unit", "Amount"]]
        rows += [[name, str(q), f"{p:.2f}", f"{q * p:.2f}"] for name, q, p in items]
        y = _table(rng, draw, margin, y + size, width - 2 * margin, rows, size, ink, rng.random() < 0.5) + size
        for label, amount in (("Subtotal", subtotal), ("VAT 19%", subtotal * 0.19), ("Total", subtotal * 1.19)):
            draw.text(
                (width - margin - size * 14, y),
                f"{label:<10} {amount:10.2f} EUR",
                fill=ink,
                font=font(rng, size, "bold" if label == "Total" else "mono"),
            )
            y += int(size * 1.6)
        if y < height - margin - size * 2:
            draw.text(
                (margin, height - margin - size),
                f"IBAN DE{rng.integers(10**9, 10**10)}  {sentence(rng, 3, 5)}",
                fill=ink,
                font=font(rng, max(7, size - 3)),
            )
    image = to_array(page)
    return photographed(rng, image) if rng.random() < 0.45 else image


def _window(rng: np.random.Generator, draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], dark: bool) -> None:
    """An application window: title bar, menu, sidebar list, text, buttons, an input field."""
    x0, y0, x1, y1 = box
    bg = (40, 42, 48) if dark else (250, 250, 252)
    fg = (220, 220, 225) if dark else (30, 30, 35)
    accent = random_colour(rng, (0.5, 1.0), (0.5, 0.95))
    size = int(rng.integers(9, 14))
    typeface = font(rng, size)  # one UI face per window, as real applications have
    draw.rectangle(box, fill=bg, outline=(120, 120, 130))
    bar = int(size * 2.2)
    draw.rectangle([x0, y0, x1, y0 + bar], fill=jitter(rng, (60, 63, 70) if dark else (225, 226, 230), 6))
    for k, colour in enumerate(((255, 95, 86), (255, 189, 46), (39, 201, 63))):
        cx = x0 + 10 + k * int(size * 1.5)
        draw.ellipse([cx, y0 + bar // 2 - 5, cx + 10, y0 + bar // 2 + 5], fill=colour)
    title = clip_text(draw, words(rng, 3).title(), typeface, x1 - x0 - size * 7)
    draw.text((x0 + size * 6, y0 + bar * 0.25), title, fill=fg, font=typeface)
    menu_y = y0 + bar + 4
    x = x0 + 8
    for item in ("File", "Edit", "View", "Patient", "Help")[: int(rng.integers(3, 6))]:
        if x + text_width(draw, item, typeface) > x1 - 8:
            break
        draw.text((x, menu_y), item, fill=fg, font=typeface)
        x += size * 5
    top = menu_y + int(size * 2)
    side = x0 + int((x1 - x0) * rng.uniform(0.2, 0.32)) if x1 - x0 > 260 else x0
    if side > x0:
        draw.rectangle([x0 + 1, top, side, y1 - 1], fill=jitter(rng, (50, 52, 58) if dark else (238, 240, 244), 5))
        for k, y in enumerate(range(top + 6, y1 - size * 2, int(size * 2))):
            if k == 1:
                draw.rectangle([x0 + 2, y - 3, side - 1, y + size + 3], fill=accent)
            draw.text(
                (x0 + 10, y), clip_text(draw, words(rng, 1).title(), typeface, side - x0 - 14), fill=fg, font=typeface
            )
    y = top + 8
    while y < y1 - size * 5:
        kind = rng.random()
        if kind < 0.2:  # button row
            x = side + 12
            for _ in range(int(rng.integers(1, 4))):
                label = words(rng, 1).title()
                bw = text_width(draw, label, typeface) + 24
                if x + bw > x1 - 8:
                    break
                draw.rounded_rectangle(
                    [x, y, x + bw, y + size * 2], radius=5, fill=accent if rng.random() < 0.5 else bg, outline=accent
                )
                draw.text((x + 12, y + size * 0.4), label, fill=fg, font=typeface)
                x += bw + 10
            y += size * 3
        elif kind < 0.35:  # input field
            draw.text((side + 12, y), words(rng, 1).title() + ":", fill=fg, font=typeface)
            draw.rectangle([side + 12 + size * 7, y - 2, x1 - 12, y + size + 4], outline=(150, 150, 160))
            y += int(size * 2.4)
        else:
            draw.text(
                (side + 12, y), clip_text(draw, sentence(rng, 3, 9), typeface, x1 - side - 20), fill=fg, font=typeface
            )
            y += int(size * 1.6)


def _phone_screen(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A messaging app: status bar, header, chat bubbles."""
    dark = rng.random() < 0.3
    screen = Image.new("RGB", (width, height), (18, 18, 20) if dark else jitter(rng, (236, 229, 221), 6))
    draw = ImageDraw.Draw(screen)
    size = int(rng.integers(10, 15))
    typeface = font(rng, size)
    accent = random_colour(rng, (0.5, 1.0), (0.4, 0.8))
    draw.rectangle([0, 0, width, size * 4], fill=accent)
    draw.text((size, size * 0.4), f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}", fill="white", font=typeface)
    draw.text((size * 3, size * 1.8), person(rng), fill="white", font=font(rng, size + 2, "bold"))
    y = size * 5
    while y < height - size * 5:
        lines = wrap(draw, sentence(rng, 2, 14), typeface, int(width * 0.6))
        bubble_h = int(len(lines) * size * 1.4 + size)
        mine = rng.random() < 0.5
        x0 = int(width * 0.3) if mine else size
        colour = (
            (220, 248, 198) if mine and not dark else ((50, 80, 60) if mine else ((45, 45, 50) if dark else "white"))
        )
        draw.rounded_rectangle([x0, y, x0 + int(width * 0.65), y + bubble_h], radius=10, fill=colour)
        for k, line in enumerate(lines):
            draw.text(
                (x0 + size * 0.6, y + size * 0.4 + k * size * 1.4),
                line,
                fill=(230, 230, 230) if dark else "black",
                font=typeface,
            )
        y += bubble_h + size
    draw.rectangle([0, height - size * 3, width, height], fill=(40, 40, 40) if dark else (250, 250, 250))
    return screen


def make_screenshot(rng: np.random.Generator, index: int) -> np.ndarray:
    """A desktop with one to three application windows, or a phone chat screen."""
    if index % 4 == 3:
        width = int(rng.integers(180, 450))
        return to_array(_phone_screen(rng, width, int(width * rng.uniform(1.7, 2.0))))
    width, height = random_size(rng, 320, 900)
    height = max(height, 240)
    desktop = Image.new("RGB", (width, height), random_colour(rng, (0.2, 0.8), (0.3, 0.8)))
    draw = ImageDraw.Draw(desktop)
    dark = rng.random() < 0.3
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = int(rng.integers(0, width // 4)), int(rng.integers(0, height // 4))
        x1, y1 = int(rng.integers(x0 + width // 2, width)), int(rng.integers(y0 + height // 2, height))
        _window(rng, draw, (x0, y0, x1, y1), dark)
    draw.rectangle([0, height - 26, width, height], fill=(30, 30, 34))
    for k in range(int(rng.integers(3, 9))):
        draw.rounded_rectangle([8 + k * 30, height - 22, 28 + k * 30, height - 4], radius=4, fill=random_colour(rng))
    return to_array(desktop)


def _hand_line(
    rng: np.random.Generator, draw: ImageDraw.ImageDraw, points: list[tuple[float, float]], ink, width: int
) -> None:
    """A wobbly pen stroke through the given points."""
    path = []
    for (xa, ya), (xb, yb) in itertools.pairwise(points):
        for t in np.linspace(0, 1, 8):
            path.append((xa + (xb - xa) * t + rng.normal(0, 1.2), ya + (yb - ya) * t + rng.normal(0, 1.2)))
    draw.line(path, fill=ink, width=width, joint="curve")


def make_sketch(rng: np.random.Generator, index: int) -> np.ndarray:
    """A pen diagram on plain, lined or squared paper (boxes, arrows, labels), usually photographed."""
    width, height = random_size(rng, 260, 800)
    page = Image.new("RGB", (width, height), paper_colour(rng))
    draw = ImageDraw.Draw(page)
    paper = index % 3
    step = int(rng.integers(14, 26))
    for y in range(step * 2, height, step) if paper else ():
        draw.line([0, y, width, y], fill=(170, 190, 225), width=1)
    for x in range(step, width, step) if paper == 2 else ():
        draw.line([x, 0, x, height], fill=(170, 190, 225), width=1)
    ink = [(20, 30, 140), (15, 15, 15), (160, 20, 30)][int(rng.integers(3))]
    pen, size = int(rng.integers(1, 4)), int(rng.integers(11, 18))
    label_font = font(rng, size)
    boxes = []
    for _ in range(int(rng.integers(2, 6))):
        bw, bh = int(width * rng.uniform(0.15, 0.3)), int(height * rng.uniform(0.1, 0.2))
        x, y = int(rng.integers(5, width - bw - 5)), int(rng.integers(5, height - bh - 5))
        if rng.random() < 0.5:
            _hand_line(rng, draw, [(x, y), (x + bw, y), (x + bw, y + bh), (x, y + bh), (x, y)], ink, pen)
        else:
            t = np.linspace(0, 2 * np.pi, 24)
            _hand_line(
                rng,
                draw,
                list(zip((x + bw / 2 + bw / 2 * np.cos(t)).tolist(), (y + bh / 2 + bh / 2 * np.sin(t)).tolist())),
                ink,
                pen,
            )
        draw.text((x + 6, y + bh / 2 - size / 2), words(rng, 1), fill=ink, font=label_font)
        boxes.append((x + bw / 2, y + bh / 2))
    for (xa, ya), (xb, yb) in itertools.pairwise(boxes):
        _hand_line(rng, draw, [(xa, ya), (xb, yb)], ink, pen)
        angle = np.arctan2(yb - ya, xb - xa)
        for side in (-0.5, 0.5):
            tip = (xb - 12 * np.cos(angle + side), yb - 12 * np.sin(angle + side))
            _hand_line(rng, draw, [tip, (xb, yb)], ink, pen)
    image = to_array(page)
    return photographed(rng, image) if rng.random() < 0.75 else add_noise(rng, image, 2)
