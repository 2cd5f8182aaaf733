"""The ``deep-prl`` command.

Each subcommand lives in the module of its name exposing ``register(parser)``, which fills the
subcommand's parser; the handler it sets as ``func`` receives the parsed arguments and returns
an exit code. Only the module of the command being run is imported (``--help`` and
``--version`` import none), so a quick command such as ``deep-prl ratings add`` never pays for
torch or scikit-learn. Errors the user can fix
(:class:`~napari_deep_prl.base.errors.DeepPRLError`) become one line on stderr and exit code 2; a
traceback appears only with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Collection, Sequence
from typing import TextIO

from napari_deep_prl import __version__
from napari_deep_prl.base.errors import DeepPRLError, InputWarning

#: Each subcommand with the line ``deep-prl --help`` shows for it, in that order.
COMMANDS = {
    "demo": "simulate, list lesions, draw patches, train briefly and score (built-in data)",
    "simulate": "write a synthetic cohort (research layout, or a clinical site's scans with --site clinical)",
    "lesions": "list lesions (centre, volume, confluent flag) as a table",
    "project": "create a rating project",
    "ratings": "add, import, compare and export ratings",
    "review": "rate lesions (or adjudicate) in napari",
    "cv": "nested cross-validation with the paper's per-fold report",
    "train": "train Deep-PRL on a cohort with ground truth; save a checkpoint",
    "score": "score lesions with trained Deep-PRL model(s): PRL probability, decision, uncertainty",
    "bids": "BIDS App: score a BIDS dataset per participant (BIDS derivatives), then merge per group",
    "export": "export a trained model as one ONNX graph, with its patch settings and test vectors",
    "calibrate": "recalibrate a trained model for a new site on its labelled lesions",
    "active": "uncertainty scores, queue order and fine-tuning",
}


def build_parser(commands: Collection[str] = tuple(COMMANDS)) -> argparse.ArgumentParser:
    """The parser, with the arguments of ``commands`` (every command by default); the others are
    listed by name and summary only, so their modules are not imported."""
    parser = argparse.ArgumentParser(
        prog="deep-prl",
        description="Find paramagnetic rim lesions (PRLs) in MS MRI with Deep-PRL.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, summary in COMMANDS.items():
        command = sub.add_parser(name, help=summary)
        if name in commands:
            importlib.import_module(f"napari_deep_prl.cli.{name}").register(command)
    return parser


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """Warnings on stderr: the package's input warnings as one line, others as Python shows them."""
    if issubclass(category, InputWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno, line), file=sys.stderr, end="")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The top-level options take no value, so the first other word names the command.
    parser = build_parser([next((word for word in argv if not word.startswith("-")), "")])
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
