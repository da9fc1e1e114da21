"""Reading numbers: the digits of an image found, merged and ordered (``inference.segment``),
through the library, `tinymnist predict` and the JSON API."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from helpers import render
from test_cli import assert_one_line_error, run_cli
from tinymnist.inference.preprocess import ImageError, ink_map, load_image, preprocess
from tinymnist.inference.segment import INK_LEVEL, MARK_SIDE, read_digits


def first_of(mnist_arrays, digit: int, nth: int = 0) -> np.ndarray:
    labels = mnist_arrays["test_labels"]
    return mnist_arrays["test_images"][np.flatnonzero(labels == digit)[nth]]


def number_image(mnist_arrays, digits: str, side: int = 160, gap: int = 30, paper: int = 255) -> Image.Image:
    """Real MNIST digits (the test set's) side by side, dark on light paper, ``gap`` pixels of
    paper between their ink boxes (negative: overlapping)."""
    inks = []
    for k, c in enumerate(digits):
        ink = np.asarray(render(first_of(mnist_arrays, int(c), k), side, dark_on_light=False))
        cols = np.flatnonzero(ink.max(axis=0) > 20)
        inks.append(ink[:, cols[0]:cols[-1] + 1])
    width = sum(i.shape[1] for i in inks) + gap * (len(inks) - 1) + 80
    canvas = np.zeros((side + 40, width), np.uint8)
    x = 40
    for ink in inks:
        region = canvas[20:20 + side, x:x + ink.shape[1]]
        np.maximum(region, ink, out=region)
        x += ink.shape[1] + gap
    return Image.fromarray(255 - canvas if paper == 255 else canvas)


def grey(image: Image.Image) -> np.ndarray:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return load_image(buf.getvalue())


@pytest.mark.parametrize("digits", ["42", "2026", "7", "31"])
def test_separate_digits_are_found_left_to_right_with_boxes(mnist_arrays, digits):
    image = number_image(mnist_arrays, digits)
    reading = read_digits(grey(image))
    assert len(reading.digits) == len(digits) and reading.warning is None
    lefts = [d.box[0] for d in reading.digits]
    assert lefts == sorted(lefts)
    for d in reading.digits:
        left, top, right, bottom = d.box
        assert 0 <= left < right <= image.width and 0 <= top < bottom <= image.height
        assert d.field.shape == (28, 28)
    for a, b in zip(reading.digits, reading.digits[1:]):  # boxes do not overlap: the gap is there
        assert a.box[2] <= b.box[0]


def test_a_large_photo_is_segmented_at_a_lower_resolution_with_exact_boxes(mnist_arrays):
    # marks are found on the ink max-pooled to about MARK_SIDE pixels; the digits and their boxes
    # must still be the image's own: each box is exactly the ink of its digit, in image pixels
    image = number_image(mnist_arrays, "2026", side=600, gap=90)
    g = grey(image)
    assert max(g.shape) >= 2 * MARK_SIDE
    reading = read_digits(g)
    assert len(reading.digits) == 4 and reading.warning is None
    ink = ink_map(g) > INK_LEVEL
    columns = np.flatnonzero(ink.any(axis=0))
    runs = np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)  # the digits' column spans
    assert [(int(r[0]), int(r[-1]) + 1) for r in runs] == [(d.box[0], d.box[2]) for d in reading.digits]
    for d in reading.digits:
        left, top, right, bottom = d.box
        rows = np.flatnonzero(ink[:, left:right].any(axis=1))
        assert (top, bottom) == (int(rows[0]), int(rows[-1]) + 1)


def test_a_warning_names_places_in_the_image_pixels(mnist_arrays):
    image = number_image(mnist_arrays, "00", side=600, gap=-45)
    reading = read_digits(grey(image))
    where = [int(v) for v in reading.warning.split("x = ")[1].split(")")[0].split("-")]
    ink = ink_map(grey(image)) > INK_LEVEL
    columns = np.flatnonzero(ink.any(axis=0))
    assert abs(where[0] - columns[0]) <= 2 and abs(where[1] - (columns[-1] + 1)) <= 2 and where[1] > MARK_SIDE


def test_one_digit_reads_exactly_as_preprocess_did(mnist_arrays):
    g = grey(number_image(mnist_arrays, "5"))
    reading = read_digits(g)
    assert len(reading.digits) == 1 and np.array_equal(reading.digits[0].field, preprocess(g))


def strokes(lines, size=(300, 300), width=16) -> np.ndarray:
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    for line in lines:
        draw.line(line, fill=0, width=width, joint="curve")
    return grey(image)


# digits people draw in two strokes, with a gap where the strokes would meet
TWO_STROKES = {
    "4": [[(120, 40), (70, 180), (210, 180)], [(170, 90), (172, 270)]],
    "5": [[(110, 50), (200, 50)], [(108, 75), (100, 140), (170, 140), (200, 200), (160, 260), (90, 250)]],
    "7": [[(70, 50), (230, 50)], [(220, 70), (150, 260)]],
}


@pytest.mark.parametrize("digit", sorted(TWO_STROKES))
def test_a_digit_in_two_strokes_stays_one_digit(digit):
    reading = read_digits(strokes(TWO_STROKES[digit]))
    assert len(reading.digits) == 1


def test_a_broken_pen_line_stays_one_digit():
    # a 1 whose stroke skips for a few pixels in the middle
    reading = read_digits(strokes([[(150, 40), (150, 140)], [(150, 150), (150, 260)]]))
    assert len(reading.digits) == 1


def test_touching_digits_give_a_warning(mnist_arrays):
    reading = read_digits(grey(number_image(mnist_arrays, "00", gap=-12)))
    assert reading.warning and "touch" in reading.warning


def test_a_page_of_marks_is_refused_in_one_line():
    rng = np.random.default_rng(0)
    lines = [[(x, y), (x + 12, y + 20)] for x, y in rng.integers(10, 580, (30, 2))]
    with pytest.raises(ImageError, match="more than the 12 digits"):
        read_digits(strokes(lines, size=(600, 600), width=4))


def test_predict_reads_a_number_and_single_keeps_the_old_answer(trained_checkpoint, mnist_arrays, tmp_path):
    path = tmp_path / "42.png"
    number_image(mnist_arrays, "42").save(path)
    proc = run_cli("predict", str(path), "--checkpoint", trained_checkpoint, "--json")
    assert proc.returncode == 0, proc.stderr
    p = json.loads(proc.stdout)["predictions"][0]
    assert p["number"] == "42" and p["label"] is None and p["probabilities"] is None and p["warning"] is None
    assert [d["label"] for d in p["digits"]] == [4, 2] and all(len(d["box"]) == 4 for d in p["digits"])
    proc = run_cli("predict", str(path), "--checkpoint", trained_checkpoint)
    assert proc.stdout.startswith(f"{path}: 42   (4: ") and ", 2: " in proc.stdout
    proc = run_cli("predict", str(path), "--checkpoint", trained_checkpoint, "--json", "--single")
    p = json.loads(proc.stdout)["predictions"][0]
    assert len(p["digits"]) == 1 and p["number"] == str(p["label"]) and len(p["probabilities"]) == 10
    # one digit: label and probabilities as before, and the number is that digit
    one = tmp_path / "7.png"
    number_image(mnist_arrays, "7").save(one)
    p = json.loads(run_cli("predict", str(one), "--checkpoint", trained_checkpoint, "--json").stdout)["predictions"][0]
    assert p["number"] == "7" and p["label"] == 7 and len(p["probabilities"]) == 10


def test_predict_warns_about_touching_digits_and_refuses_a_page(trained_checkpoint, mnist_arrays, tmp_path):
    touching = tmp_path / "touching.png"
    number_image(mnist_arrays, "00", gap=-12).save(touching)
    proc = run_cli("predict", str(touching), "--checkpoint", trained_checkpoint)
    assert proc.returncode == 0 and "warning" in proc.stderr and "touch" in proc.stderr
    page = tmp_path / "page.png"
    rng = np.random.default_rng(0)
    image = Image.new("L", (600, 600), 255)
    for x, y in rng.integers(10, 580, (30, 2)):
        ImageDraw.Draw(image).line([(x, y), (x + 12, y + 20)], fill=0, width=4)
    image.save(page)
    proc = run_cli("predict", str(page), "--checkpoint", trained_checkpoint)
    assert proc.returncode == 2 and "more than the 12 digits" in proc.stderr
    assert_one_line_error(proc)


def test_the_api_answers_the_number(live_server, mnist_arrays):
    import httpx

    buf = io.BytesIO()
    number_image(mnist_arrays, "42").save(buf, "PNG")
    r = httpx.post(live_server + "api/predict", files={"file": ("42.png", buf.getvalue(), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["number"] == "42" and body["label"] is None and [d["label"] for d in body["digits"]] == [4, 2]
    assert np.array(body["preprocessed"]).shape == (28, 56)
    r = httpx.post(live_server + "api/predict?single=true", files={"file": ("42.png", buf.getvalue(), "image/png")})
    assert r.status_code == 200 and len(r.json()["digits"]) == 1 and r.json()["label"] is not None
    r = httpx.post(live_server + "api/predict?single=maybe", files={"file": ("42.png", buf.getvalue(), "image/png")})
    assert r.status_code == 422 and "single" in r.json()["error"]
