"""The package's layout, read from the files with ``ast`` (nothing is imported): the library (kseg's
top level) never imports the experiment harness (``kseg.experiment``) or the command lines
(``kseg.cli``), and no kseg modules import each other in a circle."""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.backend_independent

REPO = Path(__file__).resolve().parents[1]
# What builds on the library; the library builds on neither.
HARNESS = ("kseg.experiment", "kseg.cli")


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, whether it is a package's ``__init__``), for every file under ``root/kseg``."""
    modules = {}
    for path in sorted((root / "kseg").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def _imports(tree: ast.AST, name: str, is_package: bool, modules: dict) -> set[str]:
    """The kseg modules a module's code imports: at module level and inside functions alike (a lazy
    import is still an edge), relative imports resolved, ``from kseg import refine`` as kseg.refine."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x, from .x import y
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target.split(".")[0] == "kseg" and target != name)
    return found


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """Module -> the kseg modules it imports (:func:`_imports`), for every module under ``root/kseg``."""
    modules = _modules(root)
    return {
        name: {t for t in _imports(ast.parse(path.read_text()), name, is_package, modules) if t in modules}
        for name, (path, is_package) in modules.items()
    }


def _in(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == package or name.startswith(package + ".") for package in packages)


def boundary_violations(graph: dict[str, set[str]]) -> list[str]:
    """``library -> harness`` for each import of kseg.experiment or kseg.cli by a library module.
    A ``__main__`` module is a command line's entry point (``python -m kseg``, ``python -m
    kseg.pretrained``), as kseg.cli is, so it may import both."""
    return [
        f"{name} -> {target}"
        for name, targets in sorted(graph.items())
        if not _in(name, HARNESS) and name.rpartition(".")[2] != "__main__"
        for target in sorted(targets)
        if _in(target, HARNESS)
    ]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
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
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_checks_see_every_kind_of_import(tmp_path):
    """An absolute, a relative and a function-level import of the harness are each found, a
    command line's entry point is allowed one, and a circle through a lazy import is a circle."""
    root = _write(
        tmp_path,
        {
            "kseg/__init__.py": "",
            "kseg/refine.py": "from kseg.experiment import leaderboard\n",
            "kseg/predict.py": "def f():\n    from .cli import main\n",
            "kseg/data/__init__.py": "def f():\n    from ..experiment.run import run_one\n",
            "kseg/models/__init__.py": "import kseg.experiment.config\nfrom kseg import losses\n",
            "kseg/losses.py": "def f():\n    from kseg.models import build\n",
            "kseg/__main__.py": "from kseg.cli import main\n",
            "kseg/experiment/__init__.py": "",
            "kseg/experiment/leaderboard.py": "from kseg import refine\n",
            "kseg/experiment/run.py": "",
            "kseg/experiment/config.py": "",
            "kseg/cli/__init__.py": "from kseg.experiment import run\n",
        },
    )
    graph = import_graph(root)
    assert boundary_violations(graph) == [
        "kseg.data -> kseg.experiment.run",
        "kseg.models -> kseg.experiment.config",
        "kseg.predict -> kseg.cli",
        "kseg.refine -> kseg.experiment.leaderboard",
    ]
    assert cycles(graph) == [
        ["kseg.experiment.leaderboard", "kseg.refine", "kseg.experiment.leaderboard"],
        ["kseg.losses", "kseg.models", "kseg.losses"],
    ]


def test_the_library_imports_neither_the_experiment_nor_the_command_lines():
    graph = import_graph()
    assert "kseg.experiment.run" in graph and "kseg.refine" in graph, "the graph should hold every module"
    assert graph["kseg.experiment.run"] >= {"kseg.refine", "kseg.experiment.training"}, "it should see imports"
    violations = boundary_violations(graph)
    assert not violations, "library modules import the harness or the command lines: " + "; ".join(violations)


def test_kseg_modules_import_no_circle():
    found = cycles(import_graph())
    assert not found, "kseg modules import each other in a circle: " + "; ".join(" -> ".join(c) for c in found)
