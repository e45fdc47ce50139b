"""A grid from its flags (``python -m kseg grid``, ``run_all.py``): the checks made before any run
(names, the flags' combinations, sources, overlap, weights), the pretraining, the grid, and the
summary it prints. :mod:`kseg.cli.grid` parses the flags and calls :func:`launch`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from kseg import losses, models
from kseg.experiment import executors, grid, group_ensembles, leaderboard, training, transfer
from kseg.experiment.config import RunConfig, check_folds, flag_knobs
from kseg.experiment.presets import PRESET_SOURCES
from kseg.experiment.sources import DataCache
from kseg.models import deep_supervision
from kseg.models.backbones.hub import is_hub_encoder


class GridError(Exception):
    """A grid refused before any run. ``usage``: a wrong flag or combination of flags (the
    command line shows its usage), else data or sources that cannot be used."""

    def __init__(self, message: str, usage: bool = False):
        super().__init__(message)
        self.usage = usage


def launch(args: Any) -> bool:
    """Checks the grid's flags (``args``: the attributes ``python -m kseg grid`` parses, with
    ``models`` and ``losses`` lists of names, ``models`` None for :data:`kseg.models.SEED_MODELS`),
    runs the grid, prints and plots the leaderboard. Returns whether every run is ok; raises
    :class:`GridError` before any run for bad flags or missing data."""
    model_names = _check_models(args.models or list(models.SEED_MODELS), args.deep_supervision)
    encoders = {name: models.resolve(name)[1] for name in model_names}
    if args.encoder_weights:
        _check_encoder_weights(args.encoder_weights, encoders)
    for name in args.losses:
        try:
            losses.get(name)
        except ValueError as error:
            raise GridError(f"--losses: {error}", usage=True) from None
    executor = _executor(args)
    if args.init_from and args.pretrain_on:
        raise GridError("--init-from and --pretrain-on both choose the starting weights: pass one of them", usage=True)
    if args.preset in PRESET_SOURCES:
        _preset_sources(args)
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
                raise GridError(f"{flag} expects a folder. Received: {folder}, which does not exist")
    configs = _configs(args, model_names, data)
    options = dict(verbose=not args.quiet, executor=executor, distribute=args.distribute)
    try:
        if data.joint:
            _check_joint_sources(configs, data)
        if args.init_from:
            _check_init_from(configs, data)
        elif args.pretrain_on:
            configs = _pretrain(configs, data, args, options)
    except (FileNotFoundError, NotADirectoryError, ValueError) as error:
        raise GridError(str(error)) from error

    rows = grid.run_grid(configs, data, args.results, args.output, force=args.force, **options)
    group_ensembles.score_group_ensembles(configs, data, args.results, args.output)
    _print_summary(configs, args.results)
    return all(r["status"] == "ok" for r in rows)


def _check_models(names: list[str], deep_supervision_on: bool) -> list[str]:
    """One spelling per model (so "unet" and "unet:unet" are one experiment), each with its
    encoder installed and, with ``--deep-supervision``, a decoder with side outputs."""
    try:
        model_names = [models.canonical_name(name) for name in names]
    except ValueError as error:
        raise GridError(f"--models: {error}", usage=True) from None
    for name in model_names if deep_supervision_on else ():
        try:
            deep_supervision.check_decoder(models.resolve(name)[0])
        except ValueError as error:
            raise GridError(f"--deep-supervision, --models {name}: {error}", usage=True) from None
    for name in model_names:
        try:
            models.resolve(name)[1].check_installed()
        except ImportError as error:
            raise GridError(f"--models {name}: {error}", usage=True) from None
    return model_names


def _check_encoder_weights(value: str, encoders: dict) -> None:
    weights = Path(value)
    if value != "imagenet" and not weights.is_file():
        if not weights.is_dir() or not all(map(is_hub_encoder, encoders.values())):
            raise GridError(
                "--encoder-weights expects imagenet, a weights file or (for keras-hub encoders only) a keras-hub "
                f"preset folder. Received: {value}",
                usage=True,
            )
    for name, encoder in encoders.items():
        try:
            models.check_encoder_weights(encoder, value)
        except ValueError as error:
            raise GridError(f"--encoder-weights, --models {name}: {error}", usage=True) from None


def _executor(args: Any) -> executors.Executor:
    """Where the runs execute, once the seeds, folds and scaling flags agree."""
    try:
        check_folds(args.folds)
    except ValueError as error:
        raise GridError(str(error), usage=True) from None
    if any(seed < 0 for seed in args.seeds):
        raise GridError(
            f"--seeds expects non-negative integers. Received: {' '.join(map(str, args.seeds))}", usage=True
        )
    if args.executor == "ray" and args.jobs != 1:
        raise GridError(
            "--jobs is for --executor local; Ray runs as many tasks at once as the cluster has room for", usage=True
        )
    if args.jobs > 1 and args.distribute != "none":
        # Each process would claim every device; Ray instead gives each task its --gpus-per-run.
        raise GridError(
            "--distribute data-parallel gives one run every local device: use --jobs 1, "
            "or --executor ray --gpus-per-run G",
            usage=True,
        )
    if args.executor != "ray" and (args.ray_address or args.cpus_per_run != 1 or args.gpus_per_run != 0):
        raise GridError("--ray-address, --cpus-per-run and --gpus-per-run need --executor ray", usage=True)
    try:
        training.check_distribute(args.distribute)
        return executors.make_executor(args.executor, args.jobs, args.ray_address, args.cpus_per_run, args.gpus_per_run)
    except (ValueError, ImportError) as error:
        raise GridError(str(error)) from error


def _preset_sources(args: Any) -> None:
    """Fills ``--joint-source`` and ``--pretrain-on`` with the preset's set (:data:`PRESET_SOURCES`)
    where the command names none; raises where it cannot."""
    variable, suffix = PRESET_SOURCES[args.preset]
    if not args.joint_source and args.joint_ratio != 0:
        folder = os.environ.get(variable)
        if not folder:
            raise GridError(
                f"--preset {args.preset} trains beside ISIC 2018's training images and expects --joint-source "
                f"DIR[:SUFFIX] or {variable}=DIR (e.g. ../shared/data/isic2018-train). Received: neither"
            )
        args.joint_source = [(folder, suffix)]
    if not args.pretrain_on and not args.init_from and args.joint_source:
        args.pretrain_on = args.joint_source[0]


def _configs(args: Any, model_names: list[str], data: DataCache) -> list[RunConfig]:
    """The grid's resolved configs, each architecture built once at its size (and with its
    ``--encoder-weights``), so that a size or weights it refuses stop the grid here, not as failed rows."""
    overrides = {name: getattr(args, name) for name in flag_knobs()}
    try:
        configs = grid.expand(
            model_names,
            args.losses,
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
        raise GridError(f"could not load {what}: {error}") from error
    if configs and configs[0].dataset != "ph2":
        name = configs[0].dataset
        print(f"[grid] dataset: {name} (results are labelled {name!r}, never mixed with PH2)")
    for config in {(c.model, c.image_size, c.depth): c for c in configs}.values():
        try:
            training.build_architecture(config.replace(encoder_weights=""), "float32")  # no download here
        except ValueError as error:
            raise GridError(f"{config.model} at --image-size {config.image_size}: {error}") from error
        if config.encoder_weights not in ("", "imagenet"):
            try:  # a file of another network's weights (or no weights at all)
                training.build_architecture(config, "float32")
            except Exception as error:
                raise GridError(
                    f"--encoder-weights expects weights of {config.model}'s encoder. Received: "
                    f"{args.encoder_weights}, which it cannot load ({type(error).__name__}: {error})",
                    usage=True,
                ) from error
    return configs


def _print_summary(configs: list[RunConfig], results: str) -> None:
    """The leaderboard's groups this grid ran, its ensemble rows and its chart."""
    table = leaderboard.read(results)
    summary = leaderboard.summarise(table, per_image=leaderboard.read_per_image(results))
    # What this grid ran (ties are against each dataset's best in the whole leaderboard), not every group in the file.
    ran = summary[summary["group"].isin({c.group_hash for c in configs})].reset_index(drop=True)
    print(leaderboard.format_summary(ran))
    print(
        f"[grid] {len(ran)} of the leaderboard's {len(summary)} groups; all of them: "
        f"python -m kseg leaderboard --results {results}"
    )
    ensembles = leaderboard.ensemble_table(table)
    if not ensembles.empty:
        print("[grid] ensemble rows (the external sets no member saw):\n" + ensembles.to_string(index=False))
    if not ran.empty:  # this grid's groups: a chart one reads at a glance
        chart = leaderboard.plot(ran, Path(results).with_suffix(".png"))
        print(f"[grid] chart: {chart}")


