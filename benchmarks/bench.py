#!/usr/bin/env python3
"""Training and inference speed of kseg's models on every Keras backend, side by side with
native PyTorch (``benchmarks/torch_twin.py``) and the machine's matrix-product peak.

For each (image size, batch) it runs torch_twin.py for every model (all its modes), then one
worker process (``benchmarks/_worker.py``) per (backend, precision, jit) that times every model in
turn: the backend is fixed when Keras is imported, so each needs its own process, and one import
per backend rather than per model keeps the default grid inside 15 minutes on 2 cores. Every
Keras row carries its ratio to native PyTorch's best mode measured in the same invocation.

    python benchmarks/bench.py                                  # the full default grid
    python benchmarks/bench.py --models unet --image-size 64 --base 8 --batch 4 --steps 2 --warmup 1
    python benchmarks/bench.py --models segnet --sizes 64 128 256 --batches 4 16 --markdown
    python benchmarks/bench.py --torch-impl both    # also ../shared/bench/torch_reference.py

Native PyTorch (--torch-impl): ``twin`` (default) is the repo's own transcription of the Keras
builders, with parameter and FLOP counts asserted equal to kseg's; ``reference`` is the outside
file ``../shared/bench/torch_reference.py`` (skipped, with one SKIP line, where a plain clone
lacks it); ``both`` takes the twin as the ratios' denominator and shows the reference beside it.

jit: TensorFlow is run with jit_compile False and True (XLA); JAX always compiles with XLA;
PyTorch eagerly, and with ``--jit on`` with jit_compile True (Keras compiles its train and
predict steps with torch.compile; the first steps' compile time is in each row's
first_train_step_s / first_infer_step_s, minutes per model on a 2-core CPU, so ``both`` leaves
it out).
bf16 (Keras mixed_bfloat16, torch bf16 autocast) is skipped, with a line saying so, on a CPU
without avx512_bf16 / amx_bf16, where it would only time software emulation.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # _hardware, torch_twin: also when this file is loaded by path

from _hardware import device as hardware  # noqa: E402

WORKER = HERE / "_worker.py"
TORCH_TWIN = HERE / "torch_twin.py"
# Optional outside peer: CI clones the repo next to shared/; a plain clone has no such file.
TORCH_REFERENCE = REPO.parent / "shared" / "bench" / "torch_reference.py"
TORCH_IMPLS = ("twin", "reference", "both")

BACKENDS = ("tensorflow", "jax", "torch")
PRECISIONS = ("float32", "mixed_bfloat16")
MODELS = ("segnet", "unet", "unet2")
#: The runtimes that time the ONNX export (``_engines.py``), as their row fields are named.
EXPORTED_ENGINES = ("onnx", "openvino")
JIT_NOTE = "torch: --jit on runs torch.compile (Keras's jit_compile=True; --jit both leaves it out)"

# How the default grid fits in 15 minutes on a 2-core CPU. Each worker imports its backend
# (~5-10 s), then per model: build + first (compiling) train step F, warm-up until budget/2 s
# (at least one step), timed steps until --budget B = 5 s (at least 3), the same for inference
# (~1/3 of a train step). With a train step s <= B/3 that is about F + 2 x (1.5 B + 2 s) per
# model and config. The default grid on a bf16 CPU is 8 configs x 3 models + 3 twin runs of
# 4 modes: measured 784 s on this repo's 2-core EPYC (docs/benchmarks.md). On a CPU without bf16 the
# bf16 half is skipped (4 configs x 3 models + 2 fp32 twin modes), so a CPU 2.5x slower than that
# one (a train step of unet at batch 16 ~5.5 s, so 3 timed steps ~17 s, F ~15 s): about
# 12 x 47 s + 4 x 10 s imports + 3 x 2 x 22 s twin + ~10 s peak ~ 750 s. Anything slower is cut
# by --time-limit (840 s): nothing starts after it, a running process is stopped at it and keeps
# the rows it printed, and the rest are listed as skipped.
DEFAULT_TIME_LIMIT_S = 840
MIN_START_S = 20  # a process that cannot have this long is not started


def jit_options(backend: str, choice: str = "both") -> tuple[bool, ...]:
    """The jit_compile values run on ``backend``: those it has ("both"), or only off / on where it
    has that (JAX always compiles; PyTorch's "on" is torch.compile, Keras's jit_compile=True there,
    which "both" leaves out)."""
    available = {"tensorflow": (False, True), "jax": (True,), "torch": (False, True)}[backend]
    wanted = {"both": (False, True), "off": (False,), "on": (True,)}[choice]
    if backend == "torch" and choice == "both":
        wanted = (False,)  # torch.compile only when asked (--jit on): its first steps take minutes here
    return tuple(j for j in available if j in wanted) or available


def measure_peak(seconds: float = 3.0, bf16: bool = True, start_n: int = 512, max_n: int = 4096) -> dict[str, float]:
    """GFLOP/s of square matrix products: numpy fp32 (the BLAS), torch fp32 and, where ``bf16``,
    torch bf16 (oneDNN; AMX where present). The achievable ceiling for dense convolutions.

    Bounded by time, not work: each dtype gets about ``seconds``; it starts at ``start_n`` and
    doubles n (8x the work) only while the next size's warm-up and one timed product still fit,
    up to ``max_n``. The best rate seen counts; ``<name>_n`` records the largest n timed."""
    import numpy as np

    def best_rate(make: Callable[[int], tuple], matmul: Callable) -> tuple[float, int]:
        deadline = time.perf_counter() + seconds
        n, best = start_n, 0.0
        while True:
            a, b = make(n)
            matmul(a, b)  # warm-up: thread pools, packing buffers
            fastest = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                matmul(a, b)
                took = time.perf_counter() - start
                fastest = min(fastest, took)
                if time.perf_counter() + took > deadline:
                    break
            best = max(best, 2 * n**3 / fastest / 1e9)
            # The next size: a warm-up and one timed product, each ~8x this one.
            if 2 * n > max_n or time.perf_counter() + 16 * fastest > deadline:
                return best, n
            n *= 2

    rng = np.random.default_rng(0)

    def numpy_pair(n):
        return rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)

    peak: dict[str, float] = {}
    peak["numpy_fp32_gflop_s"], peak["numpy_fp32_n"] = best_rate(numpy_pair, np.matmul)
    try:
        import torch

        def torch_pair(dtype):
            return lambda n: tuple(torch.from_numpy(m).to(dtype) for m in numpy_pair(n))

        peak["torch_fp32_gflop_s"], peak["torch_fp32_n"] = best_rate(torch_pair(torch.float32), torch.matmul)
        if bf16:
            peak["torch_bf16_gflop_s"], peak["torch_bf16_n"] = best_rate(torch_pair(torch.bfloat16), torch.matmul)
    except ImportError:
        pass
    peak["fp32_peak_gflop_s"] = max(peak.get("torch_fp32_gflop_s", 0.0), peak["numpy_fp32_gflop_s"])
    peak["bf16_peak_gflop_s"] = peak.get("torch_bf16_gflop_s", float("nan"))
    return peak


def plan_bf16(
    precisions: list[str], torch_modes: list[str], flags: set[str] | None = None, force: bool = False
) -> tuple[list[str], list[str], list[str]]:
    """The Keras precisions and torch modes to run, and one SKIP line per thing left out: bf16
    ones are dropped where the CPU has no bf16 hardware (``hardware.bf16_support``) unless
    ``force``."""
    supported, why = hardware.bf16_support(flags)
    if supported or force:
        return list(precisions), list(torch_modes), []
    keep_p = [p for p in precisions if "bfloat16" not in p]
    keep_m = [m for m in torch_modes if not m.startswith("bf16")]
    dropped = [p for p in precisions if p not in keep_p] + [f"torch {m}" for m in torch_modes if m not in keep_m]
    notes = [f"SKIP bf16 ({', '.join(dropped)}): {why}; --force-bf16 runs them anyway"] if dropped else []
    return keep_p, keep_m, notes


def _model_name(text: str) -> str:
    """kseg's one spelling of a model name; an unknown one is refused with the choices."""
    from kseg import models

    try:
        return models.canonical_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def twin_gflops(model: str, size: int, base: int, depth: int) -> float | None:
    """torch_twin.forward_gflops (analytic, unrounded; None where torch is not installed or the
    model has no twin)."""
    if model not in MODELS:
        return None
    try:
        import torch_twin
    except ImportError:
        return None
    return torch_twin.forward_gflops(model, size, base, depth)


