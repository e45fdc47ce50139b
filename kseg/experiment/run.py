"""One run of the grid: data -> fit -> refine (chosen on validation) -> evaluate -> artefacts -> row.

Executors call :func:`run_one_or_fail` wherever runs execute; the grid depends on this module and
on the executors, and this module on neither.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import traceback
from pathlib import Path

import keras
import numpy as np

from kseg import refine
from kseg.data import SegmentationDataset, Split, concatenate
from kseg.device import cpu_kind, device_description
from kseg.evaluation import predict_logits, score_refined
from kseg.experiment import leaderboard, transfer
from kseg.experiment.config import KSEG_VERSION, ROW_FIELDS, RunConfig, resolve_jit_compile, resolve_precision
from kseg.experiment.sources import DataCache
from kseg.experiment.training import DivergedError, fit
from kseg.models import cost
from kseg.visualize import save_prediction_grid


def resolve_config(config: RunConfig, data: DataCache) -> RunConfig:
    """``config`` with what ``auto`` means here filled in (dataset, precision, jit), the data's
    fingerprint and the identity of the weights it starts from, so that its hash names what
    actually runs. A source that does not exist raises here, before any run starts."""
    dataset = config.dataset
    if dataset == "auto" or data.sources:  # a joined dataset is named by its sources
        dataset = data.resolve(config.image_size, config.synthetic_n)
    init_source = config.init_source
    if config.init_from and not init_source:
        init_source = transfer.source_identity(config.init_from)
    if data.joint and not config.joint_ratio:
        raise ValueError(
            f"--joint-source {data.joint[0][0]} expects --joint-ratio R > 0 (the share of every batch it gives). "
            f"Received: {config.joint_ratio}"
        )
    if config.joint_ratio and not data.joint:
        raise ValueError(
            f"--joint-ratio {config.joint_ratio:g} (preset {config.preset}) expects --joint-source DIR[:SUFFIX], the "
            "labelled set(s) to train on beside the data. Received: none"
        )
    return config.replace(
        dataset=dataset,
        data_fingerprint=data.fingerprint(config),
        init_source=init_source,
        joint_source=data.joint_identity(config),
        precision=resolve_precision(config.precision),
        jit_compile=resolve_jit_compile(config.jit_compile),
    )


def _timestamp() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def base_row(config: RunConfig) -> dict:
    """The row's identity part: what ran, where, and its two hashes."""
    row = {"timestamp": _timestamp(), "run_id": config.run_id}
    row.update({field: getattr(config, field) for field in ROW_FIELDS})
    row.update(
        split_sizes="/".join(map(str, config.split_sizes)),
        encoder_weights=config.identity().get("encoder_weights", ""),  # a file by its digest, as in the hash
        device=device_description(),
        backend=keras.backend.backend(),
        keras_version=keras.version(),
        kseg_version=KSEG_VERSION,
        config_hash=config.config_hash,
        group_hash=config.group_hash,
    )
    return row


