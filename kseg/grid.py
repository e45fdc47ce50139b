"""The experiment grid: expand models x losses x seeds into RunConfigs, hand each to an
executor (which runs :func:`kseg.run.run_one_or_fail`), and append one leaderboard row per run.

A run whose config hash already has an ok row is skipped, so an interrupted grid resumes where it
stopped; a run that fails is recorded as failed and the grid goes on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

from kseg import leaderboard
from kseg.config import RunConfig
from kseg.executors import Executor, LocalExecutor
from kseg.run import DataCache, resolve_config


def expand(models: Sequence[str], losses: Sequence[str], seeds: Sequence[int], preset: str, data: DataCache,
           split_seed: int | None = None, **overrides) -> list[RunConfig]:
    """Every model x loss x seed as a resolved RunConfig of ``preset`` with ``overrides``
    (:func:`kseg.run.resolve_config`), seeds outermost, so a grid interrupted early has compared
    every pair at least once. ``split_seed`` None: each run's split seed is its seed."""
    return [
        resolve_config(RunConfig.from_preset(preset, model=m, loss=l, seed=s, split_seed=split_seed, **overrides), data)
        for s in seeds for m in models for l in losses
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
