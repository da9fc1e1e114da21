"""The command line: one module per verb group, each registering its own subparser; parsing
and printing only, the work is in the library."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
