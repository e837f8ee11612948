"""A corpus of hostile and tricky uploads, generated in code (no binary fixtures in the repo).

Each case says what a clinician's browser or an API client could send (file name, declared
content type, bytes) and what the portal must do with it: refuse it with a clear message, or,
for the few cases where the content is a real JPEG/PNG whatever the name says, accept it and
store it as the format its bytes are. The same corpus drives the page, API and batch tests
(tests/portal/test_hostile_uploads.py) and is counted by the security documentation's test.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tests.conftest import encode, make_image


@dataclass(frozen=True)
class HostileFile:
    name: str  # the test id
    filename: str
    content_type: str  # what the client declares; never trusted
    data: bytes
    message: str  # a fragment of the refusal shown on the page and in the API error ("" if accepted)
    accepted_as: str | None = None  # the source format it is stored as, when its content is a real JPEG/PNG
    max_upload_bytes: int | None = None  # the case needs a smaller SKINPORTAL_MAX_UPLOAD_BYTES

    @property
    def accepted(self) -> bool:
        return self.accepted_as is not None


# --- Building blocks ------------------------------------------------------------------------


def _jpeg() -> bytes:
    return encode(make_image(128, 100, seed=1), ".jpg")


def _png() -> bytes:
    return encode(make_image(128, 100, seed=2), ".png")


def _pillow(fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(make_image(128, 100, seed=3)).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header announces width x height RGB pixels, with a tiny (short) IDAT."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 4096, 9))
        + png_chunk(b"IEND", b"")
    )


def _png_bit_bomb(side: int) -> bytes:
    """A complete, valid 1-bit PNG of side x side black pixels: kilobytes on disk, side**2 * 3 bytes decoded."""
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    rows = bytes((1 + (side + 7) // 8) * side)  # filter byte 0 and zero bits on every row
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows, 9))
        + png_chunk(b"IEND", b"")
    )


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) is patched to announce width x height."""
    data = bytearray(_jpeg())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _scan_start(jpeg: bytes) -> int:
    sos = jpeg.find(b"\xff\xda")
    return sos + 2 + int.from_bytes(jpeg[sos + 2 : sos + 4], "big")


def _corrupt_jpeg() -> bytes:
    """Valid headers, then random bytes instead of entropy-coded data (raw 0xFF included), then EOI."""
    jpeg = _jpeg()
    start = _scan_start(jpeg)
    garbage = np.random.default_rng(5).integers(0, 256, len(jpeg) - start - 2, dtype=np.uint8).tobytes()
    return jpeg[:start] + garbage + b"\xff\xd9"


def _truncated_png() -> bytes:
    png = _png()
    idat = png.find(b"IDAT")
    return png[: idat + 4 + int.from_bytes(png[idat - 4 : idat], "big") // 2]  # half of the first IDAT


def _png_bad_crc() -> bytes:
    png = bytearray(_png())
    idat = png.find(b"IDAT")
    crc_at = idat + 4 + int.from_bytes(png[idat - 4 : idat], "big")
    png[crc_at] ^= 0x01
    return bytes(png)


HTML = b"<!DOCTYPE html><html><body><script>fetch('/api/v1/patients/').then(r => r.text())</script></body></html>"
SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="96" height="64" '
    b'onload="alert(document.cookie)"><script>alert(1)</script><rect width="96" height="64"/></svg>'
)
PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R/OpenAction<</S/JavaScript/JS(app.alert(1))>>>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)


def _zip_payload() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("index.html", HTML)
    return buffer.getvalue()


def _oversized_png() -> bytes:
    return encode(make_image(256, 256, seed=4), ".png")


# --- The corpus -----------------------------------------------------------------------------

UNRECOGNISED = "not a recognised image"
POLYGLOT = "data after the end of the image (possible polyglot)"
TOO_LARGE = "too large to decode safely"

