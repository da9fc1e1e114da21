"""Digits in handwriting that is not MNIST's: rendered from the handwriting fonts Debian packages
carry, under the conditions people's images have (the source of `tinymnist bench handwriting`).

The fonts are split into a development half and a held-out half, by family (a font's bold and
italic stay with it), fixed here: choices (augmentation, presets, preprocessing) are made on the
development half and MNIST validation images; the held-out half is reported, never chosen on.
Rendering is deterministic: each image's randomness comes from (seed, font, digit, condition,
repeat) alone, so any subset renders the same pixels as the whole.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont


@dataclass(frozen=True)
class Font:
    name: str
    package: str  # the Debian package that installs it
    file: str  # its file name, found under FONT_ROOTS
    half: str  # "dev" or "held-out"


def _family(half: str, package: str, *files: tuple[str, str]) -> list[Font]:
    return [Font(name, package, file, half) for name, file in files]


FONTS: tuple[Font, ...] = tuple(
    _family("dev", "fonts-bwht", ("bwht-build", "BecauseWeBuild-Regular.otf"),
            ("bwht-create", "BecauseWeCreate-Regular.otf"), ("bwht-mentor", "BecauseWeMentor-Regular.otf"))
    + _family("dev", "fonts-comic-neue", ("comic-neue", "ComicNeue-Regular.otf"),
              ("comic-neue-bold", "ComicNeue-Bold.otf"))
    + _family("dev", "fonts-dkg-handwriting", ("dkg", "dkg.ttf"), ("dkg-bold", "dkgBd.ttf"),
              ("dkg-italic", "dkgIt.ttf"), ("dkg-bold-italic", "dkgBI.ttf"))
    + _family("dev", "fonts-kiloji", ("kiloji", "kiloji.ttf"), ("kiloji-b", "kiloji_b.ttf"))
    + _family("dev", "fonts-kristi", ("kristi", "Kristi.ttf"))
    + _family("dev", "fonts-breip", ("breip", "Breip.ttf"))
    + _family("dev", "fonts-rufscript", ("rufscript", "Rufscript010.ttf"))
    + _family("held-out", "fonts-bwht", ("bwht-connect", "BecauseWeConnect-Regular.otf"),
              ("bwht-learn", "BecauseWeLearn-Regular.otf"), ("bwht-organize", "BecauseWeOrganize-Regular.otf"))
    + _family("held-out", "fonts-dancingscript", ("dancing-script", "DancingScript-Regular.otf"),
              ("dancing-script-bold", "DancingScript-Bold.otf"))
    + _family("held-out", "fonts-kaushanscript", ("kaushan-script", "KaushanScript-Regular.otf"))
    + _family("held-out", "fonts-ecolier-court", ("ecolier", "Ecolier-court.ttf"))
    + _family("held-out", "fonts-femkeklaver", ("femkeklaver", "femkeklaver.ttf"))
    + _family("held-out", "fonts-klee", ("klee", "KleeOne-Regular.ttf"), ("klee-semibold", "KleeOne-SemiBold.ttf"))
    + _family("held-out", "fonts-seto", ("seto", "setofont.ttf"))
    + _family("held-out", "fonts-humor-sans", ("humor-sans", "Humor-Sans.ttf"))
)
HALVES = ("dev", "held-out")
PACKAGES = tuple(sorted({f.package for f in FONTS}))
FONT_ROOTS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".local/share/fonts")

# What people's images look like, one name each; every image also gets a little rotation, size
# and position jitter. The file format is part of the condition (JPEG artefacts, alpha).
CONDITIONS = ("clean", "thick-pen", "thin-pen-photo", "small-off-centre", "rotated-slanted",
              "grey-paper-uneven-light", "jpeg-photo", "light-on-dark", "transparent-canvas")


class FontError(ValueError):
    """A font the benchmark does not have, or cannot use."""


class FontsMissing(FontError):
    """The handwriting fonts are not installed."""


@dataclass
class Sample:
    label: int | str  # a digit, or the digits of a number as a string ("2026")
    font: str
    half: str
    condition: str
    data: bytes  # the encoded file, as a user would give it to `predict`


def font_path(font: Font) -> Path | None:
    for root in FONT_ROOTS:
        if root.is_dir():
            for path in root.rglob(font.file):
                return path
    return None


def available_fonts(halves: tuple[str, ...] = HALVES, names: tuple[str, ...] | None = None
                    ) -> list[tuple[Font, Path]]:
    """The benchmark's fonts in ``halves`` (and ``names``, if given) that are installed, with
    their files; FontsMissing if none."""
    unknown = sorted(set(names or ()) - {f.name for f in FONTS})
    if unknown:
        raise FontError(f"unknown font(s) {', '.join(unknown)}; the benchmark's: {', '.join(f.name for f in FONTS)}")
    found = [(f, p) for f in FONTS if f.half in halves and (names is None or f.name in names)
             for p in [font_path(f)] if p is not None]
    if not found:
        raise FontsMissing("no handwriting fonts found under " + ", ".join(map(str, FONT_ROOTS))
                           + "; install the Debian packages " + " ".join(PACKAGES)
                           + " (`make fonts` does, as root)")
    return found


def sample_rng(seed: int, font: str, digit: int, condition: str, repeat: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(font.encode()), digit, CONDITIONS.index(condition), repeat])


def glyph(path: Path, digit: int, size: int, pen: int = 0) -> np.ndarray:
    """The digit's ink in [0, 1], cropped to its box; ``pen`` > 0 outlines the strokes wider."""
    font = ImageFont.truetype(str(path), size)
    canvas = Image.new("L", (3 * size, 3 * size), 0)
    ImageDraw.Draw(canvas).text((1.5 * size, 1.5 * size), str(digit), font=font, fill=255, anchor="mm",
                                stroke_width=pen, stroke_fill=255)
    box = canvas.getbbox()
    if box is None:
        raise FontsMissing(f"{path.name} draws nothing for {digit}")
    return np.asarray(canvas.crop(box), dtype=np.float32) / 255.0


