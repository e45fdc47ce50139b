#!/usr/bin/env python3
"""Training and inference speed of kseg's models on every Keras backend, side by side with
native PyTorch (``shared/bench/torch_reference.py``) and the machine's matrix-product peak.

For each (image size, batch) it runs torch_reference.py for every model (all its modes), then one
worker process (``benchmarks/_worker.py``) per (backend, precision, jit) that times every model in
turn: the backend is fixed when Keras is imported, so each needs its own process, and one import
per backend rather than per model keeps the default grid inside 15 minutes on 2 cores. Every
Keras row carries its ratio to native PyTorch's best mode measured in the same invocation.

    python benchmarks/bench.py                                  # the full default grid
    python benchmarks/bench.py --models unet --image-size 64 --base 8 --batch 4 --steps 2 --warmup 1
    python benchmarks/bench.py --models segnet --sizes 64 128 256 --batches 4 16 --markdown

jit: TensorFlow is run with jit_compile False and True (XLA); JAX always compiles with XLA;
PyTorch runs eagerly only (torch.compile takes minutes per model on this CPU, so it is not run).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKER = HERE / "_worker.py"
# CI clones the repo next to shared/; the reference lives outside the repo on purpose.
TORCH_REFERENCE = REPO.parent / "shared" / "bench" / "torch_reference.py"

BACKENDS = ("tensorflow", "jax", "torch")
PRECISIONS = ("float32", "mixed_bfloat16")
MODELS = ("segnet", "unet", "unet2")
JIT_NOTE = "torch: eager only (torch.compile costs minutes per model on this CPU; not run)"

def jit_options(backend: str, choice: str = "both") -> tuple[bool, ...]:
    """The jit_compile values run on ``backend``: those it has ("both"), or only off / on where it
    has that (JAX always compiles; PyTorch runs eagerly)."""
    available = {"tensorflow": (False, True), "jax": (True,), "torch": (False,)}[backend]
    wanted = {"both": (False, True), "off": (False,), "on": (True,)}[choice]
    return tuple(j for j in available if j in wanted) or available


def measure_peak(n: int = 4096, repeats: int = 3) -> dict[str, float]:
    """Best-of-``repeats`` GFLOP/s of an n x n matrix product: numpy fp32 (the BLAS), torch fp32
    and torch bf16 (oneDNN; AMX where present). The achievable ceiling for dense convolutions."""
    import numpy as np

    def best(fn) -> float:
        fn()  # warm-up: thread pools, packing buffers
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 2 * n**3 / min(times) / 1e9

    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    peak = {"numpy_fp32_gflop_s": best(lambda: a @ b)}
    try:
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        peak["torch_fp32_gflop_s"] = best(lambda: ta @ tb)
        ha, hb = ta.bfloat16(), tb.bfloat16()
        peak["torch_bf16_gflop_s"] = best(lambda: ha @ hb)
    except ImportError:
        pass
    peak["fp32_peak_gflop_s"] = max(peak.get("torch_fp32_gflop_s", 0.0), peak["numpy_fp32_gflop_s"])
    peak["bf16_peak_gflop_s"] = peak.get("torch_bf16_gflop_s", float("nan"))
    return peak


def reference_gflops(model: str, size: int, base: int, depth: int) -> float | None:
    """torch_reference.forward_gflops, unrounded, imported from the file (None if unavailable)."""
    if not TORCH_REFERENCE.exists():
        return None
    try:
        spec = importlib.util.spec_from_file_location("torch_reference", TORCH_REFERENCE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.forward_gflops(module.build(model, base, depth), size)
    except ImportError:
        return None


def run_json_process(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[list[dict], str]:
    """Runs ``cmd`` and returns the JSON objects on its stdout lines, and an error text if it failed."""
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return [], f"timed out after {timeout:.0f} s"
    rows = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    error = "" if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]
    return rows, error


def run_torch_reference(model: str, size: int, args: argparse.Namespace, batch: int) -> dict[str, Any]:
    """torch_reference.py with the same settings; its rows and best train/inference img/s.

    The bf16 modes (always PyTorch's fastest on a bf16-capable CPU, so the ratios' denominator)
    get the full ``--steps/--warmup``; the fp32 modes, 2-3x slower, are timed over 3 steps after
    1 warm-up so they do not dominate the run."""
    if not TORCH_REFERENCE.exists():
        return {"error": f"{TORCH_REFERENCE} not found"}
    requested = args.torch_modes.split(",")
    groups = [([m for m in requested if m.startswith("bf16")], args.steps, args.warmup),
              ([m for m in requested if not m.startswith("bf16")], min(args.steps, 3), 1)]
    rows, errors = [], []
    for modes, steps, warmup in groups:
        if not modes:
            continue
        cmd = [
            sys.executable, str(TORCH_REFERENCE), "--model", model, "--image-size", str(size),
            "--base", str(args.base), "--depth", str(args.depth), "--batch", str(batch),
            "--steps", str(steps), "--warmup", str(warmup), "--modes", ",".join(modes),
        ]
        group_rows, error = run_json_process(cmd, dict(os.environ), args.timeout)
        rows += [{**r, "steps": steps, "warmup": warmup} for r in group_rows]
        errors += [error] if error else []
    modes = [r for r in rows if "mode" in r]
    if not modes:
        return {"error": "; ".join(errors) or "no output"}
    return {
        "modes": modes,
        "best_train_mode": max(modes, key=lambda r: r["train_img_s"])["mode"],
        "best_train_img_s": max(r["train_img_s"] for r in modes),
        "best_infer_img_s": max(r["infer_img_s"] for r in modes),
        "params": modes[0]["params"],
        "gflops_fwd_per_image": modes[0]["gflops_fwd_per_image"],
    }


def run_worker(backend: str, config: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    """One Keras (backend, precision, jit) config, all of ``config["models"]``, in a fresh process
    with KERAS_BACKEND=backend: one row per model, an error row for each model it did not report."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    rows, error = run_json_process([sys.executable, str(WORKER), json.dumps(config)], env, timeout)
    reported = {r.get("model") for r in rows}
    return rows + [
        {"backend": backend, "model": model, "precision": config["precision"], "jit": config["jit_compile"],
         "image_size": config["image_size"], "batch": config["batch"], "error": error or "no output"}
        for model in config["models"] if model not in reported
    ]


