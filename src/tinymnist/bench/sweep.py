"""`tinymnist sweep`: many training runs as separate processes, a bounded number at a time.

Each run is a plain `tinymnist train --json` child with its own run directory, so a sweep
is exactly the runs a person would start by hand, and one failing run fails only itself.
The CPU threads are split between the runs that share the machine.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, preset_config
from ..stats import mean_std
from ..training.rundir import holds_run
from ..training.setup import check_model_fits

log = logging.getLogger(__name__)
# flags of `train` that the sweep sets for each run itself
SWEEP_OWNED_FLAGS = ("--preset", "--seed", "--out", "--resume", "--config")


@dataclass
class Job:
    preset: str
    seed: int
    out: Path
    extra: list[str]

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tinymnist", "train", "--preset", self.preset, "--seed", str(self.seed),
                "--out", str(self.out), "--json", "--quiet", *self.extra]


def plan(presets: list[str], seeds: list[int], out: Path, extra: list[str]) -> list[Job]:
    return [Job(p, s, out / f"{p}-seed{s}", extra) for p in presets for s in seeds]


def check_sweep(presets: list[str], seeds: int, parallel: int, overrides: dict, owned: list[str]) -> None:
    """Refuse a sweep that would fail run by run, once, before any process starts: an unknown
    preset, a bad setting in --train-args (``overrides``, as parsed by `train`), or a --train-args
    flag the sweep sets itself (``owned``): `--seed 5` would silently make every run seed 5
    while the table still said 0, 1, 2."""
    if owned:
        raise ConfigError(f"--train-args must not set {', '.join(owned)}: the sweep sets "
                          f"{'it' if len(owned) == 1 else 'them'} for every run")
    for name in presets:
        check_model_fits(preset_config(name, **overrides))  # a user's model builds, runs and fits --max-params
    if seeds < 1 or parallel < 1:
        raise ConfigError("--seeds and --parallel must be at least 1")


def check_free(jobs: list[Job]) -> None:
    """Each run would refuse a directory that holds a run: say it once, before any process starts."""
    taken = [job.out for job in jobs if holds_run(job.out)]
    if taken:
        raise ConfigError(f"{taken[0]} already holds a run ({len(taken)} of this sweep's run directories do); "
                          "pass another --out")


def run_job(job: Job, threads: int, data_dir: str | None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if data_dir:
        env["TINYMNIST_DATA"] = str(data_dir)
    started = time.perf_counter()
    proc = subprocess.run(job.command(), capture_output=True, text=True, env=env)
    row = {"preset": job.preset, "seed": job.seed, "out": str(job.out), "exit_code": proc.returncode,
           "wall_seconds": time.perf_counter() - started}
    try:
        row["result"] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        lines = proc.stderr.strip().splitlines()
        row["error"] = lines[-1] if lines else f"exit code {proc.returncode} and no output"
    return row


def run_sweep(presets: list[str], seeds: list[int], out: str | Path, parallel: int = 1, extra: list[str] | None = None,
              data_dir: str | None = None) -> dict:
    """Every (preset, seed) pair, ``parallel`` at a time; per-run rows and per-preset summaries."""
    out = Path(out)
    jobs = plan(presets, seeds, out, list(extra or []))
    threads = max(1, (os.cpu_count() or 1) // parallel)
    rows = []
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for row in pool.map(lambda job: run_job(job, threads, data_dir), jobs):
            result = row.get("result")
            log.info(f"  {row['preset']} seed {row['seed']}: " + (f"{result['test_acc']:.2f}% in "
                f"{result['train_seconds']:.1f} s" if result else f"FAILED: {row['error']}"))
            rows.append(row)
    summaries = [summarize(preset, rows) for preset in presets]
    return {"out": str(out), "parallel": parallel, "threads_per_run": threads, "runs": rows, "summary": summaries}


def summarize(preset: str, rows: list[dict]) -> dict:
    """One preset's runs: accuracy mean ± std and min, median time; None where no run finished."""
    done = [r["result"] for r in rows if r["preset"] == preset and r.get("result")]
    accs = [r["test_acc"] for r in done]
    vals = [r["val_acc"] for r in done if r.get("val_acc") is not None]
    secs = [r["train_seconds"] for r in done]
    acc_mean, acc_std = mean_std(accs) if accs else (None, None)
    val_mean, val_std = mean_std(vals) if vals else (None, None)
    return {
        "preset": preset, "runs": len(done),
        "failed": sum(1 for r in rows if r["preset"] == preset and not r.get("result")),
        "test_acc_mean": acc_mean, "test_acc_std": acc_std, "test_acc_min": min(accs) if accs else None,
        "train_seconds_median": statistics.median(secs) if secs else None,
        # with --val-images: compare recipes on these, never on the test accuracy
        "val_acc_mean": val_mean, "val_acc_std": val_std,
    }
