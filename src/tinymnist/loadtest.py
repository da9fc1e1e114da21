"""Load test of `tinymnist serve` on loopback: N concurrent clients POST real digit images.

Each client is a thread with one keep-alive HTTP connection (the standard library's
http.client: light enough that the clients cost the 2-core machine little next to the
server). Bounded both in requests and in seconds.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from .data import MNIST


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


def run_load(host: str, port: int, payloads: list[tuple[bytes, int]], clients: int = 16, requests: int = 2000,
             max_seconds: float = 120.0) -> dict:
    """``requests`` POSTs to /api/predict spread over ``clients`` threads; figures and every error."""
    bodies = [(*multipart(data), label) for data, label in payloads]
    counter = iter(range(requests))
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    correct = 0
    deadline = time.monotonic() + max_seconds

    def client() -> None:
        nonlocal correct
        conn = http.client.HTTPConnection(host, port, timeout=30)
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            body, content_type, label = bodies[i % len(bodies)]
            started = time.perf_counter()
            try:
                conn.request("POST", "/api/predict", body=body, headers={"Content-Type": content_type})
                response = conn.getresponse()
                answer = response.read()
                elapsed = time.perf_counter() - started
                ok = response.status == 200
                predicted = json.loads(answer)["label"] if ok else None
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=30)
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                latencies.append(elapsed)
                if not ok:
                    errors.append(f"HTTP {response.status}: {answer[:200]!r}")
                correct += predicted == label
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ms = sorted(1000 * x for x in latencies)

    def pct(q: float) -> float:
        return ms[min(len(ms) - 1, int(q * len(ms)))] if ms else float("nan")

    return {"clients": clients, "requests_planned": requests, "requests_done": len(latencies) + len(errors),
            "errors": len(errors), "error_samples": errors[:5], "seconds": wall,
            "requests_per_second": len(latencies) / wall if wall else 0.0,
            "latency_ms_p50": pct(0.50), "latency_ms_p90": pct(0.90), "latency_ms_p99": pct(0.99),
            "latency_ms_max": ms[-1] if ms else float("nan"),
            "latency_ms_mean": statistics.fmean(ms) if ms else float("nan"),
            "label_accuracy": 100.0 * correct / max(1, len(latencies))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: str | Path, port: int, workers: int = 1, timeout: float = 60.0) -> subprocess.Popen:
    """`tinymnist serve` in a child process on loopback; returns once /api/health answers."""
    cmd = [sys.executable, "-m", "tinymnist", "serve", "--checkpoint", str(checkpoint), "--host", "127.0.0.1",
           "--port", str(port), "--quiet", "--workers", str(workers)]
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
