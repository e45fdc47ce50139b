"""README.md and docs/ stay true to the project: each leaderboard table is what its command prints
from the committed experiments.csv, every command in a bash block parses with kseg's own parser,
and every relative link points at a file."""

import contextlib
import io
import itertools
import re
import shlex
from pathlib import Path

import pytest

from kseg import cli

pytestmark = pytest.mark.backend_independent

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# `generated`: the command's output follows verbatim. `rows of`: the table that follows is a
# selection of the command's table (some rows, some columns), each of its cells as printed.
MARKER = re.compile(r"<!-- (generated|rows of): (python -m kseg leaderboard .*?) -->\n\s*", re.S)


def _markers():
    for page in PAGES:
        for match in MARKER.finditer(page.read_text()):
            kind, command = match.groups()
            yield pytest.param(page, match.end(), kind, command, id=f"{page.name}:{kind}:{command[26:70]}")


def _leaderboard(command: str) -> str:
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert cli.main(shlex.split(command)[3:]) == cli.EXIT_OK
    return output.getvalue()


def _table(text: str) -> list[dict[str, str]]:
    """The first Markdown table in text, one dict per row."""
    lines = text.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    block = itertools.takewhile(lambda line: line.startswith("|"), lines[start:])
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in block]
    return [dict(zip(cells[0], row, strict=True)) for row in cells[2:]]


@pytest.mark.parametrize("page, at, kind, command", _markers())
def test_each_leaderboard_table_is_what_its_command_prints(page, at, kind, command, monkeypatch):
    monkeypatch.chdir(REPO)
    output = _leaderboard(command)
    text = page.read_text()[at:]
    if kind == "generated":
        # Also followed by a blank line or the end, so rows the command no longer prints show up.
        assert text[: len(output)] == output and text[len(output) :][:1] in ("", "\n")
        return
    printed = _table(output)
    for row in _table(text):
        assert row in [{column: line.get(column) for column in row} for line in printed], (
            f"{page.name}: a row that `{command}` no longer prints: {row}"
        )


def test_the_pages_mark_their_leaderboard_tables():
    assert len(list(_markers())) >= 10
