"""Hypothesis properties of preprocessing and of the image checks in ml/preprocessing.py.

Bounded on purpose (a handful of examples each, derandomised so CI sees the same ones every run,
no example database written to the checkout): the whole module runs in a few seconds.
"""

from __future__ import annotations

import cv2
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ml.errors import InvalidImageError
from ml.preprocessing import (
    COLOUR_MODES,
    JPEG_SOI,
    PNG_SIGNATURE,
    PreprocessConfig,
    check_image_header,
    decode_image,
    is_padding,
    preprocess,
)
from tests.conftest import encode, make_image

BOUNDED = settings(max_examples=40, deadline=None, derandomize=True, database=None)
MAGIC_PREFIXES = [b"", JPEG_SOI, JPEG_SOI + b"\xff\xe0", PNG_SIGNATURE, b"GIF89a", b"BM", b"II*\x00", b"RIFF", b"%PDF"]


@st.composite
def rgb_images(draw: st.DrawFn, max_side: int = 600) -> np.ndarray:
    """Any size from 1 px per side; noise, smooth or flat content (flat stresses colour steps)."""
    width, height = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["noise", "smooth", "flat"]))
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if kind == "flat":
        return np.full((height, width, 3), rng.integers(0, 256, 3, dtype=np.uint8), dtype=np.uint8)
    return make_image(width, height, seed=seed)


def encoded_images(ext: str) -> st.SearchStrategy[bytes]:
    return rgb_images(max_side=96).map(lambda image: encode(image, ext))


valid_images = st.one_of(encoded_images(".png"), encoded_images(".jpg"))


def _refused_or_accepted(data: bytes) -> tuple[str, int, int] | None:
    """The header check's answer; any exception but InvalidImageError fails the property."""
    try:
        return check_image_header(data)
    except InvalidImageError:
        return None


@BOUNDED
@given(
    image=rgb_images(),
    size=st.sampled_from([32, 96, 224]),
    colour=st.sampled_from(COLOUR_MODES),
)
def test_it_preprocesses_any_decodable_image_to_the_model_input(image, size, colour):
    decoded = decode_image(encode(image, ".png"))  # lossless: the decoder gives back these pixels
    assert np.array_equal(decoded, image)
    config = PreprocessConfig(size=size, colour=colour)
    before = decoded.copy()
    out = preprocess(decoded, config)
    assert out.shape == (size, size, 3) and out.dtype == np.float32
    assert np.isfinite(out).all()
    low, high = config.offset, config.offset + 255 * config.scale
    assert out.min() >= low - 1e-5 and out.max() <= high + 1e-5
    assert np.array_equal(out, preprocess(decoded, config))  # deterministic
    assert np.array_equal(decoded, before)  # the caller's array is left alone


@BOUNDED
@given(prefix=st.sampled_from(MAGIC_PREFIXES), body=st.binary(max_size=2048))
def test_it_answers_arbitrary_bytes_with_a_header_or_an_invalid_image_error(prefix, body):
    data = prefix + body
    header = _refused_or_accepted(data)
    if header is not None:
        assert header[0] in {"JPEG", "PNG", "BMP", "TIFF", "WEBP"} and header[1] > 0 and header[2] > 0
    try:
        image = decode_image(data)
    except InvalidImageError:
        return
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


@BOUNDED
@given(data=valid_images, cut=st.integers(0, 10**6))
def test_it_refuses_every_truncation_of_a_jpeg_or_png(data, cut):
    assert _refused_or_accepted(data) is not None
    assert _refused_or_accepted(data[: cut % len(data)]) is None


@BOUNDED
@given(data=valid_images, position=st.integers(0, 10**6), value=st.integers(0, 255))
def test_it_never_crashes_on_a_changed_byte(data, position, value):
    mutated = bytearray(data)
    mutated[position % len(data)] = value
    try:
        image = decode_image(bytes(mutated))
    except InvalidImageError:
        return
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


PADDING = st.sampled_from([b"\x00", b"\xff", b" ", b"\n", b"\r", b"\t"])


@BOUNDED
@given(
    data=valid_images,
    # Arbitrary bytes, or padding bytes on both sides of the 16-byte limit.
    trailer=st.one_of(st.binary(min_size=1, max_size=64), st.lists(PADDING, min_size=1, max_size=24).map(b"".join)),
)
def test_it_accepts_only_padding_after_the_end_of_an_image(data, trailer):
    header = _refused_or_accepted(data + trailer)
    if is_padding(trailer):
        assert header is not None
        assert np.array_equal(decode_image(data + trailer), decode_image(data))
    else:
        assert header is None


@BOUNDED
@given(trailer=st.lists(PADDING, max_size=16))
def test_it_accepts_padding_and_secondary_jpegs_after_a_jpeg(trailer):
    primary = encode(make_image(48, 32, seed=1), ".jpg")
    secondary = encode(make_image(16, 16, seed=2), ".jpg")
    padding = b"".join(trailer)
    assert check_image_header(primary + padding + secondary + padding) == ("JPEG", 48, 32)
    assert _refused_or_accepted(primary + padding + secondary[:-2]) is None  # a cut secondary is not a JPEG
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(primary, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(decode_image(primary + padding + secondary), rgb)  # the primary is what is decoded
