"""Ranking the leaderboard's runs: grouping them by identity minus seeds (``group_hash``), the
mean and spread over seeds per group, each group's pooled per-image interval and whether it is tied
with the best (``compare_groups``), and the plain-text ranking (``format_summary``).
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Mapping

import pandas as pd

from kseg.experiment.config import knobs
from kseg.experiment.leaderboard.schema import COLUMNS, lower_is_better, per_image_score

__all__ = [
    "SHOWN",
    "recipe",
    "with_groups",
    "latest_ok_rows",
    "compare_groups",
    "summarise",
    "format_summary",
]

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
    that are on, each part as its :class:`kseg.experiment.config.Knob` writes it (a row without a knob's
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
    image) it scored, its 95% bootstrap interval (:func:`kseg.bootstrap.bootstrap_ci`, images
    resampled within splits) and whether it is tied with the best group of its dataset.

    Groups of one dataset scored on the same test splits (the same seeds, or the same folds) form a
    design; each group is compared with its design's best (highest pooled mean) on the images both
    scored in the same split, by a paired bootstrap of the mean difference within splits
    (:func:`kseg.experiment.stats.paired_bootstrap`); the p-values of a design's comparisons are Holm-adjusted
    (:func:`kseg.experiment.stats.holm`), and ``tied`` is True where the adjusted p-value is >= ``level``.
    Groups that share no image with the best get ``tied`` NA and a ``note`` saying so.
    Folds pool: a 5-fold group scores each image once, by the fold model that never saw it.
    The best is the lowest mean for a score where lower is better (:func:`lower_is_better`).
    """
    from kseg.bootstrap import bootstrap_ci
    from kseg.experiment import stats

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
        best = (min if lower_is_better(metric) else max)(means, key=means.get)
        results, compared = {}, []
        for group, frame in by_group.items():
            lo, hi = bootstrap_ci(frame[metric], frame["split"])
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
    """Mean, standard deviation and count of ``metric`` over seeds per group, best first (the
    lowest first for a distance or an error: :func:`lower_is_better`), with the group's
    :data:`SHOWN` columns and the mean of each ``extra`` column. With ``per_image`` scores
    (:func:`read_per_image`) of a test score they hold (``test_iou``, ``test_hd95``, ...), also
    each group's pooled per-image mean, its 95% interval and whether it is tied with the best
    (:func:`compare_groups`).

    Only ok rows count; where a config ran twice (``--force``) its latest row counts.
    """
    ok = with_groups(latest_ok_rows(table))
    columns = ["group", *SHOWN, "mean", "std", "n", *extra]
    if ok.empty:  # the same columns as a filled summary, so callers can select on them
        return pd.DataFrame(columns=columns)
    grouped = ok.groupby("group", sort=False)
    summary = grouped[metric].agg(["mean", "std", "count"]).rename(columns={"count": "n"})
    summary = grouped[list(SHOWN)].first().join(summary)
    for column in extra:
        summary[column] = grouped[column].mean()
    summary = summary.reset_index().sort_values("mean", ascending=lower_is_better(metric), ignore_index=True)
    score = per_image_score(metric)
    if per_image is not None and score and score in per_image:
        comparison = compare_groups(table, per_image.dropna(subset=[score]), score)
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
            f"pooled: mean per-image {metric} over every (split, image) scored, with its 95% bootstrap interval; "
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
