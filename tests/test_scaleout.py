"""Scaling the grid out: parallel local processes, Ray tasks (with a worker killed mid-run),
data-parallel training on two virtual devices, and the messages for what cannot run here."""

import functools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import pandas as pd
import pytest

from kseg.cli import run_grid_command
from kseg.experiment import executors, grid
from kseg.experiment import run as one_run
from kseg.experiment.sources import DataCache

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["--preset", "smoke", "--dataset", "synthetic", "--quiet", "--models", "unet", "--losses", "bce", "dice"]
KEYS = ["model", "loss", "seed", "config_hash", "status"]
# Metrics a spawned worker must reproduce: same seed, same data, same single-process kernels.
METRICS = ["test_iou", "test_dice", "val_iou", "epochs_run", "best_epoch", "params"]
# Ray sets OMP_NUM_THREADS to a task's CPUs; torch's CPU kernels then sum in another order
# (measured: test IoU 3e-5 apart), where TensorFlow and JAX still agree to 1e-5.
RAY_TOLERANCE = 1e-3 if keras.backend.backend() == "torch" else 1e-5


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KSEG_PH2_DIR", raising=False)


def crash_once_then_run(marker: str, needle: str, config, *args, **kwargs):
    """The executors' worker function, except that the first attempt at a run whose id holds
    ``needle`` kills its worker process (``os._exit``), as a lost node would; ``marker`` records
    that it happened. A test hook: it lives here, never in kseg."""
    if needle in config.run_id and not os.path.exists(marker):
        Path(marker).write_text(config.run_id)
        os._exit(1)
    return executors.run_cell(config, *args, **kwargs)


@pytest.fixture
def crash_once(monkeypatch):
    """``crash_once(marker, needle)`` makes the executors run :func:`crash_once_then_run`: a
    partial of this module's function for the process pool (pickled by reference: spawned workers
    import it), a closure pickled by value for Ray (its workers need not import the tests)."""

    def install(marker, needle, ray=False):
        if ray:
            from ray import cloudpickle

            cloudpickle.register_pickle_by_value(sys.modules[__name__])
            monkeypatch.setattr(
                executors, "run_cell", lambda *a, **k: crash_once_then_run(str(marker), needle, *a, **k)
            )
        else:
            monkeypatch.setattr(executors, "run_cell", functools.partial(crash_once_then_run, str(marker), needle))

    yield install
    if "ray" in sys.modules and hasattr(sys.modules["ray"], "cloudpickle"):
        try:
            sys.modules["ray"].cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        except ValueError:
            pass


@pytest.fixture(scope="module")
def sequential_rows(tmp_path_factory):
    """The smoke grid run one after another in this process: what every executor must match."""
    root = tmp_path_factory.mktemp("sequential")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KSEG_CACHE_DIR", str(root / "cache"))
        assert run_grid_command([*SMOKE, "--results", str(root / "lb.csv"), "--output", str(root / "runs")]) == 0
    return _sorted(pd.read_csv(root / "lb.csv"))


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values(["model", "loss", "seed"], ignore_index=True)


def _assert_same_rows(table: pd.DataFrame, expected: pd.DataFrame, tolerance: float = 1e-5) -> None:
    table = _sorted(table)
    assert table[KEYS].to_dict("records") == expected[KEYS].to_dict("records")
    assert table["config_hash"].is_unique
    for column in METRICS:
        assert table[column].tolist() == pytest.approx(expected[column].tolist(), abs=tolerance), column


