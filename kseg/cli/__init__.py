"""Every command line of kseg: ``python -m kseg {grid,predict,evaluate,leaderboard,ensemble,export}``
(and ``run_all.py``, the grid's front door), as argparse subcommands, one module per job:
:mod:`kseg.cli.grid` (training), :mod:`kseg.cli.inference` (using trained models),
:mod:`kseg.cli.results` (the leaderboard); ``_flags`` holds what they share.

The parsers build without Keras, so ``--help`` and argument errors answer at once; a command
that parses starts the backend with TensorFlow's C++ start-up lines dropped unless
``TF_CPP_MIN_LOG_LEVEL`` asks for them (:mod:`kseg.cli._startup`), then runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from kseg._version import __version__
from kseg.cli._flags import (
    EXIT_BAD_ARGUMENTS,
    EXIT_OK,
    EXIT_SOME_FAILED,
    engine_flags,
    formatter,
    model_flag,
    refuse,
    scoring_flags,
)
from kseg.cli._startup import start_backend
from kseg.cli.grid import add_grid_arguments, grid_command
from kseg.cli.inference import (
    add_ensemble_arguments,
    add_evaluate_arguments,
    add_export_arguments,
    add_predict_arguments,
    ensemble_command,
    evaluate_command,
    export_command,
    predict_command,
)
from kseg.cli.results import add_leaderboard_arguments, leaderboard_command

# name: (the command, its flags, the parent parsers of the flags it shares, its one-line help)
COMMANDS: dict[str, tuple[Callable, Callable, Callable[[], list], str]] = {
    "grid": (
        grid_command,
        add_grid_arguments,
        list,
        "train every model x loss x seed and append one row per run to the leaderboard",
    ),
    "predict": (
        predict_command,
        add_predict_arguments,
        lambda: [model_flag(), engine_flags(), scoring_flags()],
        "write a binary mask (0/255 PNG, at each image's own size) and an overlay per image",
    ),
    "evaluate": (
        evaluate_command,
        add_evaluate_arguments,
        lambda: [engine_flags(), scoring_flags()],
        "score a saved model on an images/masks folder with the leaderboard's metrics",
    ),
    "leaderboard": (
        leaderboard_command,
        add_leaderboard_arguments,
        list,
        "print the leaderboard: mean +- std over seeds per group",
    ),
    "ensemble": (
        ensemble_command,
        add_ensemble_arguments,
        list,
        "write one model that averages the logits of saved models, each under its own TTA",
    ),
    "export": (
        export_command,
        add_export_arguments,
        list,
        "export a saved model for inference (ONNX or TensorFlow SavedModel) with Keras's model.export",
    ),
}


def _description(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def build_parser(prog: str = "python -m kseg") -> argparse.ArgumentParser:
    """``python -m kseg``'s parser: one subcommand per :data:`COMMANDS` entry."""
    parser = argparse.ArgumentParser(prog=prog, description="kseg: binary image segmentation with Keras 3.")
    parser.add_argument("--version", action="version", version=f"kseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, add_arguments, parents, text) in COMMANDS.items():
        add_arguments(
            sub.add_parser(
                name, help=text, description=_description(text), parents=parents(), formatter_class=formatter
            )
        )
    return parser


def _run(command: Callable, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        start_backend()
    except ImportError as error:
        return refuse(error)
    return command(args, parser)


def main(argv: Sequence[str] | None = None, prog: str = "python -m kseg") -> int:
    """``python -m kseg COMMAND ...``; ``python -m kseg COMMAND --help`` for each command's flags."""
    parser = build_parser(prog)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return _run(COMMANDS[args.command][0], args, parser)


def build_grid_parser(prog: str = "run_all.py") -> argparse.ArgumentParser:
    """``run_all.py``'s parser: the grid subcommand's flags at the top level."""
    parser = argparse.ArgumentParser(
        prog=prog, description=_description(COMMANDS["grid"][3]), formatter_class=formatter
    )
    parser.add_argument("--version", action="version", version=f"kseg {__version__}")
    return add_grid_arguments(parser)


def run_grid_command(argv: Sequence[str] | None = None, prog: str = "run_all.py") -> int:
    """``run_all.py [FLAGS]``: the same as ``python -m kseg grid [FLAGS]``."""
    parser = build_grid_parser(prog)
    return _run(grid_command, parser.parse_args(sys.argv[1:] if argv is None else argv), parser)


__all__ = [
    "EXIT_OK",
    "EXIT_SOME_FAILED",
    "EXIT_BAD_ARGUMENTS",
    "add_grid_arguments",
    "grid_command",
    "predict_command",
    "evaluate_command",
    "export_command",
    "ensemble_command",
    "leaderboard_command",
    "COMMANDS",
    "build_parser",
    "build_grid_parser",
    "main",
    "run_grid_command",
]
