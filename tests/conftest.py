"""Shared fixtures: the real MNIST (fetched once into the user cache) and small slices of it."""

from __future__ import annotations

import pytest
import torch

from tinymnist.data import MNIST, fetch_mnist, load_mnist, read_cache, resolve_data_dir


@pytest.fixture(scope="session")
def mnist_dir():
    """The verified MNIST cache (fetched on first use, as `make train` would)."""
    directory = resolve_data_dir(None)
    fetch_mnist(directory)
    return directory


@pytest.fixture(scope="session")
def mnist(mnist_dir) -> MNIST:
    return load_mnist(mnist_dir, fetch=False)


@pytest.fixture(scope="session")
def mnist_arrays(mnist_dir):
    return read_cache(mnist_dir)


@pytest.fixture(scope="session")
def small_mnist(mnist) -> MNIST:
    """2,048 training and 1,000 test images: enough to see learning, fast enough for unit tests."""
    return MNIST(mnist.train_images[:2048], mnist.train_labels[:2048],
                 mnist.test_images[:1000], mnist.test_labels[:1000])


@pytest.fixture
def unwritable_dir(tmp_path):
    """A folder that cannot be made: its parent is a file (so even root cannot write there)."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    return blocker / "out"


@pytest.fixture(autouse=True)
def _two_threads():
    # the suite's timings are irrelevant, but keep runs on a 2-core CI machine predictable
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def trained_checkpoint(mnist, tmp_path_factory):
    """A real model, trained once for the suite: the speedrun preset (99% in one epoch, seconds on CPU)."""
    from tinymnist.config import preset_config
    from tinymnist.training import train

    out = tmp_path_factory.mktemp("speedrun")
    result = train(preset_config("speedrun", device="cpu"), data=mnist, out_dir=out, progress=False)
    assert result.checkpoint and result.test_acc > 98.5
    return result.checkpoint


@pytest.fixture(scope="session")
def trained_model(trained_checkpoint):
    from tinymnist.models.checkpoint import load_checkpoint

    return load_checkpoint(trained_checkpoint)


@pytest.fixture(scope="session")
def live_server(trained_model):
    """The app under a real uvicorn on a free loopback port, in a thread; yields its base URL."""
    import threading
    import time

    import uvicorn

    from tinymnist.bench.load import free_port
    from tinymnist.serving.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(*trained_model), host="127.0.0.1", port=port,
                                           log_level="warning", timeout_keep_alive=5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            pytest.fail("uvicorn did not start within 20 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """ONNX exports made by `serve` during the suite go to a temporary cache, not the user's."""
    import os

    from tinymnist.data import CACHE_ENV

    saved = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("cache"))
    yield
    if saved is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = saved
