"""A DICOM file as an upload: checked from its header, then its one frame decoded to RGB.

Dermatoscopes and PACS hand out DICOM (VL Photographic Image, Secondary Capture). The portal
stores pixels only, so a DICOM upload becomes a plain RGB array here and the caller writes it as
PNG (a JPEG baseline frame: handed back as the JPEG it is, stored like a JPEG upload): nothing of
the DICOM header is kept (the portal's own patient and lesion choice stands).

Hostile input is treated like a JPEG or PNG (ml/preprocessing.py): judged from the bytes (the
`DICM` magic at offset 128, never the name), every check that can be made from the header is
made before a pixel is decoded (transfer syntax read from the file meta group before the data
set is parsed, so a deflated data set is never inflated; Rows x Columns against the pixel cap;
one frame; 8 bits; samples per pixel matching the photometric interpretation; the pixel data's
length), and only what decodes without extra packages is accepted: uncompressed 8-bit
MONOCHROME2, RGB or YBR_FULL, or one JPEG baseline frame (walked and decoded by the same code as
a JPEG upload). No Django here.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import math
import re
import warnings
from dataclasses import dataclass

import numpy as np

from ml.errors import ImageTooLargeError, InvalidImageError
from ml.preprocessing import DEFAULT_MAX_PIXELS, check_image_header, decode_image, jpeg_scan_count

# pydicom logs (and warns) every oddity of a file it parses, quoting its values: an uploader would
# write the portal's log. The refusal says what matters; its parser's chatter is not logged.
logging.getLogger("pydicom").setLevel(logging.ERROR)

DICOM_MAGIC = b"DICM"
DICOM_MAGIC_OFFSET = 128

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
UNCOMPRESSED = frozenset({EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN})
ACCEPTED_TRANSFER_SYNTAXES = UNCOMPRESSED | {JPEG_BASELINE}

# Photometric interpretation -> samples per pixel, for uncompressed pixel data.
UNCOMPRESSED_PHOTOMETRIC = {"MONOCHROME2": 1, "RGB": 3, "YBR_FULL": 3}
# A JPEG baseline frame: libjpeg turns YCbCr into RGB itself; grey stays grey.
JPEG_PHOTOMETRIC = {"MONOCHROME2": 1, "YBR_FULL_422": 3, "YBR_FULL": 3}
JPEG_MAX_SCANS = 100  # as for a JPEG upload (diagnosis/inference/uploads.py)
# Reads the parser may make of one file (about two per element): a single photograph has a few
# hundred elements, while 10 MiB of tiny ones took the parser 11 s on 2 busy cores (a CPU bomb
# that no pixel cap sees). 20,000 reads are about 0.15 s.
MAX_PARSER_READS = 20_000
# Pixel spacing outside this range (mm per pixel) is not a dermoscopic image's: not used.
SPACING_RANGE_MM = (1e-4, 10.0)


@dataclass(frozen=True)
class DicomPixels:
    rgb: np.ndarray | None  # H x W x 3 uint8; None for a JPEG frame not decoded (decode_jpeg=False)
    transfer_syntax: str
    photometric: str
    pixels_per_mm: float | None  # from PixelSpacing / ImagerPixelSpacing when square and sane
    acquired_on: dt.date | None = None  # Content, Acquisition, Series or Study Date, the first valid
    jpeg: bytes | None = None  # a JPEG baseline file's frame, checked like a JPEG upload


@dataclass(frozen=True)
class DicomHeader:
    width: int
    height: int
    transfer_syntax: str
    photometric: str
    samples_per_pixel: int
    planar_configuration: int
    pixels_per_mm: float | None
    acquired_on: dt.date | None = None


class TooManyElements(Exception):
    """The parser went over MAX_PARSER_READS on one file."""


class _BoundedStream(io.BytesIO):
    """The file's bytes for pydicom, which reads element by element: past `max_reads` reads the
    parse stops (TooManyElements), whatever the elements are nested in."""

    def __init__(self, data: bytes, max_reads: int) -> None:
        super().__init__(data)
        self.reads_left = max_reads

    def read(self, size: int | None = -1) -> bytes:
        self.reads_left -= 1
        if self.reads_left < 0:
            raise TooManyElements
        return super().read(size)


def _too_many_elements() -> InvalidImageError:
    return _refuse(
        f"has too many data elements to read safely (over {MAX_PARSER_READS // 2:,}); a single photograph has a few hundred"
    )


def is_dicom(data: bytes) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then `DICM` (judged from the bytes only)."""
    return len(data) >= DICOM_MAGIC_OFFSET + 4 and data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == DICOM_MAGIC


