"""Benchmarks: time to accuracy over seeds, achieved FLOP/s against the machine's own
matmul peak, and inference throughput and latency.

They call the same ``train()`` as the CLI: no second training loop to drift apart.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from .config import preset_config
from .data import MNIST, load_mnist
from .evaluate import predict_logits
from .models import count_parameters, create_model
from .train import resolve_device, synchronize, train

# Training a step costs about three forward passes (forward, grad wrt activations, grad
# wrt weights): the usual convention, slightly generous since the first layer needs no
# input gradient.
TRAIN_FLOPS_PER_FORWARD = 3


def forward_flops(model: nn.Module, input_shape=(1, 1, 28, 28)) -> int:
    """FLOPs of one forward pass of one image: 2 per multiply-add of conv and linear layers.

    BatchNorm, ReLU and pooling are left out: they are a few percent of the arithmetic
    (though not of the time, which is the point of comparing against the peak).
    """
    macs = 0

    def conv_hook(module: nn.Conv2d, inputs, output):
        nonlocal macs
        kh, kw = module.kernel_size
        macs += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, inputs, output):
        nonlocal macs
        macs += output.numel() * module.in_features

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, nn.Linear)]
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


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def spread(key: str, values: list[float]) -> dict:
    """``{key: values, key_mean: ..., key_std: ...}``, or nothing when no run reported the figure."""
    if not values:
        return {}
    mean, std = mean_std(values)
    return {key: values, f"{key}_mean": mean, f"{key}_std": std}


def bench_training(preset: str, seeds: list[int], data: MNIST, device: str = "auto", peak_gflops: float = 0.0,
                   log=lambda msg: None, **overrides) -> dict:
    """Train ``preset`` once per seed; accuracy as mean ± std of the final epochs, time as median."""
    config = preset_config(preset, device=device, **overrides)
    runs = []
    for seed in seeds:
        result = train(dataclasses.replace(config, seed=seed), data=data, progress=False, log=lambda msg: None)
        runs.append(result)
        log(f"  {preset} seed {seed}: {result.test_acc:.2f}% in {result.train_seconds:.2f} s")
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


def bench_speed(presets: list[str], seeds: list[int], device: str = "auto", data_dir=None,
                log=lambda msg: None, **overrides) -> dict:
    """The speed benchmark: each preset over ``seeds`` on one device, plus the matmul peak."""
    dev = resolve_device(device)
    start = time.perf_counter()
    data = load_mnist(data_dir, fetch=True).to(dev)
    synchronize(dev)
    load_seconds = time.perf_counter() - start
    peak = matmul_peak_gflops(dev)
    log(f"{dev}: fp32 matmul peak {peak:.0f} GFLOP/s; data loaded in {load_seconds:.2f} s")
    results = [bench_training(p, seeds, data, device, peak, log, **overrides) for p in presets]
    return {"machine": machine_info(dev), "matmul_peak_gflops": peak, "data_load_seconds": load_seconds,
            "results": results}


@torch.inference_mode()
def bench_inference(model: nn.Module, device: str = "cpu", batch_size: int = 256, batches: int = 50,
                    single_runs: int = 1000, backend: str = "torch") -> dict:
    """Batched images/s and single-image latency percentiles of ``model``, in-process, from
    uint8 images to predicted labels (normalization included).

    ``torch``: channels-last layout, as in training: on CPUs it is twice as fast as NCHW for
    these convolutions; batch 256 keeps a batch's activations in cache (batch 1000 runs
    slower). ``onnx``: the model exported to ONNX (checked against PyTorch on the timed batch)
    and run by onnxruntime on the CPU; the export's one-time cost is reported apart.
    """
    dev = resolve_device(device)
    model = model.to(dev, memory_format=torch.channels_last).eval()
    images = torch.randint(0, 256, (batch_size, 28, 28), dtype=torch.uint8, device=dev)
    report = {"device": str(dev), "backend": backend, "batch_size": batch_size, "params": count_parameters(model)}
    if backend == "onnx":
        if dev.type != "cpu":
            raise ValueError("the onnx backend is timed on the CPU only")
        predict, report["export_seconds"], report["max_abs_logit_diff"] = _onnx_predictor(model, images)
    else:
        def predict(images_u8: torch.Tensor):
            return predict_logits(model, images_u8, batch_size, channels_last=True).argmax(1).cpu()

    for _ in range(3):
        predict(images)
    times = []
    for _ in range(batches):
        synchronize(dev)
        start = time.perf_counter()
        predict(images)
        synchronize(dev)
        times.append(time.perf_counter() - start)
    one = images[:1]
    for _ in range(20):
        predict(one)
    latencies = []
    for _ in range(single_runs):
        start = time.perf_counter()
        int(predict(one)[0])  # the answer is on the host
        latencies.append(time.perf_counter() - start)
    latencies.sort()
    return {**report, "batched_images_per_second": batch_size / statistics.median(times),
            "single_latency_ms_p50": 1e3 * latencies[len(latencies) // 2],
            "single_latency_ms_p99": 1e3 * latencies[int(len(latencies) * 0.99)],
            "machine": machine_info(dev)}


def _onnx_predictor(model: nn.Module, images: torch.Tensor):
    """uint8 images -> labels through onnxruntime; also the export time and the parity on ``images``."""
    import tempfile

    import numpy as np

    from .augment import normalize_array
    from .export import export_onnx, onnx_runner

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:  # the session holds the graph in memory once created
        run = onnx_runner(export_onnx(model, {"model": "bench"}, Path(tmp) / "model.onnx"))
    export_seconds = time.perf_counter() - started

    def logits(images_u8: torch.Tensor):
        return run(normalize_array(images_u8.numpy()))

    expected = predict_logits(model, images, channels_last=True).numpy()
    diff = float(np.abs(logits(images) - expected).max())
    return (lambda images_u8: logits(images_u8).argmax(1)), export_seconds, diff
