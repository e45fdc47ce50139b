"""The experiment grid: expand models x losses x seeds into RunConfigs, run each one (train,
evaluate, save its artifacts), and append one leaderboard row per run.

A run whose config hash already has an ok row is skipped, so an interrupted grid resumes where it
stopped; a run that fails is recorded as failed and the grid goes on.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import keras
import numpy as np

from kseg import leaderboard
from kseg.config import RunConfig, device_description, resolve_jit_compile
from kseg.data import SegmentationDataset, load_dataset, split
from kseg.evaluation import evaluate, predict_logits
from kseg.training import fit
from kseg.visualize import save_prediction_grid

if TYPE_CHECKING:
    from kseg.executors import Executor


def expand(models: Sequence[str], losses: Sequence[str], seeds: Sequence[int], preset: str, **overrides) -> list[RunConfig]:
    """Every model x loss x seed as a RunConfig of ``preset`` with ``overrides``, seeds outermost,
    so a grid interrupted early has compared every pair at least once."""
    return [
        RunConfig.from_preset(preset, model=m, loss=l, seed=s, **overrides)
        for s in seeds for m in models for l in losses
    ]


class DataCache:
    """Loads each (dataset, size) once per grid; the loaders' disk cache makes reloads cheap too."""

    def __init__(self, kind: str, path: str | Path | None):
        self.kind, self.path = kind, path
        self._loaded: dict[tuple, SegmentationDataset] = {}

    def resolve(self, size: int, synthetic_n: int = 200) -> str:
        """Loads once to learn which dataset ``auto`` means here; returns its name."""
        name = self.get(size, synthetic_n).name
        if self.kind == "auto":
            self.kind = name
        return name

    def get(self, size: int, synthetic_n: int = 200) -> SegmentationDataset:
        key = (size, synthetic_n)
        if key not in self._loaded:
            self._loaded[key] = load_dataset(self.kind, path=self.path, image_size=size, n=synthetic_n)
        return self._loaded[key]


def _timestamp() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _base_row(config: RunConfig) -> dict:
    return {
        "timestamp": _timestamp(), "run_id": config.run_id, "model": config.model, "loss": config.loss,
        "seed": config.seed, "dataset": config.dataset, "split_seed": config.seed,
        "image_size": config.image_size, "eval_size": config.eval_size, "base_filters": config.base_filters,
        "epochs": config.epochs, "device": device_description(), "backend": keras.backend.backend(), "keras_version": keras.version(),
        "precision": config.precision, "jit_compile": resolve_jit_compile(config.jit_compile),
        "preset": config.preset, "config_hash": config.config_hash,
    }


def run_one(config: RunConfig, data: DataCache, output_dir: str | Path, verbose: bool = True, *,
            distribute: str = "none") -> dict:
    """Trains and evaluates one config; returns its leaderboard row (status ok or nan).
    ``distribute`` is passed to :func:`kseg.training.fit` ("data-parallel": all local devices).

    Leaves in ``output_dir/run_id``: model.keras (best weights), history.csv (learning curves),
    split.json (case ids per part), test_scores.csv (per-image scores) and predictions.png.
    """
    keras.backend.clear_session()
    run_dir = Path(output_dir) / config.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({**config.to_dict(), "config_hash": config.config_hash}, indent=2, default=list))

    parts = split(data.get(config.image_size, config.synthetic_n), seed=config.seed, sizes=config.split_sizes)
    targets = split(data.get(config.eval_size, config.synthetic_n), seed=config.seed, sizes=config.split_sizes).test
    (run_dir / "split.json").write_text(json.dumps(parts.ids(), indent=1))

    result = fit(config, parts, run_dir, policy=config.precision, verbose=verbose, distribute=distribute)
    scores = evaluate(result.model, parts.test, targets, batch_size=config.batch_size)
    scores.per_image.to_csv(run_dir / "test_scores.csv", index=False)
    _save_predictions(result.model, parts.test, targets, run_dir / "predictions.png")

    row = _base_row(config)
    row.update(scores.as_row())
    row = {k: v for k, v in row.items() if k in leaderboard.COLUMNS}
    row.update(
        epochs_run=result.epochs_run, best_epoch=result.best_epoch, val_iou=round(result.val_iou, 5),
        params=result.model.count_params(), train_seconds=round(result.train_seconds, 1),
        status="nan" if result.diverged else "ok",
        error="loss became NaN; scores are of the best epoch before it" if result.diverged else "",
    )
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()}


