"""`tinymnist sweep`: presets x seeds as parallel `tinymnist train` processes, one table."""

from __future__ import annotations

import shlex
from pathlib import Path

from ..bench.sweep import SWEEP_OWNED_FLAGS, check_free, check_sweep, plan, run_sweep
from ..training.rundir import default_run_dir
from .common import EXIT_MISSED_TARGET, emit_json, parents, say
from .train import read_train_args


def register(verbs) -> None:
    p = verbs.add_parser("sweep", help="many runs (presets x seeds) as parallel processes",
                         parents=parents("data_dir", "json"),
                         description="Train every preset once per seed (0..N-1), each as its own `tinymnist train` "
                         "process, --parallel at a time with the CPU threads split between them; one table of "
                         "results. Exit 1 if any run failed.")
    p.add_argument("--presets", default="default", help="comma-separated presets (default: default)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per preset (default 3)")
    p.add_argument("--parallel", type=int, default=1, help="runs at a time (default 1)")
    p.add_argument("--out", help="directory for the runs (default: runs/sweep-<timestamp>)")
    p.add_argument("--train-args", default="", help="extra flags for every run, e.g. \"--epochs 3 --device cpu\"")
    p.add_argument("--max-params", type=int, help="refuse, before any run starts, a model with more parameters")
    p.set_defaults(func=cmd_sweep, upper_limits={"seeds": 1000, "parallel": 64})


def cmd_sweep(args) -> int:
    presets = [p for p in args.presets.split(",") if p]
    extra = shlex.split(args.train_args) + ([] if args.max_params is None else ["--max-params", str(args.max_params)])
    overrides, owned = read_train_args(presets[0] if presets else "default", extra, SWEEP_OWNED_FLAGS)
    check_sweep(presets, args.seeds, args.parallel, overrides, owned)
    seeds = list(range(args.seeds))
    out = Path(args.out) if args.out else default_run_dir("sweep")
    check_free(plan(presets, seeds, out, extra))
    if not args.json:
        print(f"sweep: {len(presets)} preset(s) x {args.seeds} seed(s), {args.parallel} at a time, into {out}",
              flush=True)
    report = run_sweep(presets, seeds, out, args.parallel, extra, args.data_dir)
    if args.json:
        emit_json(report)
    else:
        print(f"{'preset':<10} {'runs':>4} {'failed':>6} {'test acc (mean±std)':>20} {'min':>6} "
              f"{'train s (median)':>16}")
        for r in report["summary"]:
            acc = (f"{r['test_acc_mean']:>12.2f} ± {r['test_acc_std']:.2f}" if r["runs"] else f"{'-':>20}")
            low = f"{r['test_acc_min']:>6.2f}" if r["runs"] else f"{'-':>6}"
            secs = f"{r['train_seconds_median']:>16.1f}" if r["runs"] else f"{'-':>16}"
            print(f"{r['preset']:<10} {r['runs']:>4} {r['failed']:>6} {acc} {low} {secs}")
    failed = sum(r["failed"] for r in report["summary"])
    if failed:
        say(f"tinymnist: error: {failed} run(s) failed; see their rows")
    return EXIT_MISSED_TARGET if failed else 0
