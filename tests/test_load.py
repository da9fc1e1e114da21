"""A small version of the load benchmark: the real server process, concurrent clients, zero errors."""

from __future__ import annotations

import pytest

from tinymnist.bench.load import digit_payloads, free_port, run_load, start_server


@pytest.mark.parametrize("workers, backend", [(1, "torch"), (2, "auto")])
def test_concurrent_clients_get_answers_without_errors(trained_checkpoint, mnist, workers, backend):
    port = free_port()
    server = start_server(trained_checkpoint, port, workers=workers, backend=backend)
    try:
        report = run_load("127.0.0.1", port, digit_payloads(mnist, 50), clients=8, requests=300, max_seconds=120)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert report["requests_done"] == 300
    assert report["errors"] == 0, report["error_samples"]
    assert report["label_accuracy"] >= 95.0  # the answers are real predictions, not just 200s