def thin(ink: np.ndarray, width: float) -> np.ndarray:
    """Erode the strokes towards ``width`` pixels (a fine pen), never to nothing."""
    image = Image.fromarray((ink * 255).astype(np.uint8))
    for _ in range(20):
        mask = np.asarray(image) > 127
        area = int(mask.sum())
        edge = area - int((mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2]
                           & mask[1:-1, 2:]).sum())
        if 2 * area / max(edge, 1) <= width:
            break
        thinner = image.filter(ImageFilter.MinFilter(3))
        if (np.asarray(thinner) > 127).sum() < 0.6 * area:  # a stroke would break
            break
        image = thinner
    return np.asarray(image, dtype=np.float32) / 255.0


def transform(ink: np.ndarray, height: int, degrees: float, slant: float) -> np.ndarray:
    """Scale to ``height`` pixels tall, slant (x += slant * y) and rotate; the canvas grows to fit."""
    h, w = ink.shape
    scale = height / h
    image = Image.fromarray((ink * 255).astype(np.uint8)).resize(
        (max(1, round(w * scale)), max(1, height)), Image.LANCZOS)
    if slant:
        w2, h2 = image.size
        extra = int(abs(slant) * h2) + 1
        offset = -slant * h2 if slant > 0 else 0.0
        image = image.transform((w2 + extra, h2), Image.AFFINE, (1, slant, offset, 0, 1, 0), Image.BICUBIC)
    image = image.rotate(degrees, Image.BICUBIC, expand=True)
    return np.asarray(image, dtype=np.float32) / 255.0


