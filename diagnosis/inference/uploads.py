"""What an upload must pass before it is stored: format from the bytes, structure walk, pixel cap
and budget, metadata removed (DICOM through ml.dicom_input); the stored file decoded again."""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass

from django.conf import settings

from diagnosis.archives import human_size
from diagnosis.budget import UploadBudget
from diagnosis.inference.opencv import use_one_opencv_thread
from ml.errors import ImageTooLargeError, InvalidImageError
from ml.screening import (
    check_minimum_size,
)

# Formats a clinician may upload, judged from the bytes, never from the file name.
ACCEPTED_UPLOAD_FORMATS = frozenset({"JPEG", "PNG"})


# Scans a JPEG may have: encoders write one to three (baseline) or about ten (progressive); each is
# a pass of the decoder over the whole image, so thousands of tiny repeated scans are a bomb.
JPEG_MAX_SCANS = 100


@dataclass(frozen=True)
class SanitisedImage:
    data: bytes  # what is stored: the pixels' own compressed data, without metadata
    extension: str  # "jpg" or "png": the stored file's format
    source_format: str  # what was uploaded: "JPEG", "PNG" or "DICOM" (stored as PNG)
    width: int
    height: int
    pixels_per_mm: float | None = None  # a DICOM upload's PixelSpacing, when it states one
    acquired_on: dt.date | None = None  # a DICOM upload's own date (the import command may use it)


def sanitise_upload(data: bytes, *, budget: UploadBudget | None = None, name: str = "the file") -> SanitisedImage:
    """Check an upload, remove its metadata and prove that what will be stored decodes.

    The format is judged from the bytes (never the name or declared type); a truncated or
    corrupt file, or one with data after the image's end (a polyglot), is refused before any
    pixel is decoded (ml.preprocessing.check_image_header), and so is an image over the budget's
    per-image pixel cap or a JPEG of more than JPEG_MAX_SCANS scans. The image then pays its
    pixels (and a PNG the bytes its image data inflates to) to `budget`, the request's
    decompression budget shared by all its files (diagnosis/budget.py; a fresh one when None):
    BudgetExceeded refuses the whole request.

    The stored file keeps the upload's own compressed pixel data and nothing else
    (ml.preprocessing.without_metadata): EXIF (GPS, device, dates), XMP, ICC, comments and text
    chunks are gone, nothing is re-encoded (a JPEG keeps its size and exact pixels) and the
    worker decodes exactly what was checked here. A JPEG with an EXIF orientation keeps it in
    an EXIF block of that one tag, written here (_jpeg_with_orientation): its stored file is no
    larger than the upload (a PNG re-encoding of a 7 MB photo was 105 MB). A PNG with one (rare:
    browsers ignore it in PNG) is decoded upright and re-encoded as PNG, refused if that comes
    out over the upload cap. The stored file is decoded before it is accepted (_check_decodes).
    An image under ml.screening.MIN_IMAGE_SIDE pixels on a side is refused as too small to
    classify. Raises InvalidImageError (ImageTooLargeError over the pixel cap) or BudgetExceeded.
    """
    cv2 = use_one_opencv_thread()
    from ml.dicom_input import is_dicom
    from ml.preprocessing import check_image_header, decode_image, exif_orientation, jpeg_scan_count, without_metadata

    budget = budget if budget is not None else UploadBudget.for_request()
    if is_dicom(data):  # judged from the bytes (DICM at offset 128), like JPEG and PNG
        return _sanitise_dicom(data, budget=budget, name=name)
    source_format, width, height = check_image_header(data, max_pixels=budget.max_image_pixels)
    if source_format not in ACCEPTED_UPLOAD_FORMATS:
        raise InvalidImageError(f"unsupported image format {source_format}: upload a JPEG or PNG file")
    too_small = check_minimum_size(width, height)
    if too_small:  # refused before decoding: a thumbnail or a 1x1 pixel gets no diagnosis
        raise InvalidImageError(too_small.rstrip("."))
    if source_format == "JPEG" and (scans := jpeg_scan_count(data)) > JPEG_MAX_SCANS:
        raise ImageTooLargeError(
            f"the image is too large to decode safely: the JPEG has {scans:,} scans, each a pass over the whole "
            f"image (the limit is {JPEG_MAX_SCANS}; a progressive JPEG has about ten)"
        )
    # Paid before any pixel is decoded: the request's files share the one budget.
    budget.charge_pixels(width * height, what=name)
    if source_format == "PNG":
        budget.charge_inflated(png_inflated_size(data), what=name)
    extension = "jpg" if source_format == "JPEG" else "png"
    stored = without_metadata(data, source_format)
    orientation = exif_orientation(data)
    if orientation != 1:
        if orientation >= 5:  # turned by 90 degrees: upright, the sides swap
            width, height = height, width
        if source_format == "JPEG":
            stored = _jpeg_with_orientation(stored, orientation)
        else:
            rgb = decode_image(data, max_pixels=budget.max_image_pixels)  # OpenCV turns it by the tag
            ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            del rgb
            if not ok:
                raise InvalidImageError("the image could not be re-encoded")
            stored = encoded.tobytes()
            max_bytes = settings.SKINPORTAL_MAX_UPLOAD_BYTES
            if len(stored) > max_bytes:
                raise InvalidImageError(
                    f"turned upright by its EXIF orientation the PNG is {human_size(len(stored))}, over the "
                    f"{human_size(max_bytes, unit='MiB')} limit: save it upright without an orientation tag"
                )
    _check_decodes(stored, source_format)
    return SanitisedImage(data=stored, extension=extension, source_format=source_format, width=width, height=height)


