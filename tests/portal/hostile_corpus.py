"""A corpus of hostile and tricky uploads, generated in code (no binary fixtures in the repo).

Each case says what a clinician's browser or an API client could send (file name, declared
content type, bytes) and what the portal must do with it: refuse it with a clear message, or,
for the few cases where the content is a real JPEG/PNG whatever the name says, accept it and
store it as the format its bytes are. The same corpus drives the page, API and batch tests
(tests/portal/test_hostile_uploads.py) and is counted by the security documentation's test.

HOSTILE_ARCHIVES are ZIPs built to make the server unpack or decode far more than they weigh
(issue 13): each must be refused whole, as a batch on the page and through the API, with nothing
stored; most of them before a single member is inflated.
"""

from __future__ import annotations

import copy
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


def png_of_zeros(width: int, height: int, *, depth: int = 8, colour_type: int = 2, level: int = 1) -> bytes:
    """A complete, valid PNG of black pixels (RGB by default): a few hundred KB on disk for tens of MB
    of image data. Level 1 keeps building it fast (the file is a few times larger than at level 9)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    raw = bytes((1 + (width * channels * depth + 7) // 8) * height)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(raw, level))
        + png_chunk(b"IEND", b"")
    )


def jpeg_exif_rotated(width: int, height: int, *, orientation: int = 6, quality: int = 95) -> bytes:
    """A phone photo held upright: noise (it barely compresses, like a sharp photograph), saved
    lying on its side with an EXIF orientation tag saying how to turn it, and the camera's EXIF."""
    pixels = np.random.default_rng(11).integers(0, 256, (height, width, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "PhoneMaker", orientation  # make, orientation
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 12.5)}  # GPS
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality, exif=exif.tobytes())
    return buffer.getvalue()


def jpeg_scan_bomb(width: int, height: int, repeats: int) -> bytes:
    """A progressive JPEG with its smallest AC scan repeated: a few bytes each (an end-of-band run
    over every block) and, to the decoder, one more pass over the whole image each."""
    from ml.preprocessing import _jpeg_parts

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 80, 60)).save(buffer, format="JPEG", progressive=True)
    data = buffer.getvalue()
    scans = [(b, e) for marker, b, e in _jpeg_parts(data) if marker == 0xDA and data[b + 5 + 2 * data[b + 4]] > 0]
    begin, end = min(scans, key=lambda scan: scan[1] - scan[0])
    eoi = len(data) - 2
    return data[:eoi] + data[begin:end] * repeats + data[eoi:]


