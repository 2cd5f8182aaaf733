"""The ``deep-prl`` command.

Each subcommand group lives in its own module exposing ``register(subparsers)``; the handler it
sets as ``func`` receives the parsed arguments and returns an exit code. Errors the user can fix
(:class:`~napari_deep_prl.base.errors.DeepPRLError`) become one line on stderr and exit code 2; a
traceback appears only with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence

from napari_deep_prl import __version__
from napari_deep_prl.base.errors import DeepPRLError, InputWarning

#: Subcommand modules, in the order ``deep-prl --help`` lists them.
COMMAND_MODULES = (
    "demo",
    "simulate",
    "lesions",
    "project",
    "ratings",
    "review",
    "cv",
    "train",
    "score",
    "active",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deep-prl",
        description="Find paramagnetic rim lesions (PRLs) in MS MRI with Deep-PRL.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"napari_deep_prl.cli.{name}").register(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
    if issubclass(category, InputWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno, line), file=sys.stderr, end="")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        return int(args.func(args) or 0)
    except DeepPRLError as err:
        if args.debug:
            raise
        print(f"deep-prl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deep-prl {args.command}: interrupted", file=sys.stderr)
        return 130

