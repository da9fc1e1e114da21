import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from tinymnist.bench.inference import bench_inference
from tinymnist.bench.training import bench_training, forward_flops, matmul_peak_gflops
from tinymnist.models import create_model


def test_flop_counter_matches_a_hand_count():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(2, 4, 3, padding=1, groups=2), nn.Flatten(), nn.Linear(4 * 14 * 14, 10))
    conv1 = 2 * 28 * 28 * (1 * 3 * 3)  # outputs x multiply-adds per output
    conv2 = 4 * 14 * 14 * (1 * 3 * 3)  # grouped: each output sees in_channels / groups = 1 channel
    linear = 10 * 784
    assert forward_flops(model) == 2 * (conv1 + conv2 + linear)


def test_flop_counter_on_a_registered_model_by_hand():
    # cnn20k: conv 1->16 at 28x28, 16->32 and 32->24 at 14x14, 24->24 at 7x7, linear 24*3*3 -> 10
    expected = 16 * 784 * 9 + 32 * 196 * 16 * 9 + 24 * 196 * 32 * 9 + 24 * 49 * 24 * 9 + 10 * 216
    assert forward_flops(create_model("cnn20k")) == 2 * expected


def test_matmul_peak_is_measured():
    assert matmul_peak_gflops(torch.device("cpu"), n=256, repeats=3) > 0.1


def test_inference_benchmark_reports_throughput_and_latency():
    report = bench_inference(create_model("cnn20k"), "cpu", batch_size=64, batches=3, single_runs=20)
    assert report["batched_images_per_second"] > 0
    assert 0 < report["single_latency_ms_p50"] <= report["single_latency_ms_p99"]


def test_training_benchmark_aggregates_seeds(small_mnist):
    report = bench_training("quick", [0, 1], small_mnist, device="cpu", peak_gflops=100.0, epochs=0.5,
                            batch_size=64)
    assert report["seeds"] == [0, 1] and len(report["test_acc"]) == 2
    assert report["test_acc_min"] == min(report["test_acc"])
    assert report["train_gflops_per_second"] > 0 and 0 < report["fraction_of_matmul_peak"]


@pytest.mark.slow
def test_speedrun_preset_reaches_98_8_percent(tmp_path, mnist_dir):
    proc = subprocess.run([sys.executable, "-m", "tinymnist", "train", "--preset", "speedrun", "--device", "cpu",
                           "--out", str(tmp_path), "--data-dir", str(mnist_dir), "--json", "--target-acc", "98.8"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    print(f"speedrun: {result['test_acc']:.2f}% in {result['train_seconds']:.1f} s")
    assert result["test_acc"] > 98.8 and result["params"] < 20_000


@pytest.mark.parametrize("amp", ["", "off"])
def test_gpu_script_runs_its_cpu_path(tmp_path, mnist_dir, amp):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {"PATH": "/usr/bin:/bin", "PY": sys.executable, "DEVICE": "cpu", "DATA": str(mnist_dir),
           "OUT": str(tmp_path), "SEEDS": "2", "DEFAULT_SEEDS": "1", "DRY_RUN": "1", "HOME": str(tmp_path),
           "AMP": amp}
    proc = subprocess.run(["bash", str(root / "benchmarks" / "gpu.sh")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tag = f"cpu-amp-{amp}" if amp else "cpu"
    speed = json.loads((tmp_path / f"speed-{tag}.json").read_text())
    assert speed["machine"]["device"] == "cpu" and speed["results"][0]["seeds"] == [0, 1]
    default = json.loads((tmp_path / f"default-{tag}.json").read_text())["results"][0]
    assert default["preset"] == "default"
    assert all(r["overrides"] == ({"dry_run": True, "amp": amp} if amp else {"dry_run": True})
               for r in (speed["results"][0], default))
    assert json.loads((tmp_path / "infer-cpu.json").read_text())["batched_images_per_second"] > 0


def test_gpu_script_refuses_to_run_without_data(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {"PATH": "/usr/bin:/bin", "PY": sys.executable, "DEVICE": "cpu", "DATA": str(tmp_path / "none"),
           "OUT": str(tmp_path)}
    proc = subprocess.run(["bash", str(root / "benchmarks" / "gpu.sh")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "no verified MNIST cache" in proc.stderr


def test_onnx_inference_backend_matches_pytorch_and_reports_its_figures():
    from tinymnist.bench.inference import bench_inference
    from tinymnist.models import create_model

    report = bench_inference(create_model("cnn2k"), "cpu", batch_size=16, batches=2, single_runs=5, backend="onnx")
    assert report["backend"] == "onnx" and report["max_abs_logit_diff"] <= 1e-4
    assert report["batched_images_per_second"] > 0 and report["export_seconds"] > 0
    assert report["single_latency_ms_p50"] <= report["single_latency_ms_p99"]


def test_the_benchmark_prints_a_line_per_run_not_the_training_loops(mnist_dir):
    from test_cli import run_cli

    proc = run_cli("bench", "speed", "--presets", "speedrun", "--seeds", "1", "--dry-run", "--device", "cpu",
                   "--data-dir", str(mnist_dir))
    assert proc.returncode == 0, proc.stderr
    assert "speedrun seed 0:" in proc.stdout
    assert not [line for line in proc.stdout.splitlines() if line.startswith(("training ", "epoch "))], proc.stdout
