"""``python -m kseg grid`` and ``run_all.py``: the grid's flags (one per RunConfig knob), the
checks made before any run (sources, overlap, weights) and the run itself."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kseg.cli._flags import (
    EXIT_BAD_ARGUMENTS,
    EXIT_OK,
    EXIT_SOME_FAILED,
    flag_type,
    labelled_folder,
    positive_int_flag,
    split_names,
)

# Presets that train beside another labelled set and pretrain on it, where no --joint-source or
# --pretrain-on names one: the environment variable that names the set's folder, its mask suffix.
PRESET_SOURCES = {"dermoscopy": ("KSEG_ISIC2018_TRAIN_DIR", "_segmentation")}


def add_grid_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from kseg import models
    from kseg.config import PRECISIONS, PRESETS, flag_knobs
    from kseg.data.load import KINDS

    p.add_argument("--preset", default="cpu", choices=list(PRESETS), help="defaults for sizes, epochs and recipe")
    p.add_argument(
        "--models",
        nargs="+",
        default=list(models.SEED_MODELS),
        help=f"DECODER or DECODER:ENCODER (e.g. fpn:efficientnetv2b0); decoders: {', '.join(models.available())}; "
        f"encoders: {', '.join(models.encoders())}",
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
    data.add_argument("--dataset", default="auto", choices=KINDS, help="auto: PH2 where found, else synthetic")
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
    """The grid's flag for one RunConfig knob (:class:`kseg.config.Knob`); its default None
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
    """Runs the grid, prints and plots the leaderboard. Returns the exit code: 0 when every run is
    ok, 1 when any failed or diverged, 2 for bad arguments or missing data."""
    from kseg import executors, grid, group_ensembles, leaderboard, losses, models, training
    from kseg.config import flag_knobs
    from kseg.models.backbones.hub import is_hub_encoder
    from kseg.run import DataCache

    try:  # one spelling per model, so "unet" and "unet:unet" are one experiment
        model_names = [models.canonical_name(name) for name in split_names(args.models)]
    except ValueError as error:
        parser.error(f"--models: {error}")
    encoders = {name: models.resolve(name)[1] for name in model_names}
    if args.deep_supervision:
        from kseg.models import deep_supervision

        for name in model_names:
            try:
                deep_supervision.check_decoder(models.resolve(name)[0])
            except ValueError as error:
                parser.error(f"--deep-supervision, --models {name}: {error}")
    for name, encoder in encoders.items():
        try:
            encoder.check_installed()
        except ImportError as error:
            parser.error(f"--models {name}: {error}")
    loss_names = split_names(args.losses)
    if args.encoder_weights:
        weights = Path(args.encoder_weights)
        if args.encoder_weights != "imagenet" and not weights.is_file():
            if not weights.is_dir() or not all(map(is_hub_encoder, encoders.values())):
                parser.error(
                    "--encoder-weights expects imagenet, a weights file or (for keras-hub encoders only) a keras-hub "
                    f"preset folder. Received: {args.encoder_weights}"
                )
        own = [name for name, encoder in encoders.items() if encoder.family == "kseg"]
        if own:
            parser.error(
                f"--encoder-weights applies to keras.applications and keras-hub encoders; {', '.join(own)} start "
                "from random weights (use --init-from for a kseg model's weights)"
            )
    for name in loss_names:
        try:
            losses.get(name)
        except ValueError as error:
            parser.error(f"--losses: {error}")
    if args.folds == 1 or args.folds < 0:
        parser.error(f"--folds expects 0 (no cross-validation) or K >= 2. Received: {args.folds}")
    if any(seed < 0 for seed in args.seeds):
        parser.error(f"--seeds expects non-negative integers. Received: {' '.join(map(str, args.seeds))}")
    if args.executor == "ray" and args.jobs != 1:
        parser.error("--jobs is for --executor local; Ray runs as many tasks at once as the cluster has room for")
    if args.jobs > 1 and args.distribute != "none":
        # Each process would claim every device; Ray instead gives each task its --gpus-per-run.
        parser.error(
            "--distribute data-parallel gives one run every local device: use --jobs 1, "
            "or --executor ray --gpus-per-run G"
        )
    if args.executor != "ray" and (args.ray_address or args.cpus_per_run != 1 or args.gpus_per_run != 0):
        parser.error("--ray-address, --cpus-per-run and --gpus-per-run need --executor ray")
    try:
        training.check_distribute(args.distribute)
        executor = executors.make_executor(
            args.executor, args.jobs, args.ray_address, args.cpus_per_run, args.gpus_per_run
        )
    except (ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS

    if args.init_from and args.pretrain_on:
        parser.error("--init-from and --pretrain-on both choose the starting weights: pass one of them")
    if args.preset in PRESET_SOURCES:
        error = _preset_sources(args)
        if error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_BAD_ARGUMENTS
    data = DataCache(
        args.dataset, args.data_dir, args.mask_suffix or "", args.external, args.add_source, args.joint_source
    )
    for flag, folders in (
        ("--external", args.external),
        ("--add-source", args.add_source),
        ("--joint-source", args.joint_source),
        ("--pretrain-on", [args.pretrain_on] if args.pretrain_on else []),
    ):
        for folder, _ in folders:
            if not Path(folder).is_dir():
                print(f"error: {flag} expects a folder. Received: {folder}, which does not exist", file=sys.stderr)
                return EXIT_BAD_ARGUMENTS
    overrides = {name: getattr(args, name) for name in flag_knobs()}
    try:
        configs = grid.expand(
            model_names,
            loss_names,
            args.seeds,
            args.preset,
            data,
            split_seed=args.split_seed,
            folds=args.folds,
            precision=args.precision,
            jit_compile=args.jit_compile,
            **overrides,
        )
    except (FileNotFoundError, NotADirectoryError, ValueError) as error:
        what = (
            "the --init-from source" if args.init_from and "init-from" in str(error) else f"the {args.dataset} dataset"
        )
        print(f"error: could not load {what}: {error}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    if configs and configs[0].dataset != "ph2":
        name = configs[0].dataset
        print(f"[grid] dataset: {name} (results are labelled {name!r}, never mixed with PH2)")
    for config in {(c.model, c.image_size, c.depth): c for c in configs}.values():
        try:  # an image size the model's total stride does not divide: refused here, not as a failed row
            training.build_architecture(config.replace(encoder_weights=""), "float32")  # no download here
        except ValueError as error:
            print(f"error: {config.model} at --image-size {config.image_size}: {error}", file=sys.stderr)
            return EXIT_BAD_ARGUMENTS
        if config.encoder_weights not in ("", "imagenet"):
            try:  # a file of another network's weights (or no weights at all): refused here, not as failed rows
                training.build_architecture(config, "float32")
            except Exception as error:
                parser.error(
                    f"--encoder-weights expects weights of {config.model}'s encoder. Received: "
                    f"{args.encoder_weights}, which it cannot load ({type(error).__name__}: {error})"
                )
    options = dict(verbose=not args.quiet, executor=executor, distribute=args.distribute)
    try:
        if data.joint:
            _check_joint_sources(configs, data)
        if args.init_from:
            _check_init_from(configs, data)
        elif args.pretrain_on:
            configs = _pretrain(configs, data, args, options)
    except (FileNotFoundError, NotADirectoryError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS

    rows = grid.run_grid(configs, data, args.results, args.output, force=args.force, **options)
    group_ensembles.score_group_ensembles(configs, data, args.results, args.output)
    table = leaderboard.read(args.results)
    summary = leaderboard.summarise(table, per_image=leaderboard.read_per_image(args.results))
    # What this grid ran (ties are against each dataset's best in the whole leaderboard), not every group in the file.
    ran = summary[summary["group"].isin({c.group_hash for c in configs})].reset_index(drop=True)
    print(leaderboard.format_summary(ran))
    print(
        f"[grid] {len(ran)} of the leaderboard's {len(summary)} groups; all of them: "
        f"python -m kseg leaderboard --results {args.results}"
    )
    ensembles = leaderboard.ensemble_table(table)
    if not ensembles.empty:
        print("[grid] ensemble rows (the external sets no member saw):\n" + ensembles.to_string(index=False))
    if not ran.empty:  # this grid's groups: a chart one reads at a glance
        chart = leaderboard.plot(ran, Path(args.results).with_suffix(".png"))
        print(f"[grid] chart: {chart}")
    return EXIT_OK if all(r["status"] == "ok" for r in rows) else EXIT_SOME_FAILED


def _scored_sets(configs, data) -> dict[str, list[str]]:
    """Case ids of every set the grid's runs are scored on: each split's test part and each
    ``--external`` set."""
    scored = {
        f"the test split of seed {c.split_seed}" + (f", fold {c.fold}" if c.folds else ""): list(
            data.parts(c)[0].test.ids
        )
        for c in {(c.split_seed, c.fold): c for c in configs}.values()
    }
    for folder, suffix in data.externals:
        scored[f"--external {folder}"] = list(data.external(folder, suffix, configs[0].image_size).ids)
    return scored


def _preset_sources(args: argparse.Namespace) -> str:
    """Fills ``--joint-source`` and ``--pretrain-on`` with the preset's set (:data:`PRESET_SOURCES`)
    where the command names none; returns an error message where it cannot, else ""."""
    import os

    variable, suffix = PRESET_SOURCES[args.preset]
    if not args.joint_source and args.joint_ratio != 0:
        folder = os.environ.get(variable)
        if not folder:
            return (
                f"--preset {args.preset} trains beside ISIC 2018's training images and expects --joint-source "
                f"DIR[:SUFFIX] or {variable}=DIR (e.g. ../shared/data/isic2018-train). Received: neither"
            )
        args.joint_source = [(folder, suffix)]
    if not args.pretrain_on and not args.init_from and args.joint_source:
        args.pretrain_on = args.joint_source[0]
    return ""


def _check_joint_sources(configs, data) -> None:
    """Before any run: no ``--joint-source`` case is in the data, and none a run trains or
    validates on is in a set the runs are scored on (``--external``); its test part is scored apart."""
    from kseg import transfer

    size = configs[0].image_size
    main_ids = list(data.get(size).ids)
    scored = _scored_sets(configs, data)
    for (folder, _), (parts, _) in zip(data.joint, data.joint_parts(configs[0]).values()):
        what = f"--joint-source {folder}"
        every_case = [case for ids in parts.ids().values() for case in ids]
        transfer.check_no_overlap(every_case, {"the data these runs train and test on": main_ids}, what)
        transfer.check_no_overlap([*parts.train.ids, *parts.val.ids], scored, what)


def _check_init_from(configs, data) -> None:
    """Before any run: every architecture loads the source, and no scored set holds a case the
    source trained or validated on (where its split.json says)."""
    from kseg import grid, training, transfer

    for config in {grid.architecture(c): c for c in configs}.values():
        report = training.check_init(config)
        print(
            f"[grid] --init-from {config.init_from}: {config.model} loads {report.loaded} weight tensors, "
            f"{report.fresh} fresh" + (f" ({', '.join(report.unmatched_layers[:3])}, ...)" if report.fresh else "")
        )
    seen = transfer.source_case_ids(configs[0].init_from)
    if not seen:
        print(
            f"[grid] --init-from {configs[0].init_from}: no split.json beside it, so kseg cannot check that the "
            "source never saw the sets these runs are scored on"
        )
    transfer.check_no_overlap(seen, _scored_sets(configs, data), f"--init-from {configs[0].init_from}")


def _pretrain(configs, data, args, options) -> list:
    """Pretrains each architecture once on ``--pretrain-on`` (skipping those already done) and
    returns the configs that start from a usable pretraining run."""
    from kseg import grid, transfer
    from kseg.run import DataCache

    folder, suffix = args.pretrain_on
    source = DataCache(
        "folder" if (Path(folder) / "images").is_dir() else "auto", folder, suffix, externals=data.externals
    )
    try:
        ids = source.get(configs[0].image_size).ids
    except (FileNotFoundError, NotADirectoryError, ValueError) as error:
        raise type(error)(f"--pretrain-on {folder}: {error}") from error
    transfer.check_no_overlap(
        ids,
        {
            "the data these runs train and test on": list(data.get(configs[0].image_size).ids),
            **_scored_sets(configs, data),
        },
        f"--pretrain-on {folder}",
    )
    pretraining, fine_tuned = grid.pretraining_configs(configs, source, args.output)
    if pretraining:
        print(f"[pretrain] {pretraining[0].epochs} epochs on {folder} per architecture (--pretrain-epochs)")
    usable = grid.run_pretraining(pretraining, source, args.results, args.output, **options)
    failed = {c.config_hash for c in pretraining} - usable
    if failed:
        print(
            f"[pretrain] {len(failed)} pretraining run(s) failed; their architectures' runs are skipped",
            file=sys.stderr,
        )
    return [c for c in fine_tuned if c.init_source.rsplit(":", 1)[1] in usable]


__all__ = ["PRESET_SOURCES", "add_grid_arguments", "grid_command"]
