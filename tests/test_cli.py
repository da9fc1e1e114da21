"""The command line: help for every verb, one-line errors with exit code 2, JSON output."""

import json
import subprocess
import sys

import pytest

from tinymnist.cli import build_parser, main

VERBS = [["train"], ["eval"], ["data"], ["data", "fetch"], ["data", "info"], ["models"], ["presets"],
         ["bench"], ["bench", "speed"], ["bench", "accuracy"], ["bench", "infer"], ["bench", "load"], ["predict"],
         ["export"], ["serve"], ["report"], ["sweep"], ["summary"], ["tune"]]


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*verb, "--help"])
    assert exit_.value.code == 0
    assert "usage: tinymnist" in capsys.readouterr().out


def test_every_verb_is_covered_by_the_help_test():
    parser = build_parser()
    verbs = next(a for a in parser._actions if a.dest == "command").choices
    assert set(verbs) == {v[0] for v in VERBS}


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tinymnist", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinymnist: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("args,fragment", [
    (["train", "--model", "nope", "--dry-run"], "unknown model 'nope'"),
    (["train", "--preset", "nope"], "unknown preset 'nope'"),
    (["train", "--epochs", "abc"], "invalid float value"),
    (["train", "--lr", "-1"], "lr must be > 0"),
    (["train", "--batch-size", "0"], "batch_size must be > 0"),
    (["train", "--device", "tpu"], "unknown device"),
    (["train", "--no-such-flag"], "unrecognized arguments"),
    (["train", "--config", "/nonexistent/config.json"], "cannot read config"),
    (["eval", "/nonexistent/model.safetensors"], "no checkpoint"),
    (["frobnicate"], "invalid choice"),
    (["bench", "accuracy", "--model", "nope"], "unknown preset 'nope'"),
    (["bench", "speed", "--presets", "nope"], "unknown preset 'nope'"),
    (["bench", "speed", "--amp", "fp16"], "invalid choice: 'fp16'"),
    (["bench", "infer", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["bench", "load", "--max-seconds", "-5"], "--max-seconds must be > 0"),
    (["data", "fetch", "--timeout", "0"], "--timeout must be > 0 seconds"),
])
def test_bad_input_is_one_line_and_exit_2(args, fragment, tmp_path):
    assert_one_line_error(run_cli(*args, cwd=tmp_path), fragment)


def test_a_run_directory_that_holds_a_run_is_refused_and_left_as_it_was(tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", "--preset", "quick", "--dry-run", "--device", "cpu", "--out", str(run),
                   "--quiet").returncode == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert "config.json" in before and any(n.startswith("mnist_model_") for n in before)
    assert_one_line_error(run_cli("train", "--preset", "default", "--dry-run", "--device", "cpu", "--seed", "3",
                                  "--out", str(run)), "already holds a run", "nothing was written")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_default_run_directories_never_collide(tmp_path):
    from tinymnist.training.rundir import fresh_run_dir

    base = tmp_path / "quick-20261130-120000"
    assert fresh_run_dir(base) == base
    base.mkdir()
    assert fresh_run_dir(base) == tmp_path / "quick-20261130-120000-2"
    (tmp_path / "quick-20261130-120000-2").mkdir()
    assert fresh_run_dir(base) == tmp_path / "quick-20261130-120000-3"


def test_models_and_presets_json(capsys):
    assert main(["models", "--json"]) == 0
    models = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert models["seednet"]["params"] == 11_058 and models["cnn20k"]["params"] < 20_000
    assert main(["presets", "--json"]) == 0
    presets = json.loads(capsys.readouterr().out)["presets"]
    assert presets["quick"]["preset"] == "quick"
    assert main(["presets"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    for name, cfg in presets.items():  # the text table says which presets train with Muon
        assert ("(Muon " in lines[name]) == (cfg["muon_lr"] > 0), lines[name]
        # and which end with epochs without augmentation
        assert (f"(last {cfg['clean_epochs']:g} clean)" in lines[name]) == (cfg["clean_epochs"] > 0), lines[name]
    assert any(cfg["muon_lr"] > 0 for cfg in presets.values())
    assert any(cfg["clean_epochs"] > 0 for cfg in presets.values())


def test_data_info_json(mnist_dir, capsys):
    assert main(["data", "info", "--data-dir", str(mnist_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["verified"] is True and info["bytes"] > 50e6


def test_dry_run_train_then_eval_and_rerun_config(tmp_path, mnist_dir):
    out = tmp_path / "run"
    proc = run_cli("train", "--dry-run", "--device", "cpu", "--out", str(out), "--data-dir", str(mnist_dir),
                   "--json", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # one JSON object, nothing else on stdout
    for key in ("test_acc", "params", "model", "preset", "epochs", "seed", "train_seconds", "checkpoint"):
        assert key in result
    assert result["seed"] == 3 and (out / "config.json").is_file()
    proc = run_cli("eval", result["checkpoint"], "--data-dir", str(mnist_dir), "--json", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["test_acc"] == pytest.approx(result["test_acc"])
    proc = run_cli("train", "--config", str(out / "config.json"), "--out", str(tmp_path / "again"),
                   "--data-dir", str(mnist_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout)
    assert again["test_acc"] == result["test_acc"] and again["seed"] == 3  # same config, same result on CPU


def test_console_script_and_module_entry_points():
    from pathlib import Path

    script = Path(sys.executable).parent / "tinymnist"
    assert script.exists(), "the `tinymnist` console script is installed beside the interpreter"
    for cmd in ([str(script), "--version"], [sys.executable, "-m", "tinymnist", "--version"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout.startswith("tinymnist ")


def test_bench_accuracy_reports_every_seed(mnist_dir):
    proc = run_cli("bench", "accuracy", "--model", "cnn8k", "--seeds", "2", "--dry-run", "--device", "cpu",
                   "--data-dir", str(mnist_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)["results"][0]
    assert result["model"] == "cnn8k" and result["seeds"] == [0, 1] and len(result["test_acc"]) == 2
    assert result["params"] < 8_000
    assert "test_acc_tta" not in result


def test_bench_accuracy_tta_adds_a_column_beside_the_plain_one(mnist_dir):
    proc = run_cli("bench", "accuracy", "--model", "cnn8k", "--seeds", "2", "--dry-run", "--device", "cpu",
                   "--data-dir", str(mnist_dir), "--tta")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()  # the log lines, then the table
    assert any(line.startswith("seed") and line.endswith("with TTA") for line in lines)
    assert lines[-1].startswith("with test-time augmentation")
    assert "test-time" not in lines[-2]  # the plain mean ± std line stays, and stays first


@pytest.mark.parametrize("flags,overrides", [([], {"dry_run": True}),
                                             (["--amp", "off"], {"dry_run": True, "amp": "off"})])
def test_bench_speed_passes_amp_to_every_run_only_when_asked(mnist_dir, flags, overrides):
    proc = run_cli("bench", "speed", "--presets", "quick", "--seeds", "1", "--dry-run", "--device", "cpu",
                   "--data-dir", str(mnist_dir), "--json", *flags)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"][0]["overrides"] == overrides
