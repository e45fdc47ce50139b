"""The experiments.csv leaderboard: its schema, a locked atomic append, reading and summarising.

Rows are only ever added. Each append takes a file lock (so runners in several processes can
share one file), writes the old contents plus the new row to a temporary file beside it and
renames that over the original: a crash or Ctrl-C at any moment leaves either the old or the
new file, never a truncated one.

The schema grows: a row may bring a column that an older file lacks, and the append then adds
that column (empty for the old rows). Any file with the identity columns loads.

Runs are grouped by ``group_hash``: a run's whole identity minus its seeds
(:meth:`kseg.config.RunConfig.group_hash`), so a mean and a spread are only ever over runs that
differ by seed alone.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
from filelock import FileLock

from kseg._errors import unknown_name
from kseg.config import ROW_FIELDS, knobs

COLUMNS: tuple[str, ...] = (
    "timestamp",
    "run_id",
    "model",
    "loss",
    "seed",
    "dataset",
    "split_seed",
    "image_size",
    "eval_size",
    "base_filters",
    "epochs",
    "epochs_run",
    "best_epoch",
    "test_iou",
    "test_dice",
    "test_dataset_iou",
    "test_iou_common_nevus",
    "test_iou_atypical_nevus",
    "test_iou_melanoma",
    "val_iou",
    "params",
    "train_seconds",
    "device",
    "backend",
    "keras_version",
    "precision",
    "jit_compile",
    "preset",
    "config_hash",
    "status",
    "error",
    # Added with kseg 0.2 (older files load with these empty):
    "group_hash",
    "kseg_version",
    "data_fingerprint",
    "mask_suffix",
    "split_sizes",
    "batch_size",
    "lr",
    "schedule",
    "warmup_epochs",
    "weight_decay",
    "ema",
    "augment",
    "illuminant",
    "colour_constancy",
    "val_every",
    "refine",
    "tta",
    "postprocess",
    "val_iou_plain",
    "val_iou_refined",
    "test_iou_plain",
    "run_seconds",
    "test_isic_score",
    "test_failure_fraction",
    # Added with kseg 0.3:
    "batch_norm",
    "min_scale",
    # Added with transfer (--init-from, --pretrain-on): the source's label:hash, weights loaded / fresh.
    "init_source",
    "init_loaded",
    "init_fresh",
    # Added with cross-validation (--folds K): K, and which fold a run tests on.
    "folds",
    "fold",
    # Added with the encoder family: a pretrained encoder's starting weights (imagenet, sha256:...).
    "encoder_weights",
    # Added with the grid's ensemble rows (kseg.group_ensembles): their kind and member count
    # (empty for a training run).
    "kind",
    "members",
)
# Every config field a row repeats has its column: a knob added since joins at the end.
COLUMNS += tuple(field for field in ROW_FIELDS if field not in COLUMNS)
# Scores on external sets (``--external DIR``), one group of columns per set, named by its folder.
EXTERNAL_COLUMN = re.compile(r"^ext_[a-z0-9_]+_(iou|dice|dataset_iou|isic_score|failure_fraction|members_iou)$")


# Test IoU per source of a dataset joined from several (``--add-source``).
SOURCE_COLUMN = re.compile(r"^test_iou_source_[a-z0-9_]+$")


def known_column(name: str) -> bool:
    return name in COLUMNS or bool(EXTERNAL_COLUMN.match(name)) or bool(SOURCE_COLUMN.match(name))


def folder_label(folder: str | Path) -> str:
    """A folder's name as a column-safe label: lower-case, other characters as ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", Path(folder).name.lower()).strip("_")


def external_prefix(folder: str | Path) -> str:
    """``ext_<folder label>_``: the columns of one external set."""
    return f"ext_{folder_label(folder)}_"


# Without these a CSV is not a leaderboard (it would be overwritten by mistake).
REQUIRED = ("run_id", "model", "loss", "config_hash", "status")
# Read as text: a hash or id made of digits must keep its leading zeros.
TEXT_COLUMNS = (
    "timestamp",
    "kind",
    "run_id",
    "model",
    "loss",
    "dataset",
    "device",
    "backend",
    "keras_version",
    "precision",
    "preset",
    "config_hash",
    "group_hash",
    "status",
    "error",
    "kseg_version",
    "data_fingerprint",
    "mask_suffix",
    "split_sizes",
    "schedule",
    "augment",
    "refine",
    "tta",
    "postprocess",
    "batch_norm",
    "init_source",
    "encoder_weights",
)
STATUSES = ("ok", "failed", "nan")


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


