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
NOISE = ("oneDNN", "I0000", "W0000", "absl", "cpu_feature_guard", "rebuild TensorFlow")


@pytest.mark.parametrize(
    "command",
    [[], ["grid"], ["predict"], ["evaluate"], ["leaderboard"]],
    ids=["kseg", "grid", "predict", "evaluate", "leaderboard"],
)
def test_help_exits_0_without_native_start_up_noise(command):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = "tensorflow"
    done = subprocess.run(
        [sys.executable, "-m", "kseg", *command, "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "usage: python -m kseg" in done.stdout
    if command:
        assert f"python -m kseg {command[0]}" in done.stdout
    else:
        assert all(name in done.stdout for name in ("grid", "predict", "evaluate", "leaderboard"))
    for noise in NOISE:
        assert noise not in done.stderr, f"{noise!r} on stderr:\n{done.stderr[-3000:]}"


def test_grid_help_names_the_identity_flags():
    from kseg.cli import build_parser

    text = build_parser().parse_known_args(["grid"])[0]  # parses: the grid parser exists
    assert text.command == "grid"
    help_text = build_parser()._subparsers._group_actions[0].choices["grid"].format_help()
    for flag in ("--split-seed", "--mask-suffix", "--split", "--refine", "--schedule", "--ema", "--jit-compile"):
        assert flag in help_text, flag
