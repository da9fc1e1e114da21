"""`tinymnist predict`, `export` and `serve`: put a saved model to use."""

from __future__ import annotations

import logging
from pathlib import Path

from ..data import load_mnist
from ..device import resolve_device
from ..fileio import os_errors_as
from ..inference.export import ExportError, export_onnx, export_pt2, onnx_runner, pt2_runner, verify_export
from ..inference.predict import predict_files
from ..models.checkpoint import load_checkpoint, resolve_checkpoint
from .bench import serve_args
from .common import EXIT_BAD_INPUT, CLIError, checkpoint_path, emit_json, parents, say

log = logging.getLogger("tinymnist.cli")


def register(verbs) -> None:
    p = verbs.add_parser("predict", help="read digits in your own images",
                         parents=parents("checkpoint", "device_cpu", "json", "model_code"),
                         description="Read the number in each image (PNG, JPEG, BMP, GIF, TIFF; any size, colour "
                         "or grey, either polarity): its digits are found and read left to right, each made "
                         "MNIST-like first (cropped, scaled to 20 px, centred by mass in 28x28). Exit 2 if any "
                         "image could not be read.")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--single", action="store_true",
                   help="read each whole image as one digit (no search for several digits)")
    p.add_argument("--show-preprocessed", metavar="DIR", help="write the 28x28 image the model saw, per input, as PNG")
    p.set_defaults(func=cmd_predict)

    p = verbs.add_parser("export", help="export a saved model to ONNX or torch.export",
                         parents=parents("data_dir", "json", "model_code"),
                         description="Write the model as one .onnx file (opset 18, dynamic batch, input (N, 1, 28, 28) "
                         "float32 normalized, output logits; metadata holds normalization and labels) or a "
                         "torch.export .pt2 program, then check it against PyTorch on the whole test set.")
    p.add_argument("checkpoint", help="a .safetensors model or a run directory")
    p.add_argument("--format", choices=["onnx", "pt2"], default="onnx")
    p.add_argument("-o", "--output", help="output file (default: beside the checkpoint)")
    p.add_argument("--no-verify", action="store_true", help="skip the parity and accuracy check")
    p.set_defaults(func=cmd_export)

    p = verbs.add_parser("serve", help="the draw-a-digit web page and JSON API",
                         parents=parents("checkpoint", "model_code"),
                         description="Serve a page to draw digits on and POST /api/predict (image upload in 'file' "
                         "or JSON pixels), GET /api/health, GET /api/model; OpenAPI docs at /docs.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve_args(p)
    # the server's own lines (the address, first) are always printed: with --port 0 they name the port
    p.add_argument("--quiet", dest="quiet_server", action="store_true", help="the web server logs warnings only")
    p.set_defaults(func=cmd_serve, log_to="stderr", upper_limits={"workers": 64})


def cmd_predict(args) -> int:
    checkpoint = checkpoint_path(args)
    model, meta = load_checkpoint(checkpoint, resolve_device(args.device), model=args.model)
    # unreadable images are per-file errors inside; an OSError here is the preview folder
    with os_errors_as(CLIError, f"cannot write the previews to {args.show_preprocessed}"):
        predictions, errors = predict_files(model, args.images, args.show_preprocessed, single=args.single)
    if args.json:
        emit_json({"checkpoint": str(checkpoint), "model": meta["model"],
                   "predictions": [p.to_dict() for p in predictions], "errors": [e.to_dict() for e in errors]})
    else:
        for p in predictions:
            if len(p.digits) == 1:
                detail = ", ".join(f"{d}: {100 * q:.1f}%" for d, q in p.top(3))
            else:  # each digit with its own confidence
                detail = ", ".join(f"{d.label}: {100 * d.probabilities[d.label]:.1f}%" for d in p.digits)
            print(f"{p.path}: {p.number}   ({detail})")
            if p.warning:
                say(f"tinymnist: warning: {p.path}: {p.warning}")
        for e in errors:
            say(f"tinymnist: error: {e.path}: {e.error}")
    return EXIT_BAD_INPUT if errors else 0


def cmd_export(args) -> int:
    weights = resolve_checkpoint(args.checkpoint)
    model, meta = load_checkpoint(weights, model=args.model)
    out = Path(args.output) if args.output else weights.with_suffix(f".{args.format}")
    if args.format == "onnx":
        path, run = export_onnx(model, meta, out), onnx_runner
    else:
        path, run = export_pt2(model, meta, out), pt2_runner
    log.info(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    report = {"checkpoint": str(weights), "output": str(path), "format": args.format, "bytes": path.stat().st_size}
    if not args.no_verify:
        check = verify_export(run(path), model, load_mnist(args.data_dir, fetch=True))
        report["verification"] = check
        log.info(f"check on {check['test_images']:,} test images: max |logit difference| "
                 f"{check['max_abs_logit_diff']:.2e} (tolerance {check['tolerance']:g}), accuracy "
                 f"{check['test_acc_export']:.2f}% exported vs {check['test_acc_torch']:.2f}% PyTorch: "
                 f"{'OK' if check['ok'] else 'MISMATCH'}")
        if not check["ok"]:
            if args.json:
                emit_json(report)
            raise ExportError(f"{path} does not match the checkpoint (see the figures above)")
    if args.json:
        emit_json(report)
    return 0


def cmd_serve(args) -> int:
    try:
        from ..serving.app import listening_socket, serve
    except ImportError as exc:
        raise CLIError(f"serving needs the 'serve' extra ({exc.name} is missing): "
                       "pip install 'tinymnist[serve]'") from None

    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be in 0..65535, got {args.port}")
    if args.workers < 1:
        raise CLIError(f"--workers must be at least 1, got {args.workers}")
    checkpoint = checkpoint_path(args)
    model, meta = load_checkpoint(checkpoint, "cpu", model=args.model)
    meta["checkpoint"] = str(checkpoint)
    with os_errors_as(CLIError, f"cannot listen on {args.host}:{args.port}"):
        sock = listening_socket(args.host, args.port)
    serve(model, meta, args.host, args.port, log_level="warning" if args.quiet_server else "info",
          workers=args.workers, backend=args.backend, sock=sock, model_code=args.model)
    return 0
