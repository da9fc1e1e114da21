"""How long `predict`, the page and the API take to read an image before the model sees it:
median milliseconds of decoding (`load_image`) and of reading (`predict.read_image`, the whole
image as one digit with `single`, else the digits of a number found) for three typical inputs.
Figures: docs/benchmarks.md ("Reading numbers, at the old speed").

    .venv/bin/python benchmarks/read_speed.py
    PYTHONPATH=/path/to/an/older/checkout/src .venv/bin/python benchmarks/read_speed.py   # to compare

Code from before numbers were read (no ``read_image``) is timed on ``preprocess`` alone.
"""

from __future__ import annotations

import io
import statistics
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tinymnist.inference.preprocess import load_image

try:
    from tinymnist.inference.predict import read_image
except ImportError:  # before numbers were read: the whole image is one digit
    from tinymnist.inference.preprocess import preprocess

    def read_image(grey, single):
        return preprocess(grey)


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def inputs() -> dict[str, bytes]:
    canvas = Image.new("L", (280, 280), 0)  # the page's drawing: a 7, light on black
    ImageDraw.Draw(canvas).line([(90, 60), (190, 60), (120, 230)], fill=255, width=18)
    photo = Image.new("L", (1500, 1500), 215)  # a pen 7 on paper, light falling off, sensor noise
    ImageDraw.Draw(photo).line([(600, 400), (900, 400), (700, 1100)], fill=40, width=9)
    shade = (1 + 0.15 * np.linspace(-1, 1, 1500))[None, :]
    noisy = np.asarray(photo, np.float32) * shade + np.random.default_rng(0).normal(0, 4, (1500, 1500))
    photo = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1))
    return {"28x28 png": encoded(canvas.resize((28, 28))), "280x280 canvas png": encoded(canvas),
            "1500x1500 photo jpeg": encoded(photo, "JPEG")}


def median_ms(work, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    for name, data in inputs().items():
        runs = 15 if "1500" in name else 100
        grey = load_image(data)
        print(f"{name:22s} load {median_ms(lambda: load_image(data), runs):6.2f}  "
              f"single {median_ms(lambda: read_image(grey, True), runs):6.2f}  "
              f"number {median_ms(lambda: read_image(grey, False), runs):6.2f} ms")


if __name__ == "__main__":
    main()
