"""``import kseg`` alone makes every public module reachable, in a fresh interpreter, and loads
nothing until one is used."""

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.backend_independent, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
# kseg.cli is the command line (python -m kseg, run_all.py): `import kseg` does not load it.
NOT_IMPORTED_BY_KSEG = {"kseg.cli", "kseg.__main__"}


def _public_modules() -> list[str]:
    """Every kseg module whose dotted name has no part starting with "_" (from the files: no import)."""
    names = []
    for path in sorted((REPO / "kseg").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if not any(part.startswith("_") for part in parts[1:]) and name not in NOT_IMPORTED_BY_KSEG:
            names.append(name)
    return names


CHECK = """
import functools, json, sys
import kseg
names = json.loads(sys.argv[1])
missing = []
for name in names:
    try:
        functools.reduce(getattr, name.split(".")[1:], kseg)
    except AttributeError:
        missing.append(name)
attributes = ["kseg.data.load_ph2", "kseg.data.load_folder", "kseg.data.synthetic", "kseg.data.split",
              "kseg.data.SegmentationSequence", "kseg.models.build", "kseg.losses.get", "kseg.metrics.IoU",
              "kseg.refine.tta_predict_logits", "kseg.experiment.run.run_one", "kseg.experiment.grid.expand",
              "kseg.experiment.leaderboard.read", "kseg.evaluation.evaluate", "kseg.predict.predict_masks",
              "kseg.experiment.config.RunConfig"]
assert callable(kseg.data.split) and callable(kseg.data.synthetic), "the functions, not their modules"
for name in attributes:
    try:
        functools.reduce(getattr, name.split(".")[1:], kseg)
    except AttributeError:
        missing.append(name)
print("RESULT " + json.dumps({"missing": missing, "all": sorted(kseg.__all__)}))
"""


def test_every_public_module_is_reachable_after_import_kseg():
    names = _public_modules()
    assert {
        "kseg",
        "kseg.data",
        "kseg.data.split",
        "kseg.models.decoders.unet",
        "kseg.refine",
        "kseg.experiment.run",
    } <= set(names)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    done = subprocess.run(
        [sys.executable, "-c", CHECK, json.dumps(names)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result["missing"] == []
    top_level = {name.split(".")[1] for name in names if name.count(".") >= 1}
    assert top_level <= set(result["all"]), "kseg.__all__ should list every public module"


def test_import_kseg_loads_no_module_of_its_own_nor_keras():
    code = (
        "import sys; import kseg; print(sorted(m for m in sys.modules if m.startswith('kseg') or m.split('.')[0] "
        "in ('keras', 'tensorflow', 'jax', 'torch', 'numpy')))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "['kseg', 'kseg._lazy', 'kseg._version']" and done.stderr == ""


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_import_without_the_backend_installed_names_the_extras(backend):
    # sys.modules[name] = None makes `import name` fail as if the package were not installed. `import
    # kseg` itself loads no backend: the first module that needs one says which extra brings it.
    code = f"import sys; sys.modules[{backend!r}] = None; import kseg; print('imported'); kseg.models"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "KERAS_BACKEND": backend},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and done.stdout.strip() == "imported"
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: kseg expects the Keras backend") and f"KERAS_BACKEND={backend}" in last
    assert "'kseg[tensorflow]', 'kseg[jax]' or 'kseg[torch]'" in last


# The command lines start the backend (kseg.cli._startup); a library user's `import kseg` leaves the
# process as it is. The command runs in-process, then Keras computes: TensorFlow's runtime started
# quietly within the command, so its CUDA probe said nothing.
CPU_START_UP = (
    "from kseg.cli import main; code = main(['leaderboard', '--results', 'missing.csv']); import keras; "
    "print(code, keras.ops.convert_to_numpy(keras.ops.add(1.0, 2.0)))"
)


@pytest.mark.skipif(bool(glob.glob("/dev/nvidia*")), reason="with a GPU, TensorFlow's runtime starts at first use")
def test_a_command_s_cpu_start_up_under_tensorflow_prints_no_cuda_line():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-c", CPU_START_UP],
        cwd=REPO,
        env={**env, "KERAS_BACKEND": "tensorflow"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.strip() == "2 3.0", done.stderr[-2000:]
    assert done.stderr.strip() == "error: no leaderboard at missing.csv"
    assert "cuInit" not in done.stderr and "CUDA" not in done.stderr, done.stderr[-2000:]


def test_the_version_is_declared_once_and_the_package_is_typed():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'version = { attr = "kseg._version.__version__" }' in pyproject
    assert '__version__ = "' not in (REPO / "kseg" / "__init__.py").read_text(), "kseg/_version.py declares it"
    assert (REPO / "kseg" / "py.typed").exists()


def test_setup_cfg_holds_pytest_options_alone_and_pytest_reads_them(request):
    import configparser

    setup_cfg = configparser.ConfigParser()
    setup_cfg.read(REPO / "setup.cfg")
    # No [metadata] or [options]: the package is described once, in pyproject.toml, and pytest would
    # read a [tool.pytest.ini_options] there before setup.cfg.
    assert setup_cfg.sections() == ["tool:pytest"]
    assert "[tool.pytest" not in (REPO / "pyproject.toml").read_text()
    assert request.config.inipath == REPO / "setup.cfg"


def test_every_public_module_declares_its_public_api():
    import ast

    for path in sorted((REPO / "kseg").rglob("*.py")):
        if path.name.startswith("_") and path.name != "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        declared = [n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "__all__"]
        assert declared, f"{path.relative_to(REPO)} has no __all__"
        names = ast.literal_eval(declared[-1].value)
        # `if TYPE_CHECKING:` imports: names a package loads on first use, declared for type checkers.
        type_checking = [
            n
            for block in tree.body
            if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
            for n in block.body
        ]
        defined = (
            {getattr(n, "name", None) for n in tree.body}
            | {
                t.id
                for n in tree.body
                if isinstance(n, (ast.Assign, ast.AnnAssign))
                for t in ast.walk(n.targets[0] if isinstance(n, ast.Assign) else n.target)
                if isinstance(t, ast.Name)
            }
            | {
                alias.asname or alias.name.split(".")[0]
                for n in [*tree.body, *type_checking]
                if isinstance(n, (ast.Import, ast.ImportFrom))
                for alias in n.names
            }
        )
        if path.name == "__init__.py":  # a package's __all__ may name its modules, loaded on first use
            defined |= {child.stem for child in path.parent.iterdir() if child.suffix == ".py" or child.is_dir()}
        missing = [name for name in names if name not in defined]
        assert not missing, f"{path.relative_to(REPO)}: __all__ names {missing}, which it does not define"
