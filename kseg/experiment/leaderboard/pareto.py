"""Accuracy against cost: the groups no other group beats on both (``pareto_table``), and the
picture of test IoU against training minutes and inference milliseconds (``cost_plot``).

A group (model x loss x recipe, seeds pooled; :func:`summarise`) is on the front when no other
group has at least its mean score at no more than its mean cost, one of the two strictly better.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kseg.experiment.leaderboard.schema import lower_is_better
from kseg.experiment.leaderboard.summary import _spread, latest_ok_rows, summarise, with_groups

__all__ = ["COSTS", "pareto_front", "pareto_table", "cost_plot"]

#: The costs a front can be drawn against: column -> (label, scale to the label's unit).
COSTS = {
    "train_seconds": ("training minutes", 1 / 60),
    "infer_ms_per_image": ("inference ms per image", 1.0),
    "gflops": ("forward GFLOPs per image", 1.0),
    "params": ("parameters (M)", 1e-6),
    "run_seconds": ("minutes per run", 1 / 60),
}


def pareto_front(summary: pd.DataFrame, cost: str, score: str = "mean") -> pd.Series:
    """Whether each row of ``summary`` is on the front of high ``score`` and low ``cost``."""
    values = summary[[score, cost]].to_numpy(dtype=float)
    on_front = []
    for s, c in values:
        dominated = ((values[:, 0] >= s) & (values[:, 1] <= c) & ((values[:, 0] > s) | (values[:, 1] < c))).any()
        on_front.append(not dominated)
    return pd.Series(on_front, index=summary.index)


def _with_costs(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    costs = [c for c in COSTS if c in table]
    # Rows written before a cost column existed read it as empty (NA) cells.
    table = table.assign(**{c: pd.to_numeric(table[c], errors="coerce") for c in costs})
    summary = summarise(table, metric=metric, extra=costs)
    for column in costs:  # the spread over seeds of a time, for the plot's error bars
        summary[f"{column}_std"] = summary["group"].map(_group_std(table, column))
    return summary


def _group_std(table: pd.DataFrame, column: str) -> dict:
    rows = with_groups(latest_ok_rows(table))
    return rows.groupby("group")[column].std().to_dict()


def pareto_table(table: pd.DataFrame, cost: str = "train_seconds", metric: str = "test_iou") -> str:
    """A Markdown table of the groups on the front of ``metric`` against ``cost``, cheapest first,
    with the other costs beside them."""
    if cost not in COSTS:
        raise ValueError(f"Unknown cost {cost!r}. Expected one of: {', '.join(COSTS)}. Received: cost={cost!r}")
    if lower_is_better(metric):
        raise ValueError(f"A front is drawn for a score where higher is better. Received: metric={metric!r}")
    summary = _with_costs(table, metric)
    summary = summary.dropna(subset=["mean", cost]) if cost in summary else summary.iloc[0:0]
    if summary.empty:
        return f"No ok rows with {cost}."
    front = summary[pareto_front(summary, cost)].sort_values(cost)
    costs = [c for c in COSTS if c in front and front[c].notna().any()]
    header = ["dataset", "model", "loss", "recipe", "n", metric, *(COSTS[c][0] for c in costs), "cpu kind"]
    lines = [
        f"Groups no other beats on both {metric} and {COSTS[cost][0]} ({len(front)} of {len(summary)}):",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    kinds = _cpu_kinds(table)
    for r in front.itertuples():
        cells = [r.dataset, r.model, r.loss, r.recipe, str(r.n), _spread(r.mean, r.std)]
        cells += [_number(getattr(r, c) * COSTS[c][1]) for c in costs]
        lines.append("| " + " | ".join([*map(str, cells), kinds.get(r.group, "-")]) + " |")
    return "\n".join(lines)


def _cpu_kinds(table: pd.DataFrame) -> dict:
    if "cpu_kind" not in table:
        return {}
    rows = with_groups(latest_ok_rows(table)).dropna(subset=["cpu_kind"])
    return rows.groupby("group")["cpu_kind"].agg(lambda kinds: " / ".join(sorted(set(kinds)))).to_dict()


def _number(value: float) -> str:
    if pd.isna(value):
        return "-"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def cost_plot(
    table: pd.DataFrame, path: str | Path, metric: str = "test_iou", costs=("train_seconds", "infer_ms_per_image")
) -> Path:
    """One panel per cost: every group's mean ``metric`` (error bars: the std over seeds of
    both) against its mean cost on a log axis, the front joined by a line, each point labelled
    model+loss; written as a PNG at ``path``."""
    from matplotlib.figure import Figure

    from kseg.visualize import save_figure

    summary = _with_costs(table, metric)
    fig = Figure(figsize=(6.5 * len(costs), 5.5))
    axes = fig.subplots(1, len(costs), squeeze=False)
    for ax, cost in zip(axes[0], costs):
        label, scale = COSTS[cost]
        rows = summary.dropna(subset=["mean", cost]) if cost in summary else summary.iloc[0:0]
        if rows.empty:
            ax.text(0.5, 0.5, f"no rows with {cost}", ha="center", transform=ax.transAxes)
            continue
        x, xerr = rows[cost] * scale, rows[f"{cost}_std"].fillna(0) * scale
        ax.errorbar(x, rows["mean"], xerr=xerr, yerr=rows["std"].fillna(0), fmt="o", alpha=0.7, capsize=2)
        front = rows[pareto_front(rows, cost)].sort_values(cost)
        ax.plot(front[cost] * scale, front["mean"], "-", color="C3", label="front: no group beats it on both")
        for r in rows.itertuples():
            ax.annotate(
                f"{r.model}+{r.loss}",
                (getattr(r, cost) * scale, r.mean),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.set(xscale="log", xlabel=f"{label} (mean over seeds, log scale)", ylabel=f"{metric} (mean over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    kinds = sorted(set(table["cpu_kind"].dropna())) if "cpu_kind" in table else []
    fig.suptitle(f"{metric} against cost" + (f" ({'; '.join(kinds)})" if kinds else ""), fontsize=10)
    return save_figure(fig, path)
