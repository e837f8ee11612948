"""ABCD-style descriptors of a segmented lesion (NumPy + OpenCV).

From an RGB image and its binary lesion mask (the image's own size):

  area_px, area_mm2   lesion pixels; mm² only when the upload gives a scale (pixels per mm)
  asymmetry           mask against its mirror image across each principal axis (through the
                      centroid): |M xor mirror(M)| / (2 |M|) per axis, 0 = symmetric, 1 = no overlap;
                      `asymmetry` is the mean of the two axes, `asymmetry_axes` both (major, minor)
  border_irregularity compactness of the outline: perimeter² / (4π area), 1 for a disc and larger
                      the more ragged or elongated; the outline is the largest contour, simplified
                      to 1 pixel (cv2.approxPolyDP) so a digital circle's staircase does not count
                      as irregularity. `solidity` (area / convex hull area, 1 = convex) goes with it
  colours             how many of the six dermoscopic colours cover at least COLOUR_MIN_SHARE of
                      the lesion: each lesion pixel is given to the nearest reference colour in
                      CIELAB (CIE76 ΔE), and left out when none is within COLOUR_MAX_DELTA_E
                      (skin-like pink, for instance, is no dermoscopic colour)
  diameter_px, _mm    largest diameter: the maximum Feret diameter, the longest distance between
                      two pixel centres of the lesion (found on the convex hull)

Descriptors depend on the image's resolution (a ragged border at 4,000 pixels is smooth at 200):
compare them between images of one device and scale, or in mm.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

# The six colours of dermoscopy, sRGB, as commonly used for automatic colour counting
# (Seidenari et al.; Sabbaghi et al. 2016's reference values).
REFERENCE_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (197, 188, 217),
    "red": (118, 21, 17),
    "light_brown": (163, 82, 16),
    "dark_brown": (135, 44, 5),
    "blue_grey": (113, 108, 139),
    "black": (41, 31, 30),
}
COLOUR_MIN_SHARE = 0.05  # of the lesion's pixels: below this a colour is noise or a stray pixel
COLOUR_MAX_DELTA_E = 40.0  # CIE76; farther from every reference, a pixel has none of the six colours


@dataclass(frozen=True)
class Descriptors:
    area_px: int
    area_mm2: float | None
    asymmetry: float | None
    asymmetry_axes: tuple[float, float] | None
    border_irregularity: float | None
    solidity: float | None
    colours: int
    colour_shares: dict[str, float] = field(default_factory=dict)  # share of the lesion per reference colour
    diameter_px: float | None = None
    diameter_mm: float | None = None
    pixels_per_mm: float | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["asymmetry_axes"] = list(self.asymmetry_axes) if self.asymmetry_axes else None
        return data


def _lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (L 0-100, a and b about -128..127) of uint8 sRGB pixels (..., 3)."""
    lab = cv2.cvtColor(rgb.reshape(-1, 1, 3).astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    return lab.reshape(rgb.shape[:-1] + (3,))


REFERENCE_LAB = _lab(np.array(list(REFERENCE_COLOURS.values()), np.uint8))


def colour_shares(image_rgb: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Share of the lesion's pixels nearest to each reference colour (within COLOUR_MAX_DELTA_E)."""
    pixels = _lab(image_rgb[mask])
    if len(pixels) == 0:
        return dict.fromkeys(REFERENCE_COLOURS, 0.0)
    distances = np.linalg.norm(pixels[:, None, :] - REFERENCE_LAB[None, :, :], axis=2)
    nearest = distances.argmin(axis=1)
    close = distances[np.arange(len(pixels)), nearest] <= COLOUR_MAX_DELTA_E
    counts = np.bincount(nearest[close], minlength=len(REFERENCE_COLOURS))
    return {name: round(float(c) / len(pixels), 4) for name, c in zip(REFERENCE_COLOURS, counts)}


def asymmetry_axes(mask: np.ndarray) -> tuple[float, float]:
    """(across the major axis, across the minor axis): |M xor mirror(M)| / (2|M|)."""
    moments = cv2.moments(mask.astype(np.uint8), binaryImage=True)
    cx, cy = moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]
    theta = 0.5 * np.arctan2(2 * moments["mu11"], moments["mu20"] - moments["mu02"])
    ys, xs = np.nonzero(mask)
    radius = float(np.sqrt(((xs - cx) ** 2 + (ys - cy) ** 2).max()))
    side = 2 * int(np.ceil(radius)) + 5
    centre = (side - 1) / 2  # a pixel centre, so flipping the canvas mirrors about the centroid exactly
    # Turn the major axis onto the canvas's x axis, the centroid onto the canvas's centre.
    matrix = cv2.getRotationMatrix2D((cx, cy), float(np.degrees(theta)), 1.0)
    matrix[:, 2] += (centre - cx, centre - cy)
    turned = cv2.warpAffine(mask.astype(np.float32), matrix, (side, side), flags=cv2.INTER_LINEAR) >= 0.5
    area = max(1, int(turned.sum()))
    across_major = float((turned ^ turned[::-1, :]).sum()) / (2 * area)
    across_minor = float((turned ^ turned[:, ::-1]).sum()) / (2 * area)
    return round(across_major, 4), round(across_minor, 4)


def outline(mask: np.ndarray) -> np.ndarray:
    """The largest external contour (through the boundary pixels' centres)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return max(contours, key=cv2.contourArea)


def feret_diameter(mask: np.ndarray) -> float:
    """Longest distance between two lesion pixel centres (the convex hull holds both ends)."""
    hull = cv2.convexHull(cv2.findNonZero(mask.astype(np.uint8))).reshape(-1, 2).astype(np.float64)
    if len(hull) < 2:
        return 0.0
    gaps = hull[:, None, :] - hull[None, :, :]
    return float(np.sqrt((gaps ** 2).sum(axis=2).max()))


def describe(image_rgb: np.ndarray, mask: np.ndarray, *, pixels_per_mm: float | None = None) -> Descriptors:
    """Descriptors of the lesion `mask` (bool, or uint8 with lesion > 127) on `image_rgb` (same size)."""
    if mask.shape != image_rgb.shape[:2]:
        raise ValueError(f"mask {mask.shape} and image {image_rgb.shape[:2]} differ in size")
    if pixels_per_mm is not None and not pixels_per_mm > 0:
        raise ValueError(f"pixels_per_mm must be positive, got {pixels_per_mm}")
    lesion = mask > 127 if mask.dtype != bool else mask
    area = int(lesion.sum())
    mm = (lambda px: round(px / pixels_per_mm, 3)) if pixels_per_mm else (lambda px: None)
    if area == 0:
        return Descriptors(area_px=0, area_mm2=mm(0) if pixels_per_mm else None, asymmetry=None, asymmetry_axes=None,
                           border_irregularity=None, solidity=None, colours=0, pixels_per_mm=pixels_per_mm)
    shares = colour_shares(image_rgb, lesion)
    axes = asymmetry_axes(lesion) if area >= 3 else (0.0, 0.0)
    contour = outline(lesion)
    polygon = cv2.approxPolyDP(contour, 1.0, True)
    polygon_area = cv2.contourArea(polygon)
    # perimeter and area both of the simplified polygon, so a disc measures 1 at any size
    compactness = cv2.arcLength(polygon, True) ** 2 / (4 * np.pi * polygon_area) if polygon_area > 0 else None
    contour_area, hull_area = cv2.contourArea(contour), cv2.contourArea(cv2.convexHull(contour))
    diameter = feret_diameter(lesion)
    return Descriptors(
        area_px=area,
        area_mm2=round(area / pixels_per_mm ** 2, 3) if pixels_per_mm else None,
        asymmetry=round(float(np.mean(axes)), 4),
        asymmetry_axes=axes,
        border_irregularity=None if compactness is None else round(float(compactness), 4),
        solidity=round(contour_area / hull_area, 4) if hull_area > 0 else None,
        colours=sum(share >= COLOUR_MIN_SHARE for share in shares.values()),
        colour_shares=shares,
        diameter_px=round(diameter, 2),
        diameter_mm=mm(diameter),
        pixels_per_mm=pixels_per_mm,
    )