def _refuse(reason: str) -> InvalidImageError:
    return InvalidImageError(f"the DICOM file {reason}")


def _transfer_syntax(data: bytes) -> str:
    """The transfer syntax from the file meta group alone (always explicit VR little endian), read
    before the data set: a deflated data set would otherwise be inflated by the parser."""
    from pydicom.filereader import _read_file_meta_info

    stream = _BoundedStream(data, MAX_PARSER_READS)
    stream.seek(DICOM_MAGIC_OFFSET + 4)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta = _read_file_meta_info(stream)
            syntax = str(meta.get("TransferSyntaxUID", "") or "").strip("\0 ")
    except TooManyElements as exc:
        raise _too_many_elements() from exc
    except Exception as exc:
        raise _refuse("has a corrupt file meta header") from exc
    if not syntax:
        raise _refuse("has a truncated or corrupt file meta header (no transfer syntax)")
    return syntax


def _code_string(value: str) -> str:
    """A code string from the file, as a message may quote it (its own characters only: A-Z, 0-9,
    space, underscore, at most 16), else said to be invalid."""
    if not value:
        return "none"
    return value if re.fullmatch(r"[A-Z0-9 _]{1,16}", value) else "(an invalid value)"


def _transfer_syntax_name(uid: str) -> str:
    from pydicom.uid import UID

    if not re.fullmatch(r"[0-9.]{1,64}", uid):  # the message quotes it: nothing else than a UID's characters
        return "(an invalid UID)"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        name = UID(uid).name
    return f"{name} ({uid})" if name and name != uid else uid


# Every element this module reads: parsed inside _read's guard, so a malformed value is "corrupt".
_USED_KEYWORDS = (
    "Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "NumberOfFrames", "PixelRepresentation",
    "PhotometricInterpretation", "PlanarConfiguration", "PixelSpacing", "ImagerPixelSpacing",
    "ContentDate", "AcquisitionDate", "SeriesDate", "StudyDate",
)


def _read(data: bytes, *, stop_before_pixels: bool):
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(
                _BoundedStream(data, MAX_PARSER_READS), stop_before_pixels=stop_before_pixels
            )
            # Element values are parsed when first read: read the ones used now, inside the guard.
            for keyword in _USED_KEYWORDS:
                dataset.get(keyword)
    except TooManyElements as exc:
        raise _too_many_elements() from exc
    except Exception as exc:
        raise _refuse("is corrupt or truncated and could not be read") from exc
    return dataset


def _int(dataset, keyword: str, default: int | None = None) -> int:
    value = dataset.get(keyword, default)
    try:
        if value is None or isinstance(value, (list, tuple)):
            raise TypeError
        return int(value)
    except (TypeError, ValueError) as exc:
        raise _refuse(f"has no usable {keyword}") from exc


