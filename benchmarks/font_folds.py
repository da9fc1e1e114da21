"""Does training on digits rendered from handwriting fonts teach a model other people's
handwriting? A two-fold test inside the benchmark's development half (the held-out half is
never touched): train `robust` (10,000 MNIST images held out for validation) with every
development font of fold A rendered beside MNIST, score fold B's fonts, and the other way round,
against the same recipe on MNIST alone. Results: docs/experiments.md ("Training on font digits").

    .venv/bin/python benchmarks/font_folds.py --seeds 0 1 --repeats 8 --out results.json

The rendered digits are read exactly as `predict --single` reads a file (the benchmark's own reading), from
seed 1 (the benchmark renders from seed 0), and placed before MNIST's training images so that
the validation images stay MNIST's last 10,000.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from tinymnist.bench.handwriting import read_benchmark, read_samples, score
from tinymnist.config import preset_config
from tinymnist.data import MNIST, load_mnist
from tinymnist.data.handwriting import CONDITIONS, render_set
from tinymnist.models.checkpoint import load_checkpoint
from tinymnist.training import train

FOLDS = {  # by family, as the benchmark splits its halves
    "A": ("bwht-build", "bwht-create", "bwht-mentor", "comic-neue", "comic-neue-bold", "kiloji", "kiloji-b",
          "rufscript"),
    "B": ("dkg", "dkg-bold", "dkg-italic", "dkg-bold-italic", "kristi", "breip"),
}
RENDER_SEED = 1


def render_font(name: str, repeats: int) -> tuple[np.ndarray, np.ndarray]:
    """The font's digits as the benchmark reads them, each whole image one digit; refused ones left out."""
    read = read_samples(render_set(RENDER_SEED, halves=("dev",), repeats=repeats, fonts=(name,)), single=True)
    return read.digits, np.asarray([int(r["label"]) for r in read.rows if r["found"]], np.int64)


def font_digits(fonts: tuple[str, ...], repeats: int) -> tuple[torch.Tensor, torch.Tensor]:
    with ProcessPoolExecutor(2) as pool:
        parts = list(pool.map(render_font, fonts, [repeats] * len(fonts)))
    return (torch.from_numpy(np.concatenate([p[0] for p in parts])),
            torch.from_numpy(np.concatenate([p[1] for p in parts])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--repeats", type=int, default=8, help="renders per font, digit and condition")
    ap.add_argument("--out", required=True, help="the results' JSON")
    ap.add_argument("--runs", default="runs/font-folds", help="where the probe models are saved")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    mnist = load_mnist()
    extra = {fold: font_digits(fonts, args.repeats) for fold, fonts in FOLDS.items()}
    bench = {fold: read_benchmark(0, ("dev",), CONDITIONS, 2, fonts, 0, False)[0] for fold, fonts in FOLDS.items()}
    rows = []
    for seed in args.seeds:
        config = preset_config("robust", seed=seed, val_images=10_000, target_acc=0.0, device="cpu")
        for trained_on in (None, "A", "B"):
            data = mnist
            if trained_on:
                x, y = extra[trained_on]
                data = MNIST(torch.cat([x, mnist.train_images]), torch.cat([y, mnist.train_labels]),
                             mnist.test_images, mnist.test_labels)
            started = time.perf_counter()
            result = train(config, data=data, progress=False, out_dir=f"{args.runs}/s{seed}-{trained_on or 'mnist'}")
            model = load_checkpoint(result.checkpoint)[0].eval()
            for scored in ("A", "B"):
                if scored == trained_on:
                    continue
                report = score(model, bench[scored], None, None)
                rows.append({"seed": seed, "trained_on_fonts": trained_on, "scored_fold": scored,
                             "font_images": 0 if trained_on is None else int(extra[trained_on][0].shape[0]),
                             "val_acc": result.val_acc, "dev_fold_accuracy": report["halves"]["dev"]["accuracy"],
                             "per_font": {k: v["accuracy"] for k, v in report["per_font"].items()},
                             "per_digit": {k: v["accuracy"] for k, v in report["halves"]["dev"]["per_digit"].items()},
                             "seconds": round(time.perf_counter() - started, 1)})
                print(json.dumps({k: rows[-1][k] for k in ("seed", "trained_on_fonts", "scored_fold", "val_acc",
                                                           "dev_fold_accuracy")}), flush=True)
    with open(args.out, "w") as fh:
        json.dump({"repeats": args.repeats, "render_seed": RENDER_SEED, "folds": FOLDS, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