def _jpeg_noise(width: int, height: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return encode(pixels, ".jpg")


def zip_of(members: list[tuple[str, bytes]], *, deflated: bool) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED if deflated else zipfile.ZIP_STORED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buffer.getvalue()


def zip_overlapping(entries: int, member_bytes: int) -> bytes:
    """One deflated member of zeros and `entries` central-directory entries that all point at its
    data: a few KB that unpack to entries x member_bytes. The entries share the member's name, as
    zipfile checks each entry's name against its local header."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("lesion.jpg", bytes(member_bytes))
        first = zf.filelist[0]
        zf.filelist.extend(copy.copy(first) for _ in range(entries - 1))
    return buffer.getvalue()


def _zip_of_many_entries(entries: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for i in range(entries):
            zf.writestr(f"empty-{i}/", b"")  # folders: nothing to read, but an object each to parse
    return buffer.getvalue()


# --- The corpus -----------------------------------------------------------------------------

UNRECOGNISED = "not a recognised image"
PIXEL_BUDGET = "to decode, over the limit"
INFLATE_BUDGET = "unpacked, over the limit"
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
    # Under the old 40 MP cap, over the 25 MP one chosen for dermatoscopy (SECURITY.md).
    HostileFile("bomb-png-1bit-5100x5100", "bomb.png", "image/png", _png_bit_bomb(5100), TOO_LARGE),
    # 3,000 scans of 17 bytes: 50 KB, and 3,000 passes over the image (of 25 MP: half a minute).
    HostileFile("bomb-jpeg-3000-scans", "bomb.jpg", "image/jpeg", jpeg_scan_bomb(400, 300, 3000), TOO_LARGE),
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
    # Lying on its side with an EXIF orientation: stored as its own JPEG, no larger than sent (a PNG
    # re-encoding of its turned pixels was several times larger).
    HostileFile(
        "jpeg-exif-rotated-large", "phone.jpg", "image/jpeg", jpeg_exif_rotated(1600, 1200), "", accepted_as="JPEG"
    ),
]


@dataclass(frozen=True)
class HostileArchive:
    name: str  # the test id
    data: bytes
    message: str  # a fragment of the refusal, on the page and in the API error
    before_inflating: bool  # refused from the central directory, before any member is inflated
    settings: tuple[tuple[str, int], ...] = ()  # smaller limits, so the test decodes little


# Zero-filled PNGs under the per-image cap (9 MP each), like the 60 6000x6000 ones.
_ZERO_PNG = png_of_zeros(3000, 3000)
_ZERO_PNG_16BIT_RGBA = png_of_zeros(2000, 2000, depth=16, colour_type=6)

HOSTILE_ARCHIVES: list[HostileArchive] = [
    HostileArchive(  # the 27 KB ZIP of 60 zero-filled PNGs: each member inflates about 290 times
        "zip-of-60-zero-pngs-deflated",
        zip_of([(f"visit/{i:02d}.png", _ZERO_PNG) for i in range(60)], deflated=True),
        "would inflate",
        before_inflating=True,
    ),
    HostileArchive(  # the same PNGs stored: no ratio to see, so the pixel budget stops them
        "zip-of-zero-pngs-over-the-pixel-budget",
        zip_of([(f"visit/{i:02d}.png", _ZERO_PNG) for i in range(20)], deflated=False),
        PIXEL_BUDGET,
        before_inflating=False,
        settings=(("SKINPORTAL_UPLOAD_PIXEL_BUDGET", 20_000_000),),
    ),
    HostileArchive(  # 16-bit RGBA: 8 bytes of image data a pixel for zlib to inflate
        "zip-of-16bit-pngs-over-the-inflate-budget",
        zip_of([(f"{i:02d}.png", _ZERO_PNG_16BIT_RGBA) for i in range(12)], deflated=False),
        INFLATE_BUDGET,
        before_inflating=False,
        settings=(("SKINPORTAL_UPLOAD_INFLATE_BUDGET", 80 * 1024 * 1024),),
    ),
    HostileArchive(  # the 500 entries pointing at one 10 MiB member: 5 GiB to inflate
        "zip-of-500-overlapping-entries",
        zip_overlapping(500, 10 * 1024 * 1024),
        "entries overlap",
        before_inflating=True,
    ),
    HostileArchive(
        "zip-member-inflating-1000-times",
        zip_of([("lesion.png", bytes(2 * 1024 * 1024))], deflated=True),
        "would inflate",
        before_inflating=True,
    ),
    HostileArchive(  # members that declare more than the request may unpack
        "zip-declaring-more-than-the-file-budget",
        zip_of([(f"{i}.jpg", _jpeg_noise(400, 300, seed=i)) for i in range(4)], deflated=False),
        "of image files one upload or batch may hold",
        before_inflating=True,
        settings=(("SKINPORTAL_UPLOAD_FILE_BUDGET", 256 * 1024),),
    ),
    HostileArchive(
        "zip-of-too-many-entries",
        _zip_of_many_entries(200),
        "entries; a batch of at most",
        before_inflating=True,
        settings=(("SKINPORTAL_MAX_FILES_PER_BATCH", 10),),
    ),
]

REFUSED_FILES = [case for case in HOSTILE_FILES if not case.accepted]
ACCEPTED_FILES = [case for case in HOSTILE_FILES if case.accepted]
HOSTILE_CASE_COUNT = len(HOSTILE_FILES)
HOSTILE_ARCHIVE_COUNT = len(HOSTILE_ARCHIVES)
