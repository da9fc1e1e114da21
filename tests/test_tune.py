"""`tinymnist tune`: Optuna search on validation accuracy, parallel and resumable, never on the test set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_cli import run_cli
from tinymnist.cli import main

optuna = pytest.importorskip("optuna")

from tinymnist.bench import tune  # noqa: E402

SPACE = {"lr": {"low": 0.01, "high": 0.05, "log": True}, "label_smoothing": {"low": 0.0, "high": 0.1}}
QUICK = "--epochs 0.05"  # a dozen steps on 50,000 images per trial


def tune_cli(out: Path, space: Path, trials: int, mnist_dir, *extra: str):
    return run_cli("tune", "--preset", "speedrun", "--space", str(space), "--trials", str(trials), "--out", str(out),
                   "--json", "--data-dir", str(mnist_dir), "--device", "cpu", "--train-args", QUICK, *extra)


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory, mnist_dir):
    """4 trials with --parallel 2 into the default SQLite storage, then 2 more in a second call."""
    out = tmp_path_factory.mktemp("tune")
    space = out / "space.json"
    space.write_text(json.dumps(SPACE))
    first = tune_cli(out, space, 4, mnist_dir, "--parallel", "2")
    assert first.returncode == 0, first.stderr
    second = tune_cli(out, space, 2, mnist_dir)
    assert second.returncode == 0, second.stderr
    return out, json.loads(first.stdout), json.loads(second.stdout)


def test_parallel_trials_share_one_study_and_a_second_call_adds_to_it(study_dir):
    out, first, second = study_dir
    assert (out / "study.db").is_file()
    assert first["complete"] + first["pruned"] == 4 and first["failed"] == 0
    assert second["complete"] + second["pruned"] == 6 and len(second["trials"]) == 6
    assert {t["number"] for t in second["trials"]} == set(range(6))
    best = second["best"]
    assert best["value"] == max(t["value"] for t in second["trials"] if t["value"] is not None)
    assert set(best["params"]) == set(SPACE) and best["config"]["lr"] == best["params"]["lr"]


def test_best_config_trains_as_is(study_dir, mnist_dir, tmp_path):
    out, _, second = study_dir
    config = json.loads((out / "best_config.json").read_text())
    assert config == second["best"]["config"] and config["preset"] == "speedrun"
    assert config["val_images"] == 0 and config["epochs"] == 0.05  # the preset's own split; the fixed flags kept
    proc = run_cli("train", "--config", str(out / "best_config.json"), "--dry-run", "--out", str(tmp_path / "run"),
                   "--data-dir", str(mnist_dir), "--quiet")
    assert proc.returncode == 0, proc.stderr


def test_the_report_prints_the_study_and_draws_it(study_dir):
    out, _, _ = study_dir
    proc = run_cli("tune", "--report", "--storage", f"sqlite:///{out / 'study.db'}", "--study", "speedrun",
                   "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["study"] == "speedrun" and report["complete"] + report["pruned"] == 6
    assert Path(report["files"]["history"]).stat().st_size > 0
    text = run_cli("tune", "--report", "--storage", f"sqlite:///{out / 'study.db'}", "--study", "speedrun",
                   "--out", str(out))
    assert text.returncode == 0 and "best: trial" in text.stdout


# ---------------------------------------------------------------- in-process, on 2,048 images

def small_search(tmp_path, params, **fixed) -> tune.Search:
    return tune.Search("speedrun", params, {"epochs": 3, "batch_size": 128, **fixed}, 1,
                       f"sqlite:///{tmp_path / 'study.db'}", "small", val_images=512, device="cpu")


def run_trials(search, data, enqueued: list[dict]) -> list:
    study = tune.study_for(search.storage, search.study, warmup=tune.warmup_epochs(search.config({}, 0).epochs))
    for values in enqueued:
        study.enqueue_trial(values)
    from tinymnist.config import ConfigError
    from tinymnist.training import TrainingError

    study.optimize(tune.objective(search, data), n_trials=len(enqueued), catch=(TrainingError, ConfigError))
    return study.get_trials()


def test_a_poor_trial_is_pruned(small_mnist, tmp_path):
    params = tune.parse_space({"lr": {"low": 1e-7, "high": 0.1, "log": True},
                               "muon_lr": {"low": 1e-7, "high": 0.5, "log": True}})
    good, poor = {"lr": 0.03, "muon_lr": 0.18}, {"lr": 1e-7, "muon_lr": 1e-7}
    trials = run_trials(small_search(tmp_path, params), small_mnist, [good] * tune.STARTUP_TRIALS + [poor])
    states = [t.state for t in trials]
    assert states[:-1] == [optuna.trial.TrialState.COMPLETE] * tune.STARTUP_TRIALS
    assert states[-1] == optuna.trial.TrialState.PRUNED and len(trials[-1].intermediate_values) == tune.WARMUP_EPOCHS
    assert tune.warmup_epochs(3) == 2 and tune.warmup_epochs(15) == 5  # a third of a long schedule


def test_a_trial_is_never_pruned_at_its_last_epoch(small_mnist, tmp_path):
    # in 2 epochs the pruner's first judgement would fall on the last one: the poor trial
    # that is pruned above must finish here, with its final figure
    params = tune.parse_space({"lr": {"low": 1e-7, "high": 0.1, "log": True},
                               "muon_lr": {"low": 1e-7, "high": 0.5, "log": True}})
    good, poor = {"lr": 0.03, "muon_lr": 0.18}, {"lr": 1e-7, "muon_lr": 1e-7}
    trials = run_trials(small_search(tmp_path, params, epochs=2), small_mnist, [good] * tune.STARTUP_TRIALS + [poor])
    assert tune.warmup_epochs(2) == 2
    assert trials[-1].state == optuna.trial.TrialState.COMPLETE and len(trials[-1].intermediate_values) == 2
    assert trials[-1].value < min(t.value for t in trials[:-1])


def test_a_failing_trial_is_recorded_and_the_study_goes_on(small_mnist, tmp_path):
    params = tune.parse_space({"clean_epochs": {"low": 0, "high": 5, "step": 1}})
    trials = run_trials(small_search(tmp_path, params), small_mnist, [{"clean_epochs": 5}, {"clean_epochs": 1}])
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert "clean_epochs" in trials[0].user_attrs["error"]


def test_a_search_never_reads_the_test_set(small_mnist, tmp_path, monkeypatch):
    import tinymnist.training.loop as loop

    real, seen = loop.evaluate, []

    def spy(model, images, *args, **kwargs):
        seen.append(images.data_ptr())
        return real(model, images, *args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", spy)
    params = tune.parse_space({"lr": {"low": 0.01, "high": 0.05}})
    run_trials(small_search(tmp_path, params, epochs=1), small_mnist, [{"lr": 0.02}, {"lr": 0.04}])
    assert seen, "the spy saw no evaluation at all"
    assert small_mnist.test_images.data_ptr() not in seen


# ---------------------------------------------------------------- bad spaces: one line, exit 2

@pytest.mark.parametrize("space, fragment", [
    ({"nope": {"low": 0, "high": 1}}, "unknown field 'nope'"),
    ({"lr": {"low": 0.1, "high": 0.01}}, "low 0.1 > high 0.01"),
    ({"rotate_deg": {"choices": []}}, "empty choice list"),
    ({"seed": {"low": 0, "high": 9}}, "'seed' is not searched"),
    ({"device": {"choices": ["cpu"]}}, "'device' is not searched"),
    ({"lr": {"low": 0, "high": 0.1, "log": True}}, "log scale needs low > 0"),
    ({"lr": {"low": -1, "high": 0.1}}, "lr = -1.0 is not a valid setting"),
    ([1, 2], "must be a JSON object"),
])
def test_a_bad_space_is_one_line_before_any_trial(capsys, tmp_path, space, fragment):
    path = tmp_path / "space.json"
    path.write_text(json.dumps(space))
    code = main(["tune", "--space", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("tinymnist: error:") and fragment in err[0], err
    assert not (tmp_path / "out" / "study.db").exists()
