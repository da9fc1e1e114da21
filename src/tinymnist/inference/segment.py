"""Find the digits of a number in an image and order them left to right.

After the ink map is made (``preprocess.ink_map``: polarity, paper, light), the marks are its
connected components (``scipy.ndimage``). Specks are dropped; marks that belong to one digit
are merged: marks that overlap much horizontally (a 4 or a 5 written in two strokes, a 7's
bar) and a small mark close to a larger one (a broken pen line). Each digit then goes through
the same MNIST-style normalization as a single digit does. An image with one digit gives
exactly what ``preprocess`` gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .preprocess import ImageError, check_grey, ink_map, max_pool, normalize_digit

MAX_DIGITS = 12  # more is a page of text or a drawing, not a number
MARK_SIDE = 400  # marks are found at about this resolution (an image's longer side, max-pooled)
MAX_MARKS = 100  # marks before merging: broken strokes are many, but not this many
INK_LEVEL = 0.02  # of the ink map (already floored above paper noise): where a mark is; hairlines count
SPECK = 0.02  # a mark with less ink than this share of the largest, and small, is dust
OVERLAP = 0.5  # of the narrower mark's width: two marks stacked like this are one digit
NEAR = 0.1  # of the tallest mark's height: a small mark this close to another is part of it
SMALL = 0.35  # of the tallest mark's height: a mark lower than this may be a piece of a digit
WIDE = 1.3  # width over height beyond which a mark is likely two digits that touch


@dataclass
class Digit:
    field: np.ndarray  # (28, 28) in [0, 1], as the model sees it
    box: tuple[int, int, int, int]  # (left, top, right, bottom) in the image's pixels, right/bottom exclusive


@dataclass
class Reading:
    digits: list[Digit]
    warning: str | None = None


def marks(ink: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int, int]], np.ndarray]:
    """Labels (H, W), boxes (left, top, right, bottom) and label ids of the connected marks of
    ``mask`` (the ink above INK_LEVEL), specks dropped."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 1:  # most single digits: one stroke, nothing to weigh or drop (a third of the time saved)
        return labels, [(0, 0, mask.shape[1], mask.shape[0])], np.asarray([1])
    mass = np.bincount(labels.ravel(), weights=ink.ravel(), minlength=n + 1)[1:]  # 6x ndimage.sum_labels
    boxes = [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndimage.find_objects(labels)]
    tallest = max(b[3] - b[1] for b in boxes)
    keep = [i for i, b in enumerate(boxes)
            if mass[i] >= SPECK * mass.max() or max(b[2] - b[0], b[3] - b[1]) >= SMALL * tallest]
    return labels, [boxes[i] for i in keep], np.asarray(keep) + 1


def union(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def belong_together(a, b, tallest: int) -> bool:
    overlap = min(a[2], b[2]) - max(a[0], b[0])
    if overlap >= OVERLAP * min(a[2] - a[0], b[2] - b[0]):
        return True
    smaller = min(a[3] - a[1], b[3] - b[1])
    gap = max(a[0] - b[2], b[0] - a[2], a[1] - b[3], b[1] - a[3], 0)
    return smaller < SMALL * tallest and gap <= NEAR * tallest


def group(boxes: list[tuple[int, int, int, int]]) -> list[tuple[tuple[int, int, int, int], list[int]]]:
    """Merge the marks of one digit, repeatedly, until no two groups belong together."""
    groups = [(b, [i]) for i, b in enumerate(boxes)]
    tallest = max(b[3] - b[1] for b in boxes)
    merged = True
    while merged:
        merged = False
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                if belong_together(groups[i][0], groups[j][0], tallest):
                    groups[i] = (union(groups[i][0], groups[j][0]), groups[i][1] + groups[j][1])
                    del groups[j]
                    merged = True
                    break
            if merged:
                break
    return sorted(groups, key=lambda g: (g[0][0] + g[0][2]) / 2)


def read_digits(grey: np.ndarray) -> Reading:
    """The digits of an image, left to right, each normalized as MNIST's are; a warning when the
    marks look like touching digits. Refuses (ImageError) an image of more than MAX_DIGITS marks
    once merged."""
    ink = ink_map(check_grey(grey))
    mask = ink > INK_LEVEL
    extent = mask_box(mask)
    left, top, right, bottom = extent
    window = ink[top:bottom, left:right]  # the marks are found where the ink is, not on the paper
    # a large photo's marks are found on its ink max-pooled (no line lost) to about MARK_SIDE
    # pixels: labelling 2 million pixels took 40 ms a photo; boxes come back to the image's pixels
    factor = max(1, max(window.shape) // MARK_SIDE)
    if factor > 1:
        pooled = max_pool(window, factor)
        labels, boxes, ids = marks(pooled, pooled > INK_LEVEL)
    else:
        labels, boxes, ids = marks(window, mask[top:bottom, left:right])
    if len(boxes) > MAX_MARKS:
        raise ImageError(f"found {len(boxes)} separate marks: this looks like text, a drawing or noise, "
                         "not a number (--single reads the whole image as one digit)")
    groups = group(boxes)
    if len(groups) > MAX_DIGITS:
        raise ImageError(f"found {len(groups)} separate marks, more than the {MAX_DIGITS} digits a number may have: "
                         "this looks like text or a drawing (--single reads the whole image as one digit)")
    if len(groups) == 1:  # one digit: exactly the single-digit path, specks and all
        digits = [Digit(normalize_digit(ink), extent)]
    else:
        digits = []
        for (x0, y0, x1, y1), members in groups:
            inside = np.isin(labels[y0:y1, x0:x1], ids[members])
            if factor > 1:
                inside = inside.repeat(factor, axis=0).repeat(factor, axis=1)
            region = window[y0 * factor:y1 * factor, x0 * factor:x1 * factor]
            mine = np.where(inside[:region.shape[0], :region.shape[1]], region, 0)
            a, b, c, d = mask_box(mine > INK_LEVEL)
            digits.append(Digit(normalize_digit(mine), (left + x0 * factor + a, top + y0 * factor + b,
                                                         left + x0 * factor + c, top + y0 * factor + d)))
    wide = [box for box, _ in groups if (box[2] - box[0]) > WIDE * (box[3] - box[1])]
    warning = None
    if wide:
        where = ", ".join(f"{left + b[0] * factor}-{left + b[2] * factor}" for b in wide)
        warning = (f"{len(wide)} mark(s) wider than a digit (at x = {where}): digits may touch, and the number "
                   "may miss some; leave a gap between digits")
    return Reading(digits, warning)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the pixels of ``mask``; ImageError when there are none."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        raise ImageError("no ink found: the image is blank")
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
