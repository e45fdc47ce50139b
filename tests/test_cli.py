"""``python -m kseg``: every command's --help exits 0, without TensorFlow's C++ start-up lines."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.backend_independent, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
# TensorFlow's native start-up logging (oneDNN notices, absl lines before logging is set up, CPU
# feature lines): kseg keeps them out of its commands' output unless TF_CPP_MIN_LOG_LEVEL asks.
# The full tensorflow wheel adds its CUDA probe's lines on a machine without a GPU.
NOISE = ("oneDNN", "I0000", "W0000", "E0000", "absl", "cpu_feature_guard", "rebuild TensorFlow", "cuda")


@pytest.mark.parametrize("command", [[], ["grid"], ["predict"], ["evaluate"], ["leaderboard"]])
def test_every_help_exits_0_and_names_its_command(command, capsys):
    from kseg.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert "usage: python -m kseg" in shown
    if command:
        assert f"python -m kseg {command[0]}" in shown
    else:
        assert all(name in shown for name in ("grid", "predict", "evaluate", "leaderboard"))


# The start-up lines come from the first TensorFlow import, so a fresh process is the test; the
# grid's help imports the most of kseg.
def test_help_in_a_fresh_process_has_no_native_start_up_noise():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = "tensorflow"
    done = subprocess.run(
        [sys.executable, "-m", "kseg", "grid", "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "python -m kseg grid" in done.stdout, done.stderr[-3000:]
    for noise in NOISE:
        assert noise not in done.stderr, f"{noise!r} on stderr:\n{done.stderr[-3000:]}"


def test_grid_help_names_the_identity_flags():
    from kseg.cli import build_parser

    text = build_parser().parse_known_args(["grid"])[0]  # parses: the grid parser exists
    assert text.command == "grid"
    help_text = build_parser()._subparsers._group_actions[0].choices["grid"].format_help()
    for flag in ("--split-seed", "--mask-suffix", "--split", "--refine", "--schedule", "--ema", "--jit-compile"):
        assert flag in help_text, flag
