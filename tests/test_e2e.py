"""The original job's acceptance test, on real MNIST, through the command line."""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_quick_preset_beats_99_percent_with_under_20k_parameters(tmp_path, mnist_dir):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "tinymnist", "train", "--preset", "quick", "--device", "cpu", "--seed", "0",
         "--out", str(out), "--data-dir", str(mnist_dir), "--json"],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    print(f"quick preset: {result['test_acc']:.2f}% with {result['params']} parameters "
          f"in {result['train_seconds']:.1f} s")
    assert result["params"] < 20_000
    assert result["test_acc"] > 99.0  # final epoch, all 10,000 test images
    # saved automatically, named with its accuracy, and it describes itself
    assert result["checkpoint"].endswith(f"mnist_model_acc{result['test_acc']:.2f}.safetensors")
    sidecar = json.loads((out / f"mnist_model_acc{result['test_acc']:.2f}.json").read_text())
    assert sidecar["test_acc"] == result["test_acc"] and sidecar["params"] == result["params"]
    # and the saved model, loaded from the file alone, scores the same
    proc = subprocess.run([sys.executable, "-m", "tinymnist", "eval", result["checkpoint"], "--json",
                           "--data-dir", str(mnist_dir), "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["test_acc"] == pytest.approx(result["test_acc"])
