"""Where the grid's runs execute: one after another here, in parallel local processes, or as
Ray tasks on a cluster.

Every executor calls the same worker function, :func:`run_cell`, which turns any exception
into a failed row (:func:`kseg.experiment.run.run_one_or_fail`), and yields ``(config, row)`` pairs as
runs finish; :func:`kseg.experiment.grid.run_grid` alone appends them to the leaderboard, so workers
never need to reach the leaderboard file.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import multiprocessing
import os
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

import keras

from kseg._errors import invalid_value, unknown_name
from kseg.experiment import run as one_run
from kseg.experiment.config import RunConfig
from kseg.experiment.sources import DataCache

EXECUTORS = ("local", "ray")
RAY_MISSING = "--executor ray needs Ray: pip install 'kseg[ray]'"
# Passed on to Ray workers, which may not inherit the driver's environment.
FORWARDED_ENV = ("KSEG_CACHE_DIR", "KSEG_PH2_DIR", "KERAS_HOME")

Announce = Callable[[int, RunConfig], None]
Results = Iterator[tuple[RunConfig, dict]]


class Executor(Protocol):
    """Runs configs and yields ``(config, row)`` as each finishes, calling ``announce(k, config)``
    when run ``k`` (from 1) starts or is submitted."""

    def run(
        self,
        configs: Sequence[RunConfig],
        data,
        output_dir: str | Path,
        *,
        verbose: bool,
        distribute: str,
        announce: Announce,
    ) -> Results: ...


_data_caches: dict = {}


def run_cell(
    config: RunConfig, data_spec: dict, output_dir: str, verbose: bool = False, distribute: str = "none"
) -> dict:
    """The worker function of the process-pool and Ray executors: loads the data described by
    ``data_spec`` (:meth:`kseg.experiment.sources.DataCache.spec`; once per worker process), runs ``config`` and
    returns its leaderboard row, a failed row if it raised."""
    key = repr(sorted(data_spec.items()))
    if key not in _data_caches:
        _data_caches[key] = DataCache(**data_spec)
    return one_run.run_one_or_fail(config, _data_caches[key], output_dir, verbose=verbose, distribute=distribute)


class LocalExecutor:
    """Runs in this process, one after another (``jobs == 1``, the default), or ``jobs`` at a time
    in spawned worker processes, each loading the data itself."""

    def __init__(self, jobs: int = 1):
        if jobs < 1:
            raise invalid_value("jobs", "at least 1", jobs)
        self.jobs = jobs

    def run(
        self,
        configs: Sequence[RunConfig],
        data,
        output_dir: str | Path,
        *,
        verbose: bool = True,
        distribute: str = "none",
        announce: Announce = lambda k, c: None,
    ) -> Results:
        if self.jobs == 1:
            for k, config in enumerate(configs, 1):
                announce(k, config)
                yield config, one_run.run_one_or_fail(config, data, output_dir, verbose=verbose, distribute=distribute)
            return
        yield from self._run_pool(configs, data, output_dir, verbose, distribute, announce)

    def _run_pool(self, configs, data, output_dir, verbose, distribute, announce) -> Results:
        pending = list(enumerate(configs, 1))
        # spawn, not fork: a forked copy of an initialised TensorFlow/JAX/torch runtime can hang.
        context = multiprocessing.get_context("spawn")
        with _backend_in_environ(), futures.ProcessPoolExecutor(self.jobs, mp_context=context) as pool:
            running: dict[futures.Future, RunConfig] = {}

            def submit_next() -> tuple[RunConfig, dict] | None:
                k, config = pending.pop(0)
                announce(k, config)
                try:
                    future = pool.submit(run_cell, config, data.spec(), str(output_dir), verbose, distribute)
                except futures.process.BrokenProcessPool as error:  # a worker died: the pool takes no more
                    return config, one_run.failed_row(config, error)
                running[future] = config
                return None

            # Only ``jobs`` runs are in flight, so "run k/n" lines say what has started.
            while pending or running:
                while pending and len(running) < self.jobs:
                    refused = submit_next()
                    if refused:
                        yield refused
                if not running:
                    continue
                finished, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
                for future in finished:
                    config = running.pop(future)
                    try:
                        row = future.result()
                    except Exception as error:  # the worker process died (BrokenProcessPool)
                        row = one_run.failed_row(config, error)
                    yield config, row


@contextlib.contextmanager
def _backend_in_environ():
    """Spawned workers read KERAS_BACKEND from the environment: pin it to this process's backend
    (which may have come from keras.json) while the pool lives."""
    previous = os.environ.get("KERAS_BACKEND")
    os.environ["KERAS_BACKEND"] = keras.backend.backend()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("KERAS_BACKEND", None)
        else:
            os.environ["KERAS_BACKEND"] = previous


def import_ray():
    """Ray, or ImportError with the install command (Ray is the optional ``kseg[ray]`` extra)."""
    try:
        import ray
    except ImportError as error:
        raise ImportError(RAY_MISSING) from error
    return ray


def ray_env_vars() -> dict[str, str]:
    """The environment Ray workers need: the driver's Keras backend and kseg's settings."""
    env = {"KERAS_BACKEND": keras.backend.backend()}
    env.update({name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)})
    return env


class RayExecutor:
    """Each run is a Ray task (``num_cpus``, ``num_gpus``, retried twice if its worker dies);
    connects to ``address`` or starts a local cluster, unless Ray is already initialised.

    ``output_dir`` must be writable by every worker: a local folder on one machine, a shared
    mount (NFS, a bucket mounted with gcsfuse or s3fs, ...) on several. The leaderboard needs no
    shared storage: rows come back to the driver.
    """

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0, max_retries: int = 2):
        self.ray = import_ray()
        self.address, self.num_cpus, self.num_gpus, self.max_retries = address, num_cpus, num_gpus, max_retries

    def run(
        self,
        configs: Sequence[RunConfig],
        data,
        output_dir: str | Path,
        *,
        verbose: bool = False,
        distribute: str = "none",
        announce: Announce = lambda k, c: None,
    ) -> Results:
        ray = self.ray
        env = ray_env_vars()
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.address, runtime_env={"env_vars": env})
        try:
            yield from self._run_tasks(configs, data, output_dir, verbose, distribute, announce, env)
        finally:
            if started_here:
                ray.shutdown()

    def _run_tasks(self, configs, data, output_dir, verbose, distribute, announce, env) -> Results:
        ray = self.ray
        # Per task too, so a session someone else initialised still gets this backend.
        task = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=self.max_retries)(run_cell)
        task = task.options(runtime_env={"env_vars": env})
        # Absolute: a worker's working directory is not the driver's.
        output_dir = str(Path(output_dir).absolute())
        data_spec = data.spec(absolute=True)
        running = {}
        for k, config in enumerate(configs, 1):
            announce(k, config)
            ref = task.remote(config, data_spec, output_dir, verbose, distribute)
            running[ref] = config
        while running:
            finished, _ = ray.wait(list(running), num_returns=1)
            for ref in finished:
                config = running.pop(ref)
                try:
                    row = ray.get(ref)
                except Exception as error:  # retries exhausted: the worker kept dying
                    row = one_run.failed_row(config, error)
                yield config, row


def make_executor(
    name: str = "local", jobs: int = 1, ray_address: str | None = None, cpus_per_run: float = 1, gpus_per_run: float = 0
) -> Executor:
    """The executor that the grid command's flags name."""
    if name == "local":
        return LocalExecutor(jobs)
    if name == "ray":
        return RayExecutor(ray_address, num_cpus=cpus_per_run, num_gpus=gpus_per_run)
    raise unknown_name("executor", name, EXECUTORS)


__all__ = [
    "EXECUTORS",
    "RAY_MISSING",
    "FORWARDED_ENV",
    "Executor",
    "run_cell",
    "LocalExecutor",
    "import_ray",
    "ray_env_vars",
    "RayExecutor",
    "make_executor",
]
