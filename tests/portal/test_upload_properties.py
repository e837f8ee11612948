"""Hypothesis properties of upload validation: diagnosis.inference.reencode_upload and the
service's per-file checks (services._prepare_uploads).

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
from PIL import Image

from diagnosis import services
from diagnosis.inference import ImageTooLargeError, InvalidImageError, ReencodedImage, reencode_upload
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
def rgb_images(draw: st.DrawFn, max_side: int = 128) -> np.ndarray:
    width, height = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _reencode_or_refuse(data: bytes) -> ReencodedImage | None:
    """reencode_upload's answer; any exception but InvalidImageError fails the property."""
    try:
        return reencode_upload(data)
    except InvalidImageError:  # ImageTooLargeError included
        return None


def _stored_pixels(item: ReencodedImage) -> np.ndarray:
    with Image.open(io.BytesIO(item.png_bytes)) as stored:
        assert stored.format == "PNG" and stored.mode == "RGB"
        assert "exif" not in stored.info and len(stored.getexif()) == 0
        return np.asarray(stored)


@BOUNDED
@given(prefix=st.sampled_from(MAGIC_PREFIXES), body=st.binary(max_size=4096))
def test_it_reencodes_or_refuses_arbitrary_bytes(prefix, body):
    item = _reencode_or_refuse(prefix + body)
    if item is not None:  # only a real JPEG or PNG gets through, and is stored as a PNG
        assert item.source_format in {"JPEG", "PNG"}
        assert _stored_pixels(item).shape == (item.height, item.width, 3)


@BOUNDED
@given(case=st.sampled_from(HOSTILE_FILES), start=st.integers(0, 64), trailer=st.binary(max_size=32))
def test_it_reencodes_or_refuses_pieces_of_the_hostile_corpus(case, start, trailer):
    # Slices and extensions of hostile files land near the edges the checks care about.
    _reencode_or_refuse(case.data[start:] + trailer)
    _reencode_or_refuse(case.data + trailer)


@BOUNDED
@given(image=rgb_images())
def test_it_stores_the_exact_pixels_of_a_png(image):
    item = reencode_upload(encode(image, ".png"))
    assert (item.source_format, item.width, item.height) == ("PNG", image.shape[1], image.shape[0])
    assert np.array_equal(_stored_pixels(item), image)


@BOUNDED
@given(image=rgb_images(), quality=st.integers(5, 100))
def test_it_stores_a_jpeg_as_its_decoded_pixels(image, quality):
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    data = buffer.tobytes()
    item = reencode_upload(data)
    assert (item.source_format, item.width, item.height) == ("JPEG", image.shape[1], image.shape[0])
    # Lossless from here on: what is stored is what the classifier sees when it decodes the upload.
    assert np.array_equal(_stored_pixels(item), decode_image(data))


@BOUNDED
@given(image=rgb_images(max_side=48), mode=st.sampled_from(["L", "LA", "RGBA", "P", "I;16"]))
def test_it_stores_every_png_colour_type_as_rgb(image, mode):
    buffer = io.BytesIO()
    Image.fromarray(image).convert(mode).save(buffer, format="PNG")
    item = reencode_upload(buffer.getvalue())
    assert _stored_pixels(item).shape == (image.shape[0], image.shape[1], 3)


@BOUNDED
@given(
    files=st.lists(
        st.one_of(
            st.binary(max_size=600),
            rgb_images(max_side=24).map(lambda image: encode(image, ".png")),
            st.sampled_from([case.data for case in HOSTILE_FILES if case.max_upload_bytes is None]),
        ),
        min_size=1,
        max_size=4,
    ),
    cap=st.integers(1, 20_000),
)
def test_it_checks_every_file_of_an_upload_and_names_each_refusal(files, cap):
    uploads = [services.ImageUpload(name=f"file-{i}.jpg", data=data) for i, data in enumerate(files)]
    with override_settings(SKINPORTAL_MAX_UPLOAD_BYTES=cap, SKINPORTAL_MAX_FILES_PER_UPLOAD=10):
        try:
            prepared = services._prepare_uploads(uploads)
        except ValidationError as exc:
            messages = exc.message_dict["image"]
            refused = [u for u in uploads if len(u.data) > cap or _reencode_or_refuse(u.data) is None]
            assert [m.split(":", 1)[0] for m in messages] == [u.name for u in refused]
            assert all("larger than the" in m for m, u in zip(messages, refused, strict=True) if len(u.data) > cap)
            return
    assert all(len(u.data) <= cap for u in uploads) and len(prepared) == len(uploads)


def test_it_keeps_the_too_large_error_an_invalid_image_error():
    # Callers catch InvalidImageError only: a bomb must not escape as another exception type.
    assert issubclass(ImageTooLargeError, InvalidImageError)
