"""The one preprocessing path shared by training, export checks and inference.

decode (OpenCV, RGB order) -> [crop to the dermatoscope's field of view, when the bundle says so
(ml.field_of_view)] -> resize to the model input -> colour step -> scale to [-1, 1]
(MobileNetV2's ImageNet normalisation). Training applies its augmentations to the decoded
uint8 RGB image and then calls :func:`preprocess`, so the model never sees pixels prepared
any other way. No TensorFlow here: inference imports this module.
"""

from __future__ import annotations

import io
import re
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Literal

import cv2
import numpy as np
from PIL import Image

from ml.errors import ImageTooLargeError, InvalidImageError
from ml.field_of_view import FieldOfView, crop_to_field_of_view

ColourMode = Literal["none", "shades_of_gray", "clahe", "gray_histeq"]
COLOUR_MODES: tuple[str, ...] = ("none", "shades_of_gray", "clahe", "gray_histeq")

# A decompression bomb is refused from its header, before any pixel is decoded.
DEFAULT_MAX_PIXELS = 40_000_000

# Formats we decode; judged from the bytes (PIL's sniffing), never from a file name.
DECODABLE_FORMATS = frozenset({"JPEG", "PNG", "BMP", "TIFF", "WEBP"})


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that decides the model input; stored in the model manifest."""

    # Input height; the width too unless `width` is set (a non-square input such as the
    # shared HAM10000 copies' own 150x200, which keeps their 4:3 aspect).
    size: int = 224
    colour: ColourMode = "none"
    # x / 127.5 - 1: the [-1, 1] scaling MobileNetV2 was trained with on ImageNet.
    scale: float = 1.0 / 127.5
    offset: float = -1.0
    colour_order: str = "RGB"
    width: int | None = None
    # Crop to the bright field of view before the resize (ml.field_of_view): a dermatoscope's
    # black frame taken away. Off in every bundle whose manifest does not say so.
    field_of_view: bool = False

    def __post_init__(self) -> None:
        if self.colour not in COLOUR_MODES:
            raise ValueError(f"unknown colour mode {self.colour!r}; expected one of {COLOUR_MODES}")
        if self.size < 32:
            raise ValueError(f"input size {self.size} is below MobileNetV2's minimum of 32")
        if self.width is not None and self.width < 32:
            raise ValueError(f"input width {self.width} is below MobileNetV2's minimum of 32")
        if not isinstance(self.field_of_view, bool):  # a manifest's value: refused like the others
            raise ValueError(f"field_of_view must be true or false, got {self.field_of_view!r}")  # noqa: TRY004

    @property
    def height_width(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return self.size, self.width or self.size

    def describe(self) -> str:
        height, width = self.height_width
        return f"{height}x{width}"

    def to_dict(self) -> dict:
        data = asdict(self)
        # Square bundles, and bundles without the crop, keep the manifest they always had.
        if self.width is None:
            del data["width"]
        if not self.field_of_view:
            del data["field_of_view"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessConfig:
        keys = ("size", "colour", "scale", "offset", "colour_order", "width", "field_of_view")
        return cls(**{k: data[k] for k in keys if k in data})


def check_image_header(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, int, int]:
    """Format, width and height read from the header alone; refuses bombs and unknown formats.

    JPEG and PNG are also walked marker by marker / chunk by chunk (no pixel is decoded): a
    truncated or structurally corrupt file, or one with data after its end (a polyglot), is
    refused here. The pixel cap is checked first, so a bomb is refused whatever follows.
    """
    if not data:
        raise InvalidImageError("the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                fmt, (width, height) = str(im.format), im.size
    except Image.DecompressionBombError as exc:  # Pillow's own limit (about 179 MP) was passed
        raise ImageTooLargeError(
            f"the image is too large to decode safely (its header declares more than "
            f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels; the limit is {max_pixels:,})"
        ) from exc
    except Exception as exc:
        raise InvalidImageError("the file is not a recognised image (expected JPEG or PNG)") from exc
    if fmt == "MPO":  # a JPEG with secondary pictures after it (phone cameras): decoded as its first one
        fmt = "JPEG"
    if fmt not in DECODABLE_FORMATS:
        raise InvalidImageError(f"unsupported image format {fmt}")
    if width <= 0 or height <= 0:
        raise InvalidImageError("the image has no pixels")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"the image is too large to decode safely ({width}x{height} = {width * height:,} pixels; "
            f"the limit is {max_pixels:,})"
        )
    check_image_structure(data, fmt)
    return fmt, width, height


# --- Structure checks: truncation, corruption and polyglots, without decoding pixels ---------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
# Up to this many bytes of padding may follow the end of an image (some writers align files).
MAX_TRAILING_PADDING = 16
_PADDING_BYTES = frozenset(b"\x00\xff \t\r\n")
# Frame headers (SOF0-SOF15 less DHT C4, JPG C8 and DAC CC).
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RST0-7 carry no length
# In entropy-coded data 0xFF is followed by 0x00 (stuffing), RST0-7 or more 0xFF (fill);
# anything else is the next marker. One C-speed search instead of a Python loop per byte.
_JPEG_MARKER_IN_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_FILL = re.compile(rb"\xff+")


def _corrupt(what: str) -> InvalidImageError:
    return InvalidImageError(f"the {what}; the file is corrupt")


def _truncated(fmt: str) -> InvalidImageError:
    return InvalidImageError(f"the {fmt} data is truncated (the file ends before the end of the image)")


def _jpeg_parts(data: bytes, start: int = 0) -> Iterator[tuple[int, int, int]]:
    """(marker, begin, end) of each part of the JPEG that starts at `start`, up to its EOI.

    `begin` is the marker's 0xFF, `end` the end of its segment and, for a scan (SOS), of the
    entropy-coded data after it. Walks the marker segments, skips each scan's data (progressive
    files have several scans) and raises InvalidImageError for a truncated or corrupt file.
    """
    n = len(data)
    if data[start : start + 2] != JPEG_SOI:
        raise _corrupt("JPEG data does not start with a start-of-image marker")
    yield 0xD8, start, start + 2
    pos = start + 2
    seen_frame = seen_scan = False
    while True:
        if pos >= n:
            raise _truncated("JPEG")
        if data[pos] != 0xFF:
            # Stray bytes before a marker: libjpeg skips them with a warning, and sloppy writers
            # (a miscounted APP segment) produce them, so skip them too.
            pos = data.find(b"\xff", pos)
            if pos < 0:
                raise _truncated("JPEG")
        fill = _JPEG_FILL.match(data, pos)  # a marker may be preceded by any number of 0xFF
        pos = fill.end() if fill else pos
        if pos >= n:
            raise _truncated("JPEG")
        marker = data[pos]
        begin = pos - 1
        pos += 1
        if marker == 0xD9:  # EOI
            if not seen_scan:
                raise _corrupt("JPEG data ends before any image data")
            yield marker, begin, pos
            return
        if marker in _JPEG_STANDALONE:
            yield marker, begin, pos
            continue
        if marker == 0x00 or marker == 0xD8 or 0x02 <= marker <= 0xBF:
            raise _corrupt(f"JPEG data holds an invalid marker 0xFF{marker:02X} (offset {pos - 2})")
        if pos + 2 > n:
            raise _truncated("JPEG")
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2:
            raise _corrupt(f"JPEG data holds a segment of impossible length {length} (offset {pos - 2})")
        segment_end = pos + length
        if segment_end > n:
            raise _truncated("JPEG")
        if marker in _JPEG_SOF:
            if seen_frame:
                raise _corrupt(f"JPEG data holds a second frame header (offset {pos - 2})")
            seen_frame = True
        elif marker == 0xDA:  # SOS: entropy-coded data follows up to the next marker
            if not seen_frame:
                raise _corrupt("JPEG data holds a scan before its frame header")
            seen_scan = True
            found = _JPEG_MARKER_IN_SCAN.search(data, segment_end)
            if found is None:
                raise _truncated("JPEG")
            segment_end = found.start()
        yield marker, begin, segment_end
        pos = segment_end


def jpeg_end(data: bytes, start: int = 0) -> int:
    """Offset just past the EOI marker of the JPEG that starts at `start` (see _jpeg_parts)."""
    return max(end for _, _, end in _jpeg_parts(data, start))  # the parts come in order: EOI is last


def jpeg_scan_count(data: bytes) -> int:
    """Scans (SOS segments) of the JPEG that starts `data`, up to its EOI: one per component or
    one in all for a baseline file, about ten for a progressive one. A decoder makes a pass over
    the image for each, so a few KB of repeated scans can cost minutes (see _jpeg_parts)."""
    return sum(1 for marker, _, _ in _jpeg_parts(data) if marker == 0xDA)


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(type, begin, end) of each chunk up to IEND; every chunk's length, type and CRC are checked."""
    n = len(data)
    if data[:8] != PNG_SIGNATURE:
        raise _corrupt("PNG data does not start with the PNG signature")
    view = memoryview(data)
    pos = 8
    seen_data = False
    while True:
        if pos + 12 > n:
            raise _truncated("PNG")
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if length > 0x7FFFFFFF or not kind.isalpha():
            raise _corrupt(f"PNG data holds an invalid chunk header (offset {pos})")
        if pos == 8 and kind != b"IHDR":
            raise _corrupt("PNG data does not start with its IHDR header chunk")
        chunk_end = pos + 12 + length
        if chunk_end > n:
            raise _truncated("PNG")
        if zlib.crc32(view[pos + 4 : pos + 8 + length]) != int.from_bytes(data[chunk_end - 4 : chunk_end], "big"):
            raise _corrupt(f"PNG chunk {kind.decode()} fails its CRC check (offset {pos})")
        if kind == b"IDAT":
            seen_data = True
        elif kind == b"IEND" and not seen_data:
            raise _corrupt("PNG data ends before any image data")
        yield kind, pos, chunk_end
        if kind == b"IEND":
            return
        pos = chunk_end


