"""The draw-a-digit web page and its JSON API (FastAPI, served by uvicorn).

Every answer is JSON; every bad request is a 4xx with ``{"error": "..."}``, never a 500.
Uploads go through the same ``preprocess`` as `tinymnist predict`, so the page, the CLI and
the tests see a digit the same way.
"""

from __future__ import annotations

import copy
import json
import math
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
import torch
from torch import nn

from .predict import classify_fields
from .preprocess import SIZE, ImageError, load_image, preprocess

MAX_BODY_BYTES = 2 * 1024 * 1024  # a 280x280 canvas PNG is ~10 kB; a phone photo fits too


class PixelsRequest(BaseModel):
    """An image already in MNIST's form: 28 rows of 28 values in [0, 1], white ink (1) on black (0)."""
    pixels: list[list[float]] = Field(..., description="28x28, row-major, values in [0, 1]")
    preprocess: bool = Field(False, description="centre and scale the ink first, as for an uploaded image")


class PredictResponse(BaseModel):
    label: int = Field(..., ge=0, le=9)
    probabilities: list[float] = Field(..., min_length=10, max_length=10)
    preprocessed: list[list[float]] = Field(..., description="the 28x28 image the model saw, [0, 1]")


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


def create_app(model: nn.Module, meta: dict, *, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    from . import __version__

    app = FastAPI(title="tinymnist", version=__version__,
                  description="Draw a digit; a compact CNN reads it. POST an image or 28x28 pixels to "
                  "/api/predict.")
    # a copy in the layout of predict's inputs: the caller's model is left as it was
    model = copy.deepcopy(model).to(memory_format=torch.channels_last).eval()
    classify_fields(model, np.zeros((1, SIZE, SIZE), np.float32))  # warm-up: the first call sets up kernels
    page = resources.files("tinymnist").joinpath("web/index.html").read_text(encoding="utf-8")
    info = {"name": meta.get("model"), "parameters": meta.get("params"), "test_acc": meta.get("test_acc"),
            "preset": meta.get("preset"), "checkpoint": meta.get("checkpoint")}

    def answer(field: np.ndarray) -> dict:
        probs = classify_fields(model, field[None])[0]
        return {"label": int(probs.argmax()), "probabilities": [round(float(p), 6) for p in probs],
                "preprocessed": np.round(field, 3).tolist()}

    def from_image(data: bytes) -> dict:
        try:
            return answer(preprocess(load_image(data)))
        except ImageError as exc:
            raise error(422, str(exc)) from None

    def from_pixels(field: np.ndarray, do_preprocess: bool) -> dict:
        if field.max() <= 0:
            raise error(422, "no ink found: the canvas is empty")
        if do_preprocess:
            try:
                field = preprocess(field)
            except ImageError as exc:
                raise error(422, str(exc)) from None
        return answer(field)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/api/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/api/model")
    def model_info() -> dict:
        return info

    body_docs = {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                "file": {"type": "string", "format": "binary", "description": "PNG, JPEG, BMP, GIF or TIFF"}}}},
            "application/json": {"schema": PixelsRequest.model_json_schema()},
        },
    }
    errors_docs = {code: {"model": ErrorResponse, "description": text} for code, text in (
        (400, "malformed JSON"), (413, "body over the size limit"), (415, "neither multipart nor JSON"),
        (422, "not an image, blank, wrong shape or out-of-range values"))}

    @app.post("/api/predict", response_model=PredictResponse, responses=errors_docs,
              openapi_extra={"requestBody": body_docs})
    async def predict(request: Request) -> dict:
        """Classify one digit: a multipart upload in the field ``file``, or JSON ``{"pixels": ...}``."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
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
            # inline, not in a thread pool: the work is ~2 ms of CPU that holds the GIL anyway, and
            # handing it to threads cost ~3 ms more per request under load (measured)
            return from_image(await upload.read())
        if kind == "application/json":
            body = await request.body()
            try:
                payload = json.loads(body)
            except (ValueError, RecursionError):  # undecodable, invalid, or nested past the parser's depth
                raise error(400, "malformed JSON") from None
            return from_pixels(*parse_pixels(payload))
        raise error(415, "send multipart/form-data with an image in 'file', or application/json with 'pixels'")

    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    return app


CHECKPOINT_ENV = "TINYMNIST_SERVE_CHECKPOINT"


def app_from_env() -> FastAPI:
    """The app for one of several uvicorn worker processes: each loads the model itself."""
    import os

    from .checkpoint import load_checkpoint

    import torch

    torch.set_num_threads(1)
    checkpoint = os.environ[CHECKPOINT_ENV]
    model, meta = load_checkpoint(checkpoint, "cpu")
    meta["checkpoint"] = checkpoint
    return create_app(model, meta)


def serve(model: nn.Module, meta: dict, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          workers: int = 1) -> None:
    import os

    import torch
    import uvicorn

    options = dict(host=host, port=port, log_level=log_level, timeout_keep_alive=5, limit_concurrency=256)
    if workers > 1:  # processes, not threads: preprocessing and inference hold the GIL
        os.environ[CHECKPOINT_ENV] = str(meta["checkpoint"])
        uvicorn.run("tinymnist.serve:app_from_env", factory=True, workers=workers, **options)
        return
    torch.set_num_threads(1)  # single images: threads would only contend with the server's own
    uvicorn.run(create_app(model, meta), **options)
