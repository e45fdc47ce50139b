"""Every command line of kseg: ``python -m kseg {grid,predict,evaluate,leaderboard}`` (and
``run_all.py``, the grid's front door), as argparse subcommands sharing parent parsers for the
flags they repeat.

TensorFlow's C++ start-up logging is off unless ``TF_CPP_MIN_LOG_LEVEL`` asks for it
(``import kseg`` sets its default, before Keras is first imported).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

EXIT_OK, EXIT_SOME_FAILED, EXIT_BAD_ARGUMENTS = 0, 1, 2

# Presets that train beside another labelled set and pretrain on it, where no --joint-source or
# --pretrain-on names one: the environment variable that names the set's folder, its mask suffix.
PRESET_SOURCES = {"dermoscopy": ("KSEG_ISIC2018_TRAIN_DIR", "_segmentation")}


def _names(values: Sequence[str]) -> list[str]:
    """Accepts both ``--models unet segnet`` and ``--models unet,segnet``."""
    return [name for value in values for name in value.split(",") if name]


def _positive_int(text: str) -> int:
    from kseg.config import positive_int  # the one check; the RunConfig knobs' flags use it too

    return _flag_type(positive_int)(text)


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expects a number strictly between 0 and 1. Received: {value}")
    return value


def _external(text: str) -> tuple[str, str]:
    folder, _, suffix = text.partition(":")
    return folder, suffix


# ----- parent parsers: flags that several commands share -----


def _model_flag() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--model",
        default=None,
        help="a saved model, e.g. runs/RUN/model.keras; default: kseg's ready dermoscopy model (docs/dermoscopy.md)",
    )
    return p


def _engine_flags() -> argparse.ArgumentParser:
    from kseg.export import OPENVINO_PRECISIONS
    from kseg.predict import ENGINES

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--engine",
        default="keras",
        choices=ENGINES,
        help="keras: a .keras file; onnx / openvino: an .onnx file from `kseg export`, run by ONNX Runtime "
        "(pip install 'kseg[onnx]') / OpenVINO (pip install 'kseg[openvino]'), the fastest on a CPU; openvino also "
        "runs the int8 .xml of `kseg export --format openvino-int8`",
    )
    p.add_argument(
        "--openvino-precision",
        default="auto",
        choices=OPENVINO_PRECISIONS,
        help="the openvino engine's arithmetic: auto (bfloat16 on a CPU with bf16 hardware, else float32), "
        "float32 (equal to the Keras model within float32 rounding) or bfloat16",
    )
    return p


def _scoring_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--threshold", type=_probability, default=0.5, help="probability threshold")
    p.add_argument("--batch-size", type=_positive_int, default=8, help="images per model call")
    p.add_argument(
        "--tta", default="saved", help="test-time augmentation: saved (what the run chose), none, flip or d4"
    )
    p.add_argument(
        "--postprocess",
        default="saved",
        help="post-processing: saved (what the run chose), none, largest, fill or largest+fill",
    )
    return p


def _formatter(prog):
    return argparse.ArgumentDefaultsHelpFormatter(prog, max_help_position=32)


# ----- grid -----


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
        type=_external,
        default=[],
        metavar="DIR[:SUFFIX]",
        help="also score every run on this labelled set: a folder with images/ and masks/, or PH2 (repeatable), e.g. "
        "../shared/data/isic2018-dev:_segmentation; columns ext_<name>_iou, _dice, _isic_score, _failure_fraction",
    )
    data.add_argument(
        "--add-source",
        action="append",
        type=_external,
        default=[],
        metavar="DIR[:SUFFIX]",
        help="join this labelled set (images/ + masks/, or PH2) to the data: train, validate and test on both, "
        "the split stratified by source (repeatable); the row adds test_iou_source_<name> per source. "
        "Fraction split sizes (--split 0.5,0.25,0.25) scale with the joined data",
    )
    data.add_argument(
        "--joint-source",
        action="append",
        type=_external,
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
        type=_external,
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
        "--jobs", type=_positive_int, default=1, help="local executor: runs at a time, each in its own process"
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
        options.update(type=_flag_type(knob.parse))
    group.add_argument(knob.flag, **options)


def _flag_type(parse: Callable[[str], object]) -> Callable[[str], object]:
    """``parse`` with its ValueError shown by argparse as the flag's message."""

    def flag_value(text: str):
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    flag_value.__name__ = getattr(parse, "__name__", "value")
    return flag_value