def build_table(rows: list[dict], refs: dict, peak: dict) -> pd.DataFrame:
    """One row per Keras config, with its ratios to native PyTorch and to the machine peak."""
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
    for col in ("train_img_s", "infer_img_s", "train_gflop_s", "peak_rss_mb"):
        if col not in df:
            df[col] = float("nan")
    df["train_vs_torch"] = df["train_img_s"] / df["torch_best_train_img_s"]
    df["infer_vs_torch"] = df["infer_img_s"] / df["torch_best_infer_img_s"]
    df["pct_bf16_peak"] = 100 * df["train_gflop_s"] / peak.get("bf16_peak_gflop_s", float("nan"))
    df["pct_fp32_peak"] = 100 * df["train_gflop_s"] / peak["fp32_peak_gflop_s"]
    return df


def markdown_rows(df: pd.DataFrame) -> str:
    """The BENCHMARKS.md result table (GitHub markdown), one line per config."""
    header = ("| size | batch | model | backend | precision | jit | train img/s | infer img/s | "
              "train x torch best | infer x torch best | train GFLOP/s | % bf16 peak | peak MB |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for _, r in df.iterrows():
        if isinstance(r.get("error"), str) and r["error"]:
            lines.append(f"| {r['image_size']} | {r['batch']} | {r['model']} | {r['backend']} | "
                         f"{r['precision']} | {r['jit']} | failed: {r['error'][:60]} | | | | | | |")
            continue
        lines.append(
            f"| {r['image_size']} | {r['batch']} | {r['model']} | {r['backend']} | {r['precision']} | "
            f"{'on' if r['jit'] else 'off'} | {r['train_img_s']:.2f} | {r['infer_img_s']:.2f} | "
            f"{r['train_vs_torch']:.2f} | {r['infer_vs_torch']:.2f} | {r['train_gflop_s']:.1f} | "
            f"{r['pct_bf16_peak']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def scaling_table(df: pd.DataFrame) -> str:
    """Markdown: training ms per image for each (size, batch), Keras next to native PyTorch's best.
    The last column rescales ms/img to a 128 x 128 image: constant where cost is linear in pixels."""
    header = ("| model | backend | precision | jit | size | batch | train ms/img | torch best ms/img | "
              "train x torch best | ms/img at 128-px equivalent |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for _, r in df.sort_values(["model", "backend", "precision", "jit", "image_size", "batch"]).iterrows():
        ms = 1000 / r["train_img_s"]
        lines.append(
            f"| {r['model']} | {r['backend']} | {r['precision']} | {'on' if r['jit'] else 'off'} | "
            f"{r['image_size']} | {r['batch']} | {ms:.0f} | {1000 / r['torch_best_train_img_s']:.0f} | "
            f"{r['train_vs_torch']:.2f} | {ms * (128 / r['image_size']) ** 2:.0f} |"
        )
    return "\n".join(lines)


def report(row: dict, ref: dict, expected_gflops: float | None) -> None:
    """Prints one Keras row, after checking that it counts the same network as torch_reference."""
    tag = (f"[{row['backend']} {row['precision']} jit={'on' if row['jit'] else 'off'}] "
           f"{row['model']} {row['image_size']}px b{row['batch']}")
    if "error" in row:
        print(f"{tag}: FAILED {row['error']}", flush=True)
        return
    # The FLOP count must be the reference's, or GFLOP/s are not comparable.
    if expected_gflops is not None:
        assert abs(row["gflops_fwd_per_image"] - expected_gflops) <= 1e-9 * max(expected_gflops, 1), (
            f"{tag}: Keras counts {row['gflops_fwd_per_image']} GFLOPs, torch {expected_gflops}")
    elif "gflops_fwd_per_image" in ref:
        assert abs(row["gflops_fwd_per_image"] - ref["gflops_fwd_per_image"]) < 6e-4
    if "params" in ref:
        assert row["params"] == ref["params"], f"{tag}: params {row['params']} != torch {ref['params']}"
    print(f"{tag}: train {row['train_img_s']:.2f} img/s, infer {row['infer_img_s']:.2f} img/s, "
          f"{row['train_gflop_s']:.1f} GFLOP/s, peak {row['peak_rss_mb']:.0f} MB, "
          f"first step {row['first_train_step_s']:.1f} s", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--sizes", type=int, nargs="+", help="image sizes to sweep (default: --image-size)")
    p.add_argument("--jit", default="both", choices=["both", "off", "on"],
                   help="XLA/jit settings to run where a backend has a choice (TensorFlow)")
    p.add_argument("--torch-modes", default="fp32,fp32-cl,bf16,bf16-cl",
                   help="torch_reference.py modes; the best of them is the ratio's denominator")
    p.add_argument("--base", type=int, default=32)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, nargs="+", help="batch sizes to sweep (default: --batch)")
    p.add_argument("--steps", type=int, default=4, help="timed steps; the median is reported")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first compiles)")
    p.add_argument("--budget", type=float, default=5,
                   help="cap, in seconds, on each worker's timed train or inference phase (min 3 steps); 0: none")
    p.add_argument("--timeout", type=float, default=900, help="seconds per worker process")
    p.add_argument("--no-peak", action="store_true", help="skip the matmul peak measurement")
    p.add_argument("--out", type=Path, help="write every row, the references and the peak as JSON")
    p.add_argument("--markdown", action="store_true", help="print the BENCHMARKS.md table rows")
    args = p.parse_args(argv)
    args.sizes = args.sizes or [args.image_size]
    args.batches = args.batches or [args.batch]
    return args


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = parse_args(argv)
    started = time.perf_counter()
    gflops_ref = {}
    for model, size in itertools.product(args.models, args.sizes):
        g = reference_gflops(model, size, args.base, args.depth)
        if g is not None:
            gflops_ref[(model, size)] = g
    n_workers = len(args.sizes) * len(args.batches) * sum(
        len(args.precisions) * len(jit_options(b, args.jit)) for b in args.backends)
    print(f"kseg bench: {n_workers} Keras worker processes x {len(args.models)} models + "
          f"{len(args.sizes) * len(args.batches) * len(args.models)} torch_reference runs "
          f"(cpus here: {os.cpu_count()})", flush=True)
    print(JIT_NOTE, flush=True)

    peak = {"fp32_peak_gflop_s": float("nan"), "bf16_peak_gflop_s": float("nan")}
    if not args.no_peak:
        peak = measure_peak()
        print("matmul peak 4096x4096: " + ", ".join(f"{k}={v:.0f}" for k, v in peak.items()), flush=True)

    rows, refs = [], {}
    for size, batch in itertools.product(args.sizes, args.batches):
        for model in args.models:
            ref = run_torch_reference(model, size, args, batch)
            refs[(model, size, batch)] = ref
            if "error" in ref:
                print(f"[torch-native] {model} {size}px b{batch}: FAILED {ref['error']}", flush=True)
            else:
                print(f"[torch-native] {model} {size}px b{batch}: best train {ref['best_train_img_s']:.2f} img/s "
                      f"({ref['best_train_mode']}), best infer {ref['best_infer_img_s']:.2f} img/s", flush=True)
        for backend in args.backends:
            for precision, jit in itertools.product(args.precisions, jit_options(backend, args.jit)):
                config = dict(models=list(args.models), image_size=size, base=args.base, depth=args.depth,
                              batch=batch, precision=precision, jit_compile=jit, steps=args.steps,
                              warmup=args.warmup, budget_s=args.budget or None)
                for row in run_worker(backend, config, args.timeout):
                    rows.append(row)
                    report(row, refs[(row["model"], size, batch)], gflops_ref.get((row["model"], size)))

    df = build_table(rows, refs, peak)
    if not df.empty:  # workers report by backend; read the tables model by model
        df = df.sort_values(["image_size", "batch", "model"], kind="stable").reset_index(drop=True)
    columns = ["image_size", "batch", "model", "backend", "precision", "jit", "train_img_s", "infer_img_s",
               "train_vs_torch", "infer_vs_torch", "train_gflop_s", "pct_bf16_peak", "peak_rss_mb"]
    ok = df[df["error"].isna()] if not df.empty else df
    if not ok.empty:
        with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 2):
            print()
            print(ok[columns].to_string(index=False))
            if len(args.sizes) > 1 or len(args.batches) > 1:
                print()
                print(scaling_table(ok))
    print(f"\nGFLOPs fwd/image: " + ", ".join(f"{m}@{s}={g:.3f}" for (m, s), g in gflops_ref.items()))
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.markdown and not df.empty:
        print()
        print(markdown_rows(df))
    if args.out:
        payload = {
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "peak": peak,
            "torch_reference": [{"model": m, "image_size": s, "batch": b, **r} for (m, s, b), r in refs.items()],
            "rows": json.loads(df.to_json(orient="records")),
            "notes": [JIT_NOTE],
        }
        args.out.write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.out}")
    return df


if __name__ == "__main__":
    main()
