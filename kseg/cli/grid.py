"""``python -m kseg grid`` and ``run_all.py``: the grid's flags (one per RunConfig knob); the
checks made before any run and the run itself are :mod:`kseg.experiment.launch`'s."""

from __future__ import annotations

import argparse

from kseg.cli._flags import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    flag_type,
    labelled_folder,
    positive_int_flag,
    refuse,
    split_names,
)


def add_grid_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The grid's flags. Built without Keras (``--help`` answers at once): the names of models and
    losses are checked after parsing, each unknown one refused with the known ones."""
    from kseg.data.load import LOADERS
    from kseg.experiment.config import PRECISIONS, PRESETS, flag_knobs

    p.add_argument("--preset", default="cpu", choices=list(PRESETS), help="defaults for sizes, epochs and recipe")
    p.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="DECODER or DECODER:ENCODER, e.g. unet or fpn:efficientnetv2b0 (docs/models.md; kseg.models.available() "
        "and kseg.models.encoders() list them); default: kseg.models.SEED_MODELS, segnet unet unet2",
    )
    p.add_argument(
        "--losses", nargs="+", default=["bce", "dice", "focal"], help="loss names, e.g. bce, dice, focal, bce+dice"
    )
    p.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[0],
        help="seeds (each drives weights and augmentation, and the split unless --split-seed)",
    )
    p.add_argument(
        "--folds",
        type=int,
        default=0,
        metavar="K",
        help="K-fold cross-validation (K >= 2): each seed trains K runs per pair, each testing on one fold, so "
        "every case is tested once; train:val split the rest in --split's proportion",
    )
    p.add_argument(
        "--split-seed",
        type=int,
        default=None,
        help="one split for every seed (default: each run's split seed is its seed)",
    )
    data = p.add_argument_group("data")
    data.add_argument("--dataset", default="auto", choices=list(LOADERS), help="auto: PH2 where found, else synthetic")
    data.add_argument("--data-dir", default=None, help="PH2 root, or a folder with images/ and masks/")
    data.add_argument(
        "--external",
        action="append",
        type=labelled_folder,
        default=[],
        metavar="DIR[:SUFFIX]",
        help="also score every run on this labelled set: a folder with images/ and masks/, or PH2 (repeatable), e.g. "
        "../shared/data/isic2018-dev:_segmentation; columns ext_<name>_iou, _dice, _isic_score, _failure_fraction",
    )
    data.add_argument(
        "--add-source",
        action="append",
        type=labelled_folder,
        default=[],
        metavar="DIR[:SUFFIX]",
        help="join this labelled set (images/ + masks/, or PH2) to the data: train, validate and test on both, "
        "the split stratified by source (repeatable); the row adds test_iou_source_<name> per source. "
        "Fraction split sizes (--split 0.5,0.25,0.25) scale with the joined data",
    )
    data.add_argument(
        "--joint-source",
        action="append",
        type=labelled_folder,
        default=[],
        metavar="DIR[:SUFFIX]",
        help="also train on this labelled set (images/ + masks/, or PH2; repeatable): --joint-ratio of every batch "
        "comes from it, its own split (seed 0, 95/2.5/2.5) keeps its test part unseen, scored as "
        "test_iou_source_<name>; the data's test split stays the row's test_iou. --preset dermoscopy: default "
        "$KSEG_ISIC2018_TRAIN_DIR",
    )
    start = p.add_argument_group("start from another dataset (docs/transfer.md)")
    start.add_argument(
        "--pretrain-on",
        type=labelled_folder,
        default=None,
        metavar="DIR[:SUFFIX]",
        help="first train each architecture once on this labelled set (loss bce, seed 0, 95%% of it; a row of its "
        "own), then start every run from it, e.g. ../shared/data/isic2018-train:_segmentation",
    )
    recipe = p.add_argument_group("recipe (each overrides the preset's value and is part of the run's identity)")
    groups = {"": p, "data": data, "start": start, "recipe": recipe}
    for name, knob in flag_knobs().items():  # one flag per RunConfig knob, as it declares it
        _add_knob_flag(groups[knob.group], name, knob)
    recipe.add_argument("--precision", default="auto", choices=PRECISIONS, help="dtype policy; auto picks by hardware")
    recipe.add_argument(
        "--jit-compile",
        default="auto",
        choices=["auto", "true", "false"],
        help="XLA/jit; auto picks the faster per backend",
    )
    out = p.add_argument_group("output")
    out.add_argument("--results", default="experiments.csv", help="leaderboard CSV to append to")
    out.add_argument("--output", default="runs", help="folder for each run's model, curves and pictures")
    out.add_argument("--force", action="store_true", help="rerun configs that already have an ok row")
    out.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    scale = p.add_argument_group("scaling out (docs/scaling.md)")
    scale.add_argument(
        "--executor",
        default="local",
        choices=["local", "ray"],
        help="local: processes on this machine; ray: one Ray task per run (pip install 'kseg[ray]')",
    )
    scale.add_argument(
        "--jobs", type=positive_int_flag, default=1, help="local executor: runs at a time, each in its own process"
    )
    scale.add_argument(
        "--ray-address", default=None, help="Ray cluster to join, e.g. ray://head:10001; default: a local one"
    )
    scale.add_argument("--cpus-per-run", type=float, default=1, help="ray: CPUs reserved per run")
    scale.add_argument("--gpus-per-run", type=float, default=0, help="ray: GPUs reserved per run")
    scale.add_argument(
        "--distribute",
        default="none",
        choices=["none", "data-parallel"],
        help="data-parallel: each run trains on all local devices (JAX backend only)",
    )
    return p


def _add_knob_flag(group, name: str, knob) -> None:
    """The grid's flag for one RunConfig knob (:class:`kseg.experiment.config.Knob`); its default None
    leaves the preset's value."""
    options = dict(dest=name, default=None, help=knob.help or None, metavar=knob.metavar)
    if knob.choices:
        options.update(choices=knob.choices)
    elif knob.parse is None:  # a boolean field
        options.update(action=argparse.BooleanOptionalAction)
        del options["metavar"]
    else:
        options.update(type=flag_type(knob.parse))
    group.add_argument(knob.flag, **options)


def grid_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs :func:`kseg.experiment.launch.launch` on the parsed flags. Returns the exit code: 0
    when every run is ok, 1 when any failed or diverged, 2 for bad arguments or missing data."""
    from kseg.experiment.launch import GridError, launch

    args.models = split_names(args.models) if args.models else None
    args.losses = split_names(args.losses)
    try:
        ok = launch(args)
    except GridError as error:
        if error.usage:
            parser.error(str(error))
        return refuse(error)
    return EXIT_OK if ok else EXIT_SOME_FAILED


__all__ = ["add_grid_arguments", "grid_command"]
