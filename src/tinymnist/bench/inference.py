"""Inference benchmark: batched images/s and single-image latency, in PyTorch or onnxruntime."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from ..data import normalize_array
from ..device import resolve_device, synchronize
from ..inference.evaluate import predict_logits
from ..inference.export import export_onnx, logit_parity, onnx_runner
from ..models import count_parameters
from ..stats import percentile
from .training import machine_info


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
            "single_latency_ms_p50": 1e3 * percentile(latencies, 0.50),
            "single_latency_ms_p99": 1e3 * percentile(latencies, 0.99),
            "machine": machine_info(dev)}


def _onnx_predictor(model: nn.Module, images: torch.Tensor):
    """uint8 images -> labels through onnxruntime; also the export time and the parity on ``images``."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:  # the session holds the graph in memory once created
        run = onnx_runner(export_onnx(model, {"model": "bench"}, Path(tmp) / "model.onnx"))
    export_seconds = time.perf_counter() - started
    diff = logit_parity(run, model, images)["max_abs_logit_diff"]
    return (lambda images_u8: run(normalize_array(images_u8.numpy())).argmax(1)), export_seconds, diff
