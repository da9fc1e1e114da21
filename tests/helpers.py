"""Images built in the tests: real MNIST digits rendered the way people's images come."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def render(digit_u8: np.ndarray, side: int, *, dark_on_light: bool = True) -> Image.Image:
    """A 28x28 MNIST digit enlarged to side x side (bicubic), optionally as dark ink on light paper."""
    image = Image.fromarray(digit_u8).resize((side, side), Image.BICUBIC)
    return Image.fromarray(255 - np.asarray(image)) if dark_on_light else image


def on_canvas(image: Image.Image, size: tuple[int, int], at: tuple[int, int], paper: int = 255) -> Image.Image:
    canvas = Image.new("L", size, paper)
    canvas.paste(image, at)
    return canvas


def seven(size: int = 600, width: int = 30, mode: str = "L", ink=0, paper=255) -> Image.Image:
    """A hand-drawn-looking 7: a bar and a slanted stem."""
    image = Image.new(mode, (size, size), paper)
    s = size / 600
    ImageDraw.Draw(image).line([(170 * s, 120 * s), (430 * s, 120 * s), (260 * s, 500 * s)], fill=ink,
                               width=max(1, round(width)), joint="curve")
    return image
