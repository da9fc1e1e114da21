"""Turn a person's image of a digit into what MNIST looks like: one function for every caller.

MNIST digits are white ink on black, their bounding box scaled (anti-aliased, aspect kept)
so that the longer side is 20 pixels, then placed in 28x28 so that the centre of mass sits
at the centre. A photo, a scan or a canvas drawing differs in every one of those respects;
``preprocess`` undoes each difference, and ``load_image`` reads any file Pillow can, with
the limits that keep a hostile file from costing memory or time.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

SIZE = 28  # the MNIST field
BOX = 20  # the longer side of the digit's bounding box in MNIST
CENTRE = 14.0  # where MNIST's centres of mass lie (row, column; measured on the test set: 14.0 ± 0.3)
STROKE = 2.45  # median stroke width of MNIST digits, in pixels of the 28x28 field (measured)
MIN_SIDE = 8  # smaller images carry no recognisable digit
MAX_PIXELS = 40_000_000  # refused before decoding: a decompression bomb stays a header
MAX_BYTES = 20 * 1024 * 1024
INK_FLOOR = 0.25  # of the ink's full contrast: paper grain, JPEG noise and shadows fall below it
MIN_CONTRAST = 0.15  # less than this between paper and ink: nothing was written
WORK_SIDE = 100  # thin strokes are thickened at this resolution (5x the final box)
FLAT_MIN_SIDE = 64  # smaller images (a 28x28 digit, a small crop) are taken to be evenly lit
FLAT_BLOCKS = 8  # the paper's shade is estimated on this grid (blocks per side)
FLAT_EVEN = 0.02  # a shade varying less than this across the blocks is even paper: no map needed


class ImageError(ValueError):
    """This image cannot be turned into a digit (unreadable, too large, blank, ...)."""


def load_image(source: str | Path | bytes) -> np.ndarray:
    """Read a file (or its bytes) as a greyscale float array (H, W) in [0, 1]; alpha is resolved."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            raise ImageError("is a directory, not an image")
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ImageError(f"cannot read: {exc.strerror or exc}") from None
        if size == 0:
            raise ImageError("empty file (0 bytes)")
        if size > MAX_BYTES:
            raise ImageError(f"file is {size / 2**20:.0f} MiB; the limit is {MAX_BYTES // 2**20} MiB")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"cannot read: {exc.strerror or exc}") from None
    else:
        data = bytes(source)
        if not data:
            raise ImageError("empty image (0 bytes)")
        if len(data) > MAX_BYTES:
            raise ImageError(f"image is {len(data) / 2**20:.0f} MiB; the limit is {MAX_BYTES // 2**20} MiB")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))  # reads the header only
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"image is too large: {width}x{height} pixels; the limit is {MAX_PIXELS:,}")
            if getattr(image, "n_frames", 1) > 1:
                raise ImageError(f"animated image with {image.n_frames} frames; give a single still image")
            image.load()
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(f"image is too large, refused before decoding: {exc}") from None
        except UnidentifiedImageError:
            raise ImageError("not an image Pillow can read (PNG, JPEG, BMP, GIF or TIFF)") from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise ImageError(f"cannot decode image (truncated or corrupt): {exc}") from None
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"image is {width}x{height} pixels; need at least {MIN_SIDE}x{MIN_SIDE}")
    return to_grey(image)


def to_grey(image: Image.Image) -> np.ndarray:
    """Greyscale in [0, 1]. Transparent pixels become paper: light paper under dark ink and
    dark paper under light ink, so that a stroke on a transparent canvas survives either way."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        grey = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(grey.max()), 1.0)
        return np.clip(grey / top, 0, 1).astype(np.float32)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if not has_alpha:
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    rgba = image.convert("RGBA")
    grey = np.asarray(rgba.convert("L"), dtype=np.float32) / 255.0
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
    if alpha.min() >= 0.99:
        return grey
    opaque = alpha > 0.5
    if not opaque.any():
        raise ImageError("no ink found: the image is fully transparent")
    paper = 1.0 if grey[opaque].mean() < 0.5 else 0.0
    return grey * alpha + paper * (1.0 - alpha)


def preprocess(grey: np.ndarray) -> np.ndarray:
    """A greyscale image (H, W) in [0, 1], either polarity, any size -> MNIST-like (28, 28) in [0, 1]."""
    return normalize_digit(ink_map(check_grey(grey)))


def check_grey(grey: np.ndarray) -> np.ndarray:
    grey = np.asarray(grey, dtype=np.float32)
    if grey.ndim != 2 or min(grey.shape) < 1:
        raise ImageError(f"expected a 2-D greyscale image, got shape {tuple(grey.shape)}")
    if not np.isfinite(grey).all():
        raise ImageError("image has NaN or infinite values")
    return grey


def normalize_digit(ink: np.ndarray) -> np.ndarray:
    """An ink map holding one digit -> MNIST's (28, 28): cropped, strokes thickened, scaled, centred."""
    ink = crop_to_ink(ink)
    ink = thicken_thin_strokes(ink)
    digit = resize_longer_side(ink, BOX)
    return place_by_centre_of_mass(digit)


