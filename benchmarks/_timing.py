"""The one timing rule every benchmark script uses, so Keras and native PyTorch are timed alike."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def median_seconds(
    step: Callable[[], Any], warmup: int, steps: int, budget_s: float = float("inf")
) -> tuple[float, list[float]]:
    """Median wall time of up to ``steps`` calls after up to ``warmup`` untimed ones (compilation,
    caches). ``budget_s`` caps each phase's wall time (at least 1 warm-up and 3 timed calls, or
    ``steps`` if fewer), so one very slow config cannot blow the whole grid's time."""
    start = time.perf_counter()
    for _ in range(warmup):
        step()
        if time.perf_counter() - start > budget_s / 2:
            break
    times: list[float] = []
    while len(times) < steps and (sum(times) < budget_s or len(times) < min(3, steps)):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times
