"""The crop to a dermatoscope's field of view: the black frame around a round view, taken away.

Many dermatoscopes and phone adapters leave a black frame around a round field of view;
HAM10000's copies are mostly cropped to the skin (250 of 10,015 have four dark corners). A
model trained on them reads a framed image 0.07-0.18 balanced accuracy worse (docs/model.md,
"Dermatoscope frames"). A bundle whose manifest says `field_of_view: true`
(ml.preprocessing.PreprocessConfig) crops every image to the box of its bright view before the
resize, in training, packaging, evaluation and the portal alike; the box is kept with the answer
(FieldOfView) so the heatmap can be drawn back where the crop took the view from. NumPy + OpenCV.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np

# Grey level under which a pixel counts as frame, after a 5x5 median blur (JPEG noise in the black).
DARK_LEVEL = 20
# No frame when under 2% of the image is dark; no crop when the "view" would be under a fifth of
# the image (a dark image or a dark lesion filling it, not a frame).
MIN_FRAME_FRACTION = 0.02
MIN_VIEW_FRACTION = 0.2
# The dark remainder inside the box (the circle's corners) is filled with the median colour of
# the view's rim, this many pixels wide: black corners would still read as a frame.
RIM_WIDTH = 7
# The view is looked for on a copy at most this many pixels on its long side.
ANALYSIS_SIDE = 640


@dataclass(frozen=True)
class FieldOfView:
    """Where the model's view lies in the decoded image: the crop box (top, left, height, width)
    in pixels of an image of (image_height, image_width)."""

    top: int
    left: int
    height: int
    width: int
    image_height: int
    image_width: int

    def __post_init__(self) -> None:
        if min(self.height, self.width, self.image_height, self.image_width) < 1 or min(self.top, self.left) < 0:
            raise ValueError(f"field of view {self.to_dict()} has no pixels or starts outside the image")
        if self.top + self.height > self.image_height or self.left + self.width > self.image_width:
            raise ValueError(f"field of view {self.to_dict()} reaches outside its image")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FieldOfView:
        """The box as stored (to_dict); ValueError for anything else."""
        keys = tuple(f.name for f in fields(cls))
        if not isinstance(data, dict) or any(not isinstance(data.get(k), int) or isinstance(data.get(k), bool)
                                             for k in keys):
            raise ValueError(f"a field of view needs the integers {', '.join(keys)}; got {data!r}")
        return cls(**{k: data[k] for k in keys})

    def on(self, shape: tuple[int, int]) -> tuple[slice, slice]:
        """(rows, columns) of the box on the same picture at another (height, width), e.g. a
        downscaled copy; at least one pixel each way."""
        height, width = shape
        sy, sx = height / self.image_height, width / self.image_width
        top, left = min(height - 1, round(self.top * sy)), min(width - 1, round(self.left * sx))
        bottom = max(top + 1, min(height, round((self.top + self.height) * sy)))
        right = max(left + 1, min(width, round((self.left + self.width) * sx)))
        return slice(top, bottom), slice(left, right)


def _inside_view(image_rgb: np.ndarray) -> np.ndarray | None:
    """bool mask of the largest bright component with its holes filled (a dark lesion inside the
    view stays part of it); None when under MIN_FRAME_FRACTION of the image is dark or under
    MIN_VIEW_FRACTION is bright."""
    bright = cv2.medianBlur(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY), 5) > DARK_LEVEL
    bright_fraction = float(bright.mean())
    if bright_fraction > 1 - MIN_FRAME_FRACTION or bright_fraction < MIN_VIEW_FRACTION:
        return None
    _, labels, stats, _ = cv2.connectedComponentsWithStats(bright.astype(np.uint8), connectivity=8)
    view = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    # What the border's flood fill cannot reach is inside the view (the holes, a dark lesion).
    outside = 1 - view
    h, w = view.shape
    flood_mask = np.zeros((h + 2, w + 2), np.uint8)
    for y, x in ((0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)):
        if outside[y, x] == 1:
            cv2.floodFill(outside, flood_mask, (x, y), 2)
    return (view == 1) | (outside == 1)


def crop_to_field_of_view(image_rgb: np.ndarray) -> tuple[np.ndarray, FieldOfView | None]:
    """(view, box): the box of the bright field of view, with what stays dark inside the box
    filled by the median colour of the view's rim; (the image itself, None) when no frame is
    found. Deterministic.

    The view is found on the image itself up to ANALYSIS_SIDE pixels on its long side, and on
    every n-th pixel beyond (a frame is a large structure; measuring a 27 MP upload at full size
    cost 0.7 s); the crop and the fill are made on the full image. Not the segmenter's
    `field_of_view` (ml.segmentation.classical): that one keeps a margin from the ring and a
    threshold relative to the image's median, right for finding the lesion, but as a crop it
    changes 170 of the 1,506 stored validation images (this one 47) and gives back less of a
    padded frame.
    """
    h, w = image_rgb.shape[:2]
    step = -(-max(h, w) // ANALYSIS_SIDE)  # every step-th pixel: a frame needs no anti-aliasing
    small = image_rgb[::step, ::step] if step > 1 else image_rgb
    inside_small = _inside_view(np.ascontiguousarray(small))
    if inside_small is None:
        return image_rgb, None
    small_h, small_w = inside_small.shape
    x, y, box_w, box_h = cv2.boundingRect(inside_small.astype(np.uint8))
    if box_h * box_w < MIN_VIEW_FRACTION * small_h * small_w:
        return image_rgb, None
    if (box_h, box_w) == (small_h, small_w) and inside_small.all():
        return image_rgb, None
    inside = inside_small[y : y + box_h, x : x + box_w]
    if step > 1:  # the box and the view's mask at full size
        bottom, right = min(h, (y + box_h) * step), min(w, (x + box_w) * step)
        y, x = y * step, x * step
        box_h, box_w = bottom - y, right - x
        inside = np.repeat(np.repeat(inside, step, axis=0), step, axis=1)[:box_h, :box_w]
        # The copy's pixels are step wide: dark pixels within a step of its edge are frame too.
        inside = cv2.erode(inside.view(np.uint8), np.ones((2 * step + 1, 2 * step + 1), np.uint8),
                           borderType=cv2.BORDER_CONSTANT, borderValue=0).view(bool)
    out = image_rgb[y : y + box_h, x : x + box_w].copy()
    # Only what is dark before the blur is filled: the blur rounds the view's corners off.
    # (OpenCV's mask operations: NumPy's boolean ones cost 0.2 s on a 27 MP upload.)
    dark = cv2.inRange(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY), 0, DARK_LEVEL)
    frame = cv2.bitwise_and(dark, cv2.bitwise_not(inside.view(np.uint8) * np.uint8(255)))
    if cv2.countNonZero(frame):
        rim = cv2.bitwise_and(cv2.dilate(frame, np.ones((RIM_WIDTH, RIM_WIDTH), np.uint8)), cv2.bitwise_not(frame))
        source = rim if cv2.countNonZero(rim) else cv2.bitwise_not(frame)
        colour = np.median(out[source > 0], axis=0).astype(np.uint8)
        out[frame > 0] = colour
    return out, FieldOfView(top=y, left=x, height=box_h, width=box_w, image_height=h, image_width=w)
