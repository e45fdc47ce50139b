"""Using trained models: ``python -m kseg predict``, ``evaluate``, ``export`` and ``ensemble``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kseg.cli._flags import (
    EXIT_BAD_ARGUMENTS,
    EXIT_OK,
    EXIT_SOME_FAILED,
    check_engine_flags,
    labelled_folder,
    positive_float_flag,
    positive_int_flag,
    refuse,
)


def _refinement(args: argparse.Namespace, model_path: str):
    from kseg import refine
    from kseg.export import (
        load_saved_refinement,
    )  # also reads an exported model's PATH.refinement.json

    saved = load_saved_refinement(model_path)
    return refine.Refinement(
        tta=saved.tta if args.tta == "saved" else args.tta,
        postprocess=saved.postprocess if args.postprocess == "saved" else args.postprocess,
        temperature=saved.temperature,
    )


def predict_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Exit code 0 when every image got a mask, 1 when any file failed (each named on stderr),
    2 for a missing model or input."""
    from kseg import predict

    check_engine_flags(args, parser)
    try:
        files = predict.find_images(args.input)
        if args.model is None:
            from kseg import pretrained

            args.model = pretrained.ready_model()
            print(f"[predict] no --model: kseg's ready dermoscopy model ({pretrained.provenance()['recipe']})")
        args.model = predict.model_file(args.model)
        model = predict.load_engine(args.model, args.engine, args.openvino_precision)
        refinement = _refinement(args, args.model)
    except (FileNotFoundError, ValueError, ImportError) as error:
        return refuse(error)
    report = predict.predict_files(model, files, args.output, args.threshold, args.batch_size, refinement=refinement)
    print(
        f"[predict] {len(report.written)} of {len(files)} images -> {Path(args.output)}/masks, overlays "
        f"({refinement.describe()}, engine={predict.engine_for(args.model, args.engine)})"
    )
    if report.failed:
        print(f"[predict] {len(report.failed)} failed: {', '.join(p.name for p in report.failed)}", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK


def _not_a_folder(folder: str | None) -> str:
    """What is wrong with a data folder flag's value, or "" (also for a flag not given)."""
    if folder is None or Path(folder).is_dir():
        return ""
    return "a file, where a folder was expected" if Path(folder).exists() else "no such folder"


def evaluate_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Scores one or more saved models (each with its own refinement) on one labelled set. With
    ``--csv`` each model's row is appended as soon as it is scored, so a later failure loses
    nothing. Exit code 0; 1 when some of several models failed (each named); 2 when nothing could
    be scored (a missing model, folder or mask)."""
    import pandas as pd

    from kseg import predict

    check_engine_flags(args, parser)
    for flag, folder in (("--images", args.images), ("--masks", args.masks)):
        problem = _not_a_folder(folder)
        if problem:  # the data's problem, said once, not once per model
            return refuse(f"{flag} {folder}: {problem}")
    if args.model is None:
        from kseg import pretrained

        args.model = [pretrained.ready_model()]
        print(f"[evaluate] no --model: kseg's ready dermoscopy model ({pretrained.provenance()['recipe']})")
    failed = []
    for model_path in args.model:
        try:
            model_path = predict.model_file(model_path)
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
                tolerance=args.nsd_tolerance,
                spacing=args.pixel_spacing,
                ece_bins=args.ece_bins,
            )
        except (FileNotFoundError, NotADirectoryError, ValueError, ImportError) as error:
            refuse(error)  # this model only: the others are still scored
            failed.append(model_path)
            continue
        if len(args.model) > 1:
            print(f"== {model_path}")
        print(predict.format_evaluation(scores, per_image=args.per_image, unit="mm" if args.pixel_spacing else "px"))
        print(f"{'refinement':<22} {refinement.describe()}")
        if args.plots:
            from kseg import calibration

            name = f"reliability_{Path(model_path).parent.name or Path(model_path).stem}.png"
            path = calibration.plot_reliability(
                *scores.pooled_reliability(), Path(args.plots) / name, f"{model_path}\n"
            )
            print(f"[evaluate] reliability diagram: {path}")
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
                    engine=predict.engine_for(model_path, args.engine),
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


def export_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Exports a saved model with Keras's ``model.export`` under the active backend, and its
    refinement beside it (PATH.refinement.json); ``openvino-int8`` quantizes a grid run's model
    (:mod:`kseg.quantize`). Exit code 0, or 2 for a missing model, a format the backend cannot
    export, a missing exporter package or an int8 model refused by its validation gate."""
    from kseg import export, predict, refine

    try:
        args.model = predict.model_file(args.model)  # a run folder: its model.keras
    except FileNotFoundError as error:
        return refuse(error)
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
        return refuse(error)
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
        return refuse(error)
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
        return refuse(error)
    print(
        f"[ensemble] {len(args.model)} model(s) -> {args.output} (post-processing {chosen.postprocess}, "
        f"{_postprocess_origin(args.val, chosen.postprocess)})"
    )
    return EXIT_OK


def add_predict_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``predict``'s own flags (the model, engine and scoring flags are shared)."""
    p.add_argument("--input", "--images", dest="input", required=True, help="an image file or a folder of images")
    p.add_argument("--output", required=True, help="folder for masks/STEM.png and overlays/STEM.png")
    return p


def add_evaluate_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``evaluate``'s own flags (the engine and scoring flags are shared)."""
    p.add_argument(
        "--model",
        default=None,
        nargs="+",
        help="saved model(s) or run folders, e.g. runs/*/model.keras, runs/RUN or .onnx files, one summary row "
        "each; default: kseg's ready dermoscopy model",
    )
    p.add_argument(
        "--images",
        required=True,
        help="folder of images; without --masks, a PH2 folder or a folder with images/ and masks/",
    )
    p.add_argument("--masks", default=None, help="folder of binary masks, matched to images by file stem")
    p.add_argument("--mask-suffix", default="", help="mask file stem suffix, e.g. _segmentation (ISIC)")
    p.add_argument(
        "--eval-size", type=positive_int_flag, default=256, help="masks and logits are compared at this size"
    )
    p.add_argument(
        "--nsd-tolerance",
        type=positive_float_flag,
        default=2.0,
        help="NSD's tolerance: a border pixel within it of the other border counts (pixels at --eval-size; mm "
        "with --pixel-spacing)",
    )
    p.add_argument(
        "--pixel-spacing",
        type=positive_float_flag,
        default=None,
        metavar="MM",
        help="millimetres per pixel at --eval-size: HD, HD95 and ASSD in mm instead of pixels",
    )
    p.add_argument("--ece-bins", type=positive_int_flag, default=15, help="equal-width bins of the ECE")
    p.add_argument("--plots", metavar="DIR", help="write each model's reliability diagram here (PNG)")
    p.add_argument("--per-image", action="store_true", help="also print (and save beside --csv) one row per image")
    p.add_argument("--csv", help="append the summary rows here (and write STEM_RUN_per_image.csv with --per-image)")
    return p


def add_ensemble_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``ensemble``'s flags."""
    p.add_argument(
        "--model", required=True, nargs="+", help="saved models of one input size, e.g. runs/*-fold*/model.keras"
    )
    p.add_argument("--output", required=True, help="the ensemble's .keras file")
    p.add_argument(
        "--val",
        type=labelled_folder,
        default=None,
        metavar="DIR[:SUFFIX]",
        help="choose the post-processing on this labelled set (images/ + masks/, or PH2); default: the members' "
        "shared choice. Never a set the ensemble is then scored on",
    )
    p.add_argument(
        "--eval-size",
        type=positive_int_flag,
        default=256,
        help="with --val: masks and logits are compared at this size",
    )
    return p


def add_export_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``export``'s flags."""
    p.add_argument("--model", required=True, help="a saved model or run folder, e.g. runs/RUN/model.keras or runs/RUN")
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
        type=positive_int_flag,
        default=None,
        help="a fixed batch size for the artifact (default: any, but 8 for ONNX under JAX)",
    )
    return p


__all__ = [
    "predict_command",
    "evaluate_command",
    "export_command",
    "ensemble_command",
    "add_predict_arguments",
    "add_evaluate_arguments",
    "add_export_arguments",
    "add_ensemble_arguments",
]
