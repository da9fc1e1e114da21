"""The draw-a-digit web page and its JSON API (FastAPI, served by uvicorn).

Every answer is JSON; every bad request is a 4xx with ``{"error": "..."}``, never a 500.
Uploads go through the same ``preprocess`` as `tinymnist predict`, so the page, the CLI and
the tests see a digit the same way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi_offline import FastAPIOffline
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from torch import nn

from .. import __version__
from ..data import default_cache_dir
from ..inference.engine import Classifier, handle, onnx_backend
from ..inference.preprocess import SIZE
from .workers import InferencePool, WorkerFailed, one_thread

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 2 * 1024 * 1024  # a 280x280 canvas PNG is ~10 kB; a phone photo fits too


class PixelsRequest(BaseModel):
    """An image already in MNIST's form: 28 rows of 28 values in [0, 1], white ink (1) on black (0)."""
    pixels: list[list[float]] = Field(..., description="28x28, row-major, values in [0, 1]")
    preprocess: bool = Field(False, description="centre and scale the ink first, as for an uploaded image")


class DigitAnswer(BaseModel):
    label: int = Field(..., ge=0, le=9)
    probabilities: list[float] = Field(..., min_length=10, max_length=10)
    box: list[int] = Field(..., min_length=4, max_length=4,
                           description="left, top, right, bottom in the image's pixels (right, bottom exclusive)")


class PredictResponse(BaseModel):
    number: str = Field(..., description="the digits read, left to right (\"42\"; \"7\" for one digit)")
    label: int | None = Field(..., ge=0, le=9, description="the digit when there is one; null when there are several")
    probabilities: list[float] | None = Field(..., min_length=10, max_length=10,
                                              description="the digit's when there is one; null when there are several")
    digits: list[DigitAnswer] = Field(..., description="per digit, left to right")
    warning: str | None = Field(None, description="a problem with the reading, e.g. digits that seem to touch")
    preprocessed: list[list[float]] = Field(..., description="what the model saw: the 28x28 digits side by side, "
                                            "[0, 1]")


class ErrorResponse(BaseModel):
    error: str


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, whether or not Content-Length says so
    (a chunked upload is counted as it arrives, and reading stops at the limit)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await too_large(self.max_bytes)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except BodyTooLarge:
            await too_large(self.max_bytes)(scope, receive, send)


def too_large(limit: int) -> JSONResponse:
    return JSONResponse({"error": f"request body over the {limit // 1024} KiB limit"}, status_code=413)


def error(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def parse_pixels(payload: Any) -> tuple[np.ndarray, bool]:
    """Validate a JSON pixels request by hand: the messages are for people, not schema paths."""
    if not isinstance(payload, dict) or "pixels" not in payload:
        raise error(422, 'expected a JSON object {"pixels": 28x28 numbers in [0, 1]}')
    rows = payload["pixels"]
    if (not isinstance(rows, list) or len(rows) != SIZE
            or not all(isinstance(r, list) and len(r) == SIZE for r in rows)):
        raise error(422, f"pixels must be {SIZE} rows of {SIZE} numbers")
    values = [v for r in rows for v in r]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise error(422, "pixels must all be numbers")
    if not all(math.isfinite(v) for v in values):
        raise error(422, "pixels must be finite (no NaN or infinity)")
    field = np.asarray(values, dtype=np.float64).reshape(SIZE, SIZE)
    if field.min() < 0 or field.max() > 1:
        raise error(422, "pixels must be in [0, 1] (white ink = 1 on black = 0)")
    flag = payload.get("preprocess", False)
    if not isinstance(flag, bool):
        raise error(422, "preprocess must be true or false")
    return field.astype(np.float32), flag


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)


# the OpenAPI description of /api/predict's body and errors (the body is read by hand, not by FastAPI)
BODY_DOCS = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary", "description": "PNG, JPEG, BMP, GIF or TIFF"}}}},
        "application/json": {"schema": PixelsRequest.model_json_schema()},
    },
}
ERRORS_DOCS = {code: {"model": ErrorResponse, "description": text} for code, text in (
    (400, "malformed JSON"), (413, "body over the size limit"), (415, "neither multipart nor JSON"),
    (422, "not an image, blank, wrong shape or out-of-range values"),
    (503, "the inference worker holding the request died (it is replaced; retry)"))}


def checkpoint_name(meta: dict) -> str | None:
    """The checkpoint's file name: an answer never discloses where on the server it lives."""
    return Path(meta["checkpoint"]).name if meta.get("checkpoint") else None


def model_answer(meta: dict, pool: InferencePool | None, onnx: bytes | None) -> dict:
    """What GET /api/model says about the served model."""
    return {"name": meta.get("model"), "parameters": meta.get("params"), "test_acc": meta.get("test_acc"),
            "preset": meta.get("preset"), "checkpoint": checkpoint_name(meta),
            "backend": "onnx" if onnx is not None or (pool is not None and pool.onnx is not None) else "torch",
            "workers": len(pool.pids()) if pool is not None else 1}


