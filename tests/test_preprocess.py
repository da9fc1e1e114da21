"""Preprocessing: people's images of every kind come out as the MNIST digit they show."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from helpers import on_canvas, render, seven
from tinymnist.inference.predict import classify_fields
from tinymnist.inference.preprocess import (FLAT_BLOCKS, ImageError, ink_map, interpolation, load_image, max_pool,
                                            paper_map, preprocess, stroke_width, to_grey)

TOLERANCE = 0.05  # mean |difference| per pixel in [0, 1], against the centred digit's own result


def as_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def digit(mnist_arrays):
    """A real MNIST test digit (a 7) as uint8 (28, 28), white on black."""
    return mnist_arrays["test_images"][0], int(mnist_arrays["test_labels"][0])


@pytest.fixture(scope="module")
def reference(digit):
    return preprocess(digit[0] / 255.0)


def grey(image: Image.Image) -> np.ndarray:
    return load_image(as_png(image))


def test_a_centred_mnist_digit_stays_itself(digit):
    image, _ = digit
    out = preprocess(image / 255.0)
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert np.abs(out - image / 255.0).mean() < TOLERANCE


@pytest.mark.parametrize("case", ["black_on_white", "off_centre", "large", "small", "rgba_dark_ink",
                                  "rgba_light_ink", "rgb_colour", "grey_paper_jpeg"])
def test_inputs_people_give_match_the_mnist_digit(case, digit, reference):
    image, _ = digit
    if case == "black_on_white":
        picture = render(image, 280)
    elif case == "off_centre":
        picture = on_canvas(render(image, 200), (640, 480), (400, 20))
    elif case == "large":
        picture = render(image, 2000)
    elif case == "small":
        picture = on_canvas(render(image, 20), (32, 32), (2, 12))  # the digit itself ~14 px tall
    elif case.startswith("rgba"):
        ink = 0 if case == "rgba_dark_ink" else 255
        alpha = render(image, 280, dark_on_light=False)  # the stroke is opaque, the paper transparent
        picture = Image.new("RGBA", (280, 280), (ink, ink, ink, 0))
        picture.putalpha(alpha)
    elif case == "rgb_colour":
        picture = Image.merge("RGB", [render(image, 280)] * 2 + [Image.new("L", (280, 280), 255)])  # blue ink
    else:  # a photo-like JPEG: grey paper, dark grey ink
        paper = np.asarray(render(image, 300), dtype=np.float32) / 255 * 0.5 + 0.45
        buffer = io.BytesIO()
        Image.fromarray((paper * 255).astype(np.uint8)).save(buffer, format="JPEG", quality=80)
        picture = Image.open(io.BytesIO(buffer.getvalue()))
    out = preprocess(grey(picture))
    # a digit drawn smaller than MNIST's own has lost detail before we see it: more slack
    assert np.abs(out - reference).mean() < (0.07 if case == "small" else TOLERANCE), case


def test_a_thin_pen_stroke_gets_mnist_stroke_width(trained_model):
    # a 3-pixel line in a 600-pixel drawing would be 0.16 px wide at MNIST's scale
    thin = preprocess(grey(seven(width=3)))
    natural = preprocess(grey(seven(width=46)))  # MNIST's own stroke width at this size
    assert 1.8 < stroke_width(thin > 0.5) < 3.3
    assert abs(thin.sum() - natural.sum()) / natural.sum() < 0.2
    assert int(classify_fields(trained_model[0], thin[None]).argmax()) == 7


def test_a_real_digit_as_a_large_black_on_white_png_is_read_correctly(digit, trained_model, tmp_path):
    image, label = digit
    path = tmp_path / "digit.png"
    on_canvas(render(image, 700), (1000, 900), (150, 60)).save(path)
    probabilities = classify_fields(trained_model[0], preprocess(load_image(path))[None])
    assert int(probabilities.argmax()) == label


def test_drawn_digits_are_read_correctly(trained_model):
    out = preprocess(grey(seven(width=24)))
    assert int(classify_fields(trained_model[0], out[None]).argmax()) == 7


def test_centre_of_mass_lands_at_mnist_centre():
    out = preprocess(grey(on_canvas(seven(200, width=14), (900, 300), (650, 50))))
    rows, cols = np.indices(out.shape)
    com = ((rows * out).sum() / out.sum(), (cols * out).sum() / out.sum())
    assert abs(com[0] - 14.0) <= 0.75 and abs(com[1] - 14.0) <= 0.75
    ys, xs = np.nonzero(out > 0.05)
    assert max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 in (19, 20, 21)  # the longer side is ~20 px


def test_a_speck_of_dirt_does_not_move_the_digit():
    clean = seven(400, width=20)
    dirty = clean.copy()
    dirty.putpixel((395, 395), 0)  # one dark pixel in a corner
    assert np.abs(preprocess(grey(dirty)) - preprocess(grey(clean))).mean() < 0.01


# ---------------------------------------------------------------- what cannot be a digit

def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming width x height, with a tiny (wrong) IDAT: the
    classic decompression bomb shape. It must be refused from the header, before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def animated_gif() -> bytes:
    frames = [Image.new("L", (32, 32), v) for v in (0, 255)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    return buffer.getvalue()


BAD_IMAGES = {
    "blank": (lambda: as_png(Image.new("L", (100, 100), 255)), "no ink"),
    "transparent": (lambda: as_png(Image.new("RGBA", (100, 100), (0, 0, 0, 0))), "no ink"),
    "one_pixel": (lambda: as_png(Image.new("L", (1, 1), 0)), "1x1"),
    "not_an_image": (lambda: b"hello, I am text", "not an image"),
    "zero_bytes": (lambda: b"", "empty"),
    "truncated": (lambda: as_png(seven(300, width=20))[:200], "truncated"),
    "bomb": (lambda: png_header_only(30_000, 30_000), "too large"),
    "large_header": (lambda: png_header_only(8_000, 8_000), "too large"),
    "animated": (animated_gif, "animated"),
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_images_that_hold_no_digit_get_a_clear_error(name):
    make, fragment = BAD_IMAGES[name]
    with pytest.raises(ImageError, match=fragment):
        preprocess(load_image(make()))


def test_a_directory_or_missing_file_is_an_image_error(tmp_path):
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "missing.png")


def test_sixteen_bit_grey_is_scaled_not_clipped():
    image = Image.fromarray((np.asarray(seven(200, width=12), dtype=np.uint16) * 257)).convert("I;16")
    assert to_grey(image).max() == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(30, 30), (31, 47), (100, 9)])
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_max_pool_keeps_every_block_maximum(shape, factor):
    image = np.random.default_rng(factor).random(shape, dtype=np.float32)
    h, w = shape
    padded = np.pad(image, ((0, -h % factor), (0, -w % factor)))
    expected = padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor).max(axis=(1, 3))
    assert np.array_equal(max_pool(image, factor), expected)


def test_interpolation_weights_sum_to_one():
    for size in (64, 65, 280, 1501):
        assert np.allclose(interpolation(size, FLAT_BLOCKS).sum(axis=1), 1.0)


def test_even_paper_needs_no_map_and_uneven_light_gets_one():
    g = np.asarray(seven(300), np.float32) / 255 * 0.85 + 0.1  # paper 0.95, ink 0.1
    assert paper_map(g, light=True) is None
    ramp = np.linspace(1.0, 0.55, 300, dtype=np.float32)[None, :]  # the light falls off to the right
    shaded = g * ramp
    background = paper_map(shaded, light=True)
    assert background is not None
    paper = np.asarray(seven(300), np.float32) > 127
    assert np.abs(background - 0.95 * ramp)[paper].mean() < 0.1  # near the paper's shade (a block's lightest neighbour)
    ink = ink_map(shaded)
    assert ink[paper].max() < 0.05 and ink[~paper].mean() > 0.5  # the dim side is not read as ink
