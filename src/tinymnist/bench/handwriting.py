"""`tinymnist bench handwriting`: how well a model reads handwriting that is not MNIST's.

Each image of ``data.handwriting`` is read exactly as `predict` and the web page read it
(``load_image`` on the file's bytes, then ``predict.read_image``: the digits found, each made
MNIST-like), then classified in batches. A single digit read as anything but one digit, and
an image that is refused, count as mistakes: a user would have got a wrong answer or none.
Numbers (2 to 6 digits) are scored on the whole string and digit by digit.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from ..data.handwriting import CONDITIONS, HALVES, render_numbers, render_set
from ..inference.predict import classify_uint8, read_image
from ..inference.preprocess import SIZE, ImageError, load_image, to_uint8
from ..plots import plot_misclassified
from ..stats import mean_std

MAX_GRID = 200  # mistakes shown in the PNG (all are counted)


def tally(rows: list[dict], key) -> dict:
    """{key(row): {n, correct, accuracy}} in first-seen order."""
    out: dict = defaultdict(lambda: {"n": 0, "correct": 0})
    for row in rows:
        cell = out[key(row)]
        cell["n"] += 1
        cell["correct"] += int(row["correct"])
    return {k: {**v, "accuracy": round(100.0 * v["correct"] / v["n"], 2)} for k, v in out.items()}


@dataclass
class ReadSet:
    """The benchmark's images as `predict` reads them, before any model: one row per image
    (font, half, condition, label, error, found) and the 28x28 uint8 digits found, in order."""

    rows: list[dict]
    digits: np.ndarray


def read_samples(samples, single: bool = False) -> ReadSet:
    rows, fields = [], []
    for s in samples:
        try:
            reading, error = read_image(load_image(s.data), single), None
            digits = [to_uint8(d.field) for d in reading.digits]
        except ImageError as exc:
            error, digits = str(exc), []
        rows.append({"font": s.font, "half": s.half, "condition": s.condition, "label": str(s.label),
                     "error": error, "found": len(digits)})
        fields.extend(digits)
    return ReadSet(rows, np.stack(fields) if fields else np.zeros((0, SIZE, SIZE), np.uint8))


def classify_samples(model: nn.Module, read: ReadSet, batch_size: int = 512) -> tuple[list[dict], np.ndarray]:
    """``read``'s rows scored by ``model`` (predicted, confidence, correct, and for a number,
    digits and digits_right), and the (N, 28, 28) first digit of each image (zeros where the
    image was refused)."""
    stacked = read.digits
    probs = np.concatenate([classify_uint8(model, stacked[i:i + batch_size])
                            for i in range(0, len(stacked), batch_size)]) if len(stacked) else np.zeros((0, 10))
    rows, firsts, at = [], [], 0
    for row in read.rows:
        mine = probs[at:at + row["found"]]
        firsts.append(stacked[at] if row["found"] else np.zeros((SIZE, SIZE), np.uint8))
        at += row["found"]
        text = "".join(str(int(p.argmax())) for p in mine)
        rows.append({**row, "predicted": text if row["error"] is None else None,
                     "confidence": float(mine.max(axis=1).min()) if len(mine) else 0.0,
                     "correct": text == row["label"] and row["error"] is None, "digits": len(row["label"]),
                     # digit by digit where as many digits were found as written; else all count wrong
                     "digits_right": sum(a == b for a, b in zip(text, row["label"]))
                     if len(text) == len(row["label"]) else 0})
    return rows, np.stack(firsts) if firsts else stacked


def summarize_numbers(rows: list[dict]) -> dict:
    """Numbers read exactly, and digits read right, per font half."""
    out = {}
    for half in HALVES:
        mine = [r for r in rows if r["half"] == half]
        if mine:
            n, digits = len(mine), sum(r["digits"] for r in mine)
            exact, right = sum(r["correct"] for r in mine), sum(r["digits_right"] for r in mine)
            out[half] = {"n": n, "exact": exact, "accuracy": round(100.0 * exact / n, 2), "digits": digits,
                         "digits_right": right, "digit_accuracy": round(100.0 * right / digits, 2),
                         "per_condition": tally(mine, lambda r: r["condition"])}
    return out


def summarize(rows: list[dict]) -> dict:
    """Accuracy overall and per half, font, condition and digit (each half apart too)."""
    halves = {}
    for half in HALVES:
        mine = [r for r in rows if r["half"] == half]
        if mine:
            halves[half] = {**tally(mine, lambda r: "all")["all"],
                            "per_condition": tally(mine, lambda r: r["condition"]),
                            "per_digit": tally(sorted(mine, key=lambda r: r["label"]), lambda r: str(r["label"]))}
    return {"overall": tally(rows, lambda r: "all").get("all", {"n": 0, "correct": 0, "accuracy": 0.0}),
            "halves": halves,
            "per_font": {k: {**v, "half": next(r["half"] for r in rows if r["font"] == k)}
                         for k, v in tally(rows, lambda r: r["font"]).items()},
            "refused": sum(r["error"] is not None for r in rows)}


def read_benchmark(seed: int = 0, halves: tuple[str, ...] = HALVES, conditions: tuple[str, ...] = CONDITIONS,
                   repeats: int = 2, fonts: tuple[str, ...] | None = None, numbers: int = 2,
                   single: bool = False) -> tuple[ReadSet, ReadSet | None]:
    """Render and read the benchmark once (the costly part), for any number of models to score."""
    digits = read_samples(render_set(seed, halves, conditions, repeats, fonts=fonts), single)
    number_set = read_samples(render_numbers(seed, halves, conditions, numbers, fonts=fonts)) \
        if numbers and not single else None
    return digits, number_set


def score(model: nn.Module, digits: ReadSet, number_set: ReadSet | None,
          mistakes_png: str | Path | None = None) -> dict:
    """One model's report on a read benchmark; the mistakes grid if asked."""
    rows, fields = classify_samples(model.eval(), digits)
    report = summarize(rows)
    if number_set is not None:
        report["numbers"] = summarize_numbers(classify_samples(model, number_set)[0])
    wrong = [i for i, r in enumerate(rows) if not r["correct"]]
    report["mistakes"] = [{k: rows[i][k] for k in ("font", "half", "condition", "label", "predicted", "confidence",
                                                    "error")} for i in wrong]
    if mistakes_png:
        shown = wrong[:MAX_GRID]
        plot_misclassified(fields[shown], [rows[i]["label"] for i in shown],
                           [rows[i]["predicted"] or "?" for i in shown],
                           [rows[i]["confidence"] for i in shown], mistakes_png,
                           title=f"Handwriting benchmark: {len(wrong)} mistakes" +
                           (f" (first {MAX_GRID})" if len(wrong) > MAX_GRID else ""))
        report["mistakes_png"] = str(mistakes_png)
    return report


