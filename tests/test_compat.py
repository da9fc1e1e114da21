"""What earlier versions saved keeps working: a checkpoint and a resumable state written by
tinymnist before the package was split into subpackages (tests/data/pre-refactor, a 3-step
cnn2k run made at commit ccbd10f), read by today's code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from tinymnist.inference.evaluate import predict_logits
from tinymnist.models.checkpoint import load_checkpoint

OLD = Path(__file__).parent / "data" / "pre-refactor"


def test_an_old_checkpoint_loads_and_gives_the_same_logits(mnist):
    model, meta = load_checkpoint(OLD / "mnist_model_final.safetensors")
    expected = torch.tensor(json.loads((OLD / "expected_logits.json").read_text())["logits"])
    assert meta["model"] == "cnn2k"
    assert torch.allclose(predict_logits(model, mnist.test_images[:8]), expected, atol=1e-6)


def test_the_cli_evaluates_an_old_checkpoint(mnist_dir):
    from test_cli import run_cli

    proc = run_cli("eval", str(OLD / "mnist_model_final.safetensors"), "--json", "--device", "cpu",
                   "--data-dir", str(mnist_dir))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"] == "cnn2k"


def test_an_old_resumable_state_finishes_its_run(mnist_dir, tmp_path):
    from test_cli import run_cli

    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "resume.pt"):  # as if killed after its last epoch, before the model was saved
        shutil.copy(OLD / name, run / name)
    proc = run_cli("train", "--resume", str(run), "--data-dir", str(mnist_dir), "--quiet")
    assert proc.returncode == 0, proc.stderr
    old = json.loads((OLD / "mnist_model_final.json").read_text())
    new = json.loads((run / "mnist_model_final.json").read_text())
    assert new["weights_sha256"] == old["weights_sha256"]  # the very weights the old run saved
