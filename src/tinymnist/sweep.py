"""`tinymnist sweep`: many training runs as separate processes, a bounded number at a time.

Each run is a plain `tinymnist train --json` child with its own run directory, so a sweep
is exactly the runs a person would start by hand, and one failing run fails only itself.
The CPU threads are split between the runs that share the machine.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path


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
              data_dir: str | None = None, log=lambda msg: None) -> dict:
    """Every (preset, seed) pair, ``parallel`` at a time; per-run rows and per-preset summaries."""
    out = Path(out)
    jobs = plan(presets, seeds, out, list(extra or []))
    threads = max(1, (os.cpu_count() or 1) // parallel)
    rows = []
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for row in pool.map(lambda job: run_job(job, threads, data_dir), jobs):
            result = row.get("result")
            log(f"  {row['preset']} seed {row['seed']}: " + (f"{result['test_acc']:.2f}% in "
                f"{result['train_seconds']:.1f} s" if result else f"FAILED: {row['error']}"))
            rows.append(row)
    summaries = []
    for preset in presets:
        done = [r["result"] for r in rows if r["preset"] == preset and r.get("result")]
        accs = [r["test_acc"] for r in done]
        vals = [r["val_acc"] for r in done if r.get("val_acc") is not None]
        secs = [r["train_seconds"] for r in done]
        summaries.append({
            "preset": preset, "runs": len(done), "failed": sum(1 for r in rows if r["preset"] == preset
                                                               and not r.get("result")),
            "test_acc_mean": statistics.fmean(accs) if accs else None,
            "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0 if accs else None,
            "test_acc_min": min(accs) if accs else None,
            "train_seconds_median": statistics.median(secs) if secs else None,
            # with --val-images: compare recipes on these, never on the test accuracy
            "val_acc_mean": statistics.fmean(vals) if vals else None,
            "val_acc_std": statistics.stdev(vals) if len(vals) > 1 else None,
        })
    return {"out": str(out), "parallel": parallel, "threads_per_run": threads, "runs": rows, "summary": summaries}
