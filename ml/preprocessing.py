"""The one preprocessing path shared by training, export checks and inference.

decode (OpenCV, RGB order) -> resize to the model input -> colour step -> scale to [-1, 1]
(MobileNetV2's ImageNet normalisation). Training applies its augmentations to the decoded
uint8 RGB image and then calls :func:`preprocess`, so the model never sees pixels prepared
any other way. No TensorFlow here: inference imports this module.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass
from typing import Literal

import cv2
import numpy as np
from PIL import Image

from ml.errors import ImageTooLargeError, InvalidImageError

ColourMode = Literal["none", "shades_of_gray", "clahe", "gray_histeq"]
COLOUR_MODES: tuple[str, ...] = ("none", "shades_of_gray", "clahe", "gray_histeq")

# A decompression bomb is refused from its header, before any pixel is decoded.
DEFAULT_MAX_PIXELS = 40_000_000

# Formats we decode; judged from the bytes (PIL's sniffing), never from a file name.
DECODABLE_FORMATS = frozenset({"JPEG", "PNG", "BMP", "TIFF", "WEBP"})


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that decides the model input; stored in the model manifest."""

    size: int = 224
    colour: ColourMode = "none"
    # x / 127.5 - 1: the [-1, 1] scaling MobileNetV2 was trained with on ImageNet.
    scale: float = 1.0 / 127.5
    offset: float = -1.0
    colour_order: str = "RGB"

    def __post_init__(self) -> None:
        if self.colour not in COLOUR_MODES:
            raise ValueError(f"unknown colour mode {self.colour!r}; expected one of {COLOUR_MODES}")
        if self.size < 32:
            raise ValueError(f"input size {self.size} is below MobileNetV2's minimum of 32")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessConfig:
        return cls(**{k: data[k] for k in ("size", "colour", "scale", "offset", "colour_order") if k in data})


def check_image_header(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, int, int]:
    """Format, width and height read from the header alone; refuses bombs and unknown formats."""
    if not data:
        raise InvalidImageError("the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                fmt, (width, height) = str(im.format), im.size
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"the image is too large to decode safely ({exc})") from exc
    except Exception as exc:
        raise InvalidImageError("the file is not a recognised image (expected JPEG or PNG)") from exc
    if fmt not in DECODABLE_FORMATS:
        raise InvalidImageError(f"unsupported image format {fmt}")
    if width <= 0 or height <= 0:
        raise InvalidImageError("the image has no pixels")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"the image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}"
        )
    return fmt, width, height


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Bytes -> HxWx3 uint8 RGB. Raises InvalidImageError (or ImageTooLargeError)."""
    check_image_header(data, max_pixels=max_pixels)
    buffer = np.frombuffer(data, dtype=np.uint8)
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)  # also drops alpha and expands grey
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


def resize(image_rgb: np.ndarray, size: int) -> np.ndarray:
    """Square resize of the whole image (no crop: the lesion may sit near an edge)."""
    h, w = image_rgb.shape[:2]
    shrinking = h * w > size * size
    # INTER_AREA avoids aliasing when a large photograph is reduced; LINEAR for enlarging.
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image_rgb, (size, size), interpolation=interpolation)


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


def preprocess(image_rgb: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """HxWx3 uint8 RGB -> (size, size, 3) float32 in [-1, 1], deterministic."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise InvalidImageError(f"expected an HxWx3 uint8 RGB array, got {image_rgb.shape} {image_rgb.dtype}")
    if min(image_rgb.shape[:2]) < 1:
        raise InvalidImageError("the image has no pixels")
    img = resize(image_rgb, config.size)
    img = _COLOUR_STEPS[config.colour](img)
    out = img.astype(np.float32) * np.float32(config.scale) + np.float32(config.offset)
    return out


def preprocess_bytes(data: bytes, config: PreprocessConfig, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    return preprocess(decode_image(data, max_pixels=max_pixels), config)