def png_end(data: bytes) -> int:
    """Offset just past the IEND chunk (see _png_chunks)."""
    return max(end for _, _, end in _png_chunks(data))  # the chunks come in order: IEND is last


def is_padding(trailer: bytes) -> bool:
    """A few bytes of zeros, 0xFF or whitespace after an image: alignment, not content."""
    return len(trailer) <= MAX_TRAILING_PADDING and all(b in _PADDING_BYTES for b in trailer)


def check_image_structure(data: bytes, fmt: str) -> None:
    """Refuse a truncated or corrupt JPEG/PNG, and any data after the image's end marker.

    The only trailers accepted are a few bytes of padding and, after a JPEG, further complete
    JPEGs (camera multi-picture files and gain maps append secondary pictures after the
    primary's EOI). Anything else there (HTML, a ZIP, a PDF) makes the file a polyglot. Other
    formats are left to the decoder.
    """
    if fmt == "JPEG":
        end = jpeg_end(data)
        # Secondary pictures, each possibly preceded by padding.
        while end < len(data):
            next_start = data.find(JPEG_SOI, end, end + MAX_TRAILING_PADDING + 2)
            if next_start < 0 or not is_padding(data[end:next_start]):
                break
            try:
                end = jpeg_end(data, next_start)
            except InvalidImageError:
                break  # not a whole JPEG: reported as trailing data below
    elif fmt == "PNG":
        end = png_end(data)
    else:
        return
    trailer = data[end:]
    if trailer and not is_padding(trailer):
        raise InvalidImageError(
            f"data after the end of the image (possible polyglot): {len(trailer):,} bytes follow the {fmt}"
        )