# The companion file of per-image scores: one row per (run, scored image), before and after the
# run's refinement, for paired comparisons. ``set`` is ``test`` or an external set's prefix.
PER_IMAGE_COLUMNS = ("run_id", "config_hash", "set", "case_id", "iou", "dice", "iou_plain", "dice_plain")


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
        if _header_of(old) != header:
            raise ValueError(f"{path} expects the columns {header}. Received: {_header_of(old)}")
        if not old.endswith("\n"):
            old += "\n"
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


# What the ranking shows of each group (the group itself is its group_hash).
SHOWN = ("dataset", "preset", "device", "backend", "precision", "model", "loss", "recipe")
# Rows written before group_hash existed: grouped by everything they recorded except seeds.
_LEGACY_IDENTITY = (
    "dataset",
    "preset",
    "device",
    "backend",
    "precision",
    "jit_compile",
    "keras_version",
    "model",
    "loss",
    "image_size",
    "eval_size",
    "base_filters",
    "epochs",
)


def recipe(row: Mapping[str, Any]) -> str:
    """A short label of a row's training recipe: size, width, epochs, schedule, and the knobs
    that are on, each part as its :class:`kseg.config.Knob` writes it (a row without a knob's
    column, written before it existed, shows the knob's ``missing`` part)."""

    def present(key):
        value = row.get(key)
        return value is not None and not pd.isna(value) and value != ""

    parts = [knob.label(row[name]) if present(name) else knob.missing for name, knob in knobs().items()]
    return " ".join(part for part in parts if part)


