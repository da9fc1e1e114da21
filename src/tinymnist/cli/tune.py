"""`tinymnist tune`: search a preset's recipe on Optuna (validation accuracy), and report a study."""

from __future__ import annotations

import shlex
from pathlib import Path

from ..training.rundir import RUNS_ROOT
from .common import CLIError, emit_json, parents
from .train import read_train_args

OWNED = ("--preset", "--seed", "--out", "--resume", "--config", "--val-images", "--device")


def register(verbs) -> None:
    p = verbs.add_parser("tune", help="hyperparameter search on Optuna (validation accuracy)",
                         parents=parents("data_dir", "json", "device"),
                         description="Train --trials trials of a preset with values drawn from --space, scored on "
                         "held-out training images (the test set is never read), poor trials pruned early; "
                         "--parallel worker processes share the study, and so do other machines given the same "
                         "--storage and --study. A second call continues the study. --report prints it.")
    p.add_argument("--preset", default="default", help="the recipe the space varies (default: default)")
    p.add_argument("--space", help="JSON: {FIELD: {low, high[, log][, step]} or {choices: [...]}}")
    p.add_argument("--trials", type=int, default=20, help="trials to add to the study (default 20)")
    p.add_argument("--parallel", type=int, default=1, help="worker processes on this machine (default 1)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per trial, averaged (default 1)")
    p.add_argument("--val-images", type=int, default=10_000, help="held-out training images (default 10000)")
    p.add_argument("--storage", help="an Optuna storage URL (sqlite:///, postgresql://, mysql://) or a journal file "
                   "(journal:PATH); default: sqlite:///OUT/study.db")
    p.add_argument("--study", help="the study's name (default: the preset's)")
    p.add_argument("--out", help="best_config.json and the report's figures (default: runs/tune-<preset>)")
    p.add_argument("--model", help="train this model in every trial (a registered name or path/to/file.py:NAME)")
    p.add_argument("--train-args", default="", help="fixed flags for every trial, e.g. \"--epochs 10\"")
    p.add_argument("--report", action="store_true", help="print the study: trials, best, importances; "
                   "write history.png and importance.png")
    p.set_defaults(func=cmd_tune, upper_limits={"trials": 100_000, "parallel": 64, "seeds": 100,
                                                "val_images": 59_999})


def cmd_tune(args) -> int:
    try:
        import optuna  # noqa: F401  (the optional extra)
    except ImportError:
        raise CLIError("tune needs the 'tune' extra (optuna is missing): pip install 'tinymnist[tune]'") from None
    from ..bench import tune
    out = Path(args.out) if args.out else RUNS_ROOT / f"tune-{args.preset}"
    storage = args.storage or f"sqlite:///{out / 'study.db'}"
    study = args.study or args.preset
    if args.report:
        report = tune.study_report(storage, study)
        report.update(tune.report_figures(storage, study, out))
    else:
        if not args.space:
            raise CLIError("--space is required to run trials (or pass --report)")
        tune.check_counts(args.trials, args.parallel, args.seeds, args.val_images)
        fixed = fixed_settings(args)
        params = tune.load_space(args.space)
        tune.check_space(args.preset, params, fixed)
        out.mkdir(parents=True, exist_ok=True)
        search = tune.Search(args.preset, params, fixed, args.seeds, storage, study, args.val_images, args.device,
                             args.data_dir)
        report = tune.run_tune(search, args.trials, args.parallel, out)
    if args.json:
        emit_json(report)
    else:
        print_report(report)
    return 0


def fixed_settings(args) -> dict:
    """--model and --train-args, read as `train` reads them; flags the search sets itself are refused."""
    fixed, given = read_train_args(args.preset, shlex.split(args.train_args), OWNED)
    if given:
        raise CLIError(f"--train-args must not set {', '.join(given)}: the search sets it for every trial")
    if args.model:
        fixed["model"] = args.model
    return fixed


def print_report(report: dict) -> None:
    print(f"study {report['study']} ({report['storage']}): {report['complete']} complete, {report['pruned']} "
          f"pruned, {report['failed']} failed" + (f", {report['running']} running" if report["running"] else ""))
    print(f"{'trial':>5} {'state':<9} {'val acc':>8}  params")
    for t in report["trials"]:
        value = f"{t['value']:.2f}" if t["value"] is not None else "-"
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())
        print(f"{t['number']:>5} {t['state']:<9} {value:>8}  {params}" + (f"  ({t['error']})" if t["error"] else ""))
    best = report["best"]
    if best:
        print(f"best: trial {best['number']}, validation {best['value']:.2f}%: {best['params']}")
    if report.get("best_config"):
        print(f"wrote {report['best_config']} (train it: tinymnist train --config {report['best_config']})")
    if report.get("importances"):
        print("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in report["importances"].items()))
    for path in report.get("files", {}).values():
        print(f"wrote {path}")
