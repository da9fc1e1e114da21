"""What every verb shares: the one-line error, the JSON output, the shared flags (as argparse
parent parsers), and the console logging the library's ``logging`` calls go to."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

EXIT_MISSED_TARGET, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130


class CLIError(Exception):
    """Bad input: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + error; we print one line
        raise CLIError(f"{message} (see `{self.prog} --help`)")


def emit_json(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, indent=None, default=str) + "\n")


def say(line: str) -> None:
    """One line to stderr in one write: torchrun's ranks share the stream, and a print() of the
    text and then of its newline (two writes when unbuffered) lets another rank's line in between."""
    sys.stderr.write(line + "\n")


def _parent(*adders) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    for add in adders:
        add(parent)
    return parent


def parents(*names: str) -> list[argparse.ArgumentParser]:
    """The shared flags by name: json, device (default auto), device_cpu (default cpu), data_dir,
    checkpoint (--checkpoint, default the newest under runs/), model_code (--model for a user's checkpoint)."""
    return [PARENTS[name]() for name in names]


PARENTS = {
    "json": lambda: _parent(lambda p: p.add_argument("--json", action="store_true",
                                                     help="print one JSON object on stdout")),
    "device": lambda: _parent(lambda p: p.add_argument("--device", default="auto",
                                                       help="auto, cpu, cuda or mps (default auto)")),
    "device_cpu": lambda: _parent(lambda p: p.add_argument("--device", default="cpu",
                                                           help="auto, cpu, cuda or mps (default cpu)")),
    "data_dir": lambda: _parent(lambda p: p.add_argument(
        "--data-dir", help="MNIST cache directory (default: $TINYMNIST_DATA or ~/.cache/tinymnist)")),
    "checkpoint": lambda: _parent(lambda p: p.add_argument(
        "--checkpoint", help="saved model (default: the newest under runs/)")),
    "model_code": lambda: _parent(lambda p: p.add_argument(
        "--model", metavar="FILE.py:NAME", help="the code of a model of your own that the checkpoint was "
        "trained from (path/to/file.py:NAME or package.module:NAME); registered models need none")),
}


def check_upper_limits(args) -> None:
    """The numeric flags' upper bounds (``set_defaults(upper_limits={dest: most})``): a huge value
    (--seeds 10**20, --max-seconds inf) is one line before any work; each verb checks the lower
    bounds itself, with messages of its own."""
    for dest, most in getattr(args, "upper_limits", {}).items():
        value = getattr(args, dest, None)
        if value is not None and value > most:
            flag = "--" + dest.replace("_", "-")
            raise CLIError(f"{flag} must be at most {most:,}, got {value:g}")


def verb_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(words, parser) for ``parser`` and every verb under it, depth first: for the flag reference."""
    yield path, parser
    for action in parser._actions:  # argparse keeps subparsers here; there is no public accessor
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from verb_parsers(sub, path + (name,))


def checkpoint_path(args) -> Path:
    """--checkpoint, or the newest model saved under runs/."""
    from ..models.checkpoint import find_latest_checkpoint

    return Path(args.checkpoint) if args.checkpoint else find_latest_checkpoint("runs")


class ConsoleHandler(logging.Handler):
    """The library's log lines as plain text on the stream the verb reports on (looked up at
    each line, so that a redirected sys.stdout is honoured); warnings say so."""

    def __init__(self, stream_name: str):
        super().__init__()
        self.stream_name = stream_name

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            message = f"warning: {message}"
        stream = getattr(sys, self.stream_name)
        stream.write(message + "\n")
        stream.flush()


# libraries a verb may silence below WARNING (``set_defaults(quiet_loggers=...)``): the benchmarks
# report each run in one line of their own, not training's per-epoch lines
QUIETABLE = ("tinymnist.training",)


def setup_logging(args, rank: int = 0) -> None:
    """INFO to stdout (to stderr when stdout carries --json, or for verbs that log there);
    warnings only with --quiet, and on every torchrun rank but 0."""
    for name in QUIETABLE:
        quieted = name in getattr(args, "quiet_loggers", ())
        logging.getLogger(name).setLevel(logging.WARNING if quieted else logging.NOTSET)
    logger = logging.getLogger("tinymnist")
    for handler in [h for h in logger.handlers if isinstance(h, ConsoleHandler)]:
        logger.removeHandler(handler)
    stream = "stderr" if getattr(args, "json", False) or getattr(args, "log_to", "stdout") == "stderr" else "stdout"
    logger.addHandler(ConsoleHandler(stream))
    quiet = getattr(args, "quiet", False) or rank != 0
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
