"""What several commands share: exit codes, flag types and the parent parsers of repeated flags."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

EXIT_OK, EXIT_SOME_FAILED, EXIT_BAD_ARGUMENTS = 0, 1, 2


def refuse(problem: object) -> int:
    """Says what is wrong on stderr, in the command lines' one form (``error: ...``), and returns
    the exit status of a command refused for its arguments or inputs."""
    print(f"error: {problem}", file=sys.stderr)
    return EXIT_BAD_ARGUMENTS


def split_names(values: Sequence[str]) -> list[str]:
    """Accepts both ``--models unet segnet`` and ``--models unet,segnet``."""
    return [name for value in values for name in value.split(",") if name]


def positive_int_flag(text: str) -> int:
    from kseg.experiment.config import positive_int  # the one check; the RunConfig knobs' flags use it too

    return flag_type(positive_int)(text)


def positive_float_flag(text: str) -> float:
    from kseg.experiment.config import positive_float

    return flag_type(positive_float)(text)


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expects a number strictly between 0 and 1. Received: {value}")
    return value


def labelled_folder(text: str) -> tuple[str, str]:
    folder, _, suffix = text.partition(":")
    return folder, suffix


# ----- parent parsers: flags that several commands share -----


def model_flag() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--model",
        default=None,
        help="a saved model or run folder, e.g. runs/RUN/model.keras or runs/RUN; default: kseg's ready dermoscopy "
        "model (docs/dermoscopy.md)",
    )
    return p


def engine_flags() -> argparse.ArgumentParser:
    # No choices=: the names live with the engines (kseg.predict.ENGINES, kseg.export.OPENVINO_PRECISIONS),
    # which import Keras; check_engine_flags refuses an unknown one after parsing, as argparse would.
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--engine",
        default="auto",
        help="auto: by the file's suffix (.onnx: onnx, .xml: openvino, else keras); keras: a .keras file; "
        "onnx / openvino: an .onnx file from `kseg export`, run by ONNX Runtime "
        "(pip install 'kseg[onnx]') / OpenVINO (pip install 'kseg[openvino]'), the fastest on a CPU; openvino also "
        "runs the int8 .xml of `kseg export --format openvino-int8`",
    )
    p.add_argument(
        "--openvino-precision",
        default="auto",
        help="the openvino engine's arithmetic: auto (bfloat16 on a CPU with bf16 hardware, else float32), "
        "float32 (equal to the Keras model within float32 rounding) or bfloat16",
    )
    return p


def check_engine_flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Refuses an unknown ``--engine`` or ``--openvino-precision`` as argparse refuses a choice."""
    from kseg.export import OPENVINO_PRECISIONS
    from kseg.predict import ENGINES

    for flag, value, known in (
        ("--engine", args.engine, ("auto", *ENGINES)),
        ("--openvino-precision", args.openvino_precision, tuple(OPENVINO_PRECISIONS)),
    ):
        if value not in known:
            parser.error(f"argument {flag}: invalid choice: {value!r} (choose from {', '.join(known)})")


def scoring_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--threshold", type=probability, default=0.5, help="probability threshold")
    p.add_argument("--batch-size", type=positive_int_flag, default=8, help="images per model call")
    p.add_argument(
        "--tta", default="saved", help="test-time augmentation: saved (what the run chose), none, flip or d4"
    )
    p.add_argument(
        "--postprocess",
        default="saved",
        help="post-processing: saved (what the run chose), none, largest, fill or largest+fill",
    )
    return p


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default where it says something: not for None (the preset's or nothing), a
    switch's False or an empty list, nor where the help text already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def formatter(prog):
    return HelpFormatter(prog, max_help_position=32)


def flag_type(parse: Callable[[str], object]) -> Callable[[str], object]:
    """``parse`` with its ValueError shown by argparse as the flag's message."""

    def flag_value(text: str):
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    flag_value.__name__ = getattr(parse, "__name__", "value")
    return flag_value


__all__ = [
    "EXIT_OK",
    "EXIT_SOME_FAILED",
    "EXIT_BAD_ARGUMENTS",
    "refuse",
    "split_names",
    "positive_int_flag",
    "positive_float_flag",
    "probability",
    "labelled_folder",
    "model_flag",
    "engine_flags",
    "check_engine_flags",
    "scoring_flags",
    "formatter",
    "flag_type",
]
