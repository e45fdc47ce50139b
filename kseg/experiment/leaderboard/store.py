"""The leaderboard's files: a locked atomic append of a row (widening the header when a row brings
a new column), the per-image companion file, reading either back, and merging two leaderboards.

Each append takes a file lock (so runners in several processes can share one file), writes the
old contents plus the new row to a temporary file beside it and renames that over the original: a
crash or Ctrl-C at any moment leaves either the old or the new file, never a truncated one.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
from filelock import FileLock

from kseg._errors import unknown_name
from kseg.experiment.leaderboard.schema import (
    COLUMNS,
    PER_IMAGE_COLUMNS,
    REQUIRED,
    STATUSES,
    TEXT_COLUMNS,
    known_column,
)

__all__ = [
    "append_row",
    "per_image_path",
    "append_per_image",
    "read_per_image",
    "merge",
    "read",
    "completed_hashes",
]


def _lock(path: Path) -> FileLock:
    return FileLock(str(path) + ".lock", timeout=120)


def _header_of(text: str) -> list[str]:
    return next(csv.reader(io.StringIO(text)), [])


def _check_header(path: Path, header: list[str]) -> None:
    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if not known_column(c)]
    if missing or unknown:
        raise ValueError(
            f"{path} has columns {header}, not kseg's leaderboard schema"
            f" (missing {missing}, unknown {unknown}); write to another file with --results."
        )


def _csv_line(row: Mapping[str, Any], header: list[str]) -> str:
    line = io.StringIO()
    csv.DictWriter(line, fieldnames=header, lineterminator="\n").writerow(
        {k: ("" if v is None else v) for k, v in row.items()}
    )
    return line.getvalue()


def _widened(old: str, header: list[str], new_header: list[str]) -> str:
    """``old`` (a CSV with ``header``) rewritten under ``new_header``, new cells empty."""
    rows = list(csv.DictReader(io.StringIO(old)))
    return _csv_line(dict(zip(new_header, new_header)), new_header) + "".join(_csv_line(r, new_header) for r in rows)


def _replace_atomically(path: Path, text: str) -> None:
    """Writes ``text`` to a temporary file beside ``path`` and renames it over ``path``: a crash
    at any moment leaves the old file or the new one. The caller holds the file's lock."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_row(path: str | Path, row: Mapping[str, Any]) -> None:
    """Appends ``row`` (keys from ``COLUMNS``; missing ones are left empty) to the CSV at ``path``,
    creating it with a header if needed, and adding the row's columns that the file lacks. Safe
    against concurrent writers and interruption."""
    path = Path(path)
    unknown = {c for c in row if not known_column(c)}
    if unknown:
        raise ValueError(
            f"Unknown leaderboard columns. Expected those of the schema {COLUMNS}. Received: {sorted(unknown)}"
        )
    if row.get("status") not in STATUSES:
        raise unknown_name("status", row.get("status"), STATUSES)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock(path):
        old = path.read_text() if path.exists() else ""
        if old:
            header = _header_of(old)
            _check_header(path, header)
            if not old.endswith("\n"):
                old += "\n"
            added = [c for c in row if c not in header]
            if added:
                old = _widened(old, header, header + added)
                header = header + added
        else:
            header = list(COLUMNS) + [c for c in row if c not in COLUMNS]
            old = ",".join(header) + "\n"
        _replace_atomically(path, old + _csv_line(row, header))


def per_image_path(results: str | Path) -> Path:
    """``experiments_per_image.csv`` beside ``experiments.csv``."""
    results = Path(results)
    return results.with_name(f"{results.stem}_per_image.csv")


def append_per_image(results: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Appends per-image rows (keys :data:`PER_IMAGE_COLUMNS`) to the companion file of the
    leaderboard ``results``, with the leaderboard's lock-and-rename, so a kill leaves it whole."""
    path = per_image_path(results)
    header = list(PER_IMAGE_COLUMNS)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock(path):
        old = path.read_text() if path.exists() else ",".join(header) + "\n"
        present = _header_of(old)
        if present != header[: len(present)]:
            raise ValueError(f"{path} expects the columns {header}. Received: {present}")
        if not old.endswith("\n"):
            old += "\n"
        if present != header:  # written before the later scores: they join, empty, at the end
            old = _widened(old, present, header)
        _replace_atomically(path, old + "".join(_csv_line(r, header) for r in rows))


def read_per_image(results: str | Path) -> pd.DataFrame:
    """The per-image scores of the leaderboard ``results`` (empty where a leaderboard written before
    them has no companion file); of a run written twice (a resumed kill), its last rows."""
    path = per_image_path(results)
    if not path.exists():
        return pd.DataFrame(columns=list(PER_IMAGE_COLUMNS))
    with _lock(path):
        table = pd.read_csv(
            path, dtype={"run_id": "string", "config_hash": "string", "set": "string", "case_id": "string"}
        )
    return table.drop_duplicates(["config_hash", "set", "case_id"], keep="last")


def merge(source: str | Path, target: str | Path) -> int:
    """Appends to ``target`` the rows of leaderboard ``source`` (e.g. one written on another
    machine) that ``target`` lacks; a row is identified by its config hash and timestamp.
    Returns the number of rows appended."""
    with open(source, newline="") as f:
        reader = csv.DictReader(f)
        _check_header(Path(source), list(reader.fieldnames or ()))
        rows = list(reader)
    present = read(target)
    seen = set(zip(present["config_hash"], present["timestamp"]))
    added = 0
    for row in rows:
        if (row["config_hash"], row["timestamp"]) not in seen:
            append_row(target, {k: v for k, v in row.items() if v != ""})
            added += 1
    return added


def read(path: str | Path) -> pd.DataFrame:
    """The leaderboard as a DataFrame with every column of the schema (empty where a row or an
    older file lacks it; an empty frame if the file is absent). Hashes and ids stay text."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=list(COLUMNS))
    with _lock(path):
        with open(path, newline="") as f:
            _check_header(path, _header_of(f.readline()))
        table = pd.read_csv(path, dtype={c: "string" for c in TEXT_COLUMNS})
    for column in COLUMNS:
        if column not in table:
            table[column] = pd.NA
    return table[list(COLUMNS) + [c for c in table.columns if c not in COLUMNS]]


def completed_hashes(path: str | Path) -> set[str]:
    """Config hashes that already have an ok row: the runs a resumed grid skips."""
    table = read(path)
    return set(table.loc[table["status"] == "ok", "config_hash"])
