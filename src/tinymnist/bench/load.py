"""Load test of `tinymnist serve` on loopback: N concurrent clients POST real digit images.

Each client is one keep-alive HTTP/1.1 connection; all of them are coroutines in one
thread. Bounded both in requests and in seconds. ``bench_load`` starts the server as a
child process, warms it up, measures, and stops it.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import ConfigError
from ..data import MNIST, load_mnist
from ..device import resolve_device
from ..models.checkpoint import find_latest_checkpoint
from ..training.rundir import RUNS_ROOT
from ..stats import percentile


def digit_payloads(data: MNIST, n: int = 200, side: int = 280) -> list[tuple[bytes, int]]:
    """``n`` test digits as PNG files the way people send them: enlarged to ``side`` pixels,
    alternately white-on-black (the page's canvas) and black-on-white (a scan)."""
    payloads = []
    for i in range(n):
        image = Image.fromarray(data.test_images[i].cpu().numpy()).resize((side, side), Image.BICUBIC)
        if i % 2:
            image = Image.fromarray(255 - np.asarray(image))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        payloads.append((buffer.getvalue(), int(data.test_labels[i])))
    return payloads


def multipart(data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"digit.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def request_bytes(host: str, port: int, data: bytes) -> bytes:
    """One complete keep-alive HTTP/1.1 POST of ``data`` to /api/predict, built once and replayed."""
    body, content_type = multipart(data)
    head = (f"POST /api/predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n")
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response with a Content-Length (what uvicorn sends)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = next((int(line.split(":", 1)[1]) for line in lines[1:] if line.lower().startswith("content-length:")),
                  None)
    if length is None:
        raise ValueError("response without Content-Length")
    return status, await reader.readexactly(length)


LABEL = re.compile(rb'"label":\s*(\d)')


def parse_label(answer: bytes) -> int:
    """The label of a JSON answer, read without decoding the whole body: its 784-value preview
    cost the client 0.3 ms per response in ``json.loads``, a tenth of the server's work."""
    found = LABEL.search(answer)
    if found is None:
        raise ValueError(f"no label in the answer: {answer[:200]!r}")
    return int(found.group(1))


def run_load(host: str, port: int, payloads: list[tuple[bytes, int]], clients: int = 16, requests: int = 2000,
             max_seconds: float = 120.0) -> dict:
    """``requests`` POSTs to /api/predict spread over ``clients`` keep-alive connections;
    figures and every error.

    The clients are coroutines in one thread replaying prebuilt request bytes: on the 2-core
    machine the load generator shares the cores with the server, and this costs it ~4x less
    CPU per request than 16 http.client threads did (measured), so the figures are the server's.
    """
    try:  # uvloop (installed with uvicorn[standard]) halves the event loop's cost per request
        from uvloop import run
    except ImportError:
        run = asyncio.run
    return run(_run_load(host, port, payloads, clients, requests, max_seconds))


async def _run_load(host: str, port: int, payloads: list[tuple[bytes, int]], clients: int, requests: int,
                    max_seconds: float) -> dict:
    prepared = [(request_bytes(host, port, data), label) for data, label in payloads]
    counter = iter(range(requests))
    latencies: list[float] = []
    errors: list[str] = []
    correct = 0
    deadline = time.monotonic() + max_seconds

    async def client() -> None:
        nonlocal correct
        reader = writer = None
        for i in counter:  # shared: each request is taken by exactly one client
            if time.monotonic() >= deadline:
                break
            raw, label = prepared[i % len(prepared)]
            started = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(raw)
                status, answer = await asyncio.wait_for(read_response(reader), timeout=30)
                elapsed = time.perf_counter() - started
                predicted = parse_label(answer) if status == 200 else None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                    ValueError, KeyError, IndexError) as exc:
                if writer is not None:
                    writer.close()
                reader = writer = None
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(elapsed)
            if status != 200:
                errors.append(f"HTTP {status}: {answer[:200]!r}")
            correct += predicted == label
        if writer is not None:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - started
    ms = sorted(1000 * x for x in latencies)

    return {"clients": clients, "requests_planned": requests, "requests_done": len(latencies) + len(errors),
            "errors": len(errors), "error_samples": errors[:5], "seconds": wall,
            "requests_per_second": len(latencies) / wall if wall else 0.0,
            "latency_ms_p50": percentile(ms, 0.50), "latency_ms_p90": percentile(ms, 0.90),
            "latency_ms_p99": percentile(ms, 0.99),
            "latency_ms_max": ms[-1] if ms else float("nan"),
            "latency_ms_mean": statistics.fmean(ms) if ms else float("nan"),
            "label_accuracy": 100.0 * correct / max(1, len(latencies))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: str | Path, port: int, workers: int = 1, backend: str = "auto",
                 timeout: float = 120.0, model: str | None = None) -> subprocess.Popen:
    """`tinymnist serve` in a child process on loopback; returns once /api/health answers."""
    cmd = [sys.executable, "-m", "tinymnist", "serve", "--checkpoint", str(checkpoint), "--host", "127.0.0.1",
           "--port", str(port), "--quiet", "--workers", str(workers), "--backend", backend,
           *(["--model", model] if model else [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode().strip()[-500:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not answer /api/health within {timeout:.0f} s")


PAYLOAD_DESCRIPTION = ("280x280 PNG of MNIST test digits, alternately white-on-black and black-on-white, "
                       "multipart upload")


def bench_load(checkpoint: str | Path | None, clients: int = 16, requests: int = 2000, workers: int = 1,
               backend: str = "auto", max_seconds: float = 120.0, data_dir: str | None = None,
               model: str | None = None) -> dict:
    """Start `tinymnist serve` for ``checkpoint`` on a free loopback port, warm it up, send
    ``requests`` POSTs from ``clients`` concurrent clients, stop it; the figures and the machine.
    No ``checkpoint``: the newest model saved under runs/; ``model``: the code of a user's checkpoint."""
    from .training import machine_info

    if clients < 1 or requests < 1 or workers < 1:
        raise ConfigError("--clients, --requests and --workers must be at least 1")
    if not max_seconds > 0:
        raise ConfigError(f"--max-seconds must be > 0, got {max_seconds:g}")
    checkpoint = checkpoint or find_latest_checkpoint(RUNS_ROOT)
    payloads = digit_payloads(load_mnist(data_dir, fetch=True))
    port = free_port()
    server = start_server(checkpoint, port, workers, backend, model=model)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/model", timeout=10) as answer:
            served_by = json.load(answer)["backend"]
        run_load("127.0.0.1", port, payloads[:20], clients=2, requests=40)  # warm-up, not counted
        report = run_load("127.0.0.1", port, payloads, clients, requests, max_seconds)
    finally:
        server.terminate()
        server.wait(timeout=30)
    report.update(checkpoint=str(checkpoint), server_workers=workers, server_backend=served_by,
                  machine=machine_info(resolve_device("cpu")), payload=PAYLOAD_DESCRIPTION)
    return report
