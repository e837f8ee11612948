"""The classical lesion segmenter: thresholding with the usual dermoscopy clean-ups (NumPy + OpenCV).

    field of view -> (hair removal) -> lesion map -> Otsu -> morphology -> central component,
    holes filled -> the same again on the shading-flattened map

1. Work on a copy whose long side is WORK_SIDE pixels, so every kernel size below means the same
   thing whatever the upload's resolution (the mask is brought back to the image's own size).
2. Field of view: many dermatoscopes leave black corners or a black ring around a round field.
   Dark pixels connected to an image corner are outside the view; they are left out of the
   threshold and of the mask (otherwise, being darker than any lesion, they would be "the lesion").
3. Hairs (optional, `remove_hair`): thin dark lines, found by a morphological black-hat and
   inpainted from their surroundings (Telea). Off by default: at the 200-pixel working size the
   opening of step 6 already removes most hairs, and inpainting scored lower on the training split.
4. Lesion map: how lesion-like each pixel is. `blue` is 255 minus the blue channel (pigment
   absorbs blue most); `skin_distance` is the CIELAB distance from the skin, estimated as the
   median colour of the view's outer ring; `gray` is 255 minus the luma.
5. Otsu's threshold over the pixels inside the view, times `threshold_scale`.
6. Opening removes specks, closing joins a lesion broken by its own lighter parts; of the
   connected components the one with the largest area weighted by closeness to the centre is
   kept (the photographer centres the lesion) and its holes are filled.
7. Shading: the dermatoscope's light falls off towards the edges, so skin darkens there and a
   small lesion's threshold catches it. A quadratic surface is fitted to the lesion map over the
   skin (the view less the first mask, widened), subtracted, and steps 5-6 run again on the
   flattened map; skipped when too little skin is left to fit (a lesion filling the view).
8. Fallback: when the map is flat or no component is large enough, a centred ellipse covering
   FALLBACK_SHARE of the image, flagged (`SegmentResult.fallback`), so nothing downstream
   mistakes it for a finding.

The defaults were chosen among a few variants on the training split only
(`python -m ml segment-report --tune`; docs/model.md, "Segmentation").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import cv2
import numpy as np

LesionMap = Literal["blue", "skin_distance", "gray"]
LESION_MAPS: tuple[str, ...] = ("blue", "skin_distance", "gray")
WORK_SIDE = 200  # the HAM10000 copies' own long side: they are segmented without resampling
MIN_SKIN_SHARE = 0.15  # of the view, to fit the shading surface on
MIN_CONTRAST = 8.0  # lesion map's 1st-99th percentile spread (0-255 scale) below which there is no lesion
MIN_COMPONENT_SHARE = 0.005  # of the view: smaller components are specks, not lesions
FALLBACK_SHARE = 0.2  # the fallback ellipse's share of the image


@dataclass(frozen=True)
class ClassicalConfig:
    lesion_map: LesionMap = "blue"
    # Otsu's threshold times this: < 1 grows the mask. On the flattened map the skin sits near 0,
    # so the same factor moves the threshold by fewer levels there; both passes were tuned together.
    threshold_scale: float = 0.9
    remove_hair: bool = False
    flatten_shading: bool = True
    centre_weight: float = 8.0  # component score = area * exp(-centre_weight * d^2), d in half-diagonals
    open_size: int = 3
    close_size: int = 9

    def __post_init__(self) -> None:
        if self.lesion_map not in LESION_MAPS:
            raise ValueError(f"unknown lesion map {self.lesion_map!r}; expected one of {LESION_MAPS}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SegmentResult:
    mask: np.ndarray  # uint8, 0 or 255, the image's own height x width
    fallback: bool  # True when nothing was found and the mask is the centred ellipse


def _ellipse(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def field_of_view(image_rgb: np.ndarray) -> np.ndarray:
    """bool mask of the pixels inside the dermatoscope's view: dark regions touching a corner are out."""
    gray = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
    limit = max(20.0, 0.25 * float(np.median(gray)))
    dark = (gray < limit).astype(np.uint8)
    _, labels = cv2.connectedComponents(dark, connectivity=8)
    h, w = gray.shape
    corner_labels = {labels[0, 0], labels[0, w - 1], labels[h - 1, 0], labels[h - 1, w - 1]} - {0}
    outside = np.isin(labels, list(corner_labels)) if corner_labels else np.zeros_like(dark, bool)
    # The ring's inner edge is a soft gradient: keep a few pixels' margin from it.
    outside = cv2.dilate(outside.astype(np.uint8), _ellipse(5)) > 0
    view = ~outside
    if view.mean() < 0.2:  # a very dark image, not a ring: keep everything
        return np.ones_like(view)
    return view


def remove_hair(image_rgb: np.ndarray) -> np.ndarray:
    """The image with thin dark lines (hairs) inpainted from their surroundings."""
    gray = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (9, 9))
    blackhat = cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, kernel)
    hair = (blackhat > 15).astype(np.uint8)
    if hair.mean() < 0.002:  # nothing hair-like: inpainting would only blur
        return image_rgb
    hair = cv2.dilate(hair, _ellipse(3))
    return cv2.inpaint(image_rgb, hair, 3, cv2.INPAINT_TELEA)