HOSTILE_FILES: list[HostileFile] = [
    HostileFile("zero-byte", "empty.jpg", "image/jpeg", b"", "file is empty"),
    HostileFile(
        "random-bytes",
        "noise.jpg",
        "image/jpeg",
        np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        UNRECOGNISED,
    ),
    HostileFile("truncated-jpeg", "cut.jpg", "image/jpeg", _jpeg()[: len(_jpeg()) // 2], "JPEG data is truncated"),
    HostileFile("truncated-png-in-idat", "cut.png", "image/png", _truncated_png(), "PNG data is truncated"),
    HostileFile("corrupt-jpeg-scan", "garbage.jpg", "image/jpeg", _corrupt_jpeg(), "the file is corrupt"),
    HostileFile("png-bad-idat-crc", "crc.png", "image/png", _png_bad_crc(), "fails its CRC check"),
    HostileFile("svg-with-script", "lesion.svg", "image/svg+xml", SVG, UNRECOGNISED),
    HostileFile("html-named-jpg", "photo.jpg", "image/jpeg", HTML, UNRECOGNISED),
    HostileFile("pdf", "referral.pdf", "application/pdf", PDF, UNRECOGNISED),
    HostileFile("gif", "lesion.gif", "image/gif", _pillow("GIF"), "unsupported image format GIF"),
    HostileFile("bmp", "lesion.bmp", "image/bmp", _pillow("BMP"), "unsupported image format BMP"),
    HostileFile("tiff", "lesion.tiff", "image/tiff", _pillow("TIFF"), "unsupported image format TIFF"),
    HostileFile("webp", "lesion.webp", "image/webp", _pillow("WEBP"), "unsupported image format WEBP"),
    HostileFile("polyglot-jpeg-html", "photo.jpg", "image/jpeg", _jpeg() + HTML, POLYGLOT),
    HostileFile("polyglot-png-zip", "photo.png", "image/png", _png() + _zip_payload(), POLYGLOT),
    HostileFile("polyglot-jpeg-pdf", "photo.jpg", "image/jpeg", _jpeg() + PDF, POLYGLOT),
    HostileFile("polyglot-jpeg-then-fake-jpeg", "two.jpg", "image/jpeg", _jpeg() + b"\xff\xd8" + HTML, POLYGLOT),
    HostileFile("jpeg-magic-then-html", "photo.jpg", "image/jpeg", b"\xff\xd8\xff\xe0" + HTML, UNRECOGNISED),
    HostileFile(
        "bomb-png-declares-100000x100000", "bomb.png", "image/png", _png_declaring(100_000, 100_000), TOO_LARGE
    ),
    HostileFile("bomb-png-1bit-7000x7000", "bomb.png", "image/png", _png_bit_bomb(7000), TOO_LARGE),
    HostileFile("bomb-jpeg-sof-65000x65000", "bomb.jpg", "image/jpeg", _jpeg_declaring(65_000, 65_000), TOO_LARGE),
    HostileFile(
        "over-the-size-cap", "big.png", "image/png", _oversized_png(), "larger than the", max_upload_bytes=4096
    ),
    # Accepted: the content decides, whatever the name, the declared type or a harmless trailer says.
    HostileFile("png-named-jpg", "photo.jpg", "image/jpeg", _png(), "", accepted_as="PNG"),
    HostileFile("jpeg-named-png", "photo.png", "image/png", _jpeg(), "", accepted_as="JPEG"),
    HostileFile(
        "jpeg-with-secondary-jpeg",
        "phone.jpg",
        "image/jpeg",
        _pillow("MPO", save_all=True, append_images=[Image.new("RGB", (32, 24))]),
        "",
        accepted_as="JPEG",
    ),
    HostileFile("png-with-zero-padding", "padded.png", "image/png", _png() + b"\x00" * 8, "", accepted_as="PNG"),
]

REFUSED_FILES = [case for case in HOSTILE_FILES if not case.accepted]
ACCEPTED_FILES = [case for case in HOSTILE_FILES if case.accepted]
HOSTILE_CASE_COUNT = len(HOSTILE_FILES)