def response(status: int, payload: bytes) -> Response:
    """The engine's ``(status, payload)`` as the HTTP answer."""
    if status == 0:
        return Response(payload, media_type="application/json")
    if status == 1:
        raise error(422, payload.decode(errors="replace"))
    # an unexpected error: its text may hold the server's paths; the server's log has it
    log.warning(f"inference failed: {payload.decode(errors='replace')}")
    raise error(500, "the model could not answer this request (the server's log says why)")


def create_app(model: nn.Module, meta: dict, *, max_body_bytes: int = MAX_BODY_BYTES,
               pool: InferencePool | None = None, onnx: bytes | None = None) -> FastAPI:
    """The app; inference runs in this process (in onnxruntime when ``onnx`` is given), or in
    ``pool``'s worker processes (the app then closes the pool when the server shuts down)."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        if pool is not None:
            pool.close()

    # /docs and /redoc from assets in the fastapi-offline package (Swagger UI 5, which renders
    # OpenAPI 3.1; swagger-ui-bundle's 4.15 cannot): nothing is fetched from another host
    app = FastAPIOffline(title="tinymnist", version=__version__, lifespan=lifespan,
                         description="Draw a digit; a compact CNN reads it. POST an image or 28x28 pixels to "
                         "/api/predict.")
    classify = Classifier(model, onnx) if pool is None else None
    page = resources.files("tinymnist.serving").joinpath("web/index.html").read_text(encoding="utf-8")
    info = model_answer(meta, pool, onnx)

    async def respond(message: tuple) -> Response:
        if pool is None:
            # inline, not in a thread pool: the work is ~2 ms of CPU that holds the GIL anyway,
            # and handing it to threads cost ~3 ms more per request under load (measured)
            status, payload = handle(classify, message)
        else:
            try:
                status, payload = await pool.run(message)
            except WorkerFailed as exc:
                raise error(503, str(exc)) from None
        return response(status, payload)

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/api/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/api/model")
    def model_info() -> dict:
        return info

    @app.post("/api/predict", response_model=PredictResponse, responses=ERRORS_DOCS,
              openapi_extra={"requestBody": BODY_DOCS})
    async def predict(request: Request) -> Response:
        """Read the number in an image: a multipart upload in the field ``file`` (its digits found and
        read left to right; ``?single=true`` reads the whole image as one digit), or one digit as
        JSON ``{"pixels": ...}``."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        single = request.query_params.get("single", "false").lower()
        if single not in ("true", "false", "1", "0"):
            raise error(422, "single must be true or false")
        single = single in ("true", "1")
        if kind == "multipart/form-data":
            try:
                form = await request.form(max_files=1, max_fields=4)
            except BodyTooLarge:
                raise
            except Exception:  # a malformed multipart body
                raise error(400, "malformed multipart body") from None
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise error(422, "multipart field 'file' with an image is missing")
            return await respond(("image", await upload.read(), single))
        if kind == "application/json":
            body = await request.body()
            try:
                payload = json.loads(body)
            except (ValueError, RecursionError):  # undecodable, invalid, or nested past the parser's depth
                raise error(400, "malformed JSON") from None
            return await respond(("pixels", *parse_pixels(payload)))
        raise error(415, "send multipart/form-data with an image in 'file', or application/json with 'pixels'")

    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    return app


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening.

    `serve` binds before its slow start-up (the ONNX export, the worker processes), so that a
    port already in use, or a host that does not resolve, is an OSError at once, which the CLI
    prints as one line; left to uvicorn, the same failure is a logged error and its own exit code.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restarts reuse the port
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's default backlog
    except BaseException:
        sock.close()
        raise
    return sock


def serve(model: nn.Module, meta: dict, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          workers: int = 1, backend: str = "auto", cache_dir: str | Path | None = None,
          sock: socket.socket | None = None, model_code: str | None = None) -> None:
    """Serve until Ctrl-C, on ``sock`` if given (from `listening_socket`), else on ``host:port``.
    ``model_code``: the reference a user's checkpoint loads with, in each worker process too."""
    import uvicorn

    sock = sock or listening_socket(host, port)
    try:
        bound_port = sock.getsockname()[1]  # differs from `port` when that is 0 (any free port)
        log.info(f"serving {meta['model']} from {meta.get('checkpoint', 'memory')} at http://{host}:{bound_port}/ "
            "(API docs at /docs; Ctrl-C to stop)")
        one_thread()  # single images: threads would only contend with the server's own
        onnx = onnx_backend(model, meta, backend, cache_dir or default_cache_dir() / "onnx")
        log.info(f"inference: {'onnxruntime' if onnx is not None else 'PyTorch'}, "
            + (f"{workers} worker processes" if workers > 1 else "in the HTTP process"))
        # one HTTP process; with --workers N the decoding and inference run in N worker processes
        pool = InferencePool(meta["checkpoint"], workers, onnx=onnx, model=model_code) if workers > 1 else None
        try:
            config = uvicorn.Config(create_app(model, meta, pool=pool, onnx=onnx), log_level=log_level,
                                    timeout_keep_alive=5, limit_concurrency=256)
            uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:  # Ctrl-C: uvicorn has already shut down cleanly
            pass
        finally:
            if pool is not None:
                pool.close()
    finally:
        sock.close()