def _scored_sets(configs: list[RunConfig], data: DataCache) -> dict[str, list[str]]:
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


def _check_joint_sources(configs: list[RunConfig], data: DataCache) -> None:
    """Before any run: no ``--joint-source`` case is in the data, and none a run trains or
    validates on is in a set the runs are scored on (``--external``); its test part is scored apart."""
    size = configs[0].image_size
    main_ids = list(data.get(size).ids)
    scored = _scored_sets(configs, data)
    for (folder, _), (parts, _) in zip(data.joint, data.joint_parts(configs[0]).values()):
        what = f"--joint-source {folder}"
        every_case = [case for ids in parts.ids().values() for case in ids]
        transfer.check_no_overlap(every_case, {"the data these runs train and test on": main_ids}, what)
        transfer.check_no_overlap([*parts.train.ids, *parts.val.ids], scored, what)


def _check_init_from(configs: list[RunConfig], data: DataCache) -> None:
    """Before any run: every architecture loads the source, and no scored set holds a case the
    source trained or validated on (where its split.json says)."""
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


def _pretrain(configs: list[RunConfig], data: DataCache, args: Any, options: dict) -> list[RunConfig]:
    """Pretrains each architecture once on ``--pretrain-on`` (skipping those already done) and
    returns the configs that start from a usable pretraining run."""
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


__all__ = ["GridError", "launch"]
