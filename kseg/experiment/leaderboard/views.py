"""Reports of the leaderboard: the Markdown ranking (``markdown_report``), the ensemble rows
(``ensemble_table``), the join with another set's scores (``transfer_report``) and the bar chart
(``plot``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kseg.experiment.leaderboard.schema import EXTERNAL_COLUMN
from kseg.experiment.leaderboard.summary import SHOWN, _spread, latest_ok_rows, summarise, with_groups

__all__ = [
    "markdown_report",
    "columns_table",
    "ensemble_table",
    "transfer_report",
    "plot",
]


def ensemble_table(table: pd.DataFrame) -> pd.DataFrame:
    """The ensemble rows (``kind`` set, :mod:`kseg.experiment.group_ensembles`), one per ensemble, with
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


def columns_table(table: pd.DataFrame, columns: list[str], metric: str = "test_iou") -> str:
    """A Markdown table of any leaderboard columns, mean +- std over seeds per group (model, loss,
    recipe), ranked by ``metric`` (lowest first where lower is better): the border, calibration
    and cost scores side by side, e.g. ``--columns test_iou test_hd95 test_nsd test_ece``."""
    numeric = table.assign(**{c: pd.to_numeric(table[c], errors="coerce") for c in columns if c in table})
    missing = [c for c in [metric, *columns] if c not in numeric]
    if missing:
        raise ValueError(f"Unknown leaderboard column(s): {', '.join(missing)}")
    summary = summarise(numeric, metric=metric)
    if summary.empty:
        return "No completed runs yet."
    spreads = {c: summarise(numeric, metric=c).set_index("group") for c in columns}
    header = ["model", "loss", "recipe", "precision", "n", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in summary.itertuples(index=False):
        cells = [r.model, r.loss, r.recipe, r.precision, str(r.n)]
        for column in columns:
            value = spreads[column].loc[r.group]
            cells.append(_number_spread(value["mean"], value["std"]))
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def _number_spread(mean: float, std: float) -> str:
    """``mean +- std`` with as many decimals as the size calls for (3 below 10, 1 below 100, none
    above: IoUs, distances, seconds, parameter counts), without a spread that is 0 or unknown."""
    if pd.isna(mean):
        return "-"
    decimals = 3 if abs(mean) < 10 else 1 if abs(mean) < 100 else 0
    spread = "" if pd.isna(std) or std == 0 else f" +- {std:.{decimals}f}"
    return f"{mean:.{decimals}f}{spread}"


def _tie_label(r) -> str:
    """``best``, ``yes`` (tied with it), ``no``, or ``not compared`` (no image in common)."""
    if r.note == "best":
        return "best"
    return "not compared" if pd.isna(r.tied) else "yes" if r.tied else "no"


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


def plot(summary: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """A horizontal bar chart of the summary's groups, as PNG: each bar labelled model + loss (with
    whatever else differs between the groups: the recipe, the dataset, ...), its value and
    interval printed beside it, and what is shared between the groups in the title. The pooled
    per-image test IoU with its 95% interval where per-image scores exist (groups tied with the
    best in orange), else the mean +- std over seeds; a 0 shows as a marker on the axis. Uses
    matplotlib's Figure API, so a notebook's plotting backend is left alone."""
    from matplotlib.figure import Figure

    path = Path(path)
    varying = [c for c in ("dataset", "preset", "device", "backend", "precision", "recipe") if summary[c].nunique() > 1]
    shared = [str(summary[c].iloc[0]) for c in ("dataset", "preset", "recipe", "precision") if c not in varying]
    labels = [f"{r.model} + {r.loss}" + "".join(f"\n{getattr(r, c)}" for c in varying) for r in summary.itertuples()]
    spread = summary["std"].fillna(0)
    pooled = summary["pooled"].notna() if "pooled" in summary else pd.Series(False, index=summary.index)
    value = summary["pooled"].where(pooled, summary["mean"]) if pooled.any() else summary["mean"]
    low = summary["ci_lo"].where(pooled, summary["mean"] - spread) if pooled.any() else value - spread
    high = summary["ci_hi"].where(pooled, summary["mean"] + spread) if pooled.any() else value + spread
    colours = ["#dd8452" if t is True else "#4c72b0" for t in summary.get("tied", [None] * len(summary))]
    xlabel = "test IoU: " + (
        "mean over every scored image (seeds pooled) with its 95% bootstrap interval; "
        "groups without per-image scores: mean over seeds +- std"
        if pooled.any()
        else "mean over seeds, +- one standard deviation"
    )
    fig = Figure(figsize=(9, 0.45 * len(summary) * (1 + 0.4 * len(varying)) + 1.6))
    ax = fig.add_subplot()
    rows = range(len(summary))[::-1]  # the best on top
    ax.barh(rows, value, xerr=[value - low, high - value], capsize=3, color=colours)
    ax.plot(value, rows, "|", color="black", markersize=8)  # a bar of 0 still shows its place
    for y, v, lo, hi in zip(rows, value, low, high):
        ax.text(min(hi, 1.0) + 0.005, y, f"{v:.3f} [{lo:.3f}, {hi:.3f}]", va="center", fontsize=7)
    if pooled.any() and (summary["note"] == "best").any():  # the dataset's best may be a group of another grid
        best = summary.loc[summary["note"] == "best"].iloc[0]
        ax.axvspan(best["ci_lo"], best["ci_hi"], color="#dd8452", alpha=0.15, label="best group's 95% interval")
        ax.legend(
            loc="lower left",
            fontsize=7,
            title="orange: tied with the best (paired bootstrap, Holm, 5%)",
            title_fontsize=7,
        )
    ax.set_yticks(list(rows), labels, fontsize=8)
    low_end = float(min(low.min(), value.min()))
    ax.set_xlim(0.0 if low_end < 0.3 else low_end - 0.05, float(high.max()) + 0.08)  # room for the values
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_title(title or " | ".join(shared) or "test IoU", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