def run_one(
    config: RunConfig, data: DataCache, output_dir: str | Path, verbose: bool = True, *, distribute: str = "none"
) -> dict:
    """Trains, refines and evaluates one (resolved) config; returns its leaderboard row.

    Leaves in ``output_dir/run_id``: config.json, split.json (case ids per part), model.keras
    (best weights, with the chosen refinement inside), history.csv (learning curves),
    refinement.json (every candidate's validation score), test_scores.csv (per-image scores) and
    predictions.png.
    """
    start = time.perf_counter()
    keras.backend.clear_session()
    run_dir = Path(output_dir) / config.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(
        json.dumps({**config.identity(), "config_hash": config.config_hash}, indent=2, default=list)
    )

    parts, targets = data.parts(config)
    joint = data.joint_parts(config)
    split_ids = {**parts.ids(), **({"joint": {label: p.ids() for label, (p, _) in joint.items()}} if joint else {})}
    (run_dir / "split.json").write_text(json.dumps(split_ids, indent=1))
    # Validation (the kept epoch, the refinement) weighs every source; the test parts stay apart.
    validation, val_targets = parts.val, targets.val
    if joint:
        names = [config.dataset, *joint]
        validation = concatenate([parts.val, *(p.val for p, _ in joint.values())], names=names)
        val_targets = concatenate([targets.val, *(t.val for _, t in joint.values())], names=names)

    row = base_row(config)
    try:
        result = fit(
            config,
            Split(parts.train, validation, parts.test),
            run_dir,
            policy=config.precision,
            verbose=verbose,
            distribute=distribute,
            joint=[p.train for p, _ in joint.values()],
        )
    except DivergedError as error:
        return {**row, "status": "nan", "error": str(error)}

    eval_size = targets.test.masks.shape[1:3]
    chosen, candidates = refine.Refinement(), {}
    if config.refine == "auto":
        chosen, candidates = refine.choose_refinement(
            result.model,
            validation.images,
            val_targets.masks,
            output_size=eval_size,
            batch_size=config.batch_size,
        )
        (run_dir / "refinement.json").write_text(
            json.dumps({"chosen": chosen.to_dict(), "val_iou": candidates}, indent=1)
        )
    refine.save_with_refinement(result.model, run_dir / "model.keras", chosen)

    plain_logits = predict_logits(result.model, parts.test.images, eval_size, config.batch_size)
    plain = score_refined(targets.test, plain_logits, refine.Refinement())
    logits = (
        plain_logits
        if chosen.tta == "none"
        else predict_logits(result.model, parts.test.images, eval_size, config.batch_size, chosen.tta)
    )
    scores = score_refined(targets.test, logits, chosen)
    scores.per_image.assign(iou_plain=plain.per_image["iou"]).to_csv(run_dir / "test_scores.csv", index=False)
    _save_predictions(
        targets.test, refine.binarise(logits, postprocess_mode=chosen.postprocess), run_dir / "predictions.png"
    )

    row.update(scores.as_row())
    per_image = [_per_image_rows(config, "test", scores.per_image, plain.per_image)]
    for folder, suffix in data.externals:
        external = score_external(result.model, data, folder, suffix, config, chosen, run_dir)
        row.update(external.as_row(leaderboard.external_prefix(folder)))
        per_image.append(_per_image_rows(config, leaderboard.external_prefix(folder).rstrip("_"), external.per_image))
    if joint:  # what the choice on validation weighed, per source
        logits = predict_logits(result.model, validation.images, eval_size, config.batch_size, chosen.tta)
        by_source = score_refined(val_targets, logits, chosen).iou_by_source
        row.update({f"val_iou_source_{name}": iou for name, iou in by_source.items()})
    for label, (inputs, joint_targets) in joint.items():
        logits = predict_logits(
            result.model, inputs.test.images, joint_targets.test.masks.shape[1:3], config.batch_size, chosen.tta
        )
        source = score_refined(joint_targets.test, logits, chosen)
        row[f"test_iou_source_{label}"] = source.iou
        per_image.append(_per_image_rows(config, f"source_{label}", source.per_image))
    row.update(
        test_iou_plain=plain.iou,
        test_ece_plain=plain.ece,
        temperature=chosen.temperature,
        val_iou_plain=result.val_iou,
        val_iou_refined=candidates.get(chosen.masks_only.describe(), result.val_iou),
        tta=chosen.tta,
        postprocess=chosen.postprocess,
        epochs_run=result.epochs_run,
        best_epoch=result.best_epoch,
        val_iou=result.val_iou,
        side_output=result.side_output,
        init_loaded=result.init.loaded if result.init else None,
        init_fresh=result.init.fresh if result.init else None,
        params=result.model.count_params(),
        gflops=cost.forward_gflops(result.model),
        train_seconds=result.train_seconds,
        train_seconds_per_epoch=result.train_seconds / max(result.epochs_run, 1),
        infer_ms_per_image=inference_ms_per_image(result.model, parts.test.images, eval_size, config.batch_size),
        cpu_kind=cpu_kind(),
        run_seconds=time.perf_counter() - start,
        status="nan" if result.diverged else "ok",
        error="loss became NaN; scores are of the best finite epoch before it" if result.diverged else "",
    )
    row = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items() if leaderboard.known_column(k)}
    # Not a column: the grid writes these to the leaderboard's per-image companion file.
    return {**row, PER_IMAGE_KEY: [r for rows in per_image for r in rows]}