def ink_map(grey: np.ndarray) -> np.ndarray:
    """Ink in [0, 1] on a zero background, whatever the polarity, the paper's shade and the light.

    The paper is the median of the image's border; if it is lighter than the middle grey the
    picture is dark ink on light paper (a scan, a photo) and is inverted. In an image of at
    least ``FLAT_MIN_SIDE`` pixels the paper's shade is then estimated at every pixel
    (``paper_map``), so that a shadow or light falling off across a photo is not read as ink.
    """
    h, w = grey.shape
    frame = max(1, min(h, w) // 20)
    border = np.concatenate([grey[:frame].ravel(), grey[-frame:].ravel(),
                             grey[:, :frame].ravel(), grey[:, -frame:].ravel()])
    paper = float(np.median(border))
    light = paper > 0.5  # dark ink on light paper
    background = paper_map(grey, light) if min(h, w) >= FLAT_MIN_SIDE else None
    if background is not None:
        ink = background - grey if light else grey - background
    else:
        ink = paper - grey if light else grey - paper
    contrast = float(ink.max())
    if contrast < MIN_CONTRAST:
        raise ImageError("no ink found: the image is blank or has almost no contrast")
    # ink = (difference / contrast - floor) / (1 - floor), clipped to [0, 1], in place
    ink *= np.float32(1.0 / (contrast * (1.0 - INK_FLOOR)))
    ink -= np.float32(INK_FLOOR / (1.0 - INK_FLOOR))
    return np.clip(ink, 0.0, 1.0, out=ink)


def paper_map(grey: np.ndarray, light: bool) -> np.ndarray | None:
    """The paper's shade at every pixel (flat-field correction); None where it is even (within
    ``FLAT_EVEN``: a drawing on a canvas, a scan), which the border's median then stands for.

    The image is cut into ``FLAT_BLOCKS`` x ``FLAT_BLOCKS`` blocks; in each, the 90th percentile
    (10th for light ink) is the paper there, as ink covers a minority of any block a digit
    crosses. A block that a thick stroke fills would read as ink, so each block takes the
    lightest (darkest) value of its 3x3 neighbourhood; the map is then interpolated smoothly.
    On the handwriting benchmark's development fonts this took grey paper under uneven light
    from 93.6% to 98.2% and thin pen lines in photos from 95.4% to 98.2% (docs/experiments.md).
    """
    h, w = grey.shape
    n = FLAT_BLOCKS
    step = max(1, min(h, w) // 128)  # a percentile needs no more than ~250 pixels a block
    sample = grey[::step, ::step]
    sh, sw = sample.shape
    bh, bw = -(-sh // n), -(-sw // n)
    padded = np.pad(sample, ((0, bh * n - sh), (0, bw * n - sw)), mode="edge") if (sh % n or sw % n) else sample
    blocks = padded.reshape(n, bh, n, bw).transpose(0, 2, 1, 3).reshape(n, n, bh * bw)
    k = int(round((0.9 if light else 0.1) * (bh * bw - 1)))
    shade = np.partition(blocks, k, axis=2)[:, :, k].astype(np.float32)
    ring = np.pad(shade, 1, mode="edge")
    near = np.stack([ring[i:i + n, j:j + n] for i in range(3) for j in range(3)])
    shade = near.max(axis=0) if light else near.min(axis=0)
    if float(shade.max() - shade.min()) <= FLAT_EVEN:
        return None
    # bilinear between block centres, as two small matrix products (Pillow's resize of a float
    # image and the copy back to numpy took 50 ms for a 1500x1500 photo; this takes ~3 ms)
    return interpolation(h, n) @ shade @ interpolation(w, n).T


def interpolation(size: int, n: int) -> np.ndarray:
    """(size, n) weights: linear interpolation from ``n`` block centres to ``size`` pixels."""
    position = np.clip((np.arange(size, dtype=np.float32) + 0.5) * (n / size) - 0.5, 0, n - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, n - 1)
    frac = (position - low).astype(np.float32)
    weights = np.zeros((size, n), np.float32)
    rows = np.arange(size)
    weights[rows, low] = 1 - frac
    weights[rows, high] += frac  # where low == high (the clipped ends) the two add up to 1
    return weights


def crop_to_ink(ink: np.ndarray, trim: float = 0.002) -> np.ndarray:
    """Crop to the ink's bounding box, ignoring specks that hold under ``trim`` of the ink on a side."""
    profiles = (ink.sum(axis=1), ink.sum(axis=0))  # rows, then columns
    total = float(profiles[0].sum())
    if total <= 0:
        raise ImageError("no ink found: the image is blank")
    bounds = []
    for profile in profiles:
        cumulative = np.cumsum(profile) / total
        first = int(np.searchsorted(cumulative, trim, side="right"))
        last = int(np.searchsorted(cumulative, 1.0 - trim, side="left"))
        bounds.append((first, max(first, min(last, len(cumulative) - 1))))
    (r0, r1), (c0, c1) = bounds
    return ink[r0:r1 + 1, c0:c1 + 1]


def stroke_width(mask: np.ndarray) -> float:
    """Mean width of the strokes in a binary image: twice the area over the boundary length."""
    area = int(mask.sum())
    if area == 0:
        return 0.0
    padded = np.pad(mask, 1)
    interior = (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1]
                & padded[1:-1, :-2] & padded[1:-1, 2:])
    boundary = area - int(interior.sum())
    return 2.0 * area / max(boundary, 1)


def thicken_thin_strokes(ink: np.ndarray) -> np.ndarray:
    """Bring strokes to MNIST's width relative to the digit's size.

    A pen line 3 pixels wide in a 600-pixel drawing would be a tenth of a pixel after
    scaling to 20 pixels: faint grey, nothing like MNIST's 2-3 pixel strokes. Large crops are
    first max-pooled to about ``WORK_SIDE`` pixels (max-pooling never loses a line), then
    dilated until the strokes have the width MNIST's would have at that scale.
    """
    factor = max(ink.shape) // WORK_SIDE
    if factor >= 2:
        ink = max_pool(ink, factor)
    longer = max(ink.shape)
    target = STROKE * longer / BOX  # MNIST's width at this resolution
    width = stroke_width(ink > 0.5)
    if width >= 0.7 * target or longer < 2 * BOX:  # thick enough, or too small to dilate sensibly
        return ink
    size = int(round(target - width)) | 1  # an odd square, centred on each pixel
    if size < 3:
        return ink
    return max_filter(ink, size)


def max_pool(image: np.ndarray, factor: int) -> np.ndarray:
    """Each ``factor`` x ``factor`` block's maximum (the last ones padded): smaller, and no line lost."""
    h, w = image.shape
    if h % factor or w % factor:
        image = np.pad(image, ((0, -h % factor), (0, -w % factor)))
    # rows, then columns, as strided maxima: 20x faster than a reshape's max over axes (1, 3),
    # which numpy reduces element by element (30 ms against 1.5 ms for a 1500x1500 photo)
    rows = image[0::factor].copy()
    for i in range(1, factor):
        np.maximum(rows, image[i::factor], out=rows)
    out = rows[:, 0::factor].copy()
    for j in range(1, factor):
        np.maximum(out, rows[:, j::factor], out=out)
    return out


def max_filter(image: np.ndarray, size: int) -> np.ndarray:
    """Grey dilation by a ``size`` x ``size`` square: a running max along rows, then columns.

    Separable, so 2 * size passes of whole-array maxima instead of size**2 comparisons per
    pixel (Pillow's MaxFilter took ~8 ms on a 100x100 crop; this ~0.1 ms).
    """
    radius = size // 2
    h, w = image.shape
    padded = np.pad(image, ((radius, radius), (0, 0)))
    rows = padded[:h].copy()
    for shift in range(1, 2 * radius + 1):
        np.maximum(rows, padded[shift:shift + h], out=rows)
    padded = np.pad(rows, ((0, 0), (radius, radius)))
    out = padded[:, :w].copy()
    for shift in range(1, 2 * radius + 1):
        np.maximum(out, padded[:, shift:shift + w], out=out)
    return out


def resize_longer_side(ink: np.ndarray, side: int) -> np.ndarray:
    """Scale so the longer side is ``side`` pixels, keeping the aspect ratio; area-averaged
    (anti-aliased) when shrinking, bicubic when enlarging."""
    h, w = ink.shape
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # Pillow sizes are (width, height)
    method = Image.BOX if scale < 1 else Image.BICUBIC
    out = np.asarray(Image.fromarray(ink.astype(np.float32)).resize(size, method), dtype=np.float32)
    out = np.clip(out, 0.0, 1.0)
    peak = float(out.max())
    if peak <= 0:
        raise ImageError("no ink found after scaling")
    return out / peak  # MNIST's strokes reach full intensity


def place_by_centre_of_mass(digit: np.ndarray) -> np.ndarray:
    """Put ``digit`` (at most 20x20) in a 28x28 field with its centre of mass at MNIST's centre."""
    h, w = digit.shape
    rows, cols = digit.sum(axis=1, dtype=np.float64), digit.sum(axis=0, dtype=np.float64)
    mass = float(rows.sum())
    com_r, com_c = rows @ np.arange(h) / mass, cols @ np.arange(w) / mass
    top = int(np.clip(round(CENTRE - com_r), 0, SIZE - h))
    left = int(np.clip(round(CENTRE - com_c), 0, SIZE - w))
    field = np.zeros((SIZE, SIZE), dtype=np.float32)
    field[top:top + h, left:left + w] = digit
    return field


def to_uint8(field: np.ndarray) -> np.ndarray:
    """MNIST's storage format: the model's normalization starts from these bytes."""
    return np.round(np.clip(field, 0.0, 1.0) * 255.0).astype(np.uint8)


def save_preview(field: np.ndarray, path: str | Path) -> None:
    """Write what the model sees as a 28x28 PNG (white ink on black, as MNIST)."""
    Image.fromarray(to_uint8(field)).save(path)
