"""``import kseg`` alone makes every public module reachable, in a fresh interpreter."""

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
              "kseg.refine.tta_predict_logits", "kseg.run.run_one", "kseg.grid.expand", "kseg.leaderboard.read",
              "kseg.evaluation.evaluate", "kseg.predict.predict_masks", "kseg.config.RunConfig"]
for name in attributes:
    try:
        functools.reduce(getattr, name.split(".")[1:], kseg)
    except AttributeError:
        missing.append(name)
print("RESULT " + json.dumps({"missing": missing, "all": sorted(kseg.__all__)}))
"""


def test_every_public_module_is_reachable_after_import_kseg():
    names = _public_modules()
    assert {"kseg", "kseg.data", "kseg.data.split", "kseg.models.decoders.unet", "kseg.refine", "kseg.run"} <= set(
        names
    )
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    done = subprocess.run(
        [sys.executable, "-c", CHECK, json.dumps(names)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result["missing"] == []
    top_level = {name.split(".")[1] for name in names if name.count(".") >= 1}
    assert top_level <= set(result["all"]), "kseg.__all__ should list every public module"


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_import_without_the_backend_installed_names_the_extras(backend):
    # sys.modules[name] = None makes `import name` fail as if the package were not installed.
    code = f"import sys; sys.modules[{backend!r}] = None; import kseg"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "KERAS_BACKEND": backend},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: kseg expects the Keras backend") and f"KERAS_BACKEND={backend}" in last
    assert "'kseg[tensorflow]', 'kseg[jax]' or 'kseg[torch]'" in last


@pytest.mark.skipif(bool(glob.glob("/dev/nvidia*")), reason="with a GPU, TensorFlow's runtime starts at first use")
def test_a_cpu_start_up_under_tensorflow_prints_no_cuda_line():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-c", "import kseg, keras; print(keras.ops.convert_to_numpy(keras.ops.add(1.0, 2.0)))"],
        cwd=REPO,
        env={**env, "KERAS_BACKEND": "tensorflow"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.strip() == "3.0", done.stderr[-2000:]
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
                for n in tree.body
                if isinstance(n, (ast.Import, ast.ImportFrom))
                for alias in n.names
            }
        )
        missing = [name for name in names if name not in defined]
        assert not missing, f"{path.relative_to(REPO)}: __all__ names {missing}, which it does not define"


def _kseg_import_graph() -> dict[str, set[str]]:
    """Module -> the kseg modules it imports, read with ``ast`` from every file under kseg/: the
    imports at module level and inside functions alike (a lazy import is still an edge)."""
    import ast

    modules = {}
    for path in sorted((REPO / "kseg").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)

    def imported(node: ast.AST, name: str, is_package: bool) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        if not isinstance(node, ast.ImportFrom):
            return []
        base = node.module or ""
        if node.level:  # from . import x, from .x import y
            package = name.split(".") if is_package else name.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join(package + ([base] if base else []))
        # `from kseg import refine` imports the module kseg.refine; `from kseg import build` the package.
        return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]

    graph = {}
    for name, (path, is_package) in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            for target in imported(node, name, is_package):
                if target in modules and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as one cycle
    through it, so the message names the imports to cut."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(set(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)

    def cycle_through(component: set[str]) -> list[str]:
        start = min(component)
        paths, seen = [[start]], {start}
        while paths:  # breadth first: the shortest way back to start inside the component
            path = paths.pop(0)
            for target in sorted(graph[path[-1]] & component):
                if target == start:
                    return path + [start]
                if target not in seen:
                    seen.add(target)
                    paths.append(path + [target])
        return sorted(component)

    return [cycle_through(component) for component in components]


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_kseg_modules_import_no_circle():
    graph = _kseg_import_graph()
    assert graph["kseg"] >= {"kseg.refine", "kseg.models"}, "the graph should see kseg/__init__.py's imports"
    cycles = _cycles(graph)
    assert not cycles, "kseg modules import each other in a circle: " + "; ".join(" -> ".join(c) for c in cycles)