def bench_handwriting(model: nn.Module, seed: int = 0, halves: tuple[str, ...] = HALVES,
                      conditions: tuple[str, ...] = CONDITIONS, repeats: int = 2,
                      mistakes_png: str | Path | None = None, fonts: tuple[str, ...] | None = None,
                      numbers: int = 2, single: bool = False) -> dict:
    """Render the benchmark, classify it and report; write the mistakes grid if asked.
    ``numbers``: numbers per font and condition (0: digits only); ``single``: read each image
    as one digit, as `predict --single` does."""
    digits, number_set = read_benchmark(seed, halves, conditions, repeats, fonts, numbers, single)
    return {"seed": seed, "repeats": repeats, "conditions": list(conditions), "single": single,
            "numbers_per_cell": numbers if number_set is not None else 0,
            **score(model, digits, number_set, mistakes_png)}


def headline(report: dict) -> dict:
    """The figures a seed-to-seed summary is made of: accuracy per half, numbers per half."""
    out = {f"{half}_accuracy": h["accuracy"] for half, h in report["halves"].items()}
    out.update({f"{half}_numbers_exact": n["accuracy"] for half, n in report.get("numbers", {}).items()})
    out["overall_accuracy"] = report["overall"]["accuracy"]
    return out


def across(reports: list[dict]) -> dict:
    """{figure: {mean, std, values}} of the headline figures of several models' reports (seeds)."""
    figures = [headline(r) for r in reports]
    out = {}
    for key in figures[0]:
        values = [f[key] for f in figures]
        mean, std = mean_std(values)
        out[key] = {"mean": round(mean, 2), "std": round(std, 2), "values": values}
    return out
