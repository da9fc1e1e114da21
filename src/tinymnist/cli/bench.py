"""`tinymnist bench speed|accuracy|infer|load`: the benchmarks, printed as tables or JSON."""

from __future__ import annotations

import json
from pathlib import Path

from ..bench.handwriting import across, read_benchmark, score
from ..bench.inference import bench_inference
from ..bench.load import bench_load
from ..bench.training import bench_speed
from ..config import preset_config
from ..data.handwriting import CONDITIONS, HALVES, FontError
from ..device import resolve_device
from ..models import create_model, is_reference
from ..models.checkpoint import load_checkpoint
from ..fileio import atomic_write, os_errors_as
from .common import CLIError, Parser, checkpoint_path, emit_json, parents


def serve_args(p) -> None:
    """How `serve` runs the model: shared by `serve` and `bench load`."""
    p.add_argument("--workers", type=int, default=1,
                   help="inference processes behind the one HTTP process; 1 (default) infers in the HTTP process")
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto",
                   help="auto (default): onnxruntime when the export extra is installed, else PyTorch; the ONNX "
                   "export is made once per model and cached under $TINYMNIST_CACHE (default ~/.cache/tinymnist)/onnx")


def register(verbs) -> None:
    p = verbs.add_parser("bench", help="speed and inference benchmarks",
                         description="speed: train presets over seeds, report accuracy mean ± std, median "
                         "time, images/s and FLOP/s against the matmul peak. infer: inference throughput and latency.")
    kinds = p.add_subparsers(dest="bench_command", metavar="KIND", required=True, parser_class=Parser)
    b = kinds.add_parser("speed", help="time to accuracy over seeds", parents=parents("device", "data_dir"),
                         description="Train each preset once per seed (0..N-1) and report the figures.")
    b.add_argument("--presets", default="speedrun", help="comma-separated presets (default: speedrun)")
    b.set_defaults(func=cmd_bench_training, print_table=print_speed_table, quiet_loggers=("tinymnist.training",),
                   upper_limits={"seeds": 1000})
    a = kinds.add_parser("accuracy", help="final accuracy of a model's preset over seeds",
                         parents=parents("device", "data_dir"),
                         description="Train the preset named like the model once per seed (0..N-1): "
                         "per-seed final test accuracy, mean ± std, min, time per run, parameters.")
    a.add_argument("--model", required=True, help="a model with a preset of the same name (cnn8k), or any model "
                   "with --preset (yours: path/to/file.py:NAME)")
    a.add_argument("--preset", help="the recipe to train --model with (default: the preset named like the model)")
    a.add_argument("--max-params", type=int, help="refuse a model with more parameters, before the first step")
    a.add_argument("--tta", action="store_true", help="also each final model's accuracy with test-time "
                   "augmentation, in a column of its own (the plain accuracy stays the headline)")
    a.set_defaults(func=cmd_bench_training, print_table=print_seed_table, quiet_loggers=("tinymnist.training",),
                   upper_limits={"seeds": 1000})
    for b in (b, a):
        b.add_argument("--seeds", type=int, default=5, help="number of seeds, 0..N-1 (default 5)")
        b.add_argument("--dry-run", action="store_true", help="three steps per run: checks the benchmark itself")
        # on a GPU these small nets can run faster in fp32 than under bf16 autocast (docs/benchmarks.md)
        b.add_argument("--amp", choices=["auto", "off", "bf16"],
                       help="autocast for every run: auto (bf16 on CUDA), off or bf16 (default: the preset's)")
    b = kinds.add_parser("infer", help="inference throughput and single-image latency", parents=parents("device_cpu"),
                         description="Batched images/s and single-image latency (p50, p99), in-process.")
    b.add_argument("--model", default="cnn20k", help="model to time (default cnn20k; yours: path/to/file.py:NAME); "
                   "with --checkpoint, the code of a checkpoint of your own")
    b.add_argument("--checkpoint", help="time this saved model instead")
    b.add_argument("--batch-size", type=int, default=256)
    b.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="torch (eager, channels-last) or onnx (exported, run by onnxruntime; needs the export extra)")
    b.set_defaults(func=cmd_bench_inference, upper_limits={"batch_size": 100_000})
    b = kinds.add_parser("load", help="load test of the web API on loopback",
                         parents=parents("checkpoint", "data_dir", "model_code"),
                         description="Start `tinymnist serve` on a free loopback port and POST real digit "
                         "images from concurrent clients: requests/s, latency p50/p99, errors.")
    b.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    b.add_argument("--requests", type=int, default=2000, help="requests in all (default 2000)")
    serve_args(b)
    b.add_argument("--max-seconds", type=float, default=120.0, help="stop after this long (default 120)")
    b.set_defaults(func=cmd_bench_load, upper_limits={"clients": 1000, "requests": 10_000_000, "workers": 64,
                                                      "max_seconds": 86_400})
    b = kinds.add_parser("handwriting", help="accuracy on handwriting that is not MNIST's",
                         parents=parents("model_code", "device_cpu"),
                         description="Render every digit in the handwriting fonts Debian packages carry, under "
                         "the conditions of people's images (pen, size, slant, paper, light, JPEG, polarity, "
                         "alpha), preprocess each as `predict` does, and report accuracy per font half, font, "
                         "condition and digit. The held-out half is for reporting; choose on the dev half.")
    b.add_argument("--checkpoint", action="append", help="saved model (default: the newest under runs/); "
                   "give it several times (one per seed) for mean ± std: the images are rendered and read once")
    b.add_argument("--half", choices=["all", *HALVES], default="all", help="which fonts (default all)")
    b.add_argument("--seed", type=int, default=0, help="the rendering seed (default 0)")
    b.add_argument("--repeats", type=int, default=2, help="images per digit, font and condition (default 2)")
    b.add_argument("--fonts", help="only these fonts, comma-separated (default: every font of --half)")
    b.add_argument("--numbers", type=int, default=2,
                   help="numbers of 2 to 6 digits per font and condition, read whole (default 2; 0: none)")
    b.add_argument("--single", action="store_true",
                   help="read each image as one digit, as `predict --single` does (no numbers)")
    b.add_argument("--mistakes", help="write a grid of the mistakes (what the model saw) to this PNG")
    b.set_defaults(func=cmd_bench_handwriting, upper_limits={"repeats": 100, "seed": 2**32 - 1, "numbers": 100})
    for b in kinds.choices.values():
        b.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        b.add_argument("--out", help="also write the JSON report to this file")
        b.add_argument("--quiet", action="store_true")