def _sanitise_dicom(data: bytes, *, budget: UploadBudget, name: str) -> SanitisedImage:
    """A DICOM upload (ml.dicom_input) stored as an RGB PNG of its one frame (a JPEG baseline frame:
    as that JPEG, without metadata, like a JPEG upload), nothing of its header kept: refused from
    the header alone (transfer syntax, frames, bits, samples, the pixel cap) before any pixel is
    decoded, then it pays its pixels to the budget like any image."""
    cv2 = use_one_opencv_thread()
    from ml.dicom_input import check_dicom_header, decode_dicom
    from ml.preprocessing import without_metadata

    header = check_dicom_header(data, max_pixels=budget.max_image_pixels)
    too_small = check_minimum_size(header.width, header.height)
    if too_small:
        raise InvalidImageError(too_small.rstrip("."))
    budget.charge_pixels(header.width * header.height, what=name)
    pixels = decode_dicom(data, max_pixels=budget.max_image_pixels, header=header, decode_jpeg=False)
    if pixels.jpeg is not None:
        # A JPEG frame is stored as the JPEG it is, like a JPEG upload: not re-encoded, no larger
        # (a 12 MP frame of 1.7 MiB is 14.5 MiB as PNG, over the upload cap).
        stored, extension = without_metadata(pixels.jpeg, "JPEG"), "jpg"
        _check_decodes(stored, "JPEG")
    else:
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(pixels.rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise InvalidImageError("the image could not be re-encoded")
        stored, extension = encoded.tobytes(), "png"
        max_bytes = settings.SKINPORTAL_MAX_UPLOAD_BYTES
        if len(stored) > max_bytes:  # cannot happen from an upload under the cap; checked all the same
            raise InvalidImageError(
                f"stored as PNG the DICOM image is {human_size(len(stored))}, over the "
                f"{human_size(max_bytes, unit='MiB')} limit"
            )
    return SanitisedImage(
        data=stored,
        extension=extension,
        source_format="DICOM",
        width=header.width,
        height=header.height,
        pixels_per_mm=pixels.pixels_per_mm,
        acquired_on=pixels.acquired_on,
    )


def decode_stored_image(data: bytes):
    """A stored image file (JPEG or PNG) as H x W x 3 uint8 RGB, decoded as the classifier
    decodes it (ml.preprocessing.decode_image). Raises InvalidImageError."""
    use_one_opencv_thread()
    from ml.preprocessing import decode_image

    return decode_image(data)


def _check_decodes(stored: bytes, source_format: str) -> None:
    """Decode the file that will be stored, so corrupt image data is refused now, not in the
    worker. Every byte of it is decoded, with little held: a PNG's rows are all inflated and
    unfiltered (to grey, a byte a pixel), and a JPEG's every coefficient is entropy-decoded at
    1/8 scale (libjpeg skips the full-size inverse DCT: a fraction of the time and 1/64 of the
    memory). Raises InvalidImageError."""
    cv2 = use_one_opencv_thread()
    import numpy as np

    flags = cv2.IMREAD_REDUCED_GRAYSCALE_8 if source_format == "JPEG" else cv2.IMREAD_GRAYSCALE
    try:
        decoded = cv2.imdecode(np.frombuffer(stored, dtype=np.uint8), flags | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as exc:  # a decoder that throws instead of returning None
        raise InvalidImageError("the image data is corrupt and could not be decoded") from exc
    if decoded is None or decoded.size == 0:
        raise InvalidImageError("the image data is corrupt or truncated and could not be decoded")


def _jpeg_with_orientation(jpeg: bytes, orientation: int) -> bytes:
    """`jpeg` (without metadata) with one EXIF block, written here, that holds the orientation
    tag and nothing else (no bytes of the upload's own EXIF are kept). Browsers, OpenCV (the
    worker, the heatmap) and the PDF report turn the picture upright by it."""
    ifd_entry = struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)  # Orientation, SHORT, 1 value
    payload = b"Exif\x00\x00" + b"MM\x00\x2a" + struct.pack(">IH", 8, 1) + ifd_entry + struct.pack(">I", 0)
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    position = 2  # after the start-of-image marker, and after a JFIF header (it comes first)
    if jpeg[2:4] == b"\xff\xe0":
        position = 4 + int.from_bytes(jpeg[4:6], "big")
    return jpeg[:position] + segment + jpeg[position:]


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type: grey, RGB, palette, grey+alpha, RGBA


_ADAM7_PASSES = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_inflated_size(data: bytes) -> int:
    """The bytes a PNG's image data inflates to (each row a filter byte and its pixels' bits;
    an interlaced image's seven passes), from its IHDR: what zlib produces when it is decoded.
    `data` must have passed check_image_header (IHDR is its first chunk)."""
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    bits = _PNG_CHANNELS.get(colour_type, 4) * depth

    def rows(w: int, h: int) -> int:
        return h * (1 + (w * bits + 7) // 8) if w > 0 and h > 0 else 0

    if interlace != 1:
        return rows(width, height)
    return sum(rows(-(-(width - x0) // dx), -(-(height - y0) // dy)) for x0, y0, dx, dy in _ADAM7_PASSES)
