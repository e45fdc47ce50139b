"""``python -m kseg leaderboard``: the leaderboard, its views and comparisons."""

from __future__ import annotations

import argparse
from pathlib import Path

from kseg.cli._flags import EXIT_OK, refuse


def leaderboard_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Prints the leaderboard's summary (mean +- std over seeds per group), as text or Markdown."""
    from kseg.experiment import leaderboard

    if args.merge:
        print(
            f"[leaderboard] {leaderboard.merge(args.merge, args.results)} rows from {args.merge} "
            f"appended to {args.results}"
        )
    if not Path(args.results).exists():
        return refuse(f"no leaderboard at {args.results}")
    table = leaderboard.read(args.results)
    if args.metric not in table:
        scores = sorted(c for c in table.columns if c.startswith(("test_", "ext_", "val_")))
        return refuse(f"--metric {args.metric} is not a column of {args.results}. Expected one of: {', '.join(scores)}")
    for column in ("dataset", "preset", "loss", "kseg_version", "cpu_kind"):
        if getattr(args, column):
            table = table[table[column] == getattr(args, column)] if column in table else table.iloc[0:0]
    if args.seed is not None:
        table = table[table["seed"] == args.seed]
    if args.has:
        table = table[table[args.has].notna()] if args.has in table else table.iloc[0:0]
    if args.recipe:
        table = table[leaderboard.with_groups(table)["recipe"] == args.recipe]
    if args.cost_plot:
        print(f"[leaderboard] {leaderboard.cost_plot(table, args.cost_plot, metric=args.metric)}")
    if args.pareto:
        print(leaderboard.pareto_table(table, args.pareto, metric=args.metric))
    elif args.columns:
        print(leaderboard.columns_table(table, args.columns, metric=args.metric))
    elif args.recipes:
        model, _, loss = args.recipes.partition("+")
        print(leaderboard.recipe_comparison(table, model, loss))
    elif args.paired:
        per_image = leaderboard.read_per_image(args.results)
        print(leaderboard.paired_comparison(table, *args.paired, metric=args.metric, per_image=per_image))
    elif args.transfer:
        print(leaderboard.transfer_report(table, args.transfer))
    elif not args.cost_plot:  # the plot alone, when it is all that was asked
        per_image = leaderboard.read_per_image(args.results)
        print(
            leaderboard.markdown_report(table, per_image)
            if args.markdown
            else leaderboard.format_summary(
                leaderboard.summarise(table, metric=args.metric, per_image=per_image), metric=args.metric
            )
        )
    return EXIT_OK


def add_leaderboard_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``leaderboard``'s flags: which rows, and which view of them."""
    p.add_argument("--results", default="experiments.csv", help="leaderboard CSV")
    p.add_argument("--markdown", action="store_true", help="a Markdown table (as in docs/results.md)")
    p.add_argument("--dataset", help="only rows of this dataset")
    p.add_argument("--preset", help="only rows of this preset")
    p.add_argument("--loss", help="only rows of this loss")
    p.add_argument("--kseg-version", help="only rows written by this kseg version, e.g. 0.3.0")
    p.add_argument(
        "--cpu-kind",
        help='only rows timed on this CPU kind, as the cpu_kind column writes it (e.g. "AMD EPYC Zen 5, avx512_bf16"): '
        "times compare only within one",
    )
    p.add_argument("--seed", type=int, help="only rows of this seed (an ablation run on one seed)")
    p.add_argument("--recipe", help="only rows of this recipe, as the table's recipe column writes it")
    p.add_argument(
        "--has",
        metavar="COLUMN",
        help="only rows with this column filled, e.g. test_hd95 (rows written since it exists)",
    )
    p.add_argument("--merge", metavar="CSV", help="first append the rows of another leaderboard that --results lacks")
    p.add_argument(
        "--transfer",
        metavar="CSV",
        help="join scores of the runs' models on another set "
        "(`python -m kseg evaluate --model runs/*/model.keras --csv CSV`) and summarise them per group (Markdown)",
    )
    p.add_argument(
        "--paired",
        nargs=2,
        metavar=("BASE", "NEW"),
        help="compare two recipes (as the recipe column writes them) run on the same splits, paired by model, "
        "loss and seed (Markdown): the gain per pair and how many runs gained",
    )
    p.add_argument(
        "--metric",
        default="test_iou",
        help="the column ranked (the plain summary) or compared (--paired), e.g. test_hd95, test_nsd, test_ece or "
        "ext_isic2018_dev_iou; distances and errors rank lowest first",
    )
    p.add_argument(
        "--pareto",
        nargs="?",
        const="train_seconds",
        choices=("train_seconds", "infer_ms_per_image", "gflops", "params", "run_seconds"),
        metavar="COST",
        help="the groups no other beats on both --metric and COST (Markdown): train_seconds (default), "
        "infer_ms_per_image, gflops, params or run_seconds",
    )
    p.add_argument(
        "--columns",
        nargs="+",
        metavar="COLUMN",
        help="a Markdown table of these columns, mean +- std over seeds per group, ranked by --metric, e.g. "
        "test_iou test_hd95 test_nsd test_ece_plain test_ece infer_ms_per_image",
    )
    p.add_argument(
        "--cost-plot",
        metavar="PNG",
        help="plot --metric against training minutes and inference ms per image, the front joined (for docs/)",
    )
    p.add_argument(
        "--recipes",
        metavar="MODEL+LOSS",
        help="compare every recipe of one pair (Markdown): val and test IoU "
        "before and after refinement, minutes per run, e.g. segnet+bce",
    )
    return p


__all__ = ["leaderboard_command", "add_leaderboard_arguments"]
