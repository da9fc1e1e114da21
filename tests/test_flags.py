"""Every flag tried with bad values: one line and exit 2 (or a clean run), never a traceback,
never a run directory that blocks the corrected command."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinymnist.cli import main
from tinymnist.config import config_fields

# --compile is left out: a valid value compiles the model (a minute on a CPU) and says nothing
# about input handling; every other field is drawn
FIELDS = [f for f in config_fields() if f.name not in ("preset", "compile")]
EDGES = {
    "int": ["0", "-1", "2147483648", str(2**63), str(10**20), "-" + str(10**20), "1.5", "nan", "x"],
    "float": ["0", "-1", "nan", "inf", "-inf", "1e308", "-1e308", "1e-308", "0.5", "x", ""],
    "str": ["", " ", "x" * 2000, "é", "-", "cpu:99", "auto"],
}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@st.composite
def train_flags(draw) -> list[str]:
    args: list[str] = []
    for f in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique_by=lambda f: f.name)):
        if str(f.type) == "bool":
            args.append(draw(st.sampled_from([flag(f.name), "--no-" + flag(f.name)[2:]])))
        else:
            args.append(f"{flag(f.name)}={draw(st.sampled_from(EDGES[str(f.type)]))}")
    return args


def run(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def assert_clean(code: int, err: str) -> None:
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err, err
    if code:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("tinymnist: error:"), err


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=train_flags())
def test_any_training_flags_give_a_clean_answer_and_a_reusable_out(capsys, mnist_dir, args):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        code, err = run(capsys, "train", "--dry-run", "--device", "cpu", "--quiet", "--data-dir", str(mnist_dir),
                        "--out", str(out), *args)
        assert_clean(code, err)
        if code:  # the corrected command, into the same --out
            code, err = run(capsys, "train", "--preset", "quick", "--dry-run", "--device", "cpu", "--quiet",
                            "--data-dir", str(mnist_dir), "--out", str(out))
            assert code == 0, err


@pytest.mark.parametrize("args, fragment", [
    (["--batch-size", "100000"], "batch_size must be > 0 and <= 60000"),
    (["--batch-size", "256", "--val-images", "59900"], "leaves fewer training images than one batch"),
    (["--seed", "99999999999999999999"], "seed must be >= 0 and <= 4294967295"),
    (["--translate", "5"], "translate must be >= 0 and <= 0.5"),
    (["--rotate-deg", "1e308"], "rotate_deg must be >= 0 and <= 180"),
    (["--lr", "nan"], "lr must be > 0 and <= 10 (--lr), got nan"),
    (["--epochs", "inf"], "epochs must be > 0 and <= 1000"),
    (["--model", ""], "model must be a non-empty text"),
])
def test_the_reported_cases_are_one_line_and_leave_no_trace(capsys, tmp_path, mnist_dir, args, fragment):
    out = tmp_path / "run"
    code, err = run(capsys, "train", "--dry-run", "--device", "cpu", "--out", str(out), *args)
    assert_clean(code, err)
    assert code == 2 and fragment in err and not out.exists()
    code, err = run(capsys, "train", "--dry-run", "--device", "cpu", "--quiet", "--data-dir", str(mnist_dir),
                    "--out", str(out))
    assert code == 0, err


def test_a_run_that_dies_in_its_first_epoch_leaves_its_out_reusable(small_mnist, tmp_path, monkeypatch):
    import tinymnist.training.step as step
    from tinymnist.config import preset_config
    from tinymnist.training import TrainingError, train

    real = step.F.cross_entropy
    monkeypatch.setattr(step.F, "cross_entropy", lambda *a, **k: real(*a, **k) * math.nan)
    config = preset_config("default", device="cpu", batch_size=64, epochs=1, target_acc=0)
    with pytest.raises(TrainingError, match="loss became nan"):
        train(config, data=small_mnist, out_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # nothing resumable was saved: nothing is left
    monkeypatch.setattr(step.F, "cross_entropy", real)
    assert train(config, data=small_mnist, out_dir=tmp_path / "run", progress=False).checkpoint


OTHER_VERBS = [
    (["bench", "speed", "--seeds"], ["0", "-1", str(10**20)]),
    (["bench", "accuracy", "--model", "cnn2k", "--seeds"], ["0", "-1", str(10**20)]),
    (["bench", "infer", "--batch-size"], ["0", "-1", str(10**20)]),
    (["bench", "load", "--clients"], ["0", "-1", str(10**20)]),
    (["bench", "load", "--requests"], ["0", "-1", str(10**20)]),
    (["bench", "load", "--workers"], ["0", "-1", str(10**20)]),
    (["bench", "load", "--max-seconds"], ["0", "-1", "nan", "inf", "1e308"]),
    (["sweep", "--seeds"], ["0", "-1", str(10**20)]),
    (["sweep", "--parallel"], ["0", "-1", str(10**20)]),
    (["sweep", "--max-params"], ["-1", str(10**20)]),
    (["serve", "--port"], ["-1", "65536", str(10**20)]),
    (["serve", "--workers"], ["0", "-1", str(10**20)]),
    (["data", "fetch", "--timeout"], ["0", "-1", "nan", "inf"]),
    (["summary", "cnn2k", "--max-params"], ["0", "-1", str(10**20)]),
    (["tune", "--space", "nope.json", "--trials"], ["0", "-1", str(10**20)]),
    (["tune", "--space", "nope.json", "--parallel"], ["0", "-1", str(10**20)]),
    (["tune", "--space", "nope.json", "--seeds"], ["0", "-1", str(10**20)]),
    (["tune", "--space", "nope.json", "--val-images"], ["0", "-1", str(10**20)]),
]


@pytest.mark.parametrize("command, values", OTHER_VERBS, ids=lambda v: " ".join(v) if isinstance(v[0], str) else "")
def test_numeric_flags_of_the_other_verbs_refuse_edges_in_one_line(capsys, tmp_path, monkeypatch, command, values):
    monkeypatch.chdir(tmp_path)  # no runs/ here: nothing to serve or load by default
    for value in values:
        code, err = run(capsys, *command, value)
        assert_clean(code, err)
        assert code == 2, (command, value, err)
        assert "nope.json" not in err, err  # the flag was refused, not the space file after it
