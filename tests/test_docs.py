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
from kseg.pretrained import __main__ as pretrained_command

pytestmark = pytest.mark.backend_independent

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# `generated`: the command's output follows verbatim. `rows of`: the table that follows is a
# selection of the command's table (some rows, some columns), each of its cells as printed.
MARKER = re.compile(r"<!-- (generated|rows of): (python -m kseg(?: leaderboard|\.models)(?: .*?)??) -->\n\s*", re.S)


def _markers():
    for page in PAGES:
        for match in MARKER.finditer(page.read_text()):
            kind, command = match.groups()
            yield pytest.param(page, match.end(), kind, command, id=f"{page.name}:{kind}:{command[26:70]}")


def _leaderboard(command: str) -> str:
    """What ``python -m kseg leaderboard ...`` or ``python -m kseg.models ...`` prints."""
    words = shlex.split(command)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        if words[2] == "kseg.models":
            from kseg.models.__main__ import main as models_main

            assert models_main(words[3:]) == 0
        else:
            assert cli.main(words[3:]) == cli.EXIT_OK
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


RECIPE = "128px w16 {epochs}ep cosine wu2 lr0.001 refine=auto val/2 fastbn"
# The README's results table, column by column: the leaderboard group each kseg column shows.
README_COLUMNS = {
    "`paper`": "python -m kseg leaderboard --markdown --preset paper",
    "`cpu`": f'python -m kseg leaderboard --markdown --dataset ph2 --preset cpu --recipe "{RECIPE.format(epochs=32)}"',
    "`cpu`, fine-tuned from ISIC": "python -m kseg leaderboard --markdown --dataset ph2 --preset cpu "
    f'--recipe "{RECIPE.format(epochs=16)} init=isic2018_train"',
    "`dermoscopy`": "python -m kseg leaderboard --markdown --dataset ph2 --preset dermoscopy "
    f'--recipe "{RECIPE.format(epochs=16)} init=isic2018_train mix0.25 joint=isic2018_train"',
}


def test_the_readme_results_table_is_the_leaderboard(monkeypatch):
    monkeypatch.chdir(REPO)
    readme = (REPO / "README.md").read_text()
    shown = _table(readme[readme.index("## Results on PH2") :])
    for column, command in README_COLUMNS.items():
        groups = {f"{row['model']} + {row['loss']}": row for row in _table(_leaderboard(command))}
        for row in shown:
            group = groups[row["pair"]]
            assert row[column] == group["test IoU"] + ("" if group["n"] == "3" else f" (n={group['n']})"), (
                f"README.md: {row['pair']} under {column}"
            )


# ----- every command of a bash block parses (nothing runs: most need PH2 or a trained model) -----


KSEG_COMMANDS = (["python", "-m", "kseg"], ["python", "-m", "kseg.pretrained"])


def _bash_commands():
    """(page, argv) for each ``python -m kseg ...`` / ``python run_all.py ...`` of a ```bash block."""
    for page in PAGES:
        for block in re.findall(r"^```bash\n(.*?)^```", page.read_text(), flags=re.S | re.M):
            variables = {}
            for line in block.replace("\\\n", " ").splitlines():
                for name, value in variables.items():
                    line = line.replace(f"${name}", value)
                lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
                lexer.whitespace_split = True
                words = list(lexer)
                if len(words) == 1 and re.fullmatch(r"\w+=.*", words[0]):
                    name, value = words[0].split("=", 1)
                    variables[name] = value
                    continue
                command = []
                for word in [*words, ";"]:
                    if word not in ("&&", "||", ";", "|"):
                        command.append(word)
                        continue
                    while command and re.fullmatch(r"\w+=.*", command[0]):  # KSEG_PH2_DIR=... python ...
                        command.pop(0)
                    if command[:3] in KSEG_COMMANDS or command[:2] == ["python", "run_all.py"]:
                        yield page, command
                    command = []


COMMANDS = list(_bash_commands())


@pytest.mark.parametrize("page, command", [pytest.param(p, c, id=f"{p.name}:{' '.join(c)[:60]}") for p, c in COMMANDS])
def test_each_command_in_the_pages_parses(page, command):
    if command[1] == "run_all.py":
        parser, argv = cli.build_grid_parser(), command[2:]
    elif command[2] == "kseg.pretrained":
        parser, argv = pretrained_command.build_parser(), command[3:]
    else:
        parser, argv = cli.build_parser(), command[3:]
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{page.name}: `{' '.join(command)}` does not parse: {errors.getvalue()}")


def test_the_pages_name_their_commands():
    assert {c[1] if c[1] == "run_all.py" else c[3] for _, c in COMMANDS} >= {
        "run_all.py",
        "predict",
        "evaluate",
        "export",
        "leaderboard",
    }


# ----- every relative link points at a file (and a heading, where it names one) -----


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_resolves(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: a link to {target}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.*)$", linked.read_text(), flags=re.M)
            assert anchor in map(_slug, headings), f"{page.name}: a link to {target}, a heading it lacks"
