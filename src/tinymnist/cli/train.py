"""`tinymnist train`: a preset, a saved config or a stopped run, with any setting overridden."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import TrainConfig, config_fields, preset_config
from ..training import train
from ..training.rundir import default_run_dir
from .common import EXIT_MISSED_TARGET, CLIError, Parser, emit_json, parents


DESCRIPTION = ("Train a preset (optionally overridden) from scratch; writes config, metrics, plots and the model "
               "to --out.")


def register(verbs) -> None:
    p = verbs.add_parser("train", help="train a model", parents=parents("json", "data_dir"), description=DESCRIPTION)
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)


def train_parser() -> Parser:
    """`train`'s flags alone: how `sweep` reads its --train-args, exactly as each run will."""
    p = Parser(prog="tinymnist train", parents=parents("json", "data_dir"), description=DESCRIPTION)
    add_train_arguments(p)
    return p


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="named recipe (default: default); see `tinymnist presets`")
    p.add_argument("--config", help="a saved config.json to rerun (flags still override it)")
    p.add_argument("--out", help="run directory (default: runs/<preset>-<timestamp>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped or killed run from its resume.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    add_config_arguments(p)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (but preset): --lr, --rotate-deg, --dry-run/--no-dry-run..."""
    group = parser.add_argument_group("run settings (override the preset; see `tinymnist presets`)")
    for f in config_fields():
        if f.name == "preset":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(f.type), str)
            group.add_argument(flag, type=kind, default=None, metavar=f.name.upper(),
                               help=f"default {f.default!r}")


def config_overrides(args) -> dict:
    """The run settings given as flags (those left unset are None and come from the preset)."""
    return {f.name: getattr(args, f.name) for f in config_fields()
            if f.name != "preset" and getattr(args, f.name, None) is not None}


def read_train_args(preset: str, extra: list[str], owned: tuple[str, ...]) -> tuple[dict, list[str]]:
    """Flags for the runs `sweep` and `tune` launch, read as `train` reads them: the settings they
    override, and those flags of ``owned`` (which the caller sets for every run) that they set."""
    run = train_parser().parse_args(["--preset", preset, *extra])
    given = [flag for flag in owned if getattr(run, flag[2:].replace("-", "_"), None) not in (None, preset)]
    return config_overrides(run), given


def config_from_args(args) -> TrainConfig:
    """The preset, or the saved config (of --config or of the run --resume continues), with the flags on top."""
    overrides = config_overrides(args)
    if args.resume:
        if overrides or args.preset or args.config or args.out:
            raise CLIError("--resume continues the saved run as it was; it takes no preset, config, --out "
                           "or settings flags")
        args.out, args.config = args.resume, str(Path(args.resume) / "config.json")
    if not args.config:
        return preset_config(args.preset or "default", **overrides)
    try:
        saved = json.loads(Path(args.config).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CLIError(f"cannot read config {args.config}: {exc}") from None
    if not isinstance(saved, dict):
        raise CLIError(f"{args.config} is not a JSON object of run settings")
    if args.preset:
        saved["preset"] = args.preset
    return TrainConfig.from_dict({**saved, **overrides})


def cmd_train(args) -> int:
    config = config_from_args(args)
    out = Path(args.out) if args.out else default_run_dir(config.preset)
    result = train(config, data_dir=args.data_dir, out_dir=out, progress=not args.quiet, resume=bool(args.resume))
    # under torchrun the other ranks stay silent: rank 0 reports for all
    return report_train(result, config, args.json) if result.rank == 0 else 0


def report_train(result, config: TrainConfig, as_json: bool) -> int:
    if as_json:
        summary = {k: v for k, v in result.to_dict().items() if k not in ("history", "evaluation")}
        summary["per_class_acc"] = result.evaluation["per_class_acc"]
        emit_json(summary)
    else:
        verdict = "meets" if result.passed else ("dry run, not checked against" if config.dry_run else "MISSES")
        print(f"final test accuracy {result.test_acc:.2f}% (last epoch, all 10,000 test images), "
              f"{verdict} the {config.target_acc:.2f}% target")
        print(f"{result.model}: {result.params:,} parameters, {result.epochs:g} epochs, seed {result.seed}, "
              f"{result.train_seconds:.1f} s of training on {result.device} "
              f"({result.images_per_second:,.0f} images/s)")
        if result.val_acc is not None:
            print(f"validation accuracy {result.val_acc:.2f}% on the {config.val_images:,} held-out training images")
        print(f"saved {result.checkpoint}")
    return 0 if result.passed or config.dry_run else EXIT_MISSED_TARGET