def finish(args, report: dict, print_table) -> int:
    """The report: as a table, or as one JSON object; and to --out as JSON either way."""
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.out, json.dumps(report, indent=2, default=str) + "\n")
    if args.json:
        emit_json(report)
    else:
        print_table(report)
    return 0


def cmd_bench_load(args) -> int:
    report = bench_load(args.checkpoint, args.clients, args.requests, args.workers, args.backend,
                        args.max_seconds, args.data_dir, model=args.model)
    return finish(args, report, print_load)


def cmd_bench_handwriting(args) -> int:
    if args.repeats < 1 or args.seed < 0 or args.numbers < 0:
        raise CLIError("--repeats must be at least 1, --seed and --numbers at least 0")
    paths = [Path(c) for c in args.checkpoint] if args.checkpoint else [checkpoint_path(args)]
    models = [load_checkpoint(c, resolve_device(args.device), model=args.model)[0] for c in paths]
    halves = HALVES if args.half == "all" else (args.half,)
    fonts = tuple(f for f in args.fonts.split(",") if f) if args.fonts else None
    try:
        digits, number_set = read_benchmark(args.seed, halves, repeats=args.repeats, fonts=fonts,
                                            numbers=args.numbers, single=args.single)
    except FontError as exc:
        raise CLIError(str(exc)) from None
    setup = {"seed": args.seed, "repeats": args.repeats, "conditions": list(CONDITIONS), "single": args.single,
             "numbers_per_cell": args.numbers if number_set is not None else 0}
    reports = []
    for k, (path, model) in enumerate(zip(paths, models)):
        png = args.mistakes
        if png and len(paths) > 1:
            png = str(Path(png).with_name(f"{Path(png).stem}-{k}{Path(png).suffix}"))
        with os_errors_as(CLIError, f"cannot write {png}"):
            reports.append({"checkpoint": str(path), **setup, **score(model, digits, number_set, png)})
    if len(reports) == 1:
        return finish(args, reports[0], print_handwriting)
    return finish(args, {**setup, "checkpoints": reports, "summary": across(reports)}, print_handwriting_seeds)


def cmd_bench_training(args) -> int:
    # `accuracy` is the speed benchmark of one model's preset, printed per seed
    overrides = {"dry_run": True} if args.dry_run else {}
    if args.bench_command == "accuracy":
        if is_reference(args.model) and not args.preset:
            raise CLIError(f"--model {args.model} needs --preset: a model of your own has no preset of its name")
        presets = [args.preset or args.model]
        if args.preset:
            overrides["model"] = args.model
        if args.max_params is not None:
            overrides["max_params"] = args.max_params
    else:
        presets = [p for p in args.presets.split(",") if p]
    for name in presets:
        preset_config(name, **overrides)  # the library's own "unknown preset" error, and bad settings
    if args.seeds < 1:
        raise CLIError("--seeds must be at least 1")
    if args.amp:
        overrides["amp"] = args.amp
    if args.bench_command == "accuracy" and args.tta:  # only `accuracy` has --tta
        overrides["tta"] = True
    report = bench_speed(presets, list(range(args.seeds)), args.device, args.data_dir, **overrides)
    return finish(args, report, args.print_table)


