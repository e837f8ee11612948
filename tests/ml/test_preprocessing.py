import io

import numpy as np
import pytest
from PIL import Image

from ml.errors import ImageTooLargeError, InvalidImageError
from ml.preprocessing import (
    COLOUR_MODES,
    PreprocessConfig,
    check_image_header,
    decode_image,
    preprocess,
    preprocess_bytes,
    resize,
    shades_of_gray,
)
from tests.conftest import encode, make_image


@pytest.mark.parametrize("colour", COLOUR_MODES)
def test_it_gives_the_model_input_shape_dtype_and_range(colour):
    config = PreprocessConfig(size=96, colour=colour)
    out = preprocess(make_image(200, 150), config)
    assert out.shape == (96, 96, 3)
    assert out.dtype == np.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert out.max() - out.min() > 0.1  # not a constant image


def test_it_is_deterministic_and_keeps_rgb_order():
    config = PreprocessConfig(size=32)
    red = np.zeros((40, 40, 3), np.uint8)
    red[..., 0] = 255
    first = preprocess_bytes(encode(red, ".png"), config)
    assert np.array_equal(first, preprocess_bytes(encode(red, ".png"), config))
    assert np.allclose(first[..., 0], 1.0) and np.allclose(first[..., 1:], -1.0)


def test_it_scales_like_mobilenet_v2():
    config = PreprocessConfig(size=32)
    grey = np.full((32, 32, 3), 127, np.uint8)
    assert np.allclose(preprocess(grey, config), 127 / 127.5 - 1, atol=1e-6)


def test_shades_of_gray_removes_a_colour_cast():
    img = make_image(64, 64).astype(np.float32)
    cast = np.clip(img * [1.3, 1.0, 0.7], 0, 255).astype(np.uint8)
    corrected = shades_of_gray(cast).astype(np.float32)
    spread = lambda x: np.ptp(x.reshape(-1, 3).mean(axis=0))
    assert spread(corrected) < spread(cast.astype(np.float32))


def test_it_decodes_png_and_grayscale_and_rgba():
    gray = Image.fromarray(make_image()[..., 0])
    rgba = Image.fromarray(np.dstack([make_image(), np.full((48, 64), 200, np.uint8)]))
    for im in (gray, rgba):
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        assert decode_image(buf.getvalue()).shape == (48, 64, 3)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"hello, this is a text file\n" * 10, "not a recognised image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "not a recognised image|corrupt"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "not a recognised image"),
    ],
)
def test_it_refuses_non_images_with_a_clear_error(data, message):
    with pytest.raises(InvalidImageError, match=message):
        decode_image(data)


def test_it_refuses_a_truncated_jpeg():
    data = encode(make_image(256, 256))
    with pytest.raises(InvalidImageError):
        decode_image(data[: len(data) // 3])


def test_it_refuses_a_huge_image_from_its_header_alone():
    # A 1-bit PNG of 20000 x 20000 pixels: small on disk, 400 MP once decoded.
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")
    assert len(buf.getvalue()) < 1_000_000
    with pytest.raises(ImageTooLargeError, match="pixels"):
        decode_image(buf.getvalue())
    fmt, w, h = check_image_header(encode(make_image(30, 20)))
    assert (fmt, w, h) == ("JPEG", 30, 20)


def test_it_rejects_unknown_colour_mode():
    with pytest.raises(ValueError, match="colour"):
        PreprocessConfig(colour="sepia")


def test_it_turns_an_image_to_the_orientation_of_a_non_square_input_instead_of_squeezing_it():
    landscape = make_image(200, 150, seed=3)
    portrait = np.ascontiguousarray(np.rot90(landscape))
    config = PreprocessConfig(size=150, width=200)
    assert config.height_width == (150, 200)
    assert preprocess(landscape, config).shape == (150, 200, 3)
    # The portrait copy is turned back (by a quarter turn the other way round: landscape, upside down).
    assert np.array_equal(resize(portrait, (150, 200)), np.rot90(landscape, 2))
    assert np.array_equal(resize(landscape, (150, 200)), landscape)
    # A square image is not turned, and square inputs behave as before.
    square = make_image(90, 90, seed=4)
    assert resize(square, (150, 200)).shape == (150, 200, 3)
    assert np.array_equal(resize(portrait, 96), resize(portrait, (96, 96)))


def test_it_keeps_square_manifests_as_they_were_and_round_trips_the_width():
    assert "width" not in PreprocessConfig(size=224).to_dict()
    config = PreprocessConfig(size=150, width=200, colour="clahe")
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError):
        PreprocessConfig(size=150, width=16)
