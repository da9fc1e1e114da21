"""Export a saved model to ONNX (or a torch.export program) and check the export against PyTorch.

The exported graph takes what the model takes: float32 (N, 1, 28, 28), already normalized
with MNIST's mean and std, which the file's metadata carries along with the labels, so a
runtime in another language needs nothing else.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data import MNIST, MNIST_MEAN, MNIST_STD, normalize_array
from ..fileio import atomic_write
from ..models import layer_signature
from .evaluate import predict_logits

OPSET = 18  # pinned: a runtime that supports opset 18 (onnxruntime >= 1.14) runs the file
PARITY_TOLERANCE = 1e-4  # max |logit difference| between the runtime and eager PyTorch
FORMATS = ("onnx", "pt2")
log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The export failed or does not match the checkpoint."""


def describe(meta: dict) -> dict[str, str]:
    """What a consumer of the file needs to know, as string metadata."""
    return {
        "tinymnist.model": str(meta.get("model")),
        "tinymnist.parameters": str(meta.get("params")),
        "tinymnist.test_acc": str(meta.get("test_acc")),
        "input": "float32 (N, 1, 28, 28): white ink on black in [0, 1], then (x - mean) / std",
        "normalization": json.dumps({"mean": MNIST_MEAN, "std": MNIST_STD}),
        "output": "float32 (N, 10) logits; softmax gives probabilities",
        "labels": json.dumps([str(d) for d in range(10)]),
    }


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter prints progress and warns about absent optional packages (torchvision):
    keep both off stdout, which carries --json output."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def plain_copy(model: nn.Module) -> nn.Module:
    """A CPU, NCHW, eval-mode copy to trace: the caller's model keeps its device and layout."""
    return copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).eval()


def export_onnx(model: nn.Module, meta: dict, path: str | Path, opset: int = OPSET) -> Path:
    """One self-contained .onnx file with a dynamic batch axis; written atomically."""
    return _write(Path(path), onnx_bytes(model, meta, opset))


def onnx_bytes(model: nn.Module, meta: dict, opset: int = OPSET) -> bytes:
    """The serialized ONNX model (the contents of what ``export_onnx`` writes)."""
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the 'export' extra: pip install 'tinymnist[export]'") from None
    model = plain_copy(model)
    example = torch.zeros(2, 1, 28, 28)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    try:
        with _quiet_exporter():
            program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset,
                                        input_names=["images"], output_names=["logits"],
                                        dynamic_shapes=({0: batch},), optimize=True, external_data=False)
        proto = program.model_proto
        for key, value in describe(meta).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.doc_string = f"tinymnist {meta.get('model')}: MNIST digit classifier"
        onnx.checker.check_model(proto)
        return proto.SerializeToString()
    except Exception as exc:  # the exporter raises many types; report one line
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {exc}") from None


def weights_digest(model: nn.Module) -> str:
    """sha256 of the model's layers, tensors, names and shapes: the same model gives the same key."""
    h = hashlib.sha256(layer_signature(model).encode())
    for name, tensor in model.state_dict().items():
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cached_onnx(model: nn.Module, meta: dict, cache_dir: str | Path, opset: int = OPSET) -> bytes:
    """``onnx_bytes``, exported once per set of weights (the export takes ~5 s; `serve` needs it
    at every start) and kept in ``cache_dir`` under the weights' digest, torch's version and
    the opset. A cache that cannot be written only costs the export next time."""
    key = f"{weights_digest(model)[:32]}-torch{torch.__version__}-opset{opset}.onnx"
    path = Path(cache_dir) / key
    try:
        return path.read_bytes()
    except OSError:
        pass
    log.info(f"exporting the model to ONNX (once per model; kept in {path.parent})")
    with contextlib.redirect_stderr(io.StringIO()):  # the exporter's progress lines: noise here
        payload = onnx_bytes(model, meta, opset)
    try:
        _write(path, payload)
    except ExportError as exc:
        log.warning(f"ONNX cache not written ({exc})")
    return payload


def export_pt2(model: nn.Module, meta: dict, path: str | Path) -> Path:
    """A torch.export program (``torch.export.load`` reads it back), dynamic batch axis."""
    path = Path(path)
    model = plain_copy(model)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    buffer = io.BytesIO()
    try:
        with _quiet_exporter():
            program = torch.export.export(model, (torch.zeros(2, 1, 28, 28),), dynamic_shapes=({0: batch},))
            torch.export.save(program, buffer, extra_files={"tinymnist.json": json.dumps(describe(meta))})
    except Exception as exc:
        raise ExportError(f"torch.export failed: {type(exc).__name__}: {exc}") from None
    return _write(path, buffer.getvalue())


def _write(path: Path, payload: bytes) -> Path:
    """Atomically: an interrupted or failed write never leaves a file that looks whole."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, payload)
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None


def onnx_runner(source: str | Path | bytes, threads: int | None = None):
    """A function images -> logits (numpy) running an ONNX file (or its bytes) in onnxruntime
    on the CPU, with ``threads`` intra-op threads (default: onnxruntime's choice)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("running an ONNX model needs onnxruntime: pip install 'tinymnist[export]'") from None
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    model = source if isinstance(source, bytes) else str(source)
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def pt2_runner(path: str | Path):
    program = torch.export.load(str(path)).module()
    return lambda x: program(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).detach().numpy()


def logit_parity(run, model: nn.Module, images_u8: torch.Tensor, labels: torch.Tensor | None = None,
                 batch_size: int = 2000) -> dict:
    """Run an exported model (``run``: normalized numpy images in, logits out) and eager PyTorch
    (``model``, on the CPU) on the same uint8 images (N, 28, 28), normalized as a consumer of the
    file would (numpy): the largest |logit difference|, and with ``labels`` both counts of correct
    answers. The one parity check of export, serve and bench."""
    max_diff, correct_export, correct_torch = 0.0, 0, 0
    images_u8 = images_u8.cpu()
    for start in range(0, len(images_u8), batch_size):
        batch = images_u8[start:start + batch_size]
        expected = predict_logits(model, batch, batch_size).numpy()
        got = run(normalize_array(batch.numpy()))
        max_diff = max(max_diff, float(np.abs(got - expected).max()))
        if labels is not None:
            y = labels[start:start + batch_size].cpu().numpy()
            correct_export += int((got.argmax(1) == y).sum())
            correct_torch += int((expected.argmax(1) == y).sum())
    return {"max_abs_logit_diff": max_diff, "correct_export": correct_export, "correct_torch": correct_torch}


def verify_export(run, model: nn.Module, data: MNIST, batch_size: int = 2000) -> dict:
    """Compare ``run`` (numpy in, logits out) with eager PyTorch on the whole test set:
    the largest logit difference and both accuracies, which must be equal."""
    parity = logit_parity(run, model.to("cpu"), data.test_images, data.test_labels, batch_size)
    total = len(data.test_images)
    report = {"max_abs_logit_diff": parity["max_abs_logit_diff"], "tolerance": PARITY_TOLERANCE,
              "test_acc_export": 100.0 * parity["correct_export"] / total,
              "test_acc_torch": 100.0 * parity["correct_torch"] / total, "test_images": total}
    report["ok"] = report["max_abs_logit_diff"] <= PARITY_TOLERANCE and \
        parity["correct_export"] == parity["correct_torch"]
    return report