def place(ink: np.ndarray, canvas: tuple[int, int], rng: np.random.Generator, centre_spread: float) -> np.ndarray:
    """``ink`` on an empty (H, W) canvas, its box's centre moved from the middle by up to
    ``centre_spread`` of the free room."""
    H, W = canvas
    h, w = ink.shape
    out = np.zeros((max(H, h), max(W, w)), np.float32)
    room_y, room_x = out.shape[0] - h, out.shape[1] - w
    top = int(round(room_y / 2 + rng.uniform(-centre_spread, centre_spread) * room_y / 2))
    left = int(round(room_x / 2 + rng.uniform(-centre_spread, centre_spread) * room_x / 2))
    out[top:top + h, left:left + w] = ink
    return out


def paper_texture(shape: tuple[int, int], rng: np.random.Generator, grain: float, light: float) -> np.ndarray:
    """Multiplicative shading: smooth grain and a linear light gradient across the page."""
    h, w = shape
    small = rng.normal(0, 1, (max(2, h // 8), max(2, w // 8))).astype(np.float32)
    grain_map = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (np.cos(angle) * (xx / w - 0.5) + np.sin(angle) * (yy / h - 0.5))
    return 1 + grain * grain_map + light * ramp


def encode(pixels: np.ndarray, fmt: str, quality: int = 90, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    image = Image.fromarray(np.clip(pixels * 255 + 0.5, 0, 255).astype(np.uint8), mode=mode)
    image.save(buf, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def compose(ink: np.ndarray, paper: float, ink_level: float, shade: np.ndarray | None = None,
            noise: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """Grey pixels in [0, 1]: ``ink_level`` where the ink is, ``paper`` elsewhere, shaded and noisy."""
    grey = paper + (ink_level - paper) * ink
    if shade is not None:
        grey = grey * shade
    if noise:
        grey = grey + rng.normal(0, noise, grey.shape).astype(np.float32)
    return np.clip(grey, 0, 1)


def number_ink(path: Path, text: str, pen: int, rng: np.random.Generator, thin_to: float = 0.0) -> np.ndarray:
    """The digits of ``text`` side by side as one ink map: each a little bigger or smaller and
    higher or lower than the last (baseline wobble), gaps from wide to nearly touching."""
    inks = [glyph(path, int(c), 96, pen) for c in text]
    if thin_to:
        inks = [thin(g, thin_to) for g in inks]
    inks = [transform(g, max(8, round(g.shape[0] * rng.uniform(0.92, 1.08))), 0.0, 0.0) for g in inks]
    height = int(np.median([g.shape[0] for g in inks]))
    gaps = [int(round(height * rng.uniform(0.08, 0.5))) for _ in inks[1:]] + [0]
    shifts = [int(round(height * rng.uniform(-0.08, 0.08))) for _ in inks]
    top = min(shifts)
    out = np.zeros((max(g.shape[0] + s for g, s in zip(inks, shifts)) - top, sum(g.shape[1] for g in inks) + sum(gaps)),
                   np.float32)
    x = 0
    for g, gap, shift in zip(inks, gaps, shifts):
        out[shift - top:shift - top + g.shape[0], x:x + g.shape[1]] = g
        x += g.shape[1] + gap
    return out


def render(path: Path, digit: int | str, condition: str, rng: np.random.Generator) -> bytes:
    """One image of ``digit`` (or of a number, given as a string of digits) in the font at
    ``path`` under ``condition``, as file bytes."""
    degrees, slant = rng.uniform(-6, 6), rng.uniform(-0.1, 0.1)
    side = int(rng.integers(160, 260))
    height = int(side * rng.uniform(0.5, 0.75))
    pen = 0
    if condition == "thick-pen":
        pen = int(rng.integers(2, 5))
    if condition == "rotated-slanted":
        degrees, slant = rng.uniform(-15, 15), rng.uniform(-0.35, 0.35)
    number = isinstance(digit, str) and len(digit) > 1
    if number:
        ink = number_ink(path, digit, pen, rng, rng.uniform(3.5, 5.0) if condition == "thin-pen-photo" else 0.0)
        degrees /= 3  # a long number turned 15 degrees is a slope, not handwriting
    else:
        ink = glyph(path, int(digit), 96, pen)
    if condition == "thin-pen-photo":
        if not number:
            ink = thin(ink, rng.uniform(3.5, 5.0))
        side = int(rng.integers(700, 1100))
        height = int(side * rng.uniform(0.3, 0.5))
    if condition == "small-off-centre":
        side = int(rng.integers(300, 420))
        height = int(rng.integers(36, 64))
    ink = transform(ink, height, degrees, slant)
    canvas = (side, max(side, int(ink.shape[1] * 1.3)))  # a number gets a wider page
    ink = place(ink, canvas, rng, 0.8 if condition == "small-off-centre" else 0.3)
    if condition == "grey-paper-uneven-light":
        shade = paper_texture(ink.shape, rng, grain=0.04, light=rng.uniform(0.2, 0.45))
        return encode(compose(ink, rng.uniform(0.55, 0.85), rng.uniform(0.05, 0.3), shade, 0.02, rng), "PNG")
    if condition in ("jpeg-photo", "thin-pen-photo"):
        shade = paper_texture(ink.shape, rng, grain=0.03, light=rng.uniform(0.05, 0.25))
        grey = compose(ink, rng.uniform(0.75, 0.95), rng.uniform(0.05, 0.35), shade, 0.03, rng)
        blurred = Image.fromarray((grey * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
        quality = int(rng.integers(15, 45)) if condition == "jpeg-photo" else 85
        return encode(np.asarray(blurred, np.float32) / 255, "JPEG", quality)
    if condition == "light-on-dark":  # chalk on a board, a light pen on a dark screen
        shade = paper_texture(ink.shape, rng, grain=0.05, light=0.1)
        return encode(compose(ink, rng.uniform(0.05, 0.3), rng.uniform(0.8, 1.0), shade, 0.02, rng), "PNG")
    if condition == "transparent-canvas":  # strokes on a canvas with no background (alpha only)
        colour = 0.0 if rng.random() < 0.5 else 1.0
        rgba = np.zeros(ink.shape + (4,), np.float32)
        rgba[..., :3] = colour
        rgba[..., 3] = ink
        return encode(rgba, "PNG", mode="RGBA")
    return encode(compose(ink, 1.0, 0.0), "PNG")  # clean, thick-pen, small-off-centre, rotated-slanted


def render_set(seed: int = 0, halves: tuple[str, ...] = HALVES, conditions: tuple[str, ...] = CONDITIONS,
               repeats: int = 1, digits: tuple[int, ...] = tuple(range(10)),
               fonts: tuple[str, ...] | None = None) -> Iterator[Sample]:
    """Every digit in every installed font of ``halves`` (or of ``fonts``) under every condition,
    ``repeats`` times."""
    for font, path in available_fonts(halves, fonts):
        for condition in conditions:
            for digit in digits:
                for r in range(repeats):
                    rng = sample_rng(seed, font.name, digit, condition, r)
                    yield Sample(digit, font.name, font.half, condition, render(path, digit, condition, rng))


def render_numbers(seed: int = 0, halves: tuple[str, ...] = HALVES, conditions: tuple[str, ...] = CONDITIONS,
                   per_cell: int = 2, lengths: tuple[int, int] = (2, 6),
                   fonts: tuple[str, ...] | None = None) -> Iterator[Sample]:
    """``per_cell`` numbers of 2 to 6 random digits in every installed font under every condition."""
    for font, path in available_fonts(halves, fonts):
        for condition in conditions:
            for r in range(per_cell):
                rng = sample_rng(seed, font.name, 10, condition, r)  # 10: the numbers' stream, apart from the digits'
                text = "".join(str(d) for d in rng.integers(0, 10, int(rng.integers(lengths[0], lengths[1] + 1))))
                yield Sample(text, font.name, font.half, condition, render(path, text, condition, rng))
