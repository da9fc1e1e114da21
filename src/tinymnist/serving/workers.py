"""Inference processes behind one HTTP process: `tinymnist serve --workers N`.

Decoding, preprocessing and inference hold the GIL for ~2 ms a request, so one Python
process answers on one core. The obvious fix, N uvicorn processes sharing the listening
socket, balances *connections*, and badly: each process accepts every pending connection
when it wakes, and 16 keep-alive clients ended up split 16/0 or 15/1 between two processes
(measured with `ss`), so half the machine idled while the other half queued. Here the one
HTTP process parses requests and hands each to the least busy of N worker processes over a
pipe: balancing per request, whatever the connections do.

A worker that dies (killed, out of memory, a crash in a decoder) fails only its in-flight
requests (503) and is replaced; the others keep answering.
"""

from __future__ import annotations

import asyncio
import collections
import multiprocessing
import signal
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

# Requests in flight per worker: one being computed and one waiting in its pipe, so a worker
# never idles for the round trip between answering and being handed the next request.
DEPTH = 2
START_TIMEOUT = 120.0  # seconds for a worker to import torch and load the model


class WorkerFailed(RuntimeError):
    """A worker died with the request in flight (the request itself may be the cause)."""


def one_thread() -> None:
    """This process computes on one thread, in torch and in numpy's BLAS: a server answers single
    images on one core per process, where extra threads only fight the other processes. BLAS
    threads spinning in every worker for the paper map's small matrix products took a 2-worker
    server from ~350 to ~100 requests/s (docs/benchmarks.md)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


def worker_main(conn: Connection, checkpoint: str, onnx: bytes | None, model: str | None = None) -> None:
    """One worker process: load the model, then answer requests from the pipe until it closes."""
    from ..inference.engine import Classifier, handle
    from ..models.checkpoint import load_checkpoint

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it closes the pipes
    one_thread()
    net, _ = load_checkpoint(checkpoint, "cpu", model=model)
    classify = Classifier(net, onnx)
    conn.send_bytes(b"ready")
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent closed the pipe or went away
            return
        try:
            status, payload = handle(classify, message)
        except Exception as exc:  # a bug, not a bad request: answer 500 and keep the worker
            status, payload = 2, f"{type(exc).__name__}: {exc}".encode()
        conn.send_bytes(bytes([status]) + payload)


@dataclass
class Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    ready: bool = False
    answered: int = 0
    futures: collections.deque = field(default_factory=collections.deque)  # in order of sending


class InferencePool:
    """``workers`` processes, each holding the model; ``await pool.run(message)`` answers one request."""

    def __init__(self, checkpoint: str | Path, workers: int, *, onnx: bytes | None = None,
                 start_timeout: float = START_TIMEOUT, model: str | None = None):
        self.checkpoint, self.onnx = str(checkpoint), onnx  # onnx: run the model in onnxruntime
        self.model = model  # a user's model: the reference each worker loads the checkpoint with
        self._context = multiprocessing.get_context("spawn")  # no fork of a process holding torch's threads
        self._pending: collections.deque = collections.deque()  # (message, future) waiting for a worker
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.restarts = 0
        self._workers = [self._spawn() for _ in range(workers)]
        for worker in self._workers:  # block until every worker has the model: /api/health means ready
            if not worker.conn.poll(start_timeout) or worker.conn.recv_bytes() != b"ready":
                self.close()
                raise RuntimeError(f"an inference worker did not start within {start_timeout:.0f} s")
            worker.ready = True

    def _spawn(self) -> Worker:
        parent, child = self._context.Pipe(duplex=True)
        process = self._context.Process(target=worker_main, args=(child, self.checkpoint, self.onnx, self.model),
                                        daemon=True, name="tinymnist-worker")
        process.start()
        child.close()
        return Worker(process, parent)

    async def run(self, message: tuple) -> tuple[int, bytes]:
        """``(0, json)`` for an answer, ``(1, message)`` for an input the model cannot read,
        ``(2, message)`` for an unexpected error in the worker."""
        self._attach(asyncio.get_running_loop())
        future = self._loop.create_future()
        self._pending.append((message, future))
        self._dispatch()
        return await future

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch the workers' pipes from the server's event loop (it does not exist at __init__)."""
        if self._loop is loop:
            return
        self._loop = loop
        for worker in self._workers:
            loop.add_reader(worker.conn.fileno(), self._on_readable, worker)

    def _dispatch(self) -> None:
        while self._pending:
            ready = [w for w in self._workers if w.ready and len(w.futures) < DEPTH]
            if not ready:
                return  # every worker is busy: the request waits here, not in a pipe
            message, future = self._pending.popleft()
            if future.done():  # the client went away while it waited
                continue
            worker = min(ready, key=lambda w: len(w.futures))
            try:
                worker.conn.send(message)
            except OSError:
                self._pending.appendleft((message, future))
                self._replace(worker)
                continue
            worker.futures.append(future)

    def _on_readable(self, worker: Worker) -> None:
        try:
            raw = worker.conn.recv_bytes()
        except (EOFError, OSError):
            self._replace(worker)
            return
        if raw == b"ready":  # a replacement worker has loaded the model
            worker.ready = True
        else:
            future = worker.futures.popleft()
            worker.answered += 1
            if not future.done():
                future.set_result((raw[0], raw[1:]))
        self._dispatch()

    def _replace(self, worker: Worker) -> None:
        """A worker died: fail what it held, start another in its place."""
        if self._loop is not None:
            self._loop.remove_reader(worker.conn.fileno())
        worker.conn.close()
        worker.process.join(timeout=1)
        code = worker.process.exitcode
        while worker.futures:
            future = worker.futures.popleft()
            worker.answered += 1
            if not future.done():
                future.set_exception(WorkerFailed(f"the inference worker died (exit code {code})"))
        if self._closed:
            return
        self.restarts += 1
        fresh = self._spawn()
        self._workers[self._workers.index(worker)] = fresh
        if self._loop is not None:
            self._loop.add_reader(fresh.conn.fileno(), self._on_readable, fresh)

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers]

    def answered(self) -> list[int]:
        """Requests answered by each current worker (a replacement starts from 0)."""
        return [w.answered for w in self._workers]

    def close(self) -> None:
        self._closed = True
        for worker in self._workers:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(worker.conn.fileno())
            worker.conn.close()  # the worker sees EOF and returns
        for worker in self._workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
        for _, future in self._pending:
            if not future.done():
                future.set_exception(WorkerFailed("the server is shutting down"))
        self._pending.clear()