# --- Metadata removal without re-encoding ---------------------------------------------------

# JPEG parts that carry no pixels: APP1-APP13 and APP15 (EXIF with GPS and dates, XMP, ICC,
# IPTC, maker notes, thumbnails) and comments. APP0 (JFIF) and APP14 (Adobe) stay when they are
# what they claim to be: the decoder reads them to choose the colour transform.
_JPEG_DROPPED = frozenset({*range(0xE1, 0xEE), 0xEF, 0xFE})
_JPEG_KEPT_APP = {0xE0: b"JFIF\x00", 0xEE: b"Adobe"}
# PNG chunks needed to decode and show the pixels; text, time, EXIF, ICC and the rest go.
_PNG_KEPT = frozenset({b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"})


def without_metadata(data: bytes, fmt: str) -> bytes:
    """The image rebuilt from the parts that hold its pixels: the same compressed data, so
    nothing is re-encoded and the decoder sees exactly the pixels it saw before, minus EXIF
    (GPS, device, dates), XMP, ICC, comments and text chunks, and minus anything after the end
    of the first image (a camera's secondary pictures). `data` must have passed
    check_image_header. An EXIF orientation tag is dropped with the rest: use
    exif_orientation first and re-encode the decoded (turned) pixels where it is not 1."""
    if fmt == "JPEG":
        kept = []
        for marker, begin, end in _jpeg_parts(data):
            if marker in _JPEG_DROPPED:
                continue
            signature = _JPEG_KEPT_APP.get(marker)
            if signature is not None and not data.startswith(signature, begin + 4):
                continue  # an APP0/APP14 that is not JFIF/Adobe (e.g. a JFXX thumbnail)
            kept.append(data[begin:end])
        return b"".join(kept)
    if fmt == "PNG":
        return PNG_SIGNATURE + b"".join(data[b:e] for kind, b, e in _png_chunks(data) if kind in _PNG_KEPT)
    raise InvalidImageError(f"metadata removal supports JPEG and PNG, not {fmt}")


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1-8; 1 when absent or unreadable). OpenCV turns the pixels by
    it when decoding, so a file that loses its EXIF must first be decoded and re-encoded."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            value = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block: the decoder ignores it too
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Bytes -> HxWx3 uint8 RGB. Raises InvalidImageError (or ImageTooLargeError)."""
    check_image_header(data, max_pixels=max_pixels)
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)  # also drops alpha and expands grey
    except cv2.error as exc:  # a decoder that throws instead of returning None
        raise InvalidImageError("the image data is corrupt and could not be decoded") from exc
    if bgr is None or bgr.size == 0:
        raise InvalidImageError("the image data is corrupt or truncated and could not be decoded")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_image(path: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file to RGB uint8; errors name the file."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        return decode_image(data, max_pixels=max_pixels)
    except InvalidImageError as exc:
        raise type(exc)(f"{path}: {exc}") from exc


def input_is_turned(image_shape: tuple[int, int], target: tuple[int, int]) -> bool:
    """Whether `resize` turns an image of (height, width) `image_shape` by 90 degrees (np.rot90,
    counter-clockwise) to fit a (height, width) `target`: its long side runs the other way."""
    (h, w), (height, width) = image_shape, target
    return height != width and h != w and (h > w) != (height > width)


def resize(image_rgb: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize of the whole image to `size` (square) or (height, width); no crop: the lesion may
    sit near an edge.

    For a non-square target, an image whose long side runs the other way is first turned by 90
    degrees: a dermatoscopic image has no canonical orientation, and turning it keeps its aspect
    where squeezing would distort the lesion's shape.
    """
    height, width = (size, size) if isinstance(size, int) else size
    h, w = image_rgb.shape[:2]
    if input_is_turned((h, w), (height, width)):
        image_rgb = np.ascontiguousarray(np.rot90(image_rgb))
        h, w = w, h
    shrinking = h * w > height * width
    # INTER_AREA avoids aliasing when a large photograph is reduced; LINEAR for enlarging.
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image_rgb, (width, height), interpolation=interpolation)


