"""`tinymnist bench handwriting`: how well a model reads handwriting that is not MNIST's.

Each image of ``data.handwriting`` is decoded and preprocessed exactly as `predict` and the web
page do (``load_image`` on the file's bytes, then ``preprocess``), then classified in batches. An
image ``preprocess`` refuses counts as a mistake: a user would have got no answer.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from torch import nn

from ..data.handwriting import CONDITIONS, HALVES, render_set
from ..inference.predict import classify_uint8
from ..inference.preprocess import SIZE, ImageError, load_image, preprocess, to_uint8
from ..plots import plot_misclassified

MAX_GRID = 200  # mistakes shown in the PNG (all are counted)


def tally(rows: list[dict], key) -> dict:
    """{key(row): {n, correct, accuracy}} in first-seen order."""
    out: dict = defaultdict(lambda: {"n": 0, "correct": 0})
    for row in rows:
        cell = out[key(row)]
        cell["n"] += 1
        cell["correct"] += int(row["correct"])
    return {k: {**v, "accuracy": round(100.0 * v["correct"] / v["n"], 2)} for k, v in out.items()}


def classify_samples(model: nn.Module, samples, batch_size: int = 512) -> tuple[list[dict], np.ndarray]:
    """One row per image (font, half, condition, label, predicted, confidence, correct) and the
    (N, 28, 28) uint8 fields the model saw (zeros where preprocessing refused the image)."""
    rows, fields = [], []
    for s in samples:
        try:
            field, error = to_uint8(preprocess(load_image(s.data))), None
        except ImageError as exc:
            field, error = np.zeros((SIZE, SIZE), np.uint8), str(exc)
        rows.append({"font": s.font, "half": s.half, "condition": s.condition, "label": s.label, "error": error})
        fields.append(field)
    fields = np.stack(fields) if fields else np.zeros((0, SIZE, SIZE), np.uint8)
    probs = np.concatenate([classify_uint8(model, fields[i:i + batch_size])
                            for i in range(0, len(fields), batch_size)]) if len(fields) else np.zeros((0, 10))
    for row, p in zip(rows, probs):
        predicted = None if row["error"] else int(p.argmax())
        row.update(predicted=predicted, confidence=float(p.max()) if predicted is not None else 0.0,
                   correct=predicted == row["label"])
    return rows, fields


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


def bench_handwriting(model: nn.Module, seed: int = 0, halves: tuple[str, ...] = HALVES,
                      conditions: tuple[str, ...] = CONDITIONS, repeats: int = 2,
                      mistakes_png: str | Path | None = None, fonts: tuple[str, ...] | None = None) -> dict:
    """Render the benchmark, classify it and report; write the mistakes grid if asked."""
    model = model.eval()
    rows, fields = classify_samples(model, render_set(seed, halves, conditions, repeats, fonts=fonts))
    report = {"seed": seed, "repeats": repeats, "conditions": list(conditions), **summarize(rows)}
    wrong = [i for i, r in enumerate(rows) if not r["correct"]]
    report["mistakes"] = [{k: rows[i][k] for k in ("font", "half", "condition", "label", "predicted", "confidence",
                                                    "error")} for i in wrong]
    if mistakes_png:
        shown = wrong[:MAX_GRID]
        plot_misclassified(fields[shown], [rows[i]["label"] for i in shown],
                           [rows[i]["predicted"] if rows[i]["predicted"] is not None else "?" for i in shown],
                           [rows[i]["confidence"] for i in shown], mistakes_png,
                           title=f"Handwriting benchmark: {len(wrong)} mistakes" +
                           (f" (first {MAX_GRID})" if len(wrong) > MAX_GRID else ""))
        report["mistakes_png"] = str(mistakes_png)
    return report