def inference_ms_per_image(
    model: keras.Model, images: np.ndarray, output_size: tuple[int, int], batch_size: int, repeats: int = 7
) -> float:
    """Milliseconds per image of one batch's logits at the evaluation size (the model's forward
    pass and the resize), the median of ``repeats`` timed batches after a warm-up one."""
    batch = np.asarray(images[:batch_size])
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        logits = keras.ops.convert_to_numpy(model.predict_on_batch(batch))
        refine.resize_logits(logits, output_size)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times[1:])) / len(batch)


# The key under which a run's row carries its per-image scores to the grid.
PER_IMAGE_KEY = "per_image"


def _per_image_rows(config: RunConfig, part: str, refined, plain=None) -> list[dict]:
    """The per-image scores of one scored set as rows of the companion file: every score of the
    refined masks (``leaderboard.PER_IMAGE_SCORES``), and IoU and Dice of the plain ones."""
    plain = refined if plain is None else plain
    scores = refined[list(leaderboard.PER_IMAGE_SCORES)].astype("float64").round(5)
    return [
        dict(
            run_id=config.run_id,
            config_hash=config.config_hash,
            set=part,
            case_id=case,
            **values,
            iou_plain=round(float(iou_plain), 5),
            dice_plain=round(float(dice_plain), 5),
        )
        for case, values, iou_plain, dice_plain in zip(
            refined["id"], scores.to_dict("records"), plain["iou"], plain["dice"]
        )
    ]


def score_external(
    model: keras.Model,
    data: DataCache,
    folder: str,
    mask_suffix: str,
    config: RunConfig,
    refinement: refine.Refinement,
    run_dir: Path,
):
    """The run's :class:`kseg.evaluation.Evaluation` on one external set, with its refinement;
    per-image scores also go to ``run_dir/<prefix>scores.csv`` (for a worst-case gallery)."""
    inputs = data.external(folder, mask_suffix, config.image_size)
    targets = data.external(folder, mask_suffix, config.eval_size)
    logits = predict_logits(model, inputs.images, targets.masks.shape[1:3], config.batch_size, refinement.tta)
    scores = score_refined(targets, logits, refinement)
    prefix = leaderboard.external_prefix(folder)
    scores.per_image.to_csv(run_dir / f"{prefix}scores.csv", index=False)
    return scores


def failed_row(config: RunConfig, error: BaseException) -> dict:
    """The leaderboard row of a run that raised ``error`` (or whose worker died)."""
    return {**base_row(config), "status": "failed", "error": f"{type(error).__name__}: {error}"[:500]}


def run_one_or_fail(
    config: RunConfig, data: DataCache, output_dir: str | Path, verbose: bool = True, *, distribute: str = "none"
) -> dict:
    """:func:`run_one`, with any exception turned into a failed row: every executor runs this."""
    try:
        return run_one(config, data, output_dir, verbose=verbose, distribute=distribute)
    except Exception as error:  # one failing run must not stop the grid
        traceback.print_exc()
        return failed_row(config, error)


def _save_predictions(targets: SegmentationDataset, predicted: np.ndarray, path: Path, n: int = 8) -> None:
    """Outlines of prediction and truth over the first ``n`` test images, as one PNG (the
    evaluation's own masks: the test set is predicted once)."""
    save_prediction_grid(
        np.asarray(targets.images[:n]), predicted[:n], np.asarray(targets.masks[:n]), path, titles=list(targets.ids[:n])
    )


__all__ = [
    "resolve_config",
    "base_row",
    "run_one",
    "PER_IMAGE_KEY",
    "score_external",
    "failed_row",
    "run_one_or_fail",
]
