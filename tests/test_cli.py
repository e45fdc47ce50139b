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


@pytest.mark.parametrize("command", [[], ["grid"], ["predict"], ["evaluate"], ["export"], ["leaderboard"]])
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
    # A default is shown where it says something (issue 40, defect 7).
    assert "(default: None)" not in shown and "(default: False)" not in shown and "(default: [])" not in shown


def test_version_and_run_all_s_help_name_what_they_should(capsys):
    from kseg import __version__
    from kseg.cli import build_grid_parser, main

    for parse in (lambda: main(["--version"]), lambda: build_grid_parser().parse_args(["--version"])):
        with pytest.raises(SystemExit) as exit_info:
            parse()
        assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"kseg {__version__}"
    shown = build_grid_parser().format_help()
    assert "smoke 12,6,6" in " ".join(shown.split()) and "(default: None)" not in shown


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


BACKENDS = ("keras", "tensorflow", "jax", "torch")


@pytest.mark.parametrize(
    "command, code",
    [
        (["-m", "kseg", "--help"], 0),
        (["-m", "kseg", "grid", "--help"], 0),
        (["-m", "kseg", "predict", "--help"], 0),
        (["run_all.py", "--help"], 0),
        (["run_all.py", "--preset", "huge"], 2),
        (["-m", "kseg", "evaluate"], 2),
    ],
)
def test_help_and_argument_errors_import_no_backend(command, code):
    """The parsers build without Keras (issue 40): ``-X importtime`` lists every module the process
    imports, and none is a backend's (on a 2-core CPU these answer in ~0.4 s; a backend's start took ~5 s)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *command], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == code, done.stderr[-3000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "kseg.cli" in imported
    backends = sorted(name for name in imported if name.split(".")[0] in BACKENDS)
    assert not backends, f"{' '.join(command)} imported {backends[:5]}"


def test_grid_help_names_the_identity_flags():
    from kseg.cli import build_parser

    text = build_parser().parse_known_args(["grid"])[0]  # parses: the grid parser exists
    assert text.command == "grid"
    help_text = build_parser()._subparsers._group_actions[0].choices["grid"].format_help()
    for flag in ("--split-seed", "--mask-suffix", "--split", "--refine", "--schedule", "--ema", "--jit-compile"):
        assert flag in help_text, flag


# ----- grid refusals name the flag and the bad part -----------------------------------------

SMOKE = ["--preset", "smoke", "--dataset", "synthetic", "--quiet", "--seeds", "0"]


@pytest.fixture
def grid(tmp_path, monkeypatch, capsys):
    """``grid(*args)``: (exit code, stderr) of a smoke grid on synthetic data in ``tmp_path``."""
    from kseg.cli import run_grid_command

    monkeypatch.setenv("KSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KSEG_PH2_DIR", raising=False)
    where = ["--results", str(tmp_path / "lb.csv"), "--output", str(tmp_path / "runs")]

    def run(*args):
        try:
            code = run_grid_command([*SMOKE, *where, *args])
        except SystemExit as exit_info:
            code = exit_info.code
        return code, capsys.readouterr().err

    return run


def test_losses_names_the_unknown_part(grid, tmp_path):
    code, err = grid("--losses", "bce+nosuch")
    assert code == 2 and "--losses" in err and "Unknown kseg loss 'nosuch' in 'bce+nosuch'" in err
    assert not (tmp_path / "lb.csv").exists()


def test_pretrain_on_a_folder_without_masks_names_pretrain_on(grid, tmp_path):
    import cv2
    import numpy as np

    folder = tmp_path / "unlabelled"
    (folder / "images").mkdir(parents=True)
    cv2.imwrite(str(folder / "images" / "a.png"), np.zeros((40, 40, 3), np.uint8))
    code, err = grid("--losses", "bce", "--pretrain-on", str(folder))
    assert code == 2 and f"--pretrain-on {folder}" in err and "masks" in err
    assert not (tmp_path / "lb.csv").exists()


@pytest.mark.parametrize("name, what", [("notes.txt", "not a .keras file"), ("fake.keras", "not a Keras archive")])
def test_init_from_a_file_that_is_not_a_model_says_so(grid, tmp_path, name, what):
    path = tmp_path / name
    path.write_text("not a model\n")
    code, err = grid("--losses", "bce", "--init-from", str(path))
    assert code == 2 and "--init-from expects a kseg model" in err and str(path) in err and what in err
    assert "File not found" not in err


@pytest.mark.parametrize("kind", ["csv", "another network's weights"])
def test_encoder_weights_that_do_not_load_are_refused_before_any_run(grid, tmp_path, kind):
    import keras

    if kind == "csv":
        path = tmp_path / "experiments.csv"
        path.write_text("run_id,test_iou\na,0.5\n")
    else:
        path = tmp_path / "resnet50.weights.h5"
        keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(path)
    code, err = grid("--models", "fpn:mobilenetv2", "--losses", "bce", "--encoder-weights", str(path))
    assert code == 2 and "--encoder-weights expects" in err and str(path) in err and "fpn:mobilenetv2" in err
    assert not (tmp_path / "lb.csv").exists() and not (tmp_path / "runs").exists()
