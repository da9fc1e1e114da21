"""Bring your own model: a user's `file.py:NAME` trained, summarized, checked and used like a
registered model; every bad input one line and exit 2, pointing at the user's own file and line."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_cli import assert_one_line_error, run_cli
from test_distributed import torchrun_train
from tinymnist.cli import main

GOOD = """
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(4))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 7 * 7, 10))

    def forward(self, x):
        return self.head(self.body(x))


def factory(width=8):
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))
"""


def write(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(source))
    return path


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_bad_input(code: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("tinymnist: error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# ---------------------------------------------------------------- bad input

def test_a_missing_file(capsys, tmp_path):
    assert_bad_input(*cli(capsys, "summary", f"{tmp_path}/nope.py:Net")[::2], "no model file", "nope.py")


def test_a_syntax_error_names_the_file_and_line(capsys, tmp_path):
    path = write(tmp_path, "broken.py", "from torch import nn\n\nclass Net(nn.Module)\n    pass\n")
    assert_bad_input(*cli(capsys, "summary", f"{path}:Net")[::2], f"{path}:3", "syntax error")


def test_a_name_that_is_not_there(capsys, tmp_path):
    path = write(tmp_path, "net.py", GOOD)
    assert_bad_input(*cli(capsys, "summary", f"{path}:Nett")[::2], "no 'Nett'", "Net")


def test_a_name_that_is_no_model(capsys, tmp_path):
    path = write(tmp_path, "net.py", GOOD + "\nWIDTH = 5\n")
    assert_bad_input(*cli(capsys, "summary", f"{path}:WIDTH")[::2], "not an nn.Module subclass")


def test_a_constructor_that_raises_names_the_users_line(capsys, tmp_path):
    path = write(tmp_path, "net.py", GOOD + "\n\nclass Bad(Net):\n    def __init__(self):\n"
                 "        super().__init__()\n        raise ValueError('channels must be even')\n")
    code, _, err = cli(capsys, "train", "--model", f"{path}:Bad", "--dry-run", "--out", str(tmp_path / "run"))
    assert_bad_input(code, err, f"{path}:{line_of(path, 'channels must be even')}", "ValueError")
    assert not (tmp_path / "run").exists()  # refused before the run directory was made


def test_a_forward_pass_that_raises_names_the_users_line(capsys, tmp_path):
    path = write(tmp_path, "net.py", GOOD + "\n\nclass Bad(Net):\n    def forward(self, x):\n"
                 "        return self.head(x)  # forgot the body\n")
    assert_bad_input(*cli(capsys, "summary", f"{path}:Bad")[::2], f"{path}:{line_of(path, 'forgot the body')}")


def test_a_wrong_output_shape(capsys, tmp_path):
    path = write(tmp_path, "net.py", "from torch import nn\n\ndef seven():\n"
                 "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 7))\n")
    assert_bad_input(*cli(capsys, "summary", f"{path}:seven")[::2], "(2, 7)", "(2, 10) logits")


def test_required_arguments_are_refused(capsys, tmp_path):
    path = write(tmp_path, "net.py", "from torch import nn\n\ndef wide(width):\n    return nn.Linear(width, 10)\n")
    assert_bad_input(*cli(capsys, "summary", f"{path}:wide")[::2], "needs arguments (width)")


def test_a_model_over_its_budget_is_refused_before_the_first_step(capsys, tmp_path):
    path = write(tmp_path, "net.py", GOOD)
    code, _, err = cli(capsys, "train", "--model", f"{path}:Net", "--max-params", "1000", "--dry-run",
                       "--out", str(tmp_path / "run"))
    assert_bad_input(code, err, "4,026 parameters", "--max-params 1,000")  # conv 80 + BN 16 + linear 3,930
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- summary

SMALL = """
from torch import nn