def with_groups(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``group`` (group_hash, or for older rows a hash of their recorded identity
    minus seeds) and ``recipe`` columns."""
    table = table.reindex(columns=list(dict.fromkeys([*table.columns, *COLUMNS])))
    legacy = table[list(_LEGACY_IDENTITY)].astype("string").fillna("").apply("|".join, axis=1, result_type="reduce")
    legacy = legacy.map(lambda text: "legacy-" + hashlib.sha256(text.encode()).hexdigest()[:8])
    table["group"] = table["group_hash"].astype("object").mask(table["group_hash"].isna(), legacy)
    table["recipe"] = [recipe(r) for r in table.to_dict("records")]
    return table


def latest_ok_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The training runs that count: status ok, and of a config run twice (``--force``) its latest
    row. Ensemble rows (a ``kind``) are not training runs: :func:`ensemble_table` has them."""
    runs = table[table["kind"].isna()] if "kind" in table else table
    return runs[runs["status"] == "ok"].drop_duplicates("config_hash", keep="last")


def ensemble_table(table: pd.DataFrame) -> pd.DataFrame:
    """The ensemble rows (``kind`` set, :mod:`kseg.group_ensembles`), one per ensemble, with
    each external set's ensemble IoU, the mean of its members' and the gain."""
    if "kind" not in table:
        return pd.DataFrame()
    ensembles = table[table["kind"].notna() & (table["status"] == "ok")]
    rows = with_groups(ensembles.drop_duplicates("config_hash", keep="last"))
    out = rows[["dataset", "model", "loss", "recipe", "kind", "members"]].copy()
    for column in [c for c in rows.columns if c.endswith("_members_iou") and rows[c].notna().any()]:
        name = column[len("ext_") : -len("_members_iou")]
        out[f"{name} IoU"] = rows[f"ext_{name}_iou"]
        out[f"{name} members' mean"] = rows[column]
        out[f"{name} gain"] = rows[f"ext_{name}_iou"] - rows[column]
    return out.reset_index(drop=True)


def _split_key(rows: pd.DataFrame) -> pd.Series:
    """Which test split a run scored: its split seed and sizes, and with --folds K its K and fold
    (fold 0 of 5 and a 100/50/50 split of the same seed are other splits)."""

    def column(name):
        return rows[name].fillna(0).astype(int).astype(str) if name in rows else "0"

    sizes = rows["split_sizes"].fillna("").astype(str) if "split_sizes" in rows else ""
    return rows["split_seed"].astype("Int64").astype(str) + "/" + sizes + "/" + column("folds") + "/" + column("fold")


def compare_groups(
    table: pd.DataFrame, per_image: pd.DataFrame, metric: str = "iou", level: float = 0.05
) -> pd.DataFrame:
    """Per group with per-image test scores: the pooled mean of ``metric`` over every (split,
    image) it scored, its 95% bootstrap interval (:func:`kseg.stats.bootstrap_interval`, images
    resampled within splits) and whether it is tied with the best group of its dataset.

    Groups of one dataset scored on the same test splits (the same seeds, or the same folds) form a
    design; each group is compared with its design's best (highest pooled mean) on the images both
    scored in the same split, by a paired bootstrap of the mean difference within splits
    (:func:`kseg.stats.paired_bootstrap`); the p-values of a design's comparisons are Holm-adjusted
    (:func:`kseg.stats.holm`), and ``tied`` is True where the adjusted p-value is >= ``level``.
    Groups that share no image with the best get ``tied`` NA and a ``note`` saying so.
    Folds pool: a 5-fold group scores each image once, by the fold model that never saw it.
    """
    from kseg import stats

    columns = ["group", "pooled", "ci_lo", "ci_hi", "images", "p_holm", "tied", "note"]
    ok = with_groups(latest_ok_rows(table))
    test = per_image[per_image["set"] == "test"] if not per_image.empty else per_image
    if ok.empty or test.empty:
        return pd.DataFrame(columns=columns)
    ok = ok.assign(split=_split_key(ok))
    scores = test.merge(ok[["config_hash", "group", "dataset", "split"]], on="config_hash")
    scores["key"] = scores["split"] + ":" + scores["case_id"].astype(str)
    out = []
    # Groups compare within a design: the same dataset and the same set of test splits (seeds 0-2
    # of 100/50/50, or the 5 folds of seed 0, ...). Across designs they share no split.
    design = scores.groupby("group")["split"].agg(lambda splits: "|".join(sorted(set(splits))))
    scores["design"] = scores["dataset"] + "#" + scores["group"].map(design)
    for _, scored in scores.groupby("design", sort=False):
        by_group = {
            g: frame.drop_duplicates("key", keep="last").set_index("key")
            for g, frame in scored.groupby("group", sort=False)
        }
        means = {g: float(frame[metric].mean()) for g, frame in by_group.items()}
        best = max(means, key=means.get)
        results, compared = {}, []
        for group, frame in by_group.items():
            lo, hi = stats.bootstrap_interval(frame[metric], frame["split"])
            results[group] = dict(
                group=group,
                pooled=means[group],
                ci_lo=lo,
                ci_hi=hi,
                images=len(frame),
                p_holm=pd.NA,
                tied=pd.NA,
                note="",
            )
            if group == best:
                results[group].update(tied=True, note="best")
                continue
            shared = frame.index.intersection(by_group[best].index)
            if not len(shared):
                results[group]["note"] = "no test image in common with the best: not compared"
                continue
            diff = by_group[best].loc[shared, metric] - frame.loc[shared, metric]
            compared.append((group, stats.paired_bootstrap(diff, frame.loc[shared, "split"])[2]))
        for (group, _), adjusted in zip(compared, stats.holm([p for _, p in compared]) if compared else []):
            results[group].update(p_holm=float(adjusted), tied=bool(adjusted >= level))
        out += results.values()
    return pd.DataFrame(out, columns=columns)


def summarise(
    table: pd.DataFrame, metric: str = "test_iou", extra: Iterable[str] = (), per_image: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Mean, standard deviation and count of ``metric`` over seeds per group, best first, with
    the group's :data:`SHOWN` columns and the mean of each ``extra`` column. With ``per_image``
    scores (:func:`read_per_image`), also each group's pooled per-image mean, its 95% interval
    and whether it is tied with the best (:func:`compare_groups`).

    Only ok rows count; where a config ran twice (``--force``) its latest row counts.
    """
    ok = with_groups(latest_ok_rows(table))
    columns = [*SHOWN, "mean", "std", "n", *extra]
    if ok.empty:
        return pd.DataFrame(columns=columns)
    grouped = ok.groupby("group", sort=False)
    summary = grouped[metric].agg(["mean", "std", "count"]).rename(columns={"count": "n"})
    summary = grouped[list(SHOWN)].first().join(summary)
    for column in extra:
        summary[column] = grouped[column].mean()
    summary = summary.reset_index().sort_values("mean", ascending=False, ignore_index=True)
    if per_image is not None and metric == "test_iou":
        comparison = compare_groups(table, per_image)
        if not comparison.empty:
            summary = summary.merge(comparison, on="group", how="left")
    return summary


def format_summary(summary: pd.DataFrame, metric: str = "test IoU") -> str:
    """The summary as a plain-text ranking: one line per group, mean +- std (n)."""
    if summary.empty:
        return "No completed runs yet."
    widths = {c: max(len(c), *(len(str(v)) for v in summary[c])) for c in SHOWN}
    lines = [f"{'rank':>4}  " + " ".join(f"{c:<{w}}" for c, w in widths.items()) + f" {metric}"]
    for rank, r in enumerate(summary.itertuples(index=False), 1):
        spread = "" if pd.isna(r.std) else f" +- {r.std:.3f}"
        cells = " ".join(f"{getattr(r, c)!s:<{w}}" for c, w in widths.items())
        lines.append(f"{rank:>4}  {cells} {r.mean:.3f}{spread} (n={r.n}){_interval_text(r)}")
    if "tied" in summary:
        lines.append(
            "pooled: mean per-image IoU over every (split, image) scored, with its 95% bootstrap interval; "
            "'tied': not distinguishable from its dataset's best (paired bootstrap, Holm-adjusted, 5%)"
        )
    return "\n".join(lines)


def _interval_text(r) -> str:
    """`` pooled 0.871 [0.861, 0.880] tied`` for a group with per-image scores, else nothing."""
    if pd.isna(getattr(r, "pooled", pd.NA)):
        return ""
    verdict = {True: " tied with best", False: ""}.get(None if pd.isna(r.tied) else bool(r.tied), " (not compared)")
    return f"  pooled {r.pooled:.3f} [{r.ci_lo:.3f}, {r.ci_hi:.3f}]{' (best)' if r.note == 'best' else verdict}"


def _spread(mean: float, std: float) -> str:
    return f"{mean:.3f}" + ("" if pd.isna(std) else f" +- {std:.3f}")


def _millions(count: float) -> str:
    return "-" if pd.isna(count) else f"{count / 1e6:.2f}M"


def _minutes(seconds: float) -> str:
    """A run's whole time (training, refinement, scoring): what a grid of it costs."""
    return "-" if pd.isna(seconds) else f"{seconds / 60:.1f}"


def markdown_report(table: pd.DataFrame, per_image: pd.DataFrame | None = None) -> str:
    """A Markdown table per group of ok rows: test IoU and Dice mean +- std over seeds, dataset
    IoU, n, parameters, mean training seconds, minutes per run and mean epochs run, ranked by
    mean test IoU; with
    ``per_image`` scores also the pooled per-image IoU, its 95% interval and "tied with best"
    (:func:`compare_groups`)."""
    extra = ("test_dataset_iou", "train_seconds", "epochs_run", "params", "run_seconds")
    summary = summarise(table, extra=tuple(c for c in extra if c in table), per_image=per_image)
    if summary.empty:
        return "No completed runs yet."
    dice = summarise(table, metric="test_dice").set_index("group")
    # External sets the runs were scored on (--external): their IoU, mean +- std over seeds.
    externals = [c for c in table if EXTERNAL_COLUMN.match(c) and c.endswith("_iou") and not c.endswith("dataset_iou")]
    externals = {c: summarise(table, metric=c).set_index("group") for c in externals if table[c].notna().any()}
    compared = "pooled" in summary
    header = [*SHOWN, "test IoU", "test Dice", "dataset IoU", "n", "params", "train s", "min/run", "epochs"]
    header += [c.removeprefix("ext_").removesuffix("_iou") + " IoU" for c in externals]
    header += ["pooled IoU [95% CI]", "tied with best"] if compared else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in summary.itertuples(index=False):
        cells = [str(getattr(r, c)) for c in SHOWN] + [
            _spread(r.mean, r.std),
            _spread(dice.loc[r.group, "mean"], dice.loc[r.group, "std"]),
            f"{r.test_dataset_iou:.3f}",
            str(r.n),
            _millions(getattr(r, "params", float("nan"))),
            f"{r.train_seconds:.0f}",
            _minutes(getattr(r, "run_seconds", float("nan"))),
            f"{r.epochs_run:.0f}",
        ]
        for other in externals.values():
            known = r.group in other.index and not pd.isna(other.loc[r.group, "mean"])
            cells.append(_spread(other.loc[r.group, "mean"], other.loc[r.group, "std"]) if known else "-")
        if compared:
            cells += (
                [f"{r.pooled:.3f} [{r.ci_lo:.3f}, {r.ci_hi:.3f}]", _tie_label(r)]
                if not pd.isna(r.pooled)
                else ["-"] * 2
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _tie_label(r) -> str:
    """``best``, ``yes`` (tied with it), ``no``, or ``not compared`` (no image in common)."""
    if r.note == "best":
        return "best"
    return "not compared" if pd.isna(r.tied) else "yes" if r.tied else "no"


def recipe_comparison(table: pd.DataFrame, model: str, loss: str, preset: str | None = None) -> str:
    """A Markdown table of every recipe one model + loss pair was trained with (the ablation):
    per group, mean +- std over seeds of validation and test IoU, before and after the run's
    refinement (chosen on validation), and minutes per run (training, refinement, scoring)."""
    rows = table[(table["model"] == model) & (table["loss"] == loss)]
    if preset:
        rows = rows[rows["preset"] == preset]
    ok = with_groups(latest_ok_rows(rows))
    if ok.empty:
        return "No completed runs yet."
    ok["val_plain"] = ok["val_iou_plain"].fillna(ok["val_iou"])
    ok["val_refined"] = ok["val_iou_refined"].fillna(ok["val_plain"])
    ok["test_plain"] = ok["test_iou_plain"].fillna(ok["test_iou"])
    ok["minutes"] = ok["run_seconds"].fillna(ok["train_seconds"]) / 60
    metrics = ("val_plain", "val_refined", "test_plain", "test_iou", "minutes")
    grouped = ok.groupby("group", sort=False)
    header = [
        "recipe",
        "device",
        "precision",
        "n",
        "val IoU",
        "val IoU refined",
        "test IoU",
        "test IoU refined",
        "min/run",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    summary = grouped[["recipe", "device", "precision"]].first().join(grouped["seed"].count().rename("n"))
    for m in metrics:
        summary[m], summary[m + "_std"] = grouped[m].mean(), grouped[m].std()
    for r in summary.sort_values("test_iou", ascending=False).itertuples():
        cells = (
            [r.recipe, r.device, r.precision, str(r.n)]
            + [_spread(getattr(r, m), getattr(r, m + "_std")) for m in metrics[:-1]]
            + [f"{r.minutes:.1f}"]
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_comparison(
    table: pd.DataFrame,
    base_recipe: str,
    new_recipe: str,
    metric: str = "test_iou",
    per_image: pd.DataFrame | None = None,
) -> str:
    """A Markdown table of two recipes run on the same splits, paired by (dataset, model, loss,
    seed, split seed, fold): per pair of model and loss, each recipe's mean +- std of ``metric``
    over its runs, the mean +- std of the per-run difference (new - base) and how many runs
    gained, then one line over all pairs. Runs without a partner are left out and counted.

    With ``per_image`` scores (:func:`read_per_image`) and the test IoU, each pair also gets the
    per-image test: the mean of the differences on the images both recipes scored in the same
    split, its 95% interval and p-value by a paired bootstrap resampling images within splits
    (:func:`kseg.stats.paired_bootstrap`), Holm-adjusted over the pairs compared
    (:func:`kseg.stats.holm`)."""
    rows = with_groups(latest_ok_rows(table))
    rows = rows.assign(fold=rows["fold"].fillna(0) if "fold" in rows else 0)
    key = ["dataset", "model", "loss", "seed", "split_seed", "fold"]
    base = rows[rows["recipe"] == base_recipe].drop_duplicates(key, keep="last")
    new = rows[rows["recipe"] == new_recipe].drop_duplicates(key, keep="last")
    if base.empty or new.empty:
        missing = base_recipe if base.empty else new_recipe
        return f"No ok rows of the recipe {missing!r}."
    joined = base[key + [metric, "config_hash"]].merge(
        new[key + [metric, "config_hash"]], on=key, suffixes=("_base", "_new")
    )
    joined["gain"] = joined[f"{metric}_new"] - joined[f"{metric}_base"]
    grouped = joined.groupby(["model", "loss"], sort=False)
    order = grouped[f"{metric}_new"].mean().sort_values(ascending=False).index
    tests = _per_image_pair_tests(grouped, order, per_image) if per_image is not None and metric == "test_iou" else {}
    header = ["model", "loss", "n", f"base {metric}", f"new {metric}", "gain", "runs gained"]
    if tests:
        header += ["per-image gain [95% CI]", "images", "p (Holm)"]
    lines = [
        f"base: `{base_recipe}`; new: `{new_recipe}`",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for model, loss in order:
        g = grouped.get_group((model, loss))
        cells = [
            model,
            loss,
            str(len(g)),
            _spread(g[f"{metric}_base"].mean(), g[f"{metric}_base"].std()),
            _spread(g[f"{metric}_new"].mean(), g[f"{metric}_new"].std()),
            f"{g['gain'].mean():+.3f}" + ("" if len(g) < 2 else f" +- {g['gain'].std():.3f}"),
            f"{int((g['gain'] > 0).sum())} of {len(g)}",
        ]
        if tests:
            test = tests.get((model, loss))
            cells += (
                [f"{test['mean']:+.3f} [{test['lo']:+.3f}, {test['hi']:+.3f}]", str(test["images"]), f"{test['p']:.3g}"]
                if test
                else ["-", "0", "-"]
            )
        lines.append("| " + " | ".join(cells) + " |")
    unpaired = len(base) + len(new) - 2 * len(joined)
    lines += [
        "",
        f"All pairs: gain {joined['gain'].mean():+.4f} on average; {int((joined['gain'] > 0).sum())} of "
        f"{len(joined)} runs gained" + (f"; {unpaired} run(s) without a partner left out" if unpaired else "") + ".",
    ]
    if tests:
        lines.append(
            "Per-image: paired bootstrap of the mean difference (new - base) over the test images both runs of a "
            "pair scored, resampled within splits; p Holm-adjusted over the pairs."
        )
    return "\n".join(lines)


def _per_image_pair_tests(grouped, order, per_image: pd.DataFrame) -> dict:
    """The paired per-image test of each (model, loss) of :func:`paired_comparison`."""
    from kseg import stats

    test_scores = per_image[per_image["set"] == "test"].drop_duplicates(["config_hash", "case_id"], keep="last")
    by_run = test_scores.set_index(["config_hash", "case_id"])["iou"]
    found = {}
    for model, loss in order:
        differences, strata = [], []
        for run in grouped.get_group((model, loss)).itertuples():
            try:
                base_scores, new_scores = by_run.loc[run.config_hash_base], by_run.loc[run.config_hash_new]
            except KeyError:  # a run without per-image scores (written before the companion file)
                continue
            shared = base_scores.index.intersection(new_scores.index)
            differences += list(new_scores[shared] - base_scores[shared])
            strata += [f"{run.split_seed}/{run.fold}"] * len(shared)
        if differences:
            mean, (lo, hi), p = stats.paired_bootstrap(differences, strata)
            found[model, loss] = dict(mean=mean, lo=lo, hi=hi, p=p, images=len(differences))
    adjusted = stats.holm([test["p"] for test in found.values()]) if found else []
    for test, p in zip(found.values(), adjusted):
        test["p"] = float(p)
    return found


def transfer_report(table: pd.DataFrame, scores_csv: str | Path) -> str:
    """A Markdown table that joins the leaderboard with the scores of its runs' models on another
    set (the CSV ``python -m kseg evaluate --model runs/*/model.keras --csv`` writes; runs matched
    by ``run_id``): per group, mean +- std over seeds of the test IoU where it was trained and of
    the other set's IoU, ISIC score (IoU < 0.65 counts 0) and failure fraction (IoU < 0.5)."""
    # A model scored twice counts once, with its latest row.
    other = pd.read_csv(scores_csv, dtype={"run_id": "string"}).drop_duplicates("run_id", keep="last")
    joined = with_groups(latest_ok_rows(table)).merge(
        other[["run_id", "test_iou", "test_isic_score", "test_failure_fraction"]].rename(
            columns=lambda c: c.replace("test_", "other_")
        ),
        on="run_id",
    )
    if joined.empty:
        return f"No run of the leaderboard appears in {scores_csv}."
    grouped = joined.groupby("group", sort=False)
    metrics = ("test_iou", "other_iou", "other_isic_score", "other_failure_fraction")
    summary = grouped[["dataset", "model", "loss", "recipe"]].first().join(grouped["seed"].count().rename("n"))
    for m in metrics:
        summary[m], summary[m + "_std"] = grouped[m].mean(), grouped[m].std()
    header = [
        "trained on",
        "model",
        "loss",
        "recipe",
        "n",
        "own test IoU",
        f"{Path(scores_csv).stem} IoU",
        "ISIC score",
        "failures (IoU < 0.5)",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in summary.sort_values("other_iou", ascending=False).itertuples():
        cells = [r.dataset, r.model, r.loss, r.recipe, str(r.n)] + [
            _spread(getattr(r, m), getattr(r, m + "_std")) for m in metrics
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: pd.DataFrame, path: str | Path, title: str = "Mean test IoU over seeds") -> Path:
    """A horizontal bar chart of the summary with one-standard-deviation error bars, as PNG.
    Uses matplotlib's Figure API, so a notebook's plotting backend is left alone."""
    from matplotlib.figure import Figure

    path = Path(path)
    labels = [
        f"{r.model} + {r.loss} ({r.dataset}, {r.preset}, {r.device}, {r.backend}, {r.precision}, {r.recipe})"
        for r in summary.itertuples()
    ]
    fig = Figure(figsize=(13, 0.4 * len(summary) + 1.2))
    ax = fig.add_subplot()
    if "pooled" in summary and summary["pooled"].notna().any():
        # Pooled per-image means with their 95% intervals; groups tied with the best in orange.
        value = summary["pooled"].fillna(summary["mean"])
        error = [
            (value - summary["ci_lo"].fillna(value)).to_numpy(),
            (summary["ci_hi"].fillna(value) - value).to_numpy(),
        ]
        colours = ["#dd8452" if t is True else "#4c72b0" for t in summary["tied"]]
        ax.barh(labels[::-1], value[::-1], xerr=[e[::-1] for e in error], capsize=3, color=colours[::-1])
        best = summary.loc[summary["note"] == "best"].iloc[0]
        ax.axvspan(best["ci_lo"], best["ci_hi"], color="#dd8452", alpha=0.15, label="best group's 95% interval")
        ax.legend(
            loc="lower right", fontsize=7, title="orange: tied with best (paired bootstrap, Holm, 5%)", title_fontsize=7
        )
        ax.set_xlabel("test IoU (pooled over every scored image, 95% bootstrap interval)")
    else:
        ax.barh(labels[::-1], summary["mean"][::-1], xerr=summary["std"].fillna(0)[::-1], capsize=3, color="#4c72b0")
        ax.set_xlabel("test IoU (mean +- std over seeds)")
    ax.set_xlim(max(0.0, float(summary["mean"].min()) - 0.15), 1.0)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


__all__ = [
    "COLUMNS",
    "ensemble_table",
    "EXTERNAL_COLUMN",
    "SOURCE_COLUMN",
    "known_column",
    "folder_label",
    "external_prefix",
    "REQUIRED",
    "TEXT_COLUMNS",
    "STATUSES",
    "append_row",
    "PER_IMAGE_COLUMNS",
    "per_image_path",
    "append_per_image",
    "read_per_image",
    "merge",
    "read",
    "completed_hashes",
    "SHOWN",
    "recipe",
    "with_groups",
    "latest_ok_rows",
    "compare_groups",
    "summarise",
    "format_summary",
    "markdown_report",
    "recipe_comparison",
    "paired_comparison",
    "transfer_report",
    "plot",
]