def reference_skip_line(path: Path | None = None) -> str:
    """The one line printed where the outside reference is asked for but absent."""
    path = path or TORCH_REFERENCE
    return (
        f"SKIP torch reference: {path} not found (a plain clone has no ../shared/bench); "
        "the twin (benchmarks/torch_twin.py) is what runs anywhere"
    )


class Deadline:
    """The run's wall-clock limit: how long the next process may take, if it may start at all."""

    def __init__(self, seconds: float | None):
        self.end = time.perf_counter() + seconds if seconds and seconds > 0 else float("inf")

    def remaining(self) -> float:
        return self.end - time.perf_counter()

    def timeout(self, cap: float) -> float | None:
        """min(cap, time left); None if less than MIN_START_S is left (do not start)."""
        left = self.remaining()
        return None if left < MIN_START_S else min(cap, left)


def run_json_process(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[list[dict], str]:
    """Runs ``cmd`` and returns the JSON objects on its stdout lines, and an error text if it failed.
    A process stopped by ``timeout`` still gives the rows it printed before."""
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        stdout, error = proc.stdout, ""
        if proc.returncode != 0:
            error = (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout or ""
        stdout = stdout.decode(errors="replace") if isinstance(stdout, bytes) else stdout
        error = f"timed out after {timeout:.0f} s"
    rows = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows, error


def run_torch_native(
    script: Path, model: str, size: int, args: argparse.Namespace, batch: int, deadline: Deadline | None = None
) -> dict[str, Any]:
    """torch_twin.py or torch_reference.py (``script``) with the same settings; its rows and best
    train/inference img/s.

    The bf16 modes (always PyTorch's fastest on a bf16-capable CPU, so the ratios' denominator)
    get the full ``--steps/--warmup``; the fp32 modes, 2-3x slower, are timed over 3 steps after
    1 warm-up so they do not dominate the run."""
    if not script.exists():
        return {"error": f"{script} not found"}
    deadline = deadline or Deadline(None)
    requested = [m for m in args.torch_modes.split(",") if m]
    groups = [
        ([m for m in requested if m.startswith("bf16")], args.steps, args.warmup),
        ([m for m in requested if not m.startswith("bf16")], min(args.steps, 3), 1),
    ]
    rows, errors = [], []
    for modes, steps, warmup in groups:
        if not modes:
            continue
        timeout = deadline.timeout(args.timeout)
        if timeout is None:
            errors.append(f"skipped {','.join(modes)}: --time-limit reached")
            continue
        cmd = [
            sys.executable,
            str(script),
            "--model",
            model,
            "--image-size",
            str(size),
            "--base",
            str(args.base),
            "--depth",
            str(args.depth),
            "--batch",
            str(batch),
            "--steps",
            str(steps),
            "--warmup",
            str(warmup),
            "--modes",
            ",".join(modes),
        ]
        if script == TORCH_TWIN and args.budget:
            cmd += ["--budget", str(args.budget)]
        group_rows, error = run_json_process(cmd, dict(os.environ), timeout)
        rows += [{**r, "steps": steps, "warmup": warmup} for r in group_rows]
        errors += [error] if error else []
    modes = [r for r in rows if "mode" in r]
    if not modes:
        return {"error": "; ".join(errors) or "no output"}
    result = {
        "modes": modes,
        "best_train_mode": max(modes, key=lambda r: r["train_img_s"])["mode"],
        "best_train_img_s": max(r["train_img_s"] for r in modes),
        "best_infer_img_s": max(r["infer_img_s"] for r in modes),
        "params": modes[0]["params"],
        "gflops_fwd_per_image": modes[0]["gflops_fwd_per_image"],
    }
    if errors:
        result["partial"] = "; ".join(errors)
    return result


def run_worker(backend: str, config: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    """One Keras (backend, precision, jit) config, all of ``config["models"]``, in a fresh process
    with KERAS_BACKEND=backend: one row per model, an error row for each model it did not report."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    rows, error = run_json_process([sys.executable, str(WORKER), json.dumps(config)], env, timeout)
    reported = {r.get("model") for r in rows}
    return rows + [
        {
            "backend": backend,
            "model": model,
            "precision": config["precision"],
            "jit": config["jit_compile"],
            "image_size": config["image_size"],
            "batch": config["batch"],
            "error": error or "no output",
        }
        for model in config["models"]
        if model not in reported
    ]


def build_table(rows: list[dict], refs: dict, peak: dict, second: dict | None = None) -> pd.DataFrame:
    """One row per Keras config, with its ratios to native PyTorch (``refs``: the denominator) and
    to the machine peak; with ``second`` (the outside reference beside the twin) its ratios too."""
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    if "error" not in df:
        df["error"] = None

    def ref(row, key):
        r = refs.get((row["model"], row["image_size"], row["batch"]), {})
        return r.get(key, float("nan"))

    df["torch_best_train_img_s"] = df.apply(lambda r: ref(r, "best_train_img_s"), axis=1)
    df["torch_best_infer_img_s"] = df.apply(lambda r: ref(r, "best_infer_img_s"), axis=1)
    for col in (
        "train_img_s",
        "infer_img_s",
        *(f"{e}_infer_img_s" for e in EXPORTED_ENGINES),
        "train_gflop_s",
        "peak_rss_mb",
    ):
        if col not in df:
            df[col] = float("nan")
    df["train_vs_torch"] = df["train_img_s"] / df["torch_best_train_img_s"]
    df["infer_vs_torch"] = df["infer_img_s"] / df["torch_best_infer_img_s"]
    for engine in EXPORTED_ENGINES:
        df[f"{engine}_infer_vs_torch"] = df[f"{engine}_infer_img_s"] / df["torch_best_infer_img_s"]
    df["pct_bf16_peak"] = 100 * df["train_gflop_s"] / peak.get("bf16_peak_gflop_s", float("nan"))
    df["pct_fp32_peak"] = 100 * df["train_gflop_s"] / peak["fp32_peak_gflop_s"]
    if second:

        def second_ref(row, key):
            return second.get((row["model"], row["image_size"], row["batch"]), {}).get(key, float("nan"))

        df["reference_best_train_img_s"] = df.apply(lambda r: second_ref(r, "best_train_img_s"), axis=1)
        df["reference_best_infer_img_s"] = df.apply(lambda r: second_ref(r, "best_infer_img_s"), axis=1)
        df["train_vs_reference"] = df["train_img_s"] / df["reference_best_train_img_s"]
        df["infer_vs_reference"] = df["infer_img_s"] / df["reference_best_infer_img_s"]
    return df


def markdown_rows(df: pd.DataFrame) -> str:
    """The docs/benchmarks.md result table (GitHub markdown), one line per config."""
    header = (
        "| size | batch | model | backend | precision | jit | train img/s | infer img/s | "
        "train x torch best | infer x torch best | ONNX Runtime infer img/s | x torch best | "
        "OpenVINO infer img/s | x torch best | train GFLOP/s | % bf16 peak | peak MB |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for _, r in df.iterrows():
        if isinstance(r.get("error"), str) and r["error"]:
            lines.append(
                f"| {r['image_size']} | {r['batch']} | {r['model']} | {r['backend']} | "
                f"{r['precision']} | {r['jit']} | failed: {r['error'][:60]} |" + " |" * 10
            )
            continue
        lines.append(
            f"| {r['image_size']} | {r['batch']} | {r['model']} | {r['backend']} | {r['precision']} | "
            f"{'on' if r['jit'] else 'off'} | {r['train_img_s']:.2f} | {r['infer_img_s']:.2f} | "
            f"{r['train_vs_torch']:.2f} | {r['infer_vs_torch']:.2f} | "
            + "".join(
                f"{_number(r[f'{e}_infer_img_s'])} | {_number(r[f'{e}_infer_vs_torch'])} | " for e in EXPORTED_ENGINES
            )
            + f"{r['train_gflop_s']:.1f} | "
            f"{r['pct_bf16_peak']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def _number(value: float) -> str:
    """Two decimals, or "-" where nothing was measured (NaN)."""
    return "-" if pd.isna(value) else f"{value:.2f}"


def scaling_table(df: pd.DataFrame) -> str:
    """Markdown: training ms per image for each (size, batch), Keras next to native PyTorch's best.
    The last column rescales ms/img to a 128 x 128 image: constant where cost is linear in pixels."""
    header = (
        "| model | backend | precision | jit | size | batch | train ms/img | torch best ms/img | "
        "train x torch best | ms/img at 128-px equivalent |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for _, r in df.sort_values(["model", "backend", "precision", "jit", "image_size", "batch"]).iterrows():
        ms = 1000 / r["train_img_s"]
        lines.append(
            f"| {r['model']} | {r['backend']} | {r['precision']} | {'on' if r['jit'] else 'off'} | "
            f"{r['image_size']} | {r['batch']} | {ms:.0f} | {1000 / r['torch_best_train_img_s']:.0f} | "
            f"{r['train_vs_torch']:.2f} | {ms * (128 / r['image_size']) ** 2:.0f} |"
        )
    return "\n".join(lines)


def report(row: dict, ref: dict, expected_gflops: float | None, expected_params: int | None = None) -> None:
    """Prints one Keras row, after checking that it counts the same network as the twin (its
    analytic FLOPs and parameters) and as the native run it is compared with."""
    tag = (
        f"[{row['backend']} {row['precision']} jit={'on' if row['jit'] else 'off'} "
        f"bn={row.get('batch_norm', 'keras')}] "
        f"{row['model']} {row['image_size']}px b{row['batch']}"
    )
    if "error" in row:
        print(f"{tag}: FAILED {row['error']}", flush=True)
        return
    # The FLOP count must be torch's, or GFLOP/s are not comparable.
    if expected_gflops is not None:
        assert abs(row["gflops_fwd_per_image"] - expected_gflops) <= 1e-9 * max(expected_gflops, 1), (
            f"{tag}: Keras counts {row['gflops_fwd_per_image']} GFLOPs, torch_twin {expected_gflops}"
        )
    if "gflops_fwd_per_image" in ref:  # torch_reference rounds to 3 decimals
        assert abs(row["gflops_fwd_per_image"] - ref["gflops_fwd_per_image"]) < 6e-4
    if expected_params is not None:
        assert row["params"] == expected_params, f"{tag}: params {row['params']} != torch_twin {expected_params}"
    if "params" in ref:
        assert row["params"] == ref["params"], f"{tag}: params {row['params']} != torch {ref['params']}"
    exported = "".join(
        f", {engine} infer {row[f'{engine}_infer_img_s']:.2f} img/s"
        if f"{engine}_infer_img_s" in row
        else f", {engine}: {row[f'{engine}_error']}"
        if f"{engine}_error" in row
        else ""
        for engine in EXPORTED_ENGINES
    )
    if "openvino_precision" in row:
        exported += f" ({row['openvino_precision']})"
    print(
        f"{tag}: train {row['train_img_s']:.2f} img/s, infer {row['infer_img_s']:.2f} img/s{exported}, "
        f"{row['train_gflop_s']:.1f} GFLOP/s, peak {row['peak_rss_mb']:.0f} MB, "
        f"first step {row['first_train_step_s']:.1f} s",
        flush=True,
    )


def twin_params(model: str, base: int, depth: int) -> int | None:
    """Trainable parameters of the twin (None where torch is not installed or the model has none)."""
    if model not in MODELS:
        return None
    try:
        import torch_twin
    except ImportError:
        return None
    return torch_twin.param_count(torch_twin.build(model, base, depth))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--models",
        nargs="+",
        default=list(MODELS),
        type=_model_name,
        help="DECODER or DECODER:ENCODER (kseg.models); native PyTorch twins exist for segnet, unet and unet2 only",
    )
    p.add_argument(
        "--backends",
        nargs="+",
        default=["all"],
        choices=[*BACKENDS, "all"],
        help="Keras backends to time (default all: the whole picture in one run)",
    )
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--sizes", type=int, nargs="+", help="image sizes to sweep (default: --image-size)")
    p.add_argument(
        "--jit",
        default="both",
        choices=["both", "off", "on"],
        help="jit settings to run where a backend has a choice: XLA for TensorFlow, torch.compile for PyTorch",
    )
    p.add_argument(
        "--torch-impl",
        default="twin",
        choices=TORCH_IMPLS,
        help="native PyTorch to compare with: twin (benchmarks/torch_twin.py), reference "
        "(../shared/bench/torch_reference.py, skipped where absent) or both (twin is the "
        "ratios' denominator, the reference a second comparison)",
    )
    p.add_argument(
        "--torch-modes",
        default="fp32,fp32-cl,bf16,bf16-cl",
        help="native PyTorch modes; the best of them is the ratio's denominator",
    )
    p.add_argument(
        "--force-bf16", action="store_true", help="run bf16 precisions and modes even on a CPU without bf16 hardware"
    )
    p.add_argument(
        "--batch-norm",
        default="fast",
        choices=["keras", "fast"],
        help="the models' normalisation layer: fast (kseg's FastBatchNormalization, what the cpu preset "
        "trains with) or keras (keras.layers.BatchNormalization)",
    )
    p.add_argument(
        "--onnx",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time inference of each model exported to ONNX (from the first TensorFlow configuration: "
        "all export the same float32 model) and run, in a process without TensorFlow, by ONNX Runtime "
        "and by OpenVINO (the engines of predict --engine onnx|openvino)",
    )
    p.add_argument("--base", type=int, default=32)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, nargs="+", help="batch sizes to sweep (default: --batch)")
    p.add_argument("--steps", type=int, default=4, help="timed steps; the median is reported")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first compiles)")
    p.add_argument(
        "--budget",
        type=float,
        default=5,
        help="cap, in seconds, on each timed train or inference phase (min 3 steps); 0: none",
    )
    p.add_argument("--timeout", type=float, default=900, help="seconds per worker process")
    p.add_argument(
        "--time-limit",
        type=float,
        default=DEFAULT_TIME_LIMIT_S,
        help="seconds for the whole run: later processes are skipped, a running one is "
        "stopped (keeping its printed rows); 0: none",
    )
    p.add_argument("--no-peak", action="store_true", help="skip the matmul peak measurement")
    p.add_argument(
        "--peak-seconds",
        type=float,
        default=3.0,
        help="time for the matmul peak of each dtype (sizes grow from 512 while it lasts)",
    )
    p.add_argument("--out", type=Path, help="write every row, the native runs and the peak as JSON")
    p.add_argument("--markdown", action="store_true", help="print the docs/benchmarks.md table rows")
    args = p.parse_args(argv)
    args.backends = list(BACKENDS) if "all" in args.backends else list(dict.fromkeys(args.backends))
    args.sizes = args.sizes or [args.image_size]
    args.batches = args.batches or [args.batch]
    return args


def _native_line(label: str, model: str, size: int, batch: int, ref: dict) -> str:
    if "error" in ref:
        return f"[{label}] {model} {size}px b{batch}: FAILED {ref['error']}"
    partial = f" (partial: {ref['partial']})" if "partial" in ref else ""
    return (
        f"[{label}] {model} {size}px b{batch}: best train {ref['best_train_img_s']:.2f} img/s "
        f"({ref['best_train_mode']}), best infer {ref['best_infer_img_s']:.2f} img/s{partial}"
    )


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = parse_args(argv)
    started = time.perf_counter()
    deadline = Deadline(args.time_limit)

    # The machine first: what every figure below depends on.
    flags = hardware.cpu_flags()
    machine = hardware.machine_info(flags)
    print(hardware.describe(machine), flush=True)
    print(f"bf16: {'yes' if machine['bf16_supported'] else 'no'} ({machine['bf16_reason']})", flush=True)
    precisions, torch_modes, skipped = plan_bf16(args.precisions, args.torch_modes.split(","), flags, args.force_bf16)
    args.precisions, args.torch_modes = precisions, ",".join(torch_modes)
    for line in skipped:
        print(line, flush=True)

    # Native PyTorch: the denominator (``natives``) and, with --torch-impl both, a second column.
    reference_ok = TORCH_REFERENCE.exists()
    if args.torch_impl in ("reference", "both") and not reference_ok:
        skipped.append(reference_skip_line())
        print(skipped[-1], flush=True)
    primary = {
        "twin": (TORCH_TWIN, "torch-twin"),
        "both": (TORCH_TWIN, "torch-twin"),
        "reference": (TORCH_REFERENCE, "torch-reference"),
    }[args.torch_impl]
    run_primary = args.torch_impl != "reference" or reference_ok
    run_second = args.torch_impl == "both" and reference_ok

    gflops_ref, params_ref = {}, {}
    for model, size in itertools.product(args.models, args.sizes):
        g = twin_gflops(model, size, args.base, args.depth)
        if g is not None:
            gflops_ref[(model, size)] = g
    for model in args.models:
        params_ref[model] = twin_params(model, args.base, args.depth)
    n_workers = (
        len(args.sizes)
        * len(args.batches)
        * sum(len(args.precisions) * len(jit_options(b, args.jit)) for b in args.backends)
    )
    n_native = len(args.sizes) * len(args.batches) * len(args.models) * (int(run_primary) + int(run_second))
    print(
        f"kseg bench: {n_workers} Keras worker processes x {len(args.models)} models + {n_native} native "
        f"PyTorch runs ({args.torch_impl}; modes {args.torch_modes or 'none'}); step budget {args.budget:g} s, "
        f"time limit {args.time_limit:g} s",
        flush=True,
    )
    print(JIT_NOTE, flush=True)

    peak = {"fp32_peak_gflop_s": float("nan"), "bf16_peak_gflop_s": float("nan")}
    if not args.no_peak:
        peak = measure_peak(args.peak_seconds, bf16=machine["bf16_supported"] or args.force_bf16)
        sizes = ", ".join(f"{k[:-2]} {v}" for k, v in peak.items() if k.endswith("_n"))
        print(
            f"matmul peak (~{args.peak_seconds:g} s per dtype; largest n: {sizes}): "
            + ", ".join(f"{k}={v:.0f}" for k, v in peak.items() if k.endswith("gflop_s")),
            flush=True,
        )

    rows, natives, seconds = [], {}, {}
    for size, batch in itertools.product(args.sizes, args.batches):
        # Every configuration exports the same float32 model, so the exported engines are timed
        # once per shape, in its first TensorFlow configuration.
        time_exported = args.onnx
        for model in args.models:
            has_twin = model in MODELS  # the native PyTorch twins of the seed networks
            if run_primary and args.torch_modes and has_twin:
                ref = run_torch_native(primary[0], model, size, args, batch, deadline)
                natives[(model, size, batch)] = ref
                print(_native_line(primary[1], model, size, batch, ref), flush=True)
            if run_second and args.torch_modes and has_twin:
                ref2 = run_torch_native(TORCH_REFERENCE, model, size, args, batch, deadline)
                seconds[(model, size, batch)] = ref2
                print(_native_line("torch-reference", model, size, batch, ref2), flush=True)
                if "params" in ref2 and ref2["params"] != params_ref.get(model, ref2["params"]):
                    print(
                        f"WARNING: torch_reference {model} has {ref2['params']} parameters, "
                        f"the twin {params_ref[model]}",
                        flush=True,
                    )
        for backend in args.backends:
            for precision, jit in itertools.product(args.precisions, jit_options(backend, args.jit)):
                config = dict(
                    models=list(args.models),
                    image_size=size,
                    base=args.base,
                    depth=args.depth,
                    batch_norm=args.batch_norm,
                    onnx=time_exported and backend == "tensorflow",
                    batch=batch,
                    precision=precision,
                    jit_compile=jit,
                    steps=args.steps,
                    warmup=args.warmup,
                    budget_s=args.budget or None,
                )
                timeout = deadline.timeout(args.timeout)
                if timeout is None:
                    new_rows = [
                        {
                            "backend": backend,
                            "model": m,
                            "precision": precision,
                            "jit": jit,
                            "image_size": size,
                            "batch": batch,
                            "error": "skipped: --time-limit reached",
                        }
                        for m in args.models
                    ]
                else:
                    new_rows = run_worker(backend, config, timeout)
                    time_exported = time_exported and not config["onnx"]
                for row in new_rows:
                    rows.append(row)
                    report(
                        row,
                        natives.get((row["model"], size, batch), {}),
                        gflops_ref.get((row["model"], size)),
                        params_ref.get(row["model"]),
                    )

    df = build_table(rows, natives, peak, seconds)
    if not df.empty:  # workers report by backend; read the tables model by model
        df = df.sort_values(["image_size", "batch", "model"], kind="stable").reset_index(drop=True)
    columns = [
        "image_size",
        "batch",
        "model",
        "backend",
        "precision",
        "jit",
        "train_img_s",
        "infer_img_s",
        "train_vs_torch",
        "infer_vs_torch",
        "train_gflop_s",
        "pct_bf16_peak",
        "peak_rss_mb",
    ]
    if seconds:
        columns[10:10] = ["train_vs_reference", "infer_vs_reference"]
    ok = df[df["error"].isna()] if not df.empty else df
    if not ok.empty:
        with pd.option_context("display.width", 220, "display.max_columns", 20, "display.precision", 2):
            print()
            print(ok[columns].to_string(index=False))
            if len(args.sizes) > 1 or len(args.batches) > 1:
                print()
                print(scaling_table(ok))
    print(
        "\nGFLOPs fwd/image (torch_twin, asserted = Keras layers): "
        + ", ".join(f"{m}@{s}={g:.3f}" for (m, s), g in gflops_ref.items())
    )
    for line in skipped:
        print(line)
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.markdown and not df.empty:
        print()
        print(markdown_rows(df))
    if args.out:
        payload = {
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": machine,
            "peak": peak,
            "torch_impl": args.torch_impl,
            "torch_native": [
                {"model": m, "image_size": s, "batch": b, "impl": primary[1], **r} for (m, s, b), r in natives.items()
            ],
            "torch_reference": [{"model": m, "image_size": s, "batch": b, **r} for (m, s, b), r in seconds.items()],
            "skipped": skipped,
            "rows": json.loads(df.to_json(orient="records")),
            "notes": [JIT_NOTE],
        }
        args.out.write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.out}")
    return df


if __name__ == "__main__":
    main()