def small():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 8, 3, dilation=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
"""


def test_summary_matches_a_hand_count(capsys, tmp_path):
    path = write(tmp_path, "small.py", SMALL)
    code, out, _ = cli(capsys, "summary", f"{path}:small", "--json", "--max-params", "400")
    report = json.loads(out)
    # by hand: conv 1->4 3x3 (pad 1) at 28x28: 36 weights + 4 biases, 4*28*28*9 = 28,224 MACs, rf 3;
    # BN 8; max-pool 2: rf 3 + 1*1 = 4, jump 2; conv 4->8 3x3 dilation 2 (unpadded): 14 -> 10,
    # 288 + 8 parameters, 8*10*10*4*9 = 28,800 MACs, rf 4 + 2*2*2 = 12; linear 8->10: 90, 80 MACs
    assert code == 1 and report["within_budget"] is False  # 434 > 400: the verdict sets the exit code
    assert report["params"] == 40 + 8 + 296 + 90 == 434
    assert report["macs"] == 28_224 + 28_800 + 80
    assert report["receptive_field"] == 12
    rows = {r["name"]: r for r in report["layers"]}
    assert rows["0"]["output"] == [4, 28, 28] and rows["0"]["receptive_field"] == 3 and rows["0"]["jump"] == 1
    assert rows["3"]["receptive_field"] == 4 and rows["3"]["jump"] == 2
    assert rows["4"]["output"] == [8, 10, 10] and rows["4"]["params"] == 296 and rows["4"]["macs"] == 28_800
    assert rows["7"]["params"] == 90 and rows["7"]["macs"] == 80
    code, out, _ = cli(capsys, "summary", f"{path}:small", "--max-params", "500")
    assert code == 0 and "434" in out and "within" in out


def test_summary_of_a_registered_model(capsys):
    from tinymnist.models import count_parameters, create_model

    code, out, _ = cli(capsys, "summary", "cnn8k", "--json")
    report = json.loads(out)
    assert code == 0 and report["params"] == count_parameters(create_model("cnn8k"))
    assert report["receptive_field"] > 28  # the last conv sees the whole digit


# ---------------------------------------------------------------- train, save, reload, export

@pytest.fixture(scope="module")
def user_run(tmp_path_factory, mnist_dir):
    """A user file trained for a few steps through the CLI, and the digit it is asked about."""
    root = tmp_path_factory.mktemp("user")
    path = write(root, "net.py", GOOD)
    out = root / "run"
    proc = run_cli("train", "--model", f"{path}:Net", "--preset", "speedrun", "--epochs", "0.2", "--device", "cpu",
                   "--out", str(out), "--json", "--quiet", "--target-acc", "0", "--data-dir", str(mnist_dir))
    assert proc.returncode == 0, proc.stderr
    return path, json.loads(proc.stdout), root


def test_the_sidecar_records_where_the_model_came_from(user_run):
    path, result, _ = user_run
    sidecar = json.loads(Path(result["checkpoint"]).with_suffix(".json").read_text())
    assert sidecar["model"] == sidecar["source"] == f"{path}:Net"
    assert sidecar["class_name"] == "Net" and len(sidecar["source_sha256"]) == 64 and sidecar["layers"]


def test_reloaded_with_model_it_scores_what_it_scored(user_run, mnist_dir):
    path, result, _ = user_run
    proc = run_cli("eval", result["checkpoint"], "--model", f"{path}:Net", "--json", "--device", "cpu",
                   "--data-dir", str(mnist_dir))
    assert proc.returncode == 0, proc.stderr
    reloaded = json.loads(proc.stdout)  # the same predictions: the same accuracy on each of the ten digits
    assert reloaded["test_acc"] == result["test_acc"] and reloaded["per_class_acc"] == result["per_class_acc"]


def test_without_model_the_checkpoint_is_refused_and_names_the_flag(user_run):
    path, result, _ = user_run
    for verb in (["eval", result["checkpoint"]], ["predict", "x.png", "--checkpoint", result["checkpoint"]],
                 ["export", result["checkpoint"]], ["report", result["checkpoint"]]):
        assert_one_line_error(run_cli(*verb), f"--model {path}:Net")


def test_predict_and_export_a_user_model(user_run, mnist, mnist_dir):
    path, result, root = user_run
    digit = root / "digit.png"
    Image.fromarray(mnist.test_images[0].cpu().numpy().astype(np.uint8)).resize((112, 112)).save(digit)
    proc = run_cli("predict", str(digit), "--checkpoint", result["checkpoint"], "--model", f"{path}:Net", "--json")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["predictions"][0]["probabilities"]) == 10
    proc = run_cli("export", result["checkpoint"], "--model", f"{path}:Net", "-o", str(root / "net.onnx"),
                   "--json", "--data-dir", str(mnist_dir))
    assert proc.returncode == 0, proc.stderr
    check = json.loads(proc.stdout)["verification"]
    assert check["ok"] and check["max_abs_logit_diff"] <= 1e-4  # the same logits on all 10,000 test images


def test_an_edited_model_file_loads_with_one_warning(user_run, mnist_dir, tmp_path):
    path, result, _ = user_run
    edited = tmp_path / "net.py"
    shutil.copy(path, edited)
    edited.write_text(edited.read_text() + "\n# a comment added after training\n")
    proc = run_cli("eval", result["checkpoint"], "--model", f"{edited}:Net", "--json", "--device", "cpu",
                   "--data-dir", str(mnist_dir))
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and "warning" in warnings[0] and "changed" in warnings[0], proc.stderr


def test_a_different_model_is_refused_with_the_tensor(user_run, tmp_path):
    path, result, _ = user_run
    other = write(tmp_path, "other.py", GOOD.replace("nn.Conv2d(1, 8, 3", "nn.Conv2d(1, 8, 5"))
    proc = run_cli("eval", result["checkpoint"], "--model", f"{other}:Net")
    assert_one_line_error(proc)
    assert "layout" in proc.stderr or "shape" in proc.stderr


def test_resume_and_sweep_take_the_user_model(user_run, mnist_dir, tmp_path):
    path, _, _ = user_run
    out = tmp_path / "run"
    proc = run_cli("train", "--model", f"{path}:factory", "--dry-run", "--device", "cpu", "--out", str(out),
                   "--data-dir", str(mnist_dir), "--quiet")
    assert proc.returncode == 0, proc.stderr
    for saved in out.glob("mnist_model_*"):  # as if killed after its last epoch, before the model was saved
        saved.unlink()
    proc = run_cli("train", "--resume", str(out), "--data-dir", str(mnist_dir), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "mnist_model_final.json").read_text())["source"] == f"{path}:factory"
    proc = run_cli("sweep", "--presets", "quick", "--seeds", "1", "--out", str(tmp_path / "sweep"), "--json",
                   "--data-dir", str(mnist_dir), "--train-args", f"--model {path}:factory --dry-run --device cpu")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["summary"][0]["runs"] == 1


def test_bench_accuracy_takes_a_user_model_with_a_preset(user_run, mnist_dir):
    path, _, _ = user_run
    proc = run_cli("bench", "accuracy", "--model", f"{path}:Net", "--preset", "speedrun", "--seeds", "1",
                   "--dry-run", "--device", "cpu", "--json", "--data-dir", str(mnist_dir), "--max-params", "5000")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"][0]["model"] == f"{path}:Net"
    assert_one_line_error(run_cli("bench", "accuracy", "--model", f"{path}:Net", "--seeds", "1", "--dry-run"),
                          "--preset")


@pytest.mark.slow
def test_torchrun_trains_a_user_model(user_run, mnist_dir, tmp_path):
    path, _, _ = user_run
    proc = torchrun_train("--model", f"{path}:Net", "--epochs", "0.1", "--out", str(tmp_path / "ddp"), "--json",
                          "--quiet", "--target-acc", "0", "--data-dir", str(mnist_dir), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["world_size"] == 2 and result["model"] == f"{path}:Net"


# ---------------------------------------------------------------- the Python API

def test_train_takes_a_module(small_mnist, tmp_path):
    import importlib.util

    from tinymnist.config import preset_config
    from tinymnist.models.checkpoint import load_checkpoint
    from tinymnist.training import train

    spec = importlib.util.spec_from_file_location("user_net_for_api", write(tmp_path, "user_net_for_api.py", GOOD))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = train(preset_config("speedrun", device="cpu", dry_run=True), model=module.Net(), data=small_mnist,
                   out_dir=tmp_path / "run", progress=False)
    assert result.model == "user_net_for_api:Net"
    _, meta = load_checkpoint(result.checkpoint, model=module.Net())  # an object needs no import
    assert meta["class_name"] == "Net"


# ---------------------------------------------------------------- the examples

@pytest.mark.parametrize("spec, params, budget", [("examples/seed_model.py:SeedNet", 11_058, 20_000),
                                                  ("examples/separable_net.py:separable_net", 3_978, 5_000)])
def test_the_examples_build_and_fit_their_budgets(capsys, spec, params, budget):
    root = Path(__file__).resolve().parent.parent
    code, out, _ = cli(capsys, "summary", str(root / spec), "--json", "--max-params", str(budget))
    report = json.loads(out)
    assert code == 0 and report["params"] == params and report["within_budget"]
