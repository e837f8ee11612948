"""Hypothesis properties of upload validation: diagnosis.inference.sanitise_upload and the
service's per-file checks (services.uploads._prepare_uploads).

Bounded (a few dozen examples each, derandomised, no example database in the checkout); no
database access, so the whole module runs in seconds.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from django.core.exceptions import ValidationError
from django.test import override_settings
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from diagnosis import services
from diagnosis.inference import MIN_IMAGE_SIDE, ImageTooLargeError, InvalidImageError, SanitisedImage, sanitise_upload
from ml.preprocessing import JPEG_SOI, PNG_SIGNATURE, decode_image
from tests.conftest import encode
from tests.portal.hostile_corpus import HOSTILE_FILES

BOUNDED = settings(max_examples=30, deadline=None, derandomize=True, database=None)
MAGIC_PREFIXES = [
    b"",
    JPEG_SOI,
    JPEG_SOI + b"\xff\xdb",
    PNG_SIGNATURE,
    b"GIF87a",
    b"BM",
    b"RIFF",
    b"<svg",
    b"PK\x03\x04",
]


@st.composite
def rgb_images(draw: st.DrawFn, max_side: int = 128, min_side: int = MIN_IMAGE_SIDE) -> np.ndarray:
    """Random RGB pictures; by default no smaller than an upload may be (ml.screening.MIN_IMAGE_SIDE)."""
    max_side = max(max_side, min_side)
    width, height = draw(st.integers(min_side, max_side)), draw(st.integers(min_side, max_side))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _sanitise_or_refuse(data: bytes) -> SanitisedImage | None:
    """sanitise_upload's answer; any exception but InvalidImageError fails the property."""
    try:
        return sanitise_upload(data)
    except InvalidImageError:  # ImageTooLargeError included
        return None


def _stored_pixels(item: SanitisedImage, *, orientation: int = 1) -> np.ndarray:
    """The stored file as the worker decodes it, after checking it carries no metadata (but the
    orientation tag a JPEG keeps, when it has one)."""
    with Image.open(io.BytesIO(item.data)) as stored:
        assert stored.format == {"jpg": "JPEG", "png": "PNG"}[item.extension]
        assert dict(stored.getexif()) == ({0x0112: orientation} if orientation != 1 else {})
        allowed = {"exif"} if orientation != 1 else set()
        assert not ({"exif", "icc_profile", "comment", "xmp"} - allowed) & set(stored.info), stored.info
        assert not getattr(stored, "text", {})
    return decode_image(item.data)


@BOUNDED
@given(prefix=st.sampled_from(MAGIC_PREFIXES), body=st.binary(max_size=4096))
def test_it_sanitises_or_refuses_arbitrary_bytes(prefix, body):
    item = _sanitise_or_refuse(prefix + body)
    if item is not None:  # only a real JPEG or PNG gets through, and is stored in its own format
        assert item.source_format in {"JPEG", "PNG"}
        assert _stored_pixels(item).shape == (item.height, item.width, 3)


@BOUNDED
@given(case=st.sampled_from(HOSTILE_FILES), start=st.integers(0, 64), trailer=st.binary(max_size=32))
def test_it_sanitises_or_refuses_pieces_of_the_hostile_corpus(case, start, trailer):
    # Slices and extensions of hostile files land near the edges the checks care about.
    _sanitise_or_refuse(case.data[start:] + trailer)
    _sanitise_or_refuse(case.data + trailer)


@BOUNDED
@given(image=rgb_images())
def test_it_stores_the_exact_pixels_of_a_png(image):
    item = sanitise_upload(encode(image, ".png"))
    assert (item.source_format, item.extension, item.width, item.height) == (
        "PNG",
        "png",
        image.shape[1],
        image.shape[0],
    )
    assert np.array_equal(_stored_pixels(item), image)


@BOUNDED
@given(image=rgb_images(), quality=st.integers(5, 100), progressive=st.booleans())
def test_it_stores_a_jpeg_as_its_own_data_without_re_encoding(image, quality, progressive):
    params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)]
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    assert ok
    data = buffer.tobytes()
    item = sanitise_upload(data)
    assert (item.source_format, item.extension, item.width, item.height) == (
        "JPEG",
        "jpg",
        image.shape[1],
        image.shape[0],
    )
    # The same compressed pixels: what the worker decodes is exactly what the upload decodes to.
    assert len(item.data) <= len(data)
    assert np.array_equal(_stored_pixels(item), decode_image(data))