def _pixels_per_mm(dataset) -> float | None:
    """Pixels per millimetre from PixelSpacing (or ImagerPixelSpacing): row and column spacing
    equal within 1 %, in a plausible range; otherwise None (the portal does not guess)."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            value = dataset.get(keyword)
            if value is None or len(value) != 2:
                continue
            row, column = float(value[0]), float(value[1])
        except Exception:  # noqa: BLE001, S112 - a malformed decimal string: no spacing
            continue
        low, high = SPACING_RANGE_MM
        if not all(math.isfinite(v) and low <= v <= high for v in (row, column)):
            continue
        if abs(row - column) > 0.01 * max(row, column):
            continue
        return 1.0 / ((row + column) / 2)
    return None


def _acquired_on(dataset) -> dt.date | None:
    """The day the picture was taken, as the file states it (the first valid of Content Date,
    Acquisition Date, Series Date, Study Date); None when it states none."""
    for keyword in ("ContentDate", "AcquisitionDate", "SeriesDate", "StudyDate"):
        try:
            value = str(dataset.get(keyword, "") or "").strip()
            if len(value) == 8 and value.isdigit():
                return dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
        except Exception:  # noqa: BLE001, S112 - a malformed date: try the next one
            continue
    return None


def check_dicom_header(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DicomHeader:
    """Everything that can be refused without touching the pixel data, refused here: not DICOM,
    an unsupported transfer syntax (read before the data set), no Pixel Data, more than one frame,
    Rows x Columns over `max_pixels`, anything but 8 bits unsigned, samples per pixel that do not
    match the photometric interpretation. Raises InvalidImageError (ImageTooLargeError)."""
    if not is_dicom(data):
        raise InvalidImageError("the file is not a DICOM file (no DICM marker at offset 128)")
    syntax = _transfer_syntax(data)
    if syntax not in ACCEPTED_TRANSFER_SYNTAXES:
        raise _refuse(
            f"uses the transfer syntax {_transfer_syntax_name(syntax)}, which is not supported: "
            "export it uncompressed (explicit VR little endian) or as JPEG baseline"
        )
    header = _read(data, stop_before_pixels=True)
    frames = _int(header, "NumberOfFrames", 1)
    if frames != 1:
        raise _refuse(f"holds {frames} frames; upload one image (a single frame) per file")
    rows, columns = _int(header, "Rows"), _int(header, "Columns")
    if rows <= 0 or columns <= 0:
        raise _refuse("has no pixels (Rows or Columns is 0)")
    if rows * columns > max_pixels:  # before the pixel data is even read
        raise ImageTooLargeError(
            f"the image is too large to decode safely ({columns}x{rows} = {rows * columns:,} pixels; "
            f"the limit is {max_pixels:,})"
        )
    bits, stored = _int(header, "BitsAllocated"), _int(header, "BitsStored", 8)
    if bits != 8 or stored != 8:
        raise _refuse(
            f"has {stored}-bit samples in {bits} bits; only 8-bit images (photographs, dermoscopy) are accepted"
        )
    if _int(header, "PixelRepresentation", 0) != 0:
        raise _refuse("has signed pixel values; only unsigned 8-bit images are accepted")
    photometric = str(header.get("PhotometricInterpretation", "") or "").strip()
    samples = _int(header, "SamplesPerPixel")
    accepted = JPEG_PHOTOMETRIC if syntax == JPEG_BASELINE else UNCOMPRESSED_PHOTOMETRIC
    if photometric not in accepted:
        raise _refuse(
            f"has the photometric interpretation {_code_string(photometric)}; accepted here: {', '.join(sorted(accepted))}"
        )
    if samples != accepted[photometric]:
        raise _refuse(f"declares {samples} samples per pixel, but {photometric} has {accepted[photometric]}")
    planar = _int(header, "PlanarConfiguration", 0) if samples == 3 else 0
    if planar not in (0, 1):
        raise _refuse(f"has an invalid PlanarConfiguration {planar}")
    return DicomHeader(
        width=columns,
        height=rows,
        transfer_syntax=syntax,
        photometric=photometric,
        samples_per_pixel=samples,
        planar_configuration=planar,
        pixels_per_mm=_pixels_per_mm(header),
        acquired_on=_acquired_on(header),
    )


def _uncompressed(header: DicomHeader, pixel_data: bytes) -> np.ndarray:
    rows, columns, samples = header.height, header.width, header.samples_per_pixel
    expected = rows * columns * samples
    # An odd length is padded to even with one byte; anything else is truncated or smuggled data.
    if len(pixel_data) < expected:
        raise _refuse(f"is truncated: its pixel data holds {len(pixel_data):,} bytes of the {expected:,} declared")
    if len(pixel_data) > expected + (expected % 2):
        raise _refuse(f"holds {len(pixel_data):,} bytes of pixel data where {expected:,} are declared")
    flat = np.frombuffer(pixel_data, dtype=np.uint8, count=expected)
    if samples == 1:
        grey = flat.reshape(rows, columns)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if header.planar_configuration == 1:  # RRR...GGG...BBB...
        pixels = flat.reshape(3, rows, columns).transpose(1, 2, 0)
    else:
        pixels = flat.reshape(rows, columns, 3)
    if header.photometric == "YBR_FULL":
        from pydicom.pixels import convert_color_space

        pixels = convert_color_space(pixels.copy(), "YBR_FULL", "RGB")
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def _jpeg_frame(header: DicomHeader, pixel_data: bytes, *, max_pixels: int) -> bytes:
    """The one JPEG frame, walked like a JPEG upload (structure, size against the header, scans)."""
    from pydicom.encaps import generate_frames

    try:
        frames = list(generate_frames(pixel_data, number_of_frames=1))
    except Exception as exc:
        raise _refuse("has corrupt encapsulated pixel data") from exc
    if len(frames) != 1 or not frames[0]:
        raise _refuse("has no JPEG frame in its pixel data")
    frame = frames[0].rstrip(b"\0")  # fragments are padded to even length
    fmt, width, height = check_image_header(frame, max_pixels=max_pixels)  # the JPEG upload's structure walk
    if fmt != "JPEG":
        raise _refuse(f"declares JPEG baseline but its frame is {fmt}")
    if (width, height) != (header.width, header.height):
        raise _refuse(f"declares {header.width}x{header.height} pixels but its JPEG frame is {width}x{height}")
    if (scans := jpeg_scan_count(frame)) > JPEG_MAX_SCANS:
        raise ImageTooLargeError(f"the image is too large to decode safely: its JPEG frame has {scans:,} scans")
    return frame


def decode_dicom(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, header: DicomHeader | None = None, decode_jpeg: bool = True
) -> DicomPixels:
    """The DICOM file's one frame as H x W x 3 uint8 RGB (grey repeated into three channels).
    Checks the header first (check_dicom_header, unless the caller passes the header it checked).
    A JPEG baseline frame is also handed back as it is (`jpeg`), and with decode_jpeg=False not
    decoded here (the caller stores the JPEG itself). Raises InvalidImageError (ImageTooLargeError)."""
    header = header or check_dicom_header(data, max_pixels=max_pixels)
    dataset = _read(data, stop_before_pixels=False)
    if "PixelData" not in dataset:
        raise _refuse("holds no image (no Pixel Data element)")
    try:
        pixel_data = bytes(dataset.PixelData)
    except Exception as exc:
        raise _refuse("is truncated: its pixel data could not be read") from exc
    jpeg = None
    if header.transfer_syntax == JPEG_BASELINE:
        jpeg = _jpeg_frame(header, pixel_data, max_pixels=max_pixels)
        # OpenCV, as for a JPEG upload: YCbCr -> RGB, grey expanded
        rgb = decode_image(jpeg, max_pixels=max_pixels) if decode_jpeg else None
    else:
        rgb = _uncompressed(header, pixel_data)
    return DicomPixels(
        jpeg=jpeg,
        rgb=rgb,
        transfer_syntax=header.transfer_syntax,
        photometric=header.photometric,
        pixels_per_mm=header.pixels_per_mm,
        acquired_on=header.acquired_on,
    )