def cmd_bench_inference(args) -> int:
    # speed does not depend on the weights, so a fresh model times the same as a trained one
    if args.batch_size < 1:
        raise CLIError("--batch-size must be at least 1")
    code = args.model if is_reference(args.model) else None
    model = load_checkpoint(args.checkpoint, model=code)[0] if args.checkpoint else create_model(args.model)
    if args.backend == "onnx" and args.device not in ("cpu", "auto"):
        raise CLIError("--backend onnx is timed on the CPU; use --device cpu")
    report = bench_inference(model, "cpu" if args.backend == "onnx" else args.device, args.batch_size,
                             backend=args.backend)
    report["model"] = str(args.checkpoint) if args.checkpoint else args.model
    return finish(args, report, print_inference)


def print_inference(report: dict) -> None:
    print(f"{report['model']} ({report['backend']}) on {report['device']} ({report['machine']['cpu']}): "
          f"{report['batched_images_per_second']:,.0f} images/s in batches of {report['batch_size']}; "
          f"one image p50 {report['single_latency_ms_p50']:.3f} ms, p99 {report['single_latency_ms_p99']:.3f} ms")


def print_handwriting(report: dict) -> None:
    halves = report["halves"]
    print(f"{report['checkpoint']}: handwriting benchmark, seed {report['seed']}, {report['repeats']} image(s) "
          f"per digit, font and condition; {report['refused']} refused by preprocessing")
    names = list(halves)
    print(f"{'condition':<26}" + "".join(f"{h:>12}" for h in names))
    for condition in report["conditions"]:
        print(f"{condition:<26}" + "".join(f"{halves[h]['per_condition'][condition]['accuracy']:>11.2f}%"
                                          for h in names))
    print(f"{'all':<26}" + "".join(f"{halves[h]['accuracy']:>11.2f}%" for h in names))
    print("per digit: " + "; ".join(f"{h} " + " ".join(f"{d}:{c['accuracy']:.1f}" for d, c in
                                                        halves[h]["per_digit"].items()) for h in names))
    for half, n in report.get("numbers", {}).items():
        print(f"numbers ({half}): {n['accuracy']:.2f}% of {n['n']} read exactly, {n['digit_accuracy']:.2f}% "
              f"of their {n['digits']} digits")
    fonts = sorted(report["per_font"].items(), key=lambda kv: kv[1]["accuracy"])
    print("weakest fonts: " + ", ".join(f"{name} ({f['half']}) {f['accuracy']:.1f}%" for name, f in fonts[:5]))
    print(f"overall: {report['overall']['accuracy']:.2f}% of {report['overall']['n']:,} images"
          + (f"; mistakes: {report['mistakes_png']}" if report.get("mistakes_png") else ""))


def print_handwriting_seeds(report: dict) -> None:
    for r in report["checkpoints"]:
        print_handwriting(r)
        print()
    print(f"over {len(report['checkpoints'])} checkpoints (mean ± std):")
    for key, s in report["summary"].items():
        print(f"  {key:<26} {s['mean']:.2f} ± {s['std']:.2f}%   ("
              + " / ".join(f"{v:.2f}" for v in s["values"]) + ")")


def print_load(report: dict) -> None:
    print(f"{report['requests_done']:,} requests from {report['clients']} clients to a server with "
          f"{report['server_workers']} inference process(es) ({report['server_backend']}) on loopback, "
          f"{report['machine']['cpu']}: {report['errors']} errors, "
          f"{report['requests_per_second']:.0f} requests/s, latency p50 {report['latency_ms_p50']:.1f} ms, "
          f"p99 {report['latency_ms_p99']:.1f} ms, max {report['latency_ms_max']:.1f} ms; labels right "
          f"{report['label_accuracy']:.2f}%")


def print_seed_table(report: dict) -> None:
    r, m = report["results"][0], report["machine"]
    tta = r.get("test_acc_tta")
    print(f"{'seed':>4} {'final test acc':>15} {'train s':>8}" + (f" {'with TTA':>9}" if tta else ""))
    for i, (seed, acc, secs) in enumerate(zip(r["seeds"], r["test_acc"], r["train_seconds"])):
        print(f"{seed:>4} {acc:>14.2f}% {secs:>8.1f}" + (f" {tta[i]:>8.2f}%" if tta else ""))
    print(f"{r['preset']} ({r['model']}, {r['params']:,} parameters, {r['epochs']:g} epochs): "
          f"{r['test_acc_mean']:.2f} ± {r['test_acc_std']:.2f}% over {len(r['seeds'])} seeds, "
          f"min {r['test_acc_min']:.2f}%, median {r['train_seconds_median']:.1f} s per run "
          f"on {m.get('gpu') or m['cpu']}")
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
