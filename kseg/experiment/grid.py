"""The experiment grid: expand models x losses x seeds into RunConfigs, hand each to an
executor (which runs :func:`kseg.experiment.run.run_one_or_fail`), and append one leaderboard row per run.

A run whose config hash already has an ok row is skipped, so an interrupted grid resumes where it
stopped; a run that fails is recorded as failed and the grid goes on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

from kseg.experiment import leaderboard, transfer
from kseg.experiment.config import RunConfig
from kseg.experiment.executors import Executor, LocalExecutor
from kseg.experiment.run import PER_IMAGE_KEY, resolve_config
from kseg.experiment.sources import DataCache

# What makes two fine-tuned runs share one pretraining run: the architecture at its size and
# width, and how it computes. Everything else of the pretraining recipe is its preset's.
ARCHITECTURE_FIELDS = (
    "model",
    "image_size",
    "eval_size",
    "base_filters",
    "depth",
    "batch_size",
    "batch_norm",
    "colour_constancy",
    "precision",
    "jit_compile",
)


def expand(
    models: Sequence[str],
    losses: Sequence[str],
    seeds: Sequence[int],
    preset: str,
    data: DataCache,
    split_seed: int | None = None,
    folds: int = 0,
    **overrides,
) -> list[RunConfig]:
    """Every model x loss x seed (x fold, with ``folds`` >= 2) as a resolved RunConfig of
    ``preset`` with ``overrides`` (:func:`kseg.experiment.run.resolve_config`), seeds then folds outermost,
    so a grid interrupted early has compared every pair at least once. ``split_seed`` None: each
    run's split seed is its seed."""
    return [
        resolve_config(
            RunConfig.from_preset(
                preset, model=m, loss=loss, seed=s, split_seed=split_seed, folds=folds, fold=f, **overrides
            ),
            data,
        )
        for s in seeds
        for f in range(max(folds, 1))
        for m in models
        for loss in losses
    ]


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
    executor: Executor | None = None,
    distribute: str = "none",
) -> list[dict]:
    """Runs every config not already done (unless ``force``) on ``executor`` (default: one after
    another in this process), appending one row each to ``results`` as runs finish; only this
    process writes the leaderboard. Returns the rows written by this call.

    A row whose config hash already has an ok row (written meanwhile, or by a retried remote
    task) is not appended again.
    """
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
        print_fn(
            f"[grid] run {k}/{len(todo)}: {config.model} + {config.loss}, seed {config.seed} "
            f"({config.run_id}); elapsed {_duration(elapsed)}{eta}"
        )

    for config, row in executor.run(todo, data, output_dir, verbose=verbose, distribute=distribute, announce=announce):
        per_image = row.pop(PER_IMAGE_KEY, None)
        already_ok = ok_here | (set() if force else leaderboard.completed_hashes(results))
        if row["config_hash"] in already_ok:
            print_fn(f"[grid] {config.run_id}: already has an ok row in {results}; not appended again")
            continue
        if per_image:  # before the row: a kill in between leaves scores whose run reruns (their last copy counts)
            leaderboard.append_per_image(results, per_image)
        leaderboard.append_row(results, row)
        rows.append(row)
        if row["status"] == "ok":
            ok_here.add(row["config_hash"])
        print_fn(
            f"[grid] {config.run_id}: {row['status']}"
            + (f", test IoU {row['test_iou']:.4f}" if row.get("test_iou") is not None else "")
        )
    print_fn(f"[grid] {len(rows)} runs in {_duration(time.perf_counter() - start)}")
    return rows


def architecture(config: RunConfig) -> tuple:
    """The config's :data:`ARCHITECTURE_FIELDS`: runs that share it share one set of weights' shapes."""
    return tuple(getattr(config, f) for f in ARCHITECTURE_FIELDS)


def pretraining_configs(
    configs: Sequence[RunConfig], source: DataCache, output_dir: str | Path
) -> tuple[list[RunConfig], list[RunConfig]]:
    """The pretraining runs ``configs`` need on the labelled set ``source`` (one per
    :data:`ARCHITECTURE_FIELDS`, with :data:`kseg.experiment.transfer.PRETRAIN_LOSS`, seed and split, its
    preset's recipe for ``pretrain_epochs`` epochs on the source alone; the row's dataset is the
    source's folder name), and
    ``configs`` made to start from them. A fine-tuned run's identity holds its source's hash, so
    a resumed or extended grid finds the same pretraining run again."""
    label = leaderboard.folder_label(source.path)
    by_architecture: dict[tuple, RunConfig] = {}
    for config in configs:
        key = (*architecture(config), config.pretrain_epochs)
        if key not in by_architecture:
            by_architecture[key] = resolve_config(
                RunConfig.from_preset(
                    config.preset,
                    **{f: getattr(config, f) for f in ARCHITECTURE_FIELDS},
                    loss=transfer.PRETRAIN_LOSS,
                    seed=transfer.PRETRAIN_SEED,
                    dataset=label,
                    mask_suffix=source.mask_suffix,
                    epochs=config.pretrain_epochs,
                    split_sizes=transfer.PRETRAIN_SPLIT,
                    refine="none",
                    joint_ratio=0.0,
                ),
                source,
            )
    fine_tuned = []
    for config in configs:
        pretrained = by_architecture[(*architecture(config), config.pretrain_epochs)]
        fine_tuned.append(
            config.replace(
                init_from=str(Path(output_dir) / pretrained.run_id / transfer.MODEL_FILE),
                init_source=f"{label}:{pretrained.config_hash}",
            )
        )
    return list(by_architecture.values()), fine_tuned


def run_pretraining(
    configs: Sequence[RunConfig],
    source: DataCache,
    results: str | Path,
    output_dir: str | Path,
    print_fn: Callable[[str], None] = print,
    **grid_options,
) -> set[str]:
    """Runs each pretraining config that has no ok row with its model still in ``output_dir``
    (:func:`run_grid`'s options), so no architecture pretrains twice. Returns the hashes of the
    pretraining runs now usable."""
    done = leaderboard.completed_hashes(results)
    model_of = {c.config_hash: Path(output_dir) / c.run_id / transfer.MODEL_FILE for c in configs}
    todo = [c for c in configs if not (c.config_hash in done and model_of[c.config_hash].is_file())]
    for config in configs:
        if config.config_hash in done and config not in todo:
            print_fn(f"[pretrain] {config.run_id}: pretrained already ({model_of[config.config_hash]})")
        elif config.config_hash in done:
            print_fn(
                f"[pretrain] {config.run_id}: has an ok row but no {model_of[config.config_hash]}; pretraining again"
            )
    if todo:
        print_fn(f"[pretrain] {len(todo)} pretraining run(s) on {source.path}, loss {transfer.PRETRAIN_LOSS}")
        run_grid(todo, source, results, output_dir, force=True, print_fn=print_fn, **grid_options)
    return {h for h, path in model_of.items() if path.is_file() and h in leaderboard.completed_hashes(results)}


__all__ = ["ARCHITECTURE_FIELDS", "architecture", "expand", "run_grid", "pretraining_configs", "run_pretraining"]