def test_local_workers_get_this_processes_backend(monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    with executors._backend_in_environ():
        assert os.environ["KERAS_BACKEND"] == keras.backend.backend()
    assert "KERAS_BACKEND" not in os.environ


# The pool's and Ray's grids run in one pass (backend_independent; see the Ray test below for why).
@pytest.mark.slow
@pytest.mark.backend_independent
def test_jobs_2_gives_the_rows_of_a_sequential_grid(tmp_path, sequential_rows, capsys):
    results = tmp_path / "lb.csv"
    args = [*SMOKE, "--jobs", "2", "--results", str(results), "--output", str(tmp_path / "runs")]
    assert run_grid_command(args) == 0
    _assert_same_rows(pd.read_csv(results), sequential_rows)
    out = capsys.readouterr().out
    assert "run 1/2" in out and "run 2/2" in out and "[grid] 2 runs in" in out
    for run_id in pd.read_csv(results)["run_id"]:
        assert (tmp_path / "runs" / run_id / "model.keras").exists()

    # Resume works the same way: nothing left to do.
    assert run_grid_command(args) == 0
    assert len(pd.read_csv(results)) == 2


@pytest.mark.slow
@pytest.mark.backend_independent
def test_a_dead_local_worker_gives_failed_rows_and_the_grid_ends(tmp_path, crash_once):
    crash_once(tmp_path / "crashed-once", "unet-bce")
    results = tmp_path / "lb.csv"
    assert run_grid_command([*SMOKE, "--jobs", "2", "--results", str(results), "--output", str(tmp_path / "runs")]) == 1
    table = pd.read_csv(results)
    # A process pool cannot retry: the dead worker's run is failed (and so may be its neighbour's,
    # since the pool stops), so the next grid reruns it.
    crashed = table[table["loss"] == "bce"]
    assert crashed["status"].tolist() == ["failed"] and "BrokenProcessPool" in crashed["error"].item()
    assert len(table) == 2 and table["config_hash"].is_unique


class _Replay:
    """An executor that hands back fixed rows, e.g. the same row twice as a retried task might."""

    def __init__(self, rows):
        self.rows = rows

    def run(self, configs, data, output_dir, *, verbose, distribute, announce):
        for k, (config, row) in enumerate(self.rows, 1):
            announce(k, config)
            yield config, row


def test_a_row_whose_config_already_has_an_ok_row_is_not_appended_twice(tmp_path):
    config = grid.expand(["unet"], ["bce"], [0], "smoke", DataCache("synthetic", None), precision="float32")[0]
    ok = {**one_run.base_row(config), "status": "ok"}
    failed = one_run.failed_row(config, RuntimeError("worker lost"))
    results = tmp_path / "lb.csv"
    rows = grid.run_grid(
        [config],
        None,
        results,
        tmp_path / "runs",
        executor=_Replay([(config, failed), (config, ok), (config, ok)]),
        print_fn=lambda line: None,
    )
    assert [r["status"] for r in rows] == ["failed", "ok"]
    assert list(pd.read_csv(results)["status"]) == ["failed", "ok"]


@pytest.fixture(scope="module")
def ray_cluster():
    """One local two-CPU Ray cluster for every Ray test (starting one costs seconds)."""
    ray = pytest.importorskip("ray", reason="Ray is the optional kseg[ray] extra; pip install 'kseg[ray]'")
    # address="local": a new cluster of our own, even beside another test worker's (pytest -n 2).
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


# The Ray tests run in one pass only (CI's slowest tests: a cluster per pass): what
# they check is the executor's, which no backend touches; what a worker needs of the backend is
# its environment, which the next test checks under every backend, and the runs themselves are
# test_grid's and the local pool's (test_jobs_2_...), on every backend.
def test_ray_workers_get_this_processes_backend(monkeypatch):
    monkeypatch.setenv("KSEG_CACHE_DIR", "/tmp/kseg-cache")
    env = executors.ray_env_vars()
    assert env["KERAS_BACKEND"] == keras.backend.backend() and env["KSEG_CACHE_DIR"] == "/tmp/kseg-cache"


@pytest.mark.slow
@pytest.mark.backend_independent
def test_ray_gives_the_rows_of_a_sequential_grid_and_retries_a_run_whose_worker_died(
    ray_cluster, tmp_path, sequential_rows, crash_once
):
    # One Ray grid for both checks: a cluster and a grid are the cost of each.
    marker = tmp_path / "crashed-once"
    crash_once(marker, "unet-dice", ray=True)
    results = tmp_path / "lb.csv"
    args = [*SMOKE, "--executor", "ray", "--results", str(results), "--output", str(tmp_path / "runs")]
    assert run_grid_command(args) == 0
    assert marker.read_text().startswith("unet-dice-seed0-"), "the test hook should have killed the first attempt"
    _assert_same_rows(pd.read_csv(results), sequential_rows, RAY_TOLERANCE)  # one ok row each, the retried too
    for run_id in pd.read_csv(results)["run_id"]:
        assert (tmp_path / "runs" / run_id / "model.keras").exists()


def test_ray_missing_exits_2_with_the_install_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    results = tmp_path / "lb.csv"
    assert run_grid_command([*SMOKE, "--executor", "ray", "--results", str(results)]) == 2
    assert "pip install 'kseg[ray]'" in capsys.readouterr().err
    assert not results.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--jobs", "0"], "--jobs: expects an integer >= 1. Received: 0"),
        (["--executor", "ray", "--jobs", "2"], "--jobs is for --executor local"),
        (["--gpus-per-run", "1"], "need --executor ray"),
        (["--executor", "dask"], "invalid choice: 'dask'"),
        (["--jobs", "2", "--distribute", "data-parallel"], "use --jobs 1"),
    ],
)
def test_bad_scaling_flags_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_grid_command([*SMOKE, *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


DATA_PARALLEL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import keras
    from kseg.experiment.config import RunConfig
    from kseg.data import split, synthetic
    from kseg.experiment.training import fit

    assert len(keras.distribution.list_devices()) == 2, keras.distribution.list_devices()
    config = RunConfig.from_preset("smoke", model="unet", loss="bce", dataset="synthetic", precision="float32",
                                   augment="none", epochs=2, batch_size=4, seed=0, split_sizes=(16, 4, 4),
                                   synthetic_n=24)
    parts = split(synthetic(n=24, image_size=32), seed=0, sizes=config.split_sizes)
    out = {}
    for distribute in ("none", "data-parallel"):
        result = fit(config, parts, sys.argv[1] + "/" + distribute, policy="float32", verbose=False,
                     distribute=distribute)
        out[distribute] = {k: [float(v) for v in result.history[k]] for k in ("loss", "val_loss", "val_iou")}
        out[distribute]["devices"] = len(result.model.trainable_variables[0].value.sharding.device_set)
    try:
        fit(config.__class__(**{**config.to_dict(), "batch_size": 3}), parts, sys.argv[1] + "/odd", policy="float32",
            verbose=False, distribute="data-parallel")
    except ValueError as error:
        out["odd_batch_error"] = str(error)
    print("RESULT " + json.dumps(out))
    """
)


@pytest.mark.slow
@pytest.mark.backend_independent  # a JAX subprocess, whichever backend runs the suite
def test_data_parallel_on_two_cpu_devices_matches_single_device_training(tmp_path):
    pytest.importorskip("jax")
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2",
    }
    done = subprocess.run(
        [sys.executable, "-c", DATA_PARALLEL_SCRIPT, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.split("RESULT ", 1)[1])
    single, parallel = out["none"], out["data-parallel"]
    # Weights replicated over both devices (each batch split between them), one device without.
    assert (single.pop("devices"), parallel.pop("devices")) == (1, 2)
    # The unet has BatchNorm: equal losses mean its statistics are of the global batch, as in
    # single-device training, not of each device's half.
    for key in ("loss", "val_loss"):
        assert parallel[key] == pytest.approx(single[key], rel=1e-3, abs=1e-5), key
    # IoU thresholds each pixel: a logit at 0 flips with the order of a sum (the XLA flags the
    # tests run under change it), and one pixel moves this near-zero IoU by ~5e-5.
    assert parallel["val_iou"] == pytest.approx(single["val_iou"], abs=5e-4)
    assert "divisible by 2" in out["odd_batch_error"] and "batch size 3" in out["odd_batch_error"]


@pytest.mark.skipif(keras.backend.backend() == "jax", reason="the JAX backend supports data-parallel")
def test_data_parallel_off_jax_exits_2_before_any_run(tmp_path, capsys):
    results = tmp_path / "lb.csv"
    assert run_grid_command([*SMOKE, "--distribute", "data-parallel", "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "data-parallel training needs the JAX backend" in err and "KERAS_BACKEND=jax" in err
    assert not results.exists()
    from kseg.experiment.training import check_distribute

    with pytest.raises(ValueError, match="keras.distribution supports JAX only"):
        check_distribute("data-parallel")
