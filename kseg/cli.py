"""Command lines: ``run_all.py`` / ``python -m kseg grid`` (the experiment grid)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from kseg import leaderboard, losses, models
from kseg.config import PRECISIONS, PRESETS, resolve_precision
from kseg.data.load import KINDS


def _names(values: Sequence[str]) -> list[str]:
    """Accepts both ``--models unet segnet`` and ``--models unet,segnet``."""
    return [name for value in values for name in value.split(",") if name]


def grid_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train every model x loss x seed and append one row per run to the leaderboard.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--preset", default="cpu", choices=list(PRESETS), help="defaults for sizes, epochs and schedule")
    p.add_argument("--models", nargs="+", default=list(models.available()), help="model names")
    p.add_argument("--losses", nargs="+", default=["bce", "dice", "focal"], help=f"loss names, e.g. {', '.join(losses.available())}")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (each drives split, weights and augmentation)")
    p.add_argument("--dataset", default="auto", choices=KINDS, help="auto: PH2 where found, else synthetic")
    p.add_argument("--data-dir", default=None, help="PH2 root, or a folder with images/ and masks/")
    p.add_argument("--mask-suffix", default="", help="folder datasets: mask file stem suffix, e.g. _segmentation")
    p.add_argument("--epochs", type=int, help="override the preset's epochs")
    p.add_argument("--image-size", type=int, help="override the preset's training image size")
    p.add_argument("--base-filters", type=int, help="override the preset's base width")
    p.add_argument("--batch-size", type=int, help="override the preset's batch size")
    p.add_argument("--lr", type=float, help="override the preset's learning rate")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="dtype policy; auto picks mixed_bfloat16 where the hardware has bf16")
    p.add_argument("--jit-compile", default="auto", choices=["auto", "true", "false"], help="XLA/jit; auto picks the faster per backend")
    p.add_argument("--results", default="experiments.csv", help="leaderboard CSV to append to")
    p.add_argument("--output", default="runs", help="folder for each run's model, curves and pictures")
    p.add_argument("--force", action="store_true", help="rerun configs that already have an ok row")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    scale = p.add_argument_group("scaling out (README, \"Scaling out\")")
    scale.add_argument("--executor", default="local", choices=["local", "ray"],
                       help="local: processes on this machine; ray: one Ray task per run (pip install 'kseg[ray]')")
    scale.add_argument("--jobs", type=int, default=1, help="local executor: runs at a time, each in its own process")
    scale.add_argument("--ray-address", default=None, help="Ray cluster to join, e.g. ray://head:10001; default: a local one")
    scale.add_argument("--cpus-per-run", type=float, default=1, help="ray: CPUs reserved per run")
    scale.add_argument("--gpus-per-run", type=float, default=0, help="ray: GPUs reserved per run")
    scale.add_argument("--distribute", default="none", choices=["none", "data-parallel"],
                       help="data-parallel: each run trains on all local devices (JAX backend only)")
    return p


def run_grid_command(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parses grid flags, runs the grid, prints and plots the leaderboard. Returns the exit code:
    0 when every run is ok, 1 when any failed or diverged, 2 for bad arguments or missing data."""
    from kseg import grid  # imports the data and training stack only when a grid really runs

    parser = grid_parser(prog)
    args = parser.parse_args(argv)
    model_names, loss_names = _names(args.models), _names(args.losses)
    unknown_models = [m for m in model_names if m not in models.available()]
    if unknown_models:
        parser.error(f"unknown model(s) {', '.join(unknown_models)}; choose from {', '.join(models.available())}")
    for name in loss_names:
        try:
            losses.get(name)
        except ValueError as error:
            parser.error(str(error))

    from kseg import executors, training

    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1; got {args.jobs}")
    if args.executor == "ray" and args.jobs != 1:
        parser.error("--jobs is for --executor local; Ray runs as many tasks at once as the cluster has room for")
    if args.jobs > 1 and args.distribute != "none":
        # Each process would claim every device; Ray instead gives each task its --gpus-per-run.
        parser.error("--distribute data-parallel gives one run every local device: use --jobs 1, or --executor ray --gpus-per-run G")
    if args.executor != "ray" and (args.ray_address or args.cpus_per_run != 1 or args.gpus_per_run != 0):
        parser.error("--ray-address, --cpus-per-run and --gpus-per-run need --executor ray")
    try:
        training.check_distribute(args.distribute)
        executor = executors.make_executor(args.executor, args.jobs, args.ray_address, args.cpus_per_run, args.gpus_per_run)
    except (ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    data = grid.DataCache(args.dataset, args.data_dir)
    size = args.image_size or PRESETS[args.preset]["image_size"]
    synthetic_n = PRESETS[args.preset].get("synthetic_n", 200)
    try:
        dataset_name = data.resolve(size, synthetic_n)
    except (FileNotFoundError, NotADirectoryError, ValueError) as error:
        print(f"error: could not load the {args.dataset} dataset: {error}", file=sys.stderr)
        return 2
    if dataset_name != "ph2":
        print(f"[grid] dataset: {dataset_name} (results are labelled {dataset_name!r}, never mixed with PH2)")

    configs = grid.expand(
        model_names, loss_names, args.seeds, args.preset,
        dataset=dataset_name, epochs=args.epochs, image_size=args.image_size, base_filters=args.base_filters,
        batch_size=args.batch_size, lr=args.lr, precision=resolve_precision(args.precision), jit_compile=args.jit_compile,
    )
    rows = grid.run_grid(configs, data, args.results, args.output, force=args.force, verbose=not args.quiet,
                         executor=executor, distribute=args.distribute)

    summary = leaderboard.summarise(leaderboard.read(args.results))
    print(leaderboard.format_summary(summary))
    if not summary.empty:
        chart = leaderboard.plot(summary, Path(args.results).with_suffix(".png"))
        print(f"[grid] chart: {chart}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def run_predict_command(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``python -m kseg predict``: masks and overlays for new images (see :mod:`kseg.predict`)."""
    from kseg import predict

    return predict.run_predict_command(argv, prog)


def run_evaluate_command(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``python -m kseg evaluate``: a saved model's scores on a labelled folder (see :mod:`kseg.predict`)."""
    from kseg import predict

    return predict.run_evaluate_command(argv, prog)


def run_leaderboard_command(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Prints the leaderboard's summary (mean +- std over seeds per group), as text or Markdown."""
    parser = argparse.ArgumentParser(prog=prog, description=run_leaderboard_command.__doc__)
    parser.add_argument("--results", default="experiments.csv", help="leaderboard CSV")
    parser.add_argument("--markdown", action="store_true", help="a Markdown table (as in the README)")
    parser.add_argument("--dataset", help="only rows of this dataset")
    parser.add_argument("--preset", help="only rows of this preset")
    parser.add_argument("--merge", metavar="CSV", help="first append the rows of another leaderboard that --results lacks")
    args = parser.parse_args(argv)
    if args.merge:
        print(f"[leaderboard] {leaderboard.merge(args.merge, args.results)} rows from {args.merge} appended to {args.results}")
    if not Path(args.results).exists():
        print(f"error: no leaderboard at {args.results}", file=sys.stderr)
        return 2
    table = leaderboard.read(args.results)
    for column in ("dataset", "preset"):
        if getattr(args, column):
            table = table[table[column] == getattr(args, column)]
    print(leaderboard.markdown_report(table) if args.markdown else leaderboard.format_summary(leaderboard.summarise(table)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kseg COMMAND ...``: ``grid`` runs the experiment grid (as run_all.py does),
    ``predict`` writes masks for new images, ``evaluate`` scores a saved model on a folder,
    ``leaderboard`` prints the summary of a results CSV."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "grid": run_grid_command, "predict": run_predict_command, "evaluate": run_evaluate_command,
        "leaderboard": run_leaderboard_command,
    }
    if not argv or argv[0] not in commands:
        print(f"usage: python -m kseg {{{','.join(commands)}}} ...", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:], prog=f"python -m kseg {argv[0]}")