@BOUNDED
@given(image=rgb_images(max_side=116), mode=st.sampled_from(["L", "LA", "RGBA", "P", "I;16"]))
def test_it_stores_every_png_colour_type_with_its_pixels_unchanged(image, mode):
    buffer = io.BytesIO()
    Image.fromarray(image).convert(mode).save(buffer, format="PNG")
    item = sanitise_upload(buffer.getvalue())
    assert np.array_equal(_stored_pixels(item), decode_image(buffer.getvalue()))


@BOUNDED
@given(image=rgb_images(max_side=124), fmt=st.sampled_from(["JPEG", "PNG"]), orientation=st.integers(1, 8))
def test_it_removes_every_metadata_block_and_keeps_the_picture_upright(image, fmt, orientation):
    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "Dermatoscope Inc.", orientation  # make, orientation
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 0.0)}  # GPS: where the patient was
    extra = {"icc_profile": b"\0" * 128}
    if fmt == "PNG":
        text = PngImagePlugin.PngInfo()
        text.add_text("Patient", "Jane Doe")
        extra["pnginfo"] = text
    else:
        extra["comment"] = b"Jane Doe"
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, exif=exif.tobytes(), **extra)
    data = buffer.getvalue()
    item = sanitise_upload(data)
    for secret in (b"Jane Doe", b"Dermatoscope", b"eXIf", b"iCCP", b"ICC_PROFILE"):
        assert secret not in item.data
    # A JPEG keeps its own data and, when it has one, its orientation in an EXIF block of that
    # tag alone (written by the portal); a PNG with one is stored already turned (browsers ignore
    # the tag in PNG). Either way it decodes to the same upright pixels.
    assert item.extension == ("jpg" if fmt == "JPEG" else "png")
    kept = orientation if fmt == "JPEG" else 1
    assert (b"Exif" in item.data) == (kept != 1)
    assert len(item.data) <= len(data) or fmt == "PNG"
    assert np.array_equal(_stored_pixels(item, orientation=kept), decode_image(data))


def test_it_keeps_only_the_first_picture_of_a_multi_picture_jpeg():
    first = encode(np.full((100, 120, 3), 200, np.uint8), ".jpg")
    second = encode(np.full((20, 30, 3), 10, np.uint8), ".jpg")
    item = sanitise_upload(first + second)
    assert item.data == first and (item.width, item.height) == (120, 100)


@BOUNDED
@given(
    files=st.lists(
        st.one_of(
            st.binary(max_size=600),
            rgb_images(max_side=24, min_side=1).map(lambda image: encode(image, ".png")),
            st.sampled_from([case.data for case in HOSTILE_FILES if case.max_upload_bytes is None]),
        ),
        min_size=1,
        max_size=4,
    ),
    cap=st.integers(1, 20_000),
)
def test_it_checks_every_file_of_an_upload_and_names_each_refusal(files, cap):
    uploads = [services.uploads.ImageUpload(name=f"file-{i}.jpg", data=data) for i, data in enumerate(files)]
    with override_settings(SKINPORTAL_MAX_UPLOAD_BYTES=cap, SKINPORTAL_MAX_FILES_PER_UPLOAD=10):
        try:
            prepared = services.uploads._prepare_uploads(uploads)
        except ValidationError as exc:
            messages = exc.message_dict["image"]
            refused = [u for u in uploads if len(u.data) > cap or _sanitise_or_refuse(u.data) is None]
            assert [m.split(":", 1)[0] for m in messages] == [u.name for u in refused]
            assert all("larger than the" in m for m, u in zip(messages, refused, strict=True) if len(u.data) > cap)
            return
    assert all(len(u.data) <= cap for u in uploads) and len(prepared) == len(uploads)


def test_it_keeps_the_too_large_error_an_invalid_image_error():
    # Callers catch InvalidImageError only: a bomb must not escape as another exception type.
    assert issubclass(ImageTooLargeError, InvalidImageError)
