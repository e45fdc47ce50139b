"""CI must run what the README tells a user to run: the two stay word for word the same."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _ci_line_after(marker: str) -> str:
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    return lines[lines.index(marker) + 1]


def test_ci_installs_exactly_as_the_readme_says():
    install = _ci_line_after("# README: install")
    readme = (REPO / "README.md").read_text()
    assert re.search(re.escape(install) + r" && KERAS_BACKEND=tensorflow python -m pytest -q -n 2\n", readme)


def test_ci_runs_the_readme_test_command_per_backend():
    test = _ci_line_after("# README: test")
    assert test.startswith("KERAS_BACKEND=$backend python -m pytest -q -n 2")
    assert "`KERAS_BACKEND=<backend> python -m pytest -q -n 2`" in (REPO / "README.md").read_text()
