"""The `tinymnist` command: the parser made of each verb group's own, and the exit codes.

Exit codes: 0 success, 1 the run finished but missed its target (or a run failed), 2 bad
input (a one-line error, never a traceback), 130 interrupted.
"""

from __future__ import annotations

import sys

from .. import __version__
from ..config import ConfigError
from ..data import DataError
from ..inference.export import ExportError
from ..models import ModelError, UnknownModelError
from ..models.checkpoint import CheckpointError
from ..training import Interrupted, OutputDirError, TrainingError
from ..training.distributed import RankStopped, context_from_env, exit_rank
from . import bench, evaluate, info, sweep, train, tune, use
from .common import (EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_MISSED_TARGET, CLIError, Parser, check_upper_limits, say,
                     setup_logging)

VERB_GROUPS = (train, evaluate, info, bench, use, sweep, tune)  # each registers its verbs
BAD_INPUT = (CLIError, ConfigError, DataError, CheckpointError, UnknownModelError, ModelError, OutputDirError,
             ExportError)


def build_parser() -> Parser:
    parser = Parser(prog="tinymnist", description="Train compact MNIST CNNs (<20k parameters) fast, "
                    "then evaluate and use them.")
    parser.add_argument("--version", action="version", version=f"tinymnist {__version__}")
    verbs = parser.add_subparsers(dest="command", metavar="VERB", parser_class=Parser)
    for group in VERB_GROUPS:
        group.register(verbs)
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = None
    ctx = context_from_env()
    try:
        args = parser.parse_args(glue_option_values(sys.argv[1:] if argv is None else argv))
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_BAD_INPUT
        setup_logging(args, rank=ctx.rank)
        check_upper_limits(args)
        code = args.func(args)
    except BAD_INPUT as exc:
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
    if getattr(args, "func", None) is train.cmd_train and ctx.enabled:
        exit_rank(code)  # a torchrun rank ends here, after a good run or an error: see why there
    return code


if __name__ == "__main__":
    sys.exit(main())