def failed_row(config: RunConfig, error: BaseException) -> dict:
    """The leaderboard row of a run that raised ``error`` (or whose worker died)."""
    return {**_base_row(config), "status": "failed", "error": f"{type(error).__name__}: {error}"[:500]}


def run_one_or_fail(config: RunConfig, data: DataCache, output_dir: str | Path, verbose: bool = True, *,
                    distribute: str = "none") -> dict:
    """:func:`run_one`, with any exception turned into a failed row: every executor runs this."""
    try:
        return run_one(config, data, output_dir, verbose=verbose, distribute=distribute)
    except Exception as error:  # one failing run must not stop the grid
        traceback.print_exc()
        return failed_row(config, error)


def _save_predictions(model, inputs, targets, path: Path, n: int = 8) -> None:
    """Outlines of prediction and truth over the first ``n`` test images, as one PNG."""
    images = np.asarray(targets.images[:n])
    logits = predict_logits(model, np.asarray(inputs.images[:n]), images.shape[1:3])
    save_prediction_grid(images, logits >= 0, np.asarray(targets.masks[:n]), path, titles=list(targets.ids[:n]))


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s"


def run_grid(
    configs: Sequence[RunConfig],
    data: DataCache,
    results: str | Path,
    output_dir: str | Path,
    force: bool = False,
    verbose: bool = True,
    print_fn: Callable[[str], None] = print,
    executor: "Executor | None" = None,
    distribute: str = "none",
) -> list[dict]:
    """Runs every config not already done (unless ``force``) on ``executor`` (default: one after
    another in this process), appending one row each to ``results`` as runs finish; only this
    process writes the leaderboard. Returns the rows written by this call.

    A row whose config hash already has an ok row (written meanwhile, or by a retried remote
    task) is not appended again.
    """
    from kseg.executors import LocalExecutor

    executor = executor or LocalExecutor()
    done = set() if force else leaderboard.completed_hashes(results)
    todo = [c for c in configs if c.config_hash not in done]
    if len(todo) < len(configs):
        print_fn(f"[grid] {len(configs) - len(todo)} of {len(configs)} runs already in {results}: skipped")
    rows, ok_here, start = [], set(), time.perf_counter()

    def announce(k: int, config: RunConfig) -> None:
        # The ETA is from finished runs, so it holds for parallel executors too.
        elapsed = time.perf_counter() - start
        eta = "" if not rows else f", about {_duration(elapsed / len(rows) * (len(todo) - len(rows)))} left"
        print_fn(f"[grid] run {k}/{len(todo)}: {config.model} + {config.loss}, seed {config.seed} "
                 f"({config.run_id}); elapsed {_duration(elapsed)}{eta}")

    for config, row in executor.run(todo, data, output_dir, verbose=verbose, distribute=distribute, announce=announce):
        already_ok = ok_here | (set() if force else leaderboard.completed_hashes(results))
        if row["config_hash"] in already_ok:
            print_fn(f"[grid] {config.run_id}: already has an ok row in {results}; not appended again")
            continue
        leaderboard.append_row(results, row)
        rows.append(row)
        if row["status"] == "ok":
            ok_here.add(row["config_hash"])
        print_fn(f"[grid] {config.run_id}: {row['status']}" + (f", test IoU {row['test_iou']:.4f}" if row.get("test_iou") is not None else ""))
    print_fn(f"[grid] {len(rows)} runs in {_duration(time.perf_counter() - start)}")
    return rows