def shades_of_gray(image_rgb: np.ndarray, power: int = 6) -> np.ndarray:
    """Shades-of-gray colour constancy (Finlayson & Trezzi 2004), uint8 in and out."""
    img = image_rgb.astype(np.float32)
    illuminant = np.power(np.mean(np.power(img, power), axis=(0, 1)), 1.0 / power)
    norm = float(np.linalg.norm(illuminant))
    if norm < 1e-6:  # a black image has no illuminant to correct
        return image_rgb
    gains = 1.0 / (illuminant / norm * np.sqrt(3.0))
    return np.clip(img * gains, 0, 255).astype(np.uint8)


def clahe_lightness(image_rgb: np.ndarray) -> np.ndarray:
    """CLAHE on the L channel of CIELAB; colours are kept."""
    lab = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2LAB)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def gray_histeq(image_rgb: np.ndarray) -> np.ndarray:
    """The seed study's grayscale + global histogram equalisation, as 3 equal channels."""
    gray = cv2.equalizeHist(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY))
    return np.repeat(gray[..., None], 3, axis=2)


_COLOUR_STEPS = {
    "none": lambda img: img,
    "shades_of_gray": shades_of_gray,
    "clahe": clahe_lightness,
    "gray_histeq": gray_histeq,
}


@dataclass(frozen=True)
class ModelView:
    """An image reduced to the model input's geometry, before the colour step: what the quality
    checks measure, and all the classifier needs of a large upload."""

    image: np.ndarray  # uint8 RGB at the input's (height, width)
    size: tuple[int, int]  # the decoded image's (height, width)
    field_of_view: FieldOfView | None  # the crop box in the decoded image; None: the whole image


def model_view(image_rgb: np.ndarray, config: PreprocessConfig) -> ModelView:
    """Crop (when the config says so) and resize an HxWx3 uint8 RGB image to the model input."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise InvalidImageError(f"expected an HxWx3 uint8 RGB array, got {image_rgb.shape} {image_rgb.dtype}")
    if min(image_rgb.shape[:2]) < 1:
        raise InvalidImageError("the image has no pixels")
    size = (int(image_rgb.shape[0]), int(image_rgb.shape[1]))
    box = None
    if config.field_of_view:
        image_rgb, box = crop_to_field_of_view(image_rgb)
    return ModelView(image=resize(image_rgb, config.height_width), size=size, field_of_view=box)


def model_input(view: ModelView, config: PreprocessConfig) -> np.ndarray:
    """The (height, width, 3) float32 input in [-1, 1] of a ModelView: colour step and scaling."""
    img = _COLOUR_STEPS[config.colour](view.image)
    return img.astype(np.float32) * np.float32(config.scale) + np.float32(config.offset)


def preprocess_views(image_rgb: np.ndarray, config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """(model input, resized image): the (height, width, 3) float32 input in [-1, 1], and the
    uint8 RGB image reduced to the input's geometry before the colour step (what the quality
    checks measure: CLAHE would hide a dark or flat image). Deterministic."""
    view = model_view(image_rgb, config)
    return model_input(view, config), view.image


def preprocess(image_rgb: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """HxWx3 uint8 RGB -> (height, width, 3) float32 in [-1, 1], deterministic: the model input
    training, export checks and inference all use."""
    return preprocess_views(image_rgb, config)[0]


def preprocess_bytes(data: bytes, config: PreprocessConfig, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    return preprocess(decode_image(data, max_pixels=max_pixels), config)
