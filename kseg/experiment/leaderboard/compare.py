"""Comparing recipes of one model and loss: the ablation table of every recipe it was trained with
(``recipe_comparison``) and two recipes paired run by run on the same splits, with a paired
per-image bootstrap where per-image scores exist (``paired_comparison``).
"""

from __future__ import annotations

import pandas as pd

from kseg.experiment.leaderboard.schema import lower_is_better, per_image_score
from kseg.experiment.leaderboard.summary import _spread, latest_ok_rows, with_groups

__all__ = [
    "recipe_comparison",
    "paired_comparison",
]


def _scored_parts(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """(column, header) of each per-source validation and test IoU and each external set's IoU
    that some of ``rows`` have: a joint recipe is chosen on its sources' validation parts."""
    parts = []
    for prefix, header in (("val_iou_source_", "val IoU {}"), ("test_iou_source_", "test IoU {}")):
        parts += [(c, header.format(c[len(prefix) :])) for c in rows if c.startswith(prefix)]
    externals = [c for c in rows if c.startswith("ext_") and c.endswith("_iou")]
    parts += [(c, f"{c[4:-4]} IoU") for c in externals if not c.endswith(("_dataset_iou", "_members_iou"))]
    return [(column, header) for column, header in parts if rows[column].notna().any()]


def recipe_comparison(table: pd.DataFrame, model: str, loss: str, preset: str | None = None) -> str:
    """A Markdown table of every recipe one model + loss pair was trained with (the ablation):
    per group, mean +- std over seeds of validation and test IoU, before and after the run's
    refinement (chosen on validation), and minutes per run (training, refinement, scoring).
    Where runs start from another run (``init_source``), a column names it (two pretrainings
    give one recipe label); where rows score sources or external sets apart, a column each."""
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
    parts = _scored_parts(ok)
    starts = ok["init_source"].notna().any()  # with_groups gives every row every schema column
    if starts:
        ok["starts_from"] = ok["init_source"].fillna("-")
    metrics = ("val_plain", "val_refined", "test_plain", "test_iou", *(c for c, _ in parts), "minutes")
    grouped = ok.groupby("group", sort=False)
    header = [
        "recipe",
        *(["starts from"] if starts else []),
        "device",
        "precision",
        "n",
        "val IoU",
        "val IoU refined",
        "test IoU",
        "test IoU refined",
        *(h for _, h in parts),
        "min/run",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    labels = ["recipe", *(["starts_from"] if starts else []), "device", "precision"]
    summary = grouped[labels].first().fillna("-").join(grouped["seed"].count().rename("n"))
    for m in metrics:
        summary[m], summary[m + "_std"] = grouped[m].mean(), grouped[m].std()
    for r in summary.sort_values("test_iou", ascending=False).itertuples():
        cells = (
            [getattr(r, label) for label in labels]
            + [str(r.n)]
            + [_spread(getattr(r, m), getattr(r, m + "_std")) if pd.notna(getattr(r, m)) else "-" for m in metrics[:-1]]
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
    gained (a gain is a fall where lower is better: :func:`lower_is_better`), then one line over
    all pairs. Runs without a partner are left out and counted.

    With ``per_image`` scores (:func:`read_per_image`) of a test score they hold (the test IoU,
    HD95, NSD, ECE, ...), each pair also gets the per-image test: the mean of the differences on
    the images both recipes scored in the same split, its 95% interval and p-value by a paired
    bootstrap resampling images within splits (:func:`kseg.experiment.stats.paired_bootstrap`),
    Holm-adjusted over the pairs compared (:func:`kseg.experiment.stats.holm`)."""
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
    lower = lower_is_better(metric)
    joined["gained"] = joined["gain"] < 0 if lower else joined["gain"] > 0
    grouped = joined.groupby(["model", "loss"], sort=False)
    order = grouped[f"{metric}_new"].mean().sort_values(ascending=lower).index
    score = per_image_score(metric)
    has_scores = per_image is not None and score in per_image
    tests = _per_image_pair_tests(grouped, order, per_image.dropna(subset=[score]), score) if has_scores else {}
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
            f"{int(g['gained'].sum())} of {len(g)}",
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
        f"All pairs: gain {joined['gain'].mean():+.4f} on average; {int(joined['gained'].sum())} of "
        f"{len(joined)} runs gained" + (f"; {unpaired} run(s) without a partner left out" if unpaired else "") + ".",
    ]
    if tests:
        lines.append(
            "Per-image: paired bootstrap of the mean difference (new - base) over the test images both runs of a "
            "pair scored, resampled within splits; p Holm-adjusted over the pairs."
        )
    return "\n".join(lines)


def _per_image_pair_tests(grouped, order, per_image: pd.DataFrame, score: str = "iou") -> dict:
    """The paired per-image test of ``score`` for each (model, loss) of :func:`paired_comparison`."""
    from kseg.experiment import stats

    test_scores = per_image[per_image["set"] == "test"].drop_duplicates(["config_hash", "case_id"], keep="last")
    by_run = test_scores.set_index(["config_hash", "case_id"])[score]
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