def grid_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs the grid, prints and plots the leaderboard. Returns the exit code: 0 when every run is
    ok, 1 when any failed or diverged, 2 for bad arguments or missing data."""
    from kseg import executors, grid, group_ensembles, leaderboard, losses, models, training
    from kseg.config import flag_knobs
    from kseg.models.backbones.hub import is_hub_encoder
    from kseg.run import DataCache

    try:  # one spelling per model, so "unet" and "unet:unet" are one experiment
        model_names = [models.canonical_name(name) for name in _names(args.models)]
    except ValueError as error:
        parser.error(f"--models: {error}")
    encoders = {name: models.resolve(name)[1] for name in model_names}
    for name, encoder in encoders.items():
        try:
            encoder.check_installed()
        except ImportError as error:
            parser.error(f"--models {name}: {error}")
    loss_names = _names(args.losses)
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
    if not summary.empty:
        chart = leaderboard.plot(summary, Path(args.results).with_suffix(".png"))
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


# ----- predict / evaluate -----


def _refinement(args: argparse.Namespace, model_path: str):
    from kseg import refine
    from kseg.export import (
        load_saved_refinement,
    )  # also reads an exported model's PATH.refinement.json

    saved = load_saved_refinement(model_path)
    return refine.Refinement(
        tta=saved.tta if args.tta == "saved" else args.tta,
        postprocess=saved.postprocess if args.postprocess == "saved" else args.postprocess,
    )


def predict_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Exit code 0 when every image got a mask, 1 when any file failed (each named on stderr),
    2 for a missing model or input."""
    from kseg import predict

    try:
        files = predict.find_images(args.input)
        if args.model is None:
            from kseg import pretrained

            args.model = pretrained.ready_model()
            print(f"[predict] no --model: kseg's ready dermoscopy model ({pretrained.provenance()['recipe']})")
        model = predict.load_engine(args.model, args.engine, args.openvino_precision)
        refinement = _refinement(args, args.model)
    except (FileNotFoundError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    report = predict.predict_files(model, files, args.output, args.threshold, args.batch_size, refinement=refinement)
    print(
        f"[predict] {len(report.written)} of {len(files)} images -> {Path(args.output)}/masks, overlays "
        f"({refinement.describe()}, engine={args.engine})"
    )
    if report.failed:
        print(f"[predict] {len(report.failed)} failed: {', '.join(p.name for p in report.failed)}", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK


def evaluate_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Scores one or more saved models (each with its own refinement) on one labelled set. With
    ``--csv`` each model's row is appended as soon as it is scored, so a later failure loses
    nothing. Exit code 0; 1 when some of several models failed (each named); 2 when nothing could
    be scored (a missing model, folder or mask)."""
    import pandas as pd

    from kseg import predict

    failed = []
    for model_path in args.model:
        try:
            model = predict.load_engine(model_path, args.engine, args.openvino_precision)
            refinement = _refinement(args, model_path)
            scores = predict.evaluate_folder(
                model,
                args.images,
                args.masks,
                args.mask_suffix,
                args.eval_size,
                args.threshold,
                args.batch_size,
                refinement=refinement,
            )
        except (FileNotFoundError, NotADirectoryError, ValueError, ImportError) as error:
            print(f"error: {error}", file=sys.stderr)
            failed.append(model_path)
            continue
        if len(args.model) > 1:
            print(f"== {model_path}")
        print(predict.format_evaluation(scores, per_image=args.per_image))
        print(f"{'refinement':<22} {refinement.describe()}")
        if not args.csv:
            continue
        csv_path = Path(args.csv)
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        row = pd.DataFrame(
            [
                predict.summary_row(
                    scores,
                    model=str(model_path),
                    run_id=Path(model_path).parent.name,
                    images=str(args.images),
                    image_size=predict.model_input_size(model)[0],
                    eval_size=args.eval_size,
                    threshold=args.threshold,
                    tta=refinement.tta,
                    postprocess=refinement.postprocess,
                    engine=args.engine,
                )
            ]
        )
        # Appended, never overwritten: rows already written stay (a model scored twice: both rows).
        row.to_csv(csv_path, mode="a", header=not csv_path.exists(), index=False)
        print(f"[evaluate] row appended to {csv_path}")
        if args.per_image:
            per_image_path = csv_path.with_name(f"{csv_path.stem}_{Path(model_path).parent.name}_per_image.csv")
            scores.per_image.to_csv(per_image_path, index=False)
            print(f"[evaluate] per image: {per_image_path}")
    if failed:
        print(
            f"[evaluate] {len(failed)} of {len(args.model)} model(s) failed: {', '.join(map(str, failed))}",
            file=sys.stderr,
        )
        return EXIT_BAD_ARGUMENTS if len(failed) == len(args.model) else EXIT_SOME_FAILED
    return EXIT_OK


# ----- export and ensembles -----


def export_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Exports a saved model with Keras's ``model.export`` under the active backend, and its
    refinement beside it (PATH.refinement.json); ``openvino-int8`` quantizes a grid run's model
    (:mod:`kseg.quantize`). Exit code 0, or 2 for a missing model, a format the backend cannot
    export, a missing exporter package or an int8 model refused by its validation gate."""
    from kseg import export, predict, refine

    if args.format == "openvino-int8":
        return _export_int8(args)
    output = Path(args.output) if args.output else export.default_output(args.model, args.format)
    try:
        reason = export.unsupported_reason(args.format)  # before the (slow) load
        if reason:
            raise ValueError(reason)
        model = predict.load_trained_model(args.model)
        export.export_model(model, output, args.format, refine.load_refinement(args.model), args.batch_size)
    except (FileNotFoundError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    import keras

    print(
        f"[export] {args.model} -> {output} ({args.format}, {keras.backend.backend()} backend; "
        f"refinement: {export.refinement_path(output)})"
    )
    return EXIT_OK


def _export_int8(args: argparse.Namespace) -> int:
    from kseg import quantize

    try:
        report = quantize.quantize_run(args.model, args.output, args.data_dir, args.max_iou_drop)
    except (FileNotFoundError, ValueError, ImportError) as error:  # QuantizationRefused is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    print(
        f"[export] {args.model} -> {report.output} (openvino-int8, calibrated on {len(report.calibration_ids)} "
        f"training cases; validation IoU {report.val_iou_int8:.4f} against {report.val_iou_float:.4f} in float32)"
    )
    return EXIT_OK


def _postprocess_origin(val, postprocess: str) -> str:
    if val:
        return f"chosen on {val[0]}"
    return "shared by the members" if postprocess != "none" else "none shared"


def ensemble_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Writes one model that averages the logits of the saved models (each under its own TTA),
    with post-processing chosen on ``--val`` or shared by the members. Exit code 0, or 2 for a
    missing model or set, or members of different input sizes."""
    from kseg import ensemble, predict
    from kseg.data import load_dataset

    try:
        val_images = val_masks = None
        if args.val:
            folder, suffix = args.val
            size = predict.model_input_size(predict.load_trained_model(args.model[0]))
            inputs = load_dataset("auto", path=folder, image_size=size, mask_suffix=suffix)
            val_images, val_masks = (
                inputs.images,
                load_dataset("auto", path=folder, image_size=args.eval_size, mask_suffix=suffix).masks,
            )
        _, chosen = ensemble.ensemble_files(args.model, args.output, val_images, val_masks)
    except (FileNotFoundError, NotADirectoryError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    print(
        f"[ensemble] {len(args.model)} model(s) -> {args.output} (post-processing {chosen.postprocess}, "
        f"{_postprocess_origin(args.val, chosen.postprocess)})"
    )
    return EXIT_OK


# ----- leaderboard -----


def leaderboard_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Prints the leaderboard's summary (mean +- std over seeds per group), as text or Markdown."""
    from kseg import leaderboard

    if args.merge:
        print(
            f"[leaderboard] {leaderboard.merge(args.merge, args.results)} rows from {args.merge} "
            f"appended to {args.results}"
        )
    if not Path(args.results).exists():
        print(f"error: no leaderboard at {args.results}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    table = leaderboard.read(args.results)
    for column in ("dataset", "preset", "kseg_version"):
        if getattr(args, column):
            table = table[table[column] == getattr(args, column)]
    if args.seed is not None:
        table = table[table["seed"] == args.seed]
    if args.recipe:
        table = table[leaderboard.with_groups(table)["recipe"] == args.recipe]
    if args.recipes:
        model, _, loss = args.recipes.partition("+")
        print(leaderboard.recipe_comparison(table, model, loss))
    elif args.paired:
        per_image = leaderboard.read_per_image(args.results)
        print(leaderboard.paired_comparison(table, *args.paired, metric=args.metric, per_image=per_image))
    elif args.transfer:
        print(leaderboard.transfer_report(table, args.transfer))
    else:
        per_image = leaderboard.read_per_image(args.results)
        print(
            leaderboard.markdown_report(table, per_image)
            if args.markdown
            else leaderboard.format_summary(leaderboard.summarise(table, per_image=per_image))
        )
    return EXIT_OK


# ----- the parser -----

COMMANDS: dict[str, tuple[Callable, str]] = {
    "grid": (grid_command, "train every model x loss x seed and append one row per run to the leaderboard"),
    "predict": (predict_command, "write a binary mask (0/255 PNG, at each image's own size) and an overlay per image"),
    "evaluate": (evaluate_command, "score a saved model on an images/masks folder with the leaderboard's metrics"),
    "leaderboard": (leaderboard_command, "print the leaderboard: mean +- std over seeds per group"),
    "ensemble": (ensemble_command, "write one model that averages the logits of saved models, each under its own TTA"),
    "export": (
        export_command,
        "export a saved model for inference (ONNX or TensorFlow SavedModel) with Keras's model.export",
    ),
}


def build_parser(prog: str = "python -m kseg") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="kseg: binary image segmentation with Keras 3.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers = {}
    for name, (_, text) in COMMANDS.items():
        parents = {
            "predict": [_model_flag(), _engine_flags(), _scoring_flags()],
            "evaluate": [_engine_flags(), _scoring_flags()],
        }.get(name, [])
        parsers[name] = sub.add_parser(
            name, help=text, description=text[0].upper() + text[1:] + ".", parents=parents, formatter_class=_formatter
        )
    add_grid_arguments(parsers["grid"])
    p = parsers["predict"]
    p.add_argument("--input", "--images", dest="input", required=True, help="an image file or a folder of images")
    p.add_argument("--output", required=True, help="folder for masks/STEM.png and overlays/STEM.png")
    p = parsers["evaluate"]
    p.add_argument(
        "--model",
        required=True,
        nargs="+",
        help="saved model(s), e.g. runs/*/model.keras, or .onnx files with --engine onnx|openvino: "
        "one summary row each",
    )
    p.add_argument(
        "--images",
        required=True,
        help="folder of images; without --masks, a PH2 folder or a folder with images/ and masks/",
    )
    p.add_argument("--masks", default=None, help="folder of binary masks, matched to images by file stem")
    p.add_argument("--mask-suffix", default="", help="mask file stem suffix, e.g. _segmentation (ISIC)")
    p.add_argument("--eval-size", type=_positive_int, default=256, help="masks and logits are compared at this size")
    p.add_argument("--per-image", action="store_true", help="also print (and save beside --csv) one row per image")
    p.add_argument("--csv", help="append the summary rows here (and write STEM_RUN_per_image.csv with --per-image)")
    p = parsers["leaderboard"]
    p.add_argument("--results", default="experiments.csv", help="leaderboard CSV")
    p.add_argument("--markdown", action="store_true", help="a Markdown table (as in docs/results.md)")
    p.add_argument("--dataset", help="only rows of this dataset")
    p.add_argument("--preset", help="only rows of this preset")
    p.add_argument("--kseg-version", help="only rows written by this kseg version, e.g. 0.3.0")
    p.add_argument("--seed", type=int, help="only rows of this seed (an ablation run on one seed)")
    p.add_argument("--recipe", help="only rows of this recipe, as the table's recipe column writes it")
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
    p.add_argument("--metric", default="test_iou", help="with --paired: the column compared, e.g. ext_isic2018_dev_iou")
    p.add_argument(
        "--recipes",
        metavar="MODEL+LOSS",
        help="compare every recipe of one pair (Markdown): val and test IoU "
        "before and after refinement, minutes per run, e.g. segnet+bce",
    )
    p = parsers["ensemble"]
    p.add_argument(
        "--model", required=True, nargs="+", help="saved models of one input size, e.g. runs/*-fold*/model.keras"
    )
    p.add_argument("--output", required=True, help="the ensemble's .keras file")
    p.add_argument(
        "--val",
        type=_external,
        default=None,
        metavar="DIR[:SUFFIX]",
        help="choose the post-processing on this labelled set (images/ + masks/, or PH2); default: the members' "
        "shared choice. Never a set the ensemble is then scored on",
    )
    p.add_argument(
        "--eval-size", type=_positive_int, default=256, help="with --val: masks and logits are compared at this size"
    )
    p = parsers["export"]
    p.add_argument("--model", required=True, help="a saved model, e.g. runs/RUN/model.keras")
    p.add_argument(
        "--format",
        default="onnx",
        choices=["onnx", "saved_model", "openvino-int8"],
        help="onnx: one .onnx file; saved_model: a TensorFlow SavedModel folder; openvino-int8: a grid run's model "
        "quantized by NNCF (calibrated on the run's training cases, refused if validation IoU drops by more than "
        "--max-iou-drop) as OpenVINO IR, for predict --engine openvino",
    )
    p.add_argument(
        "--output", default=None, help="the .onnx file, SavedModel folder or int8 .xml (default: beside --model)"
    )
    p.add_argument("--data-dir", default=None, help="openvino-int8: the run's data, if not where the run found it")
    p.add_argument(
        "--max-iou-drop",
        type=float,
        default=0.005,
        help="openvino-int8: the largest validation IoU loss against the float32 export",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="a fixed batch size for the artifact (default: any, but 8 for ONNX under JAX)",
    )
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "python -m kseg") -> int:
    """``python -m kseg COMMAND ...``; ``python -m kseg COMMAND --help`` for each command's flags."""
    parser = build_parser(prog)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    command, _ = COMMANDS[args.command]
    return command(args, parser)


def build_grid_parser(prog: str = "run_all.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=COMMANDS["grid"][1][0].upper() + COMMANDS["grid"][1][1:] + ".",
        formatter_class=_formatter,
    )
    add_grid_arguments(parser)
    return parser


def run_grid_command(argv: Sequence[str] | None = None, prog: str = "run_all.py") -> int:
    """``run_all.py [FLAGS]``: the same as ``python -m kseg grid [FLAGS]``."""
    parser = build_grid_parser(prog)
    return grid_command(parser.parse_args(sys.argv[1:] if argv is None else argv), parser)


__all__ = [
    "EXIT_OK",
    "EXIT_SOME_FAILED",
    "EXIT_BAD_ARGUMENTS",
    "add_grid_arguments",
    "grid_command",
    "predict_command",
    "evaluate_command",
    "export_command",
    "ensemble_command",
    "leaderboard_command",
    "COMMANDS",
    "build_parser",
    "build_grid_parser",
    "main",
    "run_grid_command",
]
