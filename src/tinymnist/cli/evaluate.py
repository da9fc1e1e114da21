"""`tinymnist eval` and `tinymnist report`: a saved model on the MNIST test set."""

from __future__ import annotations

from pathlib import Path

from ..data import load_mnist
from ..device import resolve_device
from ..fileio import os_errors_as
from ..inference.evaluate import evaluate
from ..models.checkpoint import load_checkpoint, resolve_checkpoint
from .common import CLIError, emit_json, parents


def register(verbs) -> None:
    p = verbs.add_parser("eval", help="evaluate a saved model on the test set",
                         parents=parents("device", "data_dir", "json", "model_code"),
                         description="Accuracy, per-class accuracy and confusion matrix of a checkpoint.")
    p.add_argument("checkpoint", help="a .safetensors model (its .json sidecar beside it) or a run directory")
    p.add_argument("--tta", action="store_true",
                   help="also the accuracy with test-time augmentation (the image and its 4 one-pixel shifts)")
    p.set_defaults(func=cmd_eval)

    p = verbs.add_parser("report", help="figures of a saved model's test-set errors",
                         parents=parents("data_dir", "json", "model_code"),
                         description="confusion.png, per_class.png and misclassified.png (the most confident "
                         "mistakes first) for a checkpoint on the MNIST test set.")
    p.add_argument("checkpoint", help="a .safetensors model or a run directory")
    p.add_argument("--out", help="directory for the figures (default: <checkpoint dir>/report)")
    p.set_defaults(func=cmd_report)


def cmd_eval(args) -> int:
    device = resolve_device(args.device)
    model, meta = load_checkpoint(args.checkpoint, device, model=args.model)
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


def cmd_report(args) -> int:
    from ..inference.report import write_report  # matplotlib only here

    weights = resolve_checkpoint(args.checkpoint)
    model, meta = load_checkpoint(weights, model=args.model)
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
