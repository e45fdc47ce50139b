"""The experiments.csv leaderboard: its schema, a locked atomic append, reading and summarising.

Rows are only ever added. Each append takes a file lock (so runners in several processes can
share one file), writes the old contents plus the new row to a temporary file beside it and
renames that over the original: a crash or Ctrl-C at any moment leaves either the old or the
new file, never a truncated one.
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

COLUMNS: tuple[str, ...] = (
    "timestamp", "run_id", "model", "loss", "seed", "dataset", "split_seed", "image_size",
    "eval_size", "base_filters", "epochs", "epochs_run", "best_epoch",
    "test_iou", "test_dice", "test_dataset_iou",
    "test_iou_common_nevus", "test_iou_atypical_nevus", "test_iou_melanoma",
    "val_iou", "params", "train_seconds", "device", "backend", "keras_version", "precision", "jit_compile",
    "preset", "config_hash", "status", "error",
)
STATUSES = ("ok", "failed", "nan")


def _lock(path: Path) -> FileLock:
    return FileLock(str(path) + ".lock", timeout=120)


def _header_of(text: str) -> list[str]:
    return next(csv.reader(io.StringIO(text)), [])


def append_row(path: str | Path, row: Mapping[str, Any]) -> None:
    """Appends ``row`` (keys from ``COLUMNS``; missing ones are left empty) to the CSV at ``path``,
    creating it with a header if needed. Safe against concurrent writers and interruption."""
    path = Path(path)
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise ValueError(f"Unknown leaderboard columns {sorted(unknown)}; the schema is {COLUMNS}.")
    if row.get("status") not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}; got {row.get('status')!r}")
    line = io.StringIO()
    csv.DictWriter(line, fieldnames=COLUMNS, lineterminator="\n").writerow(
        {k: ("" if v is None else v) for k, v in row.items()}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock(path):
        old = path.read_text() if path.exists() else ""
        if old:
            header = _header_of(old)
            if tuple(header) != COLUMNS:
                raise ValueError(
                    f"{path} has columns {header}, not kseg's leaderboard schema; "
                    "write to another file with --results."
                )
            if not old.endswith("\n"):
                old += "\n"
        else:
            old = ",".join(COLUMNS) + "\n"
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", newline="") as f:
                f.write(old + line.getvalue())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def merge(source: str | Path, target: str | Path) -> int:
    """Appends to ``target`` the rows of leaderboard ``source`` (e.g. one written on another
    machine) that ``target`` lacks; a row is identified by its config hash and timestamp.
    Returns the number of rows appended."""
    with open(source, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{source} has columns {reader.fieldnames}, not kseg's leaderboard schema.")
        rows = list(reader)
    present = read(target)
    seen = set(zip(present["config_hash"].astype(str), present["timestamp"].astype(str)))
    added = 0
    for row in rows:
        if (row["config_hash"], row["timestamp"]) not in seen:
            append_row(target, row)
            added += 1
    return added


def read(path: str | Path) -> pd.DataFrame:
    """The leaderboard as a DataFrame (empty, with the schema's columns, if the file is absent)."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=list(COLUMNS))
    with _lock(path):
        return pd.read_csv(path)


def completed_hashes(path: str | Path) -> set[str]:
    """Config hashes that already have an ok row: the runs a resumed grid skips."""
    table = read(path)
    return set(table.loc[table["status"] == "ok", "config_hash"].astype(str))


GROUP = ("dataset", "preset", "backend", "precision", "model", "loss")
# Column widths of the plain-text ranking, one per GROUP column.
_TEXT_WIDTHS = dict(zip(GROUP, (10, 7, 10, 15, 7, 11)))


def latest_ok_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows that count: status ok, and of a config run twice (``--force``) its latest row."""
    return table[table["status"] == "ok"].drop_duplicates("config_hash", keep="last")


def summarise(table: pd.DataFrame, by: Iterable[str] = GROUP,
              metric: str = "test_iou") -> pd.DataFrame:
    """Mean, standard deviation and count of ``metric`` over seeds per group, best first.

    Only ok rows count; where a config ran twice (``--force``) its latest row counts.
    """
    by = list(by)
    ok = latest_ok_rows(table)
    if ok.empty:
        return pd.DataFrame(columns=[*by, "mean", "std", "n"])
    # dropna=False: a row with an empty group column still counts, in a group of its own.
    summary = ok.groupby(by, dropna=False)[metric].agg(["mean", "std", "count"]).rename(columns={"count": "n"})
    return summary.reset_index().sort_values("mean", ascending=False, ignore_index=True)


def format_summary(summary: pd.DataFrame, metric: str = "test IoU") -> str:
    """The summary as a plain-text ranking: one line per model x loss, mean +- std (n)."""
    if summary.empty:
        return "No completed runs yet."
    lines = [f"{'rank':>4}  " + " ".join(f"{c:<{w}}" for c, w in _TEXT_WIDTHS.items()) + f" {metric}"]
    for rank, r in enumerate(summary.itertuples(index=False), 1):
        spread = "" if pd.isna(r.std) else f" +- {r.std:.3f}"
        cells = " ".join(f"{getattr(r, c)!s:<{w}}" for c, w in _TEXT_WIDTHS.items())
        lines.append(f"{rank:>4}  {cells} {r.mean:.3f}{spread} (n={r.n})")
    return "\n".join(lines)


def markdown_report(table: pd.DataFrame, by: Iterable[str] = ("dataset", "preset", "device", *GROUP[2:])) -> str:
    """A Markdown table per group of ok rows: test IoU and Dice mean +- std over seeds, dataset
    IoU, n, mean training seconds and mean epochs run, ranked by mean test IoU."""
    by = list(by)
    summary = summarise(table, by)
    if summary.empty:
        return "No completed runs yet."
    extra = latest_ok_rows(table).groupby(by, dropna=False).agg(
        dice=("test_dice", "mean"), dice_std=("test_dice", "std"), dataset_iou=("test_dataset_iou", "mean"),
        train_s=("train_seconds", "mean"), epochs=("epochs_run", "mean"),
    ).reset_index()
    summary = summary.merge(extra, on=by, how="left")
    header = [*by, "test IoU", "test Dice", "dataset IoU", "n", "train s", "epochs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in summary.itertuples(index=False):
        spread = lambda m, s: f"{m:.3f}" + ("" if pd.isna(s) else f" +- {s:.3f}")
        cells = [str(getattr(r, c)) for c in by] + [
            spread(r.mean, r.std), spread(r.dice, r.dice_std), f"{r.dataset_iou:.3f}", str(r.n),
            f"{r.train_s:.0f}", f"{r.epochs:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: pd.DataFrame, path: str | Path, title: str = "Mean test IoU over seeds") -> Path:
    """A horizontal bar chart of the summary with one-standard-deviation error bars, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    labels = [f"{r.model} + {r.loss} ({r.dataset}, {r.preset}, {r.backend}, {r.precision})" for r in summary.itertuples()]
    fig, ax = plt.subplots(figsize=(10, 0.4 * len(summary) + 1.2))
    ax.barh(labels[::-1], summary["mean"][::-1], xerr=summary["std"].fillna(0)[::-1], capsize=3, color="#4c72b0")
    ax.set_xlabel("test IoU (mean +- std over seeds)")
    ax.set_xlim(max(0.0, float(summary["mean"].min()) - 0.15), 1.0)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
