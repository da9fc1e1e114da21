"""The inference pool behind `serve --workers N`, and the onnxruntime backend both paths use."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import os
import signal
import time

import numpy as np
import pytest
import torch
from PIL import Image

from tinymnist.bench.load import digit_payloads
from tinymnist.inference.preprocess import load_image, preprocess, to_uint8

pytest.importorskip("fastapi")
from tinymnist.inference.engine import answer, Classifier, onnx_backend  # noqa: E402
from tinymnist.inference.segment import Digit, Reading
from tinymnist.serving.workers import InferencePool, WorkerFailed  # noqa: E402


def big_blank_png(side: int = 6000) -> bytes:
    """Decodes slowly (36 megapixels, 0.17-0.8 s on the 2-core machine): long enough to kill
    a worker while it holds the request."""
    buffer = io.BytesIO()
    Image.new("L", (side, side), 255).save(buffer, format="PNG")
    return buffer.getvalue()


async def ask_all(pool: InferencePool, messages: list[tuple]) -> list:
    return await asyncio.gather(*(pool.run(m) for m in messages), return_exceptions=True)


def labels_of(results) -> list[int]:
    assert all(isinstance(r, tuple) and r[0] == 0 for r in results), results[:3]
    return [json.loads(body)["label"] for _, body in results]


@pytest.fixture(scope="module")
def payloads(mnist):
    return digit_payloads(mnist, 40)


def test_pool_answers_like_the_model_and_spreads_requests(trained_checkpoint, trained_model, payloads):
    model, _ = trained_model
    pool = InferencePool(trained_checkpoint, 2)
    try:
        results = asyncio.run(ask_all(pool, [("image", data) for data, _ in payloads]))
        inline = Classifier(model)
        expected = [int(inline(to_uint8(preprocess(load_image(data)))[None])[0].argmax()) for data, _ in payloads]
        assert labels_of(results) == expected
        assert sum(pool.answered()) == len(payloads)
        assert min(pool.answered()) >= len(payloads) // 4  # both workers took a share, not one all of it
        status, message = asyncio.run(pool.run(("image", b"not an image")))
        assert status == 1 and b"not an image" in message
    finally:
        pool.close()
    assert all(not w.process.is_alive() for w in pool._workers)


def test_a_killed_worker_fails_only_its_request_and_is_replaced(trained_checkpoint, payloads):
    pool = InferencePool(trained_checkpoint, 2)
    try:
        async def kill_mid_request():
            slow = asyncio.ensure_future(pool.run(("image", big_blank_png())))
            # kill as soon as a worker holds it: the decode takes 0.17-0.8 s, so a fixed wait
            # (it was 0.3 s) can outlast it on a fast machine and find the request answered
            busy, deadline = [], time.monotonic() + 10
            while not busy and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
                busy = [w for w in pool._workers if w.futures]
            assert busy, "the slow request should be in a worker"
            os.kill(busy[0].process.pid, signal.SIGKILL)
            return await asyncio.gather(slow, return_exceptions=True), busy[0].process.pid

        (outcome,), killed = asyncio.run(kill_mid_request())
        assert isinstance(outcome, WorkerFailed)
        assert pool.restarts == 1 and killed not in pool.pids()
        # the pool keeps answering, first on the survivor, then on both once the replacement is up
        results = asyncio.run(ask_all(pool, [("image", data) for data, _ in payloads[:10]]))
        assert len(labels_of(results)) == 10
        deadline = time.monotonic() + 60
        while not all(w.ready for w in pool._workers) and time.monotonic() < deadline:
            asyncio.run(ask_all(pool, [("image", payloads[0][0])]))
        assert all(w.ready for w in pool._workers)
    finally:
        pool.close()


def test_onnx_classifier_agrees_with_pytorch(trained_model, mnist, tmp_path):
    pytest.importorskip("onnxruntime")
    model, meta = trained_model
    onnx = onnx_backend(model, meta, "onnx", tmp_path)
    images = mnist.test_images[:64].numpy()
    torch_probs, onnx_probs = Classifier(model)(images), Classifier(model, onnx)(images)
    assert Classifier(model, onnx).backend == "onnx"
    assert np.abs(torch_probs - onnx_probs).max() < 1e-4
    assert (torch_probs.argmax(1) == onnx_probs.argmax(1)).all()
    assert onnx_backend(model, meta, "torch", tmp_path) is None


def test_onnx_export_is_cached_per_weights(trained_model, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from tinymnist.inference import export

    model, meta = trained_model
    first = export.cached_onnx(model, meta, tmp_path)
    assert [p.read_bytes() for p in tmp_path.iterdir()] == [first]

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds these weights")

    monkeypatch.setattr(export, "onnx_bytes", no_export)
    assert export.cached_onnx(model, meta, tmp_path) == first
    other = copy.deepcopy(model)  # same architecture, other weights: another key
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    with pytest.raises(AssertionError, match="exported again"):
        export.cached_onnx(other, meta, tmp_path)


def test_preview_is_the_uint8_image_the_model_saw(mnist):
    field = np.random.default_rng(0).random((28, 28), dtype=np.float32)

    def uniform(fields):
        return np.full((len(fields), 10), 0.1)

    body = json.loads(answer(uniform, Reading([Digit(field, (0, 0, 28, 28))])))
    assert body["label"] == 0 and body["probabilities"] == [0.1] * 10
    assert np.array_equal(np.array(body["preprocessed"]), np.round(to_uint8(field) / 255.0, 3))


def test_the_api_answers_503_when_a_worker_dies_and_422_for_a_bad_image(trained_model, payloads):
    from fastapi.testclient import TestClient

    from tinymnist.serving.app import create_app

    class DyingPool:
        onnx = None

        def pids(self):
            return [0]

        async def run(self, message):
            if message[0] == "pixels":
                raise WorkerFailed("the inference worker died (exit code -9)")
            return 1, b"not an image Pillow can read"

        def close(self):
            pass

    client = TestClient(create_app(*trained_model, pool=DyingPool()))
    answer = client.post("/api/predict", json={"pixels": [[0.5] * 28] * 28})
    assert answer.status_code == 503 and "died" in answer.json()["error"]
    answer = client.post("/api/predict", files={"file": ("x.png", payloads[0][0], "image/png")})
    assert answer.status_code == 422 and answer.json() == {"error": "not an image Pillow can read"}
    assert client.get("/api/model").json()["workers"] == 1
