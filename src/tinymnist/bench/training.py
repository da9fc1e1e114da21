"""Training benchmarks: time to accuracy over seeds, and achieved FLOP/s against the
machine's own matmul peak.

They call the same ``train()`` as the CLI: no second training loop to drift apart.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import statistics
import time

import torch
from torch import nn

from ..config import preset_config
from ..data import MNIST, load_mnist
from ..device import resolve_device, synchronize
from ..models import create_model
from ..models.summary import macs_of
from ..stats import mean_std, spread
from ..training import train

log = logging.getLogger(__name__)

# Training a step costs about three forward passes (forward, grad wrt activations, grad
# wrt weights): the usual convention, slightly generous since the first layer needs no
# input gradient.
TRAIN_FLOPS_PER_FORWARD = 3


def forward_flops(model: nn.Module, input_shape=(1, 1, 28, 28)) -> int:
    """FLOPs of one forward pass of one image: 2 per multiply-add of conv and linear layers
    (``models.summary.macs_of``, the count `tinymnist summary` reports).

    BatchNorm, ReLU and pooling are left out: they are a few percent of the arithmetic
    (though not of the time, which is the point of comparing against the peak).
    """
    macs = 0

    def count(module: nn.Module, inputs, output):
        nonlocal macs
        macs += macs_of(module, output) * output.shape[0]

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(input_shape, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return 2 * macs // input_shape[0]


def matmul_peak_gflops(device: torch.device, n: int | None = None, repeats: int = 10) -> float:
    """fp32 matrix-multiply throughput of this device, median of ``repeats`` timed runs."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def machine_info(device: torch.device) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "cpu": _cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def bench_training(preset: str, seeds: list[int], data: MNIST, device: str = "auto", peak_gflops: float = 0.0,
                   **overrides) -> dict:
    """Train ``preset`` once per seed; accuracy as mean ± std of the final epochs, time as median."""
    config = preset_config(preset, device=device, **overrides)
    runs = []
    for seed in seeds:
        result = train(dataclasses.replace(config, seed=seed), data=data, progress=False)
        runs.append(result)
        log.info(f"  {preset} seed {seed}: {result.test_acc:.2f}% in {result.train_seconds:.2f} s")
    flops = forward_flops(create_model(config.model))
    accs = [r.test_acc for r in runs]
    secs = [r.train_seconds for r in runs]
    images = runs[0].steps * config.batch_size
    median_s = statistics.median(secs)
    achieved = TRAIN_FLOPS_PER_FORWARD * flops * images / median_s / 1e9
    mean, std = mean_std(accs)
    val_figures = spread("val_acc", [r.val_acc for r in runs if r.val_acc is not None])
    tta_figures = spread("test_acc_tta", [r.test_acc_tta for r in runs if r.test_acc_tta is not None])
    # When each run first crossed 99% (reported for comparison with recipes described that
    # way; nothing is selected by it: every accuracy above is the final epoch's).
    first_99 = [next(((h["epoch"], h["seconds"]) for h in r.history if h["test_acc"] >= 99.0), None)
                for r in runs]
    return {
        "preset": preset, "model": config.model, "params": runs[0].params, "seeds": seeds,
        "epochs": runs[0].epochs, "batch_size": config.batch_size, "test_acc": accs,
        "test_acc_mean": mean, "test_acc_std": std, "test_acc_min": min(accs),
        "train_seconds": secs, "train_seconds_median": median_s,
        "compile_seconds_median": statistics.median(r.compile_seconds for r in runs),
        "images_per_second": images / median_s, "forward_mflops_per_image": flops / 1e6,
        "train_gflops_per_second": achieved,
        "fraction_of_matmul_peak": achieved / peak_gflops if peak_gflops else None,
        "first_reached_99": [{"epoch": f[0], "train_seconds": f[1]} if f else None for f in first_99],
        "overrides": overrides,
        **val_figures,  # with --val-images: the figures to compare recipes on
        **tta_figures,  # with --tta: beside the plain figures, never instead of them
    }


def bench_speed(presets: list[str], seeds: list[int], device: str = "auto", data_dir=None, **overrides) -> dict:
    """The speed benchmark: each preset over ``seeds`` on one device, plus the matmul peak."""
    dev = resolve_device(device)
    start = time.perf_counter()
    data = load_mnist(data_dir, fetch=True).to(dev)
    synchronize(dev)
    load_seconds = time.perf_counter() - start
    peak = matmul_peak_gflops(dev)
    log.info(f"{dev}: fp32 matmul peak {peak:.0f} GFLOP/s; data loaded in {load_seconds:.2f} s")
    results = [bench_training(p, seeds, data, device, peak, **overrides) for p in presets]
    return {"machine": machine_info(dev), "matmul_peak_gflops": peak, "data_load_seconds": load_seconds,
            "results": results}
