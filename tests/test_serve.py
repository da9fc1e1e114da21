"""The web API: every endpoint, and every bad request answered with a 4xx and a JSON error."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from helpers import render
from test_preprocess import BAD_IMAGES
from tinymnist.serving.app import create_app

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def client(trained_model):
    model, meta = trained_model
    with TestClient(create_app(model, meta, max_body_bytes=LIMIT), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def digits(mnist_arrays):
    return mnist_arrays["test_images"][:5], mnist_arrays["test_labels"][:5].tolist()


def png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def assert_error(response, status: int, fragment: str = ""):
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body.get("error"), str) and fragment.lower() in body["error"].lower(), body


def test_page_is_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "<canvas" in page.text and "api/predict" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN, no external fetch


def test_health_model_and_docs(client, trained_model):
    assert client.get("/api/health").json() == {"status": "ok"}
    info = client.get("/api/model").json()
    assert info["name"] == trained_model[1]["model"] and info["parameters"] == trained_model[1]["params"]
    assert info["test_acc"] == trained_model[1]["test_acc"]
    schema = client.get("/openapi.json").json()
    assert {"/api/predict", "/api/health", "/api/model"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 200


def local_references(html: str) -> list[str]:
    """Every src= and href= of a page; none may point at another host."""
    import re

    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    refs += re.findall(r"""url\s*:\s*["']([^"']+)["']""", html)  # Swagger UI's openapi URL
    return refs


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_api_docs_are_served_from_this_server(client, path):
    page = client.get(path)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    refs = local_references(page.text)
    assert refs, "the docs page references no script at all"
    assert not [r for r in refs if "://" in r or r.startswith("//")], refs
    for ref in refs:  # every asset it loads is here
        assert client.get(ref).status_code == 200, ref


def test_no_answer_discloses_a_path_of_the_server(trained_model, trained_checkpoint, digits):
    model, meta = trained_model
    run_dir = str(Path(trained_checkpoint).resolve().parent)
    with TestClient(create_app(model, {**meta, "checkpoint": str(trained_checkpoint)}, max_body_bytes=LIMIT),
                    raise_server_exceptions=False) as c:
        assert c.get("/api/model").json()["checkpoint"] == Path(trained_checkpoint).name
        answers = [c.get(p) for p in ("/", "/api/model", "/api/health", "/openapi.json", "/docs", "/redoc", "/nope")]
        answers += [c.post("/api/predict", files={"file": ("d.png", png(render(digits[0][0], 280)))}),
                    c.post("/api/predict", files={"file": ("x.png", b"not an image")}),
                    c.post("/api/predict", content=b"{", headers={"content-type": "application/json"}),
                    c.post("/api/predict", content=b"x", headers={"content-type": "text/plain"}),
                    c.post("/api/predict", content=b"x" * (LIMIT + 1), headers={"content-type": "text/plain"})]
    for answer in answers:
        assert run_dir not in answer.text and str(trained_checkpoint) not in answer.text, answer.url


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_uploaded_images_are_read(client, digits, fmt):
    images, labels = digits
    for image, label in zip(images, labels):
        r = client.post("/api/predict", files={"file": ("d.img", png(render(image, 280), fmt))})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["label"] == label
        assert len(body["probabilities"]) == 10 and abs(sum(body["probabilities"]) - 1) < 1e-4
        assert np.asarray(body["preprocessed"]).shape == (28, 28)


def test_json_pixels_are_read(client, digits):
    images, labels = digits
    for image, label in zip(images, labels):
        r = client.post("/api/predict", json={"pixels": (image / 255.0).tolist()})
        assert r.status_code == 200 and r.json()["label"] == label
    r = client.post("/api/predict", json={"pixels": (images[0] / 255.0).tolist(), "preprocess": True})
    assert r.status_code == 200 and r.json()["label"] == labels[0]


def big_body(n: int):
    yield b"{" + b" " * n + b"}"


BAD = {
    "not_an_image": (dict(files={"file": ("x.png", b"definitely not a png")}), 422, "not an image"),
    "empty_canvas": (dict(files={"file": ("x.png", png(Image.new("L", (280, 280), 0)))}), 422, "no ink"),
    "zero_byte_file": (dict(files={"file": ("x.png", b"")}), 422, "empty"),
    "missing_file_field": (dict(files={"other": ("x.png", b"abc")}), 422, "'file'"),
    "empty_pixels": (dict(json={"pixels": [[0.0] * 28] * 28}), 422, "no ink"),
    "wrong_shape": (dict(json={"pixels": [[0.5] * 27] * 28}), 422, "28 rows of 28"),
    "not_numbers": (dict(json={"pixels": [["a"] * 28] * 28}), 422, "numbers"),
    "booleans": (dict(json={"pixels": [[True] * 28] * 28}), 422, "numbers"),
    "out_of_range": (dict(json={"pixels": [[255] * 28] * 28}), 422, "[0, 1]"),
    "nan": (dict(content=json.dumps({"pixels": [[float("nan")] * 28] * 28}),
                 headers={"content-type": "application/json"}), 422, "finite"),
    "no_pixels_key": (dict(json={"image": []}), 422, "pixels"),
    "json_array": (dict(json=[1, 2, 3]), 422, "pixels"),
    "bad_preprocess_flag": (dict(json={"pixels": [[0.5] * 28] * 28, "preprocess": "yes"}), 422, "preprocess"),
    "malformed_json": (dict(content=b"{\"pixels\": [", headers={"content-type": "application/json"}), 400,
                       "malformed"),
    "deeply_nested_json": (dict(content=b"[" * 50_000, headers={"content-type": "application/json"}), 400,
                           "malformed"),
    "wrong_content_type": (dict(content=b"pixels", headers={"content-type": "text/plain"}), 415, "multipart"),
    "no_content_type": (dict(content=b"pixels"), 415, "multipart"),
    "over_limit_declared": (dict(content=b"x" * (LIMIT + 1), headers={"content-type": "application/json"}), 413,
                            "limit"),
    "over_limit_chunked": (dict(content=big_body(LIMIT + 10), headers={"content-type": "application/json"}), 413,
                           "limit"),
    "over_limit_upload": (dict(files={"file": ("x.png", b"\0" * (LIMIT + 1))}), 413, "limit"),
}


# the files `predict` refuses are refused over HTTP too
BAD.update({f"upload_{name}": (dict(files={"file": ("x.png", make())}), 422, fragment)
            for name, (make, fragment) in BAD_IMAGES.items() if name != "zero_bytes"})


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_requests_get_a_4xx_and_the_server_keeps_serving(client, name, digits):
    kwargs, status, fragment = BAD[name]
    assert_error(client.post("/api/predict", **kwargs), status, fragment)
    ok = client.post("/api/predict", json={"pixels": (digits[0][0] / 255.0).tolist()})
    assert ok.status_code == 200


def test_wrong_method_and_unknown_path_are_4xx(client):
    assert client.get("/api/predict").status_code == 405
    assert client.get("/nope").status_code == 404


def test_slow_clients_do_not_block_the_server(live_server, mnist_arrays):
    """Clients that send half a request and stall hold a connection each, not the server."""
    import socket
    import urllib.request

    host, port = live_server.split("//")[1].strip("/").split(":")
    stalled = []
    for _ in range(8):
        s = socket.create_connection((host, int(port)))
        s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000\r\n\r\n{\"pixels\": [")  # ...and nothing more
        stalled.append(s)
    try:
        body = json.dumps({"pixels": (mnist_arrays["test_images"][0] / 255.0).tolist()}).encode()
        for _ in range(5):
            request = urllib.request.Request(live_server + "api/predict", data=body,
                                             headers={"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200
                assert json.loads(response.read())["label"] == int(mnist_arrays["test_labels"][0])
    finally:
        for s in stalled:
            s.close()


def test_a_port_in_use_is_a_one_line_error(trained_checkpoint):
    """Bound before the slow start-up: the CLI's one line and exit 2, not uvicorn's log and exit 3."""
    import socket

    from test_cli import assert_one_line_error, run_cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = run_cli("serve", "--checkpoint", str(trained_checkpoint), "--host", "127.0.0.1",
                       "--port", str(port), "--backend", "torch")
    assert_one_line_error(proc, f"cannot listen on 127.0.0.1:{port}", "in use")


def test_port_0_serves_on_the_free_port_it_names(trained_checkpoint, mnist_arrays):
    """`--port 0` takes any free port, and the start-up line gives the one taken, not 0."""
    import re
    import subprocess
    import sys
    import time
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "tinymnist", "serve", "--checkpoint", str(trained_checkpoint),
                             "--host", "127.0.0.1", "--port", "0", "--backend", "torch", "--quiet"],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        match = re.search(r"at http://127\.0\.0\.1:(\d+)/", line)
        assert match and int(match.group(1)) != 0, line
        url = f"http://127.0.0.1:{match.group(1)}/api/health"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "server never answered"
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
