"""`tinymnist tune`: hyperparameter search on Optuna, on validation accuracy only.

The space is a JSON file keyed by ``TrainConfig`` fields. Each trial trains the preset with
the values it draws, on the training images less the last ``val_images``, and reports its
validation accuracy every epoch to Optuna, whose percentile pruner stops poor trials early. The
test set is never read (``train(test_set=False)``). Trials live in an Optuna storage (SQLite
by default, any RDB URL, or a journal file on a shared filesystem), so a second call, or the
same command on other machines, continues the same study.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import multiprocessing
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, config_fields, preset_config
from ..fileio import atomic_write

log = logging.getLogger(__name__)
# settings that are no recipe: what a run is (seed, preset), where it runs, how it is judged
NOT_SEARCHABLE = frozenset({"seed", "preset", "device", "val_images", "target_acc", "dry_run", "tta", "amp",
                            "compile", "channels_last", "eval_batch_size", "max_params"})
# The pruner judges no trial before it has reported a third of its epochs (at least 2), nor
# before 8 trials have finished, and stops only a trial below the lower quartile of the finished
# ones at the same epoch. With a one-cycle schedule the early epochs say little of the final
# accuracy, and a median of a few finished trials is a bar that later trials rarely clear
# mid-schedule, while a pruned trial never lowers it: both 30-trial searches of cnn20k (judged
# from epoch 2, then from epoch 5, against the median of 4) finished 4 trials and pruned 26.
WARMUP_EPOCHS = 2
WARMUP_FRACTION = 1 / 3
STARTUP_TRIALS = 8
PRUNE_PERCENTILE = 25.0


class TuneError(ConfigError):
    """A space, storage or request that cannot be searched; one line."""


@dataclass(frozen=True)
class Param:
    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple | None = None
    integer: bool = False  # the field is an int (batch_size): drawn as one

    def suggest(self, trial):
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)

    def ends(self) -> tuple:
        """The values at the edges of what this parameter can draw."""
        if self.choices is not None:
            return self.choices
        return (int(self.low), int(self.high)) if self.integer else (self.low, self.high)


def parse_space(space: dict) -> list[Param]:
    """Validate a search space (field -> {low, high[, log][, step]} or {choices}) before any trial runs."""
    if not isinstance(space, dict) or not space:
        raise TuneError("the space must be a JSON object of TrainConfig fields, e.g. {\"lr\": {\"low\": 0.005, "
                        "\"high\": 0.03, \"log\": true}}")
    known = {f.name for f in config_fields()}
    params = []
    for name, spec in space.items():
        if name not in known:
            raise TuneError(f"space: unknown field {name!r} (see `tinymnist presets --json` for the fields)")
        if name in NOT_SEARCHABLE:
            raise TuneError(f"space: {name!r} is not searched (it says what a run is, where it runs or how it "
                            "is judged, not how it learns)")
        params.append(parse_param(name, spec))
    return params


def parse_param(name: str, spec) -> Param:
    if not isinstance(spec, dict):
        raise TuneError(f"space: {name} must be an object with low and high, or choices")
    unknown = sorted(set(spec) - {"low", "high", "log", "step", "choices"})
    if unknown:
        raise TuneError(f"space: {name} has unknown key(s) {', '.join(unknown)}")
    if "choices" in spec:
        if not isinstance(spec["choices"], list) or not spec["choices"]:
            raise TuneError(f"space: {name} has an empty choice list")
        return Param(name, choices=tuple(spec["choices"]))
    low, high = spec.get("low"), spec.get("high")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high))
    if not numbers:
        raise TuneError(f"space: {name} needs finite numbers low and high")
    if low > high:
        raise TuneError(f"space: {name} has low {low} > high {high}")
    step, use_log = spec.get("step"), bool(spec.get("log", False))
    if step is not None and not (isinstance(step, (int, float)) and step > 0):
        raise TuneError(f"space: {name} step must be > 0")
    if use_log and low <= 0:
        raise TuneError(f"space: {name} on a log scale needs low > 0")
    if use_log and step is not None:
        raise TuneError(f"space: {name} takes log or step, not both")
    integer = config_type(name) is int
    if integer and not (float(low).is_integer() and float(high).is_integer() and float(step or 1).is_integer()):
        raise TuneError(f"space: {name} is a whole number: low, high and step must be too")
    return Param(name, float(low), float(high), use_log, step, integer=integer)


def load_space(path: str | Path) -> list[Param]:
    try:
        space = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TuneError(f"cannot read the space {path}: {exc}") from None
    return parse_space(space)


def check_space(preset: str, params: list[Param], overrides: dict) -> None:
    """Every value a trial can draw must make a valid config: the ends of each range, each choice."""
    for p in params:
        for value in p.ends():
            try:
                preset_config(preset, **{**overrides, p.name: value})
            except (ConfigError, TypeError) as exc:
                raise TuneError(f"space: {p.name} = {value!r} is not a valid setting: {exc}") from None


def config_type(name: str):
    kind = next(f.type for f in config_fields() if f.name == name)
    return {"int": int, "float": float, "str": str, "bool": bool}.get(str(kind), str)


def open_storage(storage: str):
    """An Optuna storage: a database URL (sqlite:///..., postgresql://..., mysql://...), or a journal
    file on a shared filesystem (``journal:PATH`` or a path ending in .log)."""
    import optuna

    if storage.startswith("journal:") or storage.endswith(".log"):
        from optuna.storages.journal import JournalFileBackend

        path = storage.removeprefix("journal:")
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    return storage


def warmup_epochs(epochs: float) -> int:
    return max(WARMUP_EPOCHS, math.ceil(epochs * WARMUP_FRACTION))


def study_for(storage: str, name: str, create: bool = True, warmup: int = WARMUP_EPOCHS):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = optuna.pruners.PercentilePruner(PRUNE_PERCENTILE, n_startup_trials=STARTUP_TRIALS,
                                             n_warmup_steps=warmup - 1)
    try:
        if create:
            return optuna.create_study(study_name=name, storage=open_storage(storage), direction="maximize",
                                       pruner=pruner, load_if_exists=True)
        return optuna.load_study(study_name=name, storage=open_storage(storage), pruner=pruner)
    except KeyError:
        raise TuneError(f"no study {name!r} in {storage}") from None
    except Exception as exc:  # a storage that cannot be opened: one line, whatever the driver raised
        raise TuneError(f"cannot open the storage {storage}: {type(exc).__name__}: {exc}") from None


@dataclass
class Search:
    """What every worker needs to run trials: picklable, so spawned processes get it as is."""

    preset: str
    params: list[Param]
    fixed: dict  # settings every trial shares and best_config.json keeps (--model, --train-args)
    seeds: int
    storage: str
    study: str
    val_images: int = 10_000  # held out of training: what the trials are scored on
    device: str = "auto"
    data_dir: str | None = None

    def config(self, values: dict, seed: int):
        return preset_config(self.preset, **{**self.fixed, **values, "seed": seed, "val_images": self.val_images,
                                             "device": self.device})


def objective(search: Search, data):
    """The function Optuna maximizes: mean final validation accuracy over the trial's seeds."""
    import optuna

    from ..training import TrainingError, train

    def run(trial) -> float:
        values = {p.name: p.suggest(trial) for p in search.params}
        accuracies, reported, epochs = [], [], math.inf
        for seed in range(search.seeds):
            def report(row: dict, seed=seed) -> None:
                if seed == 0:  # the pruner compares trials on their first seed's curve, epoch by epoch
                    trial.report(row["val_acc"], step=len(reported))
                    reported.append(row["val_acc"])
                    # never at the last epoch: the training is done, and a trial pruned there
                    # loses its final figure (one did, at 99.51%, in the third search)
                    if row["epoch"] < epochs and trial.should_prune():
                        raise optuna.TrialPruned()

            try:
                config = search.config(values, seed)
                epochs = config.epochs
                result = train(config, data=data, progress=False, test_set=False, on_epoch=report)
            except (TrainingError, ConfigError) as exc:  # a NaN loss, a setting the preset refuses
                trial.set_user_attr("error", str(exc).splitlines()[0])
                raise
            if result.val_acc is None or not math.isfinite(result.val_acc):
                trial.set_user_attr("error", "no finite validation accuracy")
                raise TrainingError("no finite validation accuracy")
            accuracies.append(result.val_acc)
        return sum(accuracies) / len(accuracies)

    return run


def work(search: Search, trials: int, threads: int | None = None) -> None:
    """Run ``trials`` trials of the study in this process (one of --parallel workers)."""
    import torch

    from ..data import load_mnist
    from ..training import TrainingError

    if threads:
        torch.set_num_threads(threads)
    data = load_mnist(search.data_dir, fetch=False)
    study = study_for(search.storage, search.study, create=False,
                      warmup=warmup_epochs(search.config({}, 0).epochs))
    study.optimize(objective(search, data), n_trials=trials, catch=(TrainingError, ConfigError))


def check_counts(trials: int, parallel: int, seeds: int, val_images: int) -> None:
    if trials < 1 or parallel < 1 or seeds < 1:
        raise TuneError("--trials, --parallel and --seeds must be at least 1")
    if not 0 < val_images < 60_000:
        raise TuneError(f"--val-images must be in 1..59999: trials are scored on them, got {val_images}")


def run_tune(search: Search, trials: int, parallel: int = 1, out: str | Path | None = None) -> dict:
    """``trials`` more trials of the study, ``parallel`` worker processes at a time, the CPU
    threads split between them; then the report, and best_config.json in ``out``."""
    from ..data import load_mnist

    check_counts(trials, parallel, search.seeds, search.val_images)
    load_mnist(search.data_dir, fetch=True)  # once, here: the workers read the cache
    study = study_for(search.storage, search.study)  # create it (or find it) before the workers race to
    study.set_user_attr("preset", search.preset)  # what --report needs to write the best config
    study.set_user_attr("fixed", search.fixed)
    shares = [trials // parallel + (i < trials % parallel) for i in range(parallel)]
    log.info(f"tune: {trials} trial(s) of study {search.study!r} in {search.storage}, {parallel} at a time")
    if parallel == 1:
        work(search, trials)
    else:
        threads = max(1, (os.cpu_count() or 1) // parallel)
        context = multiprocessing.get_context("spawn")  # no fork of a process holding torch's threads
        workers = [context.Process(target=work, args=(search, n, threads), name="tinymnist-tune")
                   for n in shares if n]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    return finish(search, out)


def finish(search: Search, out: str | Path | None) -> dict:
    report = study_report(search.storage, search.study)
    if out is not None and report["best"]:
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write(Path(out) / "best_config.json", json.dumps(report["best"]["config"], indent=2) + "\n")
        report["best_config"] = str(Path(out) / "best_config.json")
    return report


def study_report(storage: str, name: str) -> dict:
    """The study's counts, every trial, and the best trial with the config that reproduces it."""
    import optuna

    study = study_for(storage, name, create=False)
    trials = study.get_trials(deepcopy=False)
    counts = {state: sum(t.state == getattr(optuna.trial.TrialState, state.upper()) for t in trials)
              for state in ("complete", "pruned", "fail", "running")}
    rows = [{"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
             "epochs_reported": len(t.intermediate_values), "error": t.user_attrs.get("error")} for t in trials]
    best = None
    if counts["complete"]:
        trial = study.best_trial
        preset, fixed = study.user_attrs.get("preset", "default"), study.user_attrs.get("fixed", {})
        config = dataclasses.replace(preset_config(preset, **{**fixed, **trial.params}), seed=0)
        best = {"number": trial.number, "value": trial.value, "params": trial.params, "config": config.to_dict()}
    return {"study": name, "storage": storage, "complete": counts["complete"], "pruned": counts["pruned"],
            "failed": counts["fail"], "running": counts["running"], "trials": rows, "best": best}


def report_figures(storage: str, name: str, out: str | Path) -> dict:
    """history.png (Optuna's optimization history) and importance.png (its parameter importances,
    when there are enough finished trials to compute them), in ``out``; the importances too."""
    import matplotlib

    matplotlib.use("Agg")  # Optuna's matplotlib plots draw through pyplot: no display here
    import optuna
    from matplotlib import pyplot

    study = study_for(storage, name, create=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files, importances = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        axes = optuna.visualization.matplotlib.plot_optimization_history(study)
        files["history"] = _save(axes, out / "history.png", pyplot)
        try:
            importances = optuna.importance.get_param_importances(study)
            axes = optuna.visualization.matplotlib.plot_param_importances(study)
            files["importance"] = _save(axes, out / "importance.png", pyplot)
        except (ValueError, RuntimeError) as exc:  # too few finished trials, or parameters that never varied
            log.info(f"no parameter importances: {exc}")
    return {"files": {k: str(v) for k, v in files.items()}, "importances": dict(importances)}


def _save(axes, path: Path, pyplot) -> Path:
    figure = axes.figure
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
    return path