def lesion_map(image_rgb: np.ndarray, view: np.ndarray, kind: LesionMap) -> np.ndarray:
    """float32 map, higher where more lesion-like."""
    if kind == "blue":
        values = 255.0 - image_rgb[..., 2].astype(np.float32)
    elif kind == "gray":
        values = 255.0 - cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    else:
        lab = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
        h, w = view.shape
        ring = np.zeros_like(view)
        margin = max(2, min(h, w) // 8)
        ring[:margin], ring[-margin:], ring[:, :margin], ring[:, -margin:] = True, True, True, True
        ring &= view
        skin = np.median(lab[ring if ring.any() else view], axis=0)
        values = np.linalg.norm(lab - skin, axis=2)
    return cv2.GaussianBlur(values, (5, 5), 0)


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of float values (scaled to 0-255 for OpenCV, then back)."""
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-6:
        return high
    scaled = ((values - low) * (255.0 / (high - low))).astype(np.uint8).reshape(-1, 1)
    t, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return low + t * (high - low) / 255.0


def pick_component(binary: np.ndarray, view: np.ndarray, centre_weight: float) -> np.ndarray | None:
    """The component with the largest centre-weighted area, holes filled; None when none is large enough."""
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    h, w = binary.shape
    half_diagonal = 0.5 * float(np.hypot(h, w))
    min_area = MIN_COMPONENT_SHARE * max(1, int(view.sum()))
    best, best_score = 0, 0.0
    for label in range(1, count):
        area = stats[label, cv2.CC_STAT_AREA]
        if area < min_area:
            continue
        d = float(np.hypot(centroids[label][0] - w / 2, centroids[label][1] - h / 2)) / half_diagonal
        score = area * np.exp(-centre_weight * d * d)
        if score > best_score:
            best, best_score = label, score
    if best == 0:
        return None
    component = (labels == best).astype(np.uint8)
    contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(component)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)  # fills the holes
    return filled > 0


def fallback_mask(shape: tuple[int, int]) -> np.ndarray:
    """A centred ellipse with the image's aspect covering FALLBACK_SHARE of it (bool)."""
    h, w = shape
    scale = np.sqrt(FALLBACK_SHARE / np.pi) * 2  # pi * (a/2)(b/2) / (wh) = share with a = s*w, b = s*h
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w // 2, h // 2), (max(1, int(scale * w / 2)), max(1, int(scale * h / 2))), 0, 0, 360, 1, -1)
    return mask > 0


def to_work_size(image_rgb: np.ndarray) -> np.ndarray:
    h, w = image_rgb.shape[:2]
    factor = WORK_SIDE / max(h, w)
    if abs(factor - 1.0) < 1e-9:
        return image_rgb
    size = (max(8, round(w * factor)), max(8, round(h * factor)))
    return cv2.resize(image_rgb, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)


def to_image_size(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool work-size mask -> uint8 0/255 mask of (height, width) `shape`, edges smoothed by the resize."""
    h, w = shape
    if mask.shape == (h, w):
        return mask.astype(np.uint8) * 255
    scaled = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return np.where(scaled >= 0.5, 255, 0).astype(np.uint8)


def shading_surface(values: np.ndarray, skin: np.ndarray, step: int = 4) -> np.ndarray:
    """Least-squares quadratic surface a + bx + cy + dx² + exy + fy² fitted to `values` over `skin`
    (on every `step`-th pixel each way: a smooth surface needs no more, and it is 16x cheaper)."""
    h, w = values.shape
    yy, xx = np.mgrid[0:h:step, 0:w:step]
    keep = skin[::step, ::step].ravel()
    x, y = xx.ravel()[keep] / w - 0.5, yy.ravel()[keep] / h - 0.5
    basis = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=1)
    # normal equations: a 6x6 solve
    coef = np.linalg.solve(basis.T @ basis + 1e-6 * np.eye(6), basis.T @ values[::step, ::step].ravel()[keep])
    gx = (np.arange(w) / w - 0.5)[None, :]
    gy = (np.arange(h) / h - 0.5)[:, None]
    surface = coef[0] + coef[1] * gx + coef[2] * gy + coef[3] * gx * gx + coef[4] * gx * gy + coef[5] * gy * gy
    return surface.astype(np.float32)


def threshold_and_pick(values: np.ndarray, view: np.ndarray, config: ClassicalConfig) -> np.ndarray | None:
    low, high = np.percentile(values[view], [1, 99])
    if high - low < MIN_CONTRAST:  # a flat picture: any threshold would cut noise
        return None
    threshold = otsu_threshold(values[view]) * config.threshold_scale
    binary = ((values > threshold) & view).astype(np.uint8)
    if config.open_size > 1:
        binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, _ellipse(config.open_size))
    if config.close_size > 1:
        binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, _ellipse(config.close_size))
    return pick_component(binary & view, view, config.centre_weight)


def segment_classical(image_rgb: np.ndarray, config: ClassicalConfig = ClassicalConfig()) -> SegmentResult:
    """Segment the lesion of an RGB uint8 image (H x W x 3)."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image_rgb.shape} {image_rgb.dtype}")
    shape = image_rgb.shape[:2]
    work = to_work_size(image_rgb)
    view = field_of_view(work)
    if config.remove_hair:
        work = remove_hair(work)
    values = lesion_map(work, view, config.lesion_map)
    chosen = threshold_and_pick(values, view, config)
    if config.flatten_shading and chosen is not None:
        skin = view & ~(cv2.dilate(chosen.astype(np.uint8), _ellipse(15)) > 0)
        if skin.sum() >= MIN_SKIN_SHARE * view.sum():
            flattened = threshold_and_pick(values - shading_surface(values, skin), view, config)
            chosen = flattened if flattened is not None else chosen
    if chosen is None:
        return SegmentResult(mask=to_image_size(fallback_mask(work.shape[:2]), shape), fallback=True)
    return SegmentResult(mask=to_image_size(chosen, shape), fallback=False)
