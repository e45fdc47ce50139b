#!/usr/bin/env python3
"""Where one training step's time goes: kseg on Keras/TensorFlow (and Keras/JAX) next to native PyTorch.

Profiles a few training steps of one model with each framework's own profiler (TensorFlow's
``tf.profiler`` trace, read back from its XPlane file; for JAX, ``jax.profiler``'s XPlane trace of
the compiled step, each XLA thunk mapped to the Keras layer it came from through the ``op_name``
metadata of XLA's dumped, optimised HLO; ``torch.profiler`` for the native network:
``benchmarks/torch_twin.py`` by default, or with ``--torch-impl reference`` the outside
``../shared/bench/torch_reference.py``, skipped with one line where absent) and sums op time per
layer kind (conv, batchnorm, relu, down-/up-sampling, concat, loss, optimizer, ...) and direction
(forward, backward), so the two columns can be compared line by line.

    python benchmarks/probes/profile_step.py --model unet                 # 128 px, base 32, batch 16, bf16
    python benchmarks/probes/profile_step.py --model unet --out benchmarks/probes/profile_unet.json
    python benchmarks/probes/profile_step.py --model unet --keras-backends tensorflow jax --precision auto

Keras runs as kseg's CPU default (mixed_bfloat16, XLA off; JAX always compiles); with
``--precision auto`` each Keras backend runs at kseg's ``precision=auto`` for it (JAX: float32).
Each Keras backend is profiled in a process of its own. PyTorch in its best mode here (bf16
autocast, channels-last). On a CPU without bf16 hardware (no avx512_bf16 / amx_bf16) both run in
float32 instead, with a line saying so. Op times are each op's own time on the thread that ran
it: TensorFlow may run two ops at once, so its column can add up to more than the step's wall time.
"""

from __future__ import annotations

import argparse
import collections
import glob
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
HERE = REPO / "benchmarks"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))  # torch_twin
TORCH_TWIN = HERE / "torch_twin.py"
TORCH_REFERENCE = REPO.parent / "shared" / "bench" / "torch_reference.py"

# Layer kind from a kseg layer name (every kseg layer is named: enc0_block1_conv, dec2_up, ...).
# Down- and up-sampling are whatever the model uses: max-pool / strided conv, nearest up-sampling /
# transposed conv / max-unpooling.
_KERAS_LAYER_KINDS = [
    ("conv", r"_conv$|^logits$"),
    ("batchnorm", r"_bn$"),
    ("relu", r"_relu$"),
    ("downsample", r"_pool$|_down$"),
    ("upsample", r"_up$|_unpool$"),
    ("concat", r"_concat$"),
]
# PyTorch: an op's kind comes from the outermost recognisable frame above it: the optimizer step,
# the autograd node running it (backward) or the aten op the model called (forward).
_TORCH_FRAMES = [
    (r"^Optimizer\.", ("optimizer", "update")),
    (r"evaluate_function: Convolution", ("conv", "backward")),
    (r"evaluate_function: .*BatchNorm", ("batchnorm", "backward")),
    (r"evaluate_function: (Relu|Threshold)", ("relu", "backward")),
    (r"evaluate_function: MaxPool", ("downsample", "backward")),
    (r"evaluate_function: (Upsample|MaxUnpool)", ("upsample", "backward")),
    (r"evaluate_function: Cat", ("concat", "backward")),
    (r"evaluate_function: .*(BinaryCrossEntropy|Sigmoid)", ("loss", "both")),
    (r"evaluate_function: ToCopy", ("cast/copy", "both")),
    (r"evaluate_function: ", ("other", "backward")),
    (r"binary_cross_entropy", ("loss", "both")),
    (r"^aten::(conv2d|convolution|conv_transpose2d)$", ("conv", "forward")),
    (r"^aten::batch_norm$", ("batchnorm", "forward")),
    (r"^aten::relu_?$", ("relu", "forward")),
    (r"^aten::max_pool2d", ("downsample", "forward")),
    (r"^aten::(upsample_nearest2d|max_unpool2d)$", ("upsample", "forward")),
    (r"^aten::cat$", ("concat", "forward")),
    (r"^aten::(to|_to_copy|copy_|contiguous)$", ("cast/copy", "both")),
]


def keras_kind(event_name: str) -> tuple[str, str]:
    """(kind, direction) of one TensorFlow op event, ``scope/.../name:OpType``."""
    scope, _, op_type = event_name.rpartition(":")
    if re.search(r"(^|/)(adam|Adam|optimizer)", scope) or "AssignVariable" in op_type or "ResourceApply" in op_type:
        return "optimizer", "update"
    direction = "backward" if "gradient_tape/" in scope else "forward"
    if re.search(r"(^|/)(compile_loss|bce|binary_crossentropy)", scope):
        return "loss", "both"
    layer_kind = None
    for part in scope.split("/"):
        layer = re.sub(r"_\d+$", "", part)  # TF suffixes repeated scopes: dec0_block0_bn_1
        layer_kind = next((kind for kind, pattern in _KERAS_LAYER_KINDS if re.search(pattern, layer)), None)
        if layer_kind:
            break
    # oneDNN fuses conv + bias + ReLU into one op that TF files under the ReLU's scope.
    if "Conv2D" in op_type and layer_kind in (None, "relu", "conv"):
        return "conv", direction
    if layer_kind:
        return layer_kind, direction
    if op_type == "AddN":  # sums the gradients of a tensor that feeds two layers (skips)
        return "other", "backward"
    if op_type in ("Cast", "Identity", "Const"):
        return "cast/copy", "both"
    return "other", direction


def jax_kind(op_name: str, instruction: str = "") -> tuple[str, str]:
    """(kind, direction) of one XLA thunk of Keras/JAX's training step, from the ``op_name`` of its
    HLO instruction, ``jit(train_step)/transpose(jvp(dec0_block1_conv))/conv_general_dilated``:
    ``jvp(LAYER)`` is the layer's scope, ``transpose(...)`` its gradient."""
    if re.search(r"(^|/)(adam|optimizer)/", op_name):
        return "optimizer", "update"
    direction = "backward" if "transpose(" in op_name else "forward"
    if re.search(r"\(compile_loss\)|(^|/)(bce|binary_crossentropy)/", op_name):
        return "loss", "both"
    for layer in reversed(re.findall(r"jvp\((\w+)\)", op_name)):  # innermost scope first
        kind = next((kind for kind, pattern in _KERAS_LAYER_KINDS if re.search(pattern, layer)), None)
        if kind:
            return kind, direction
    if re.match(r"(copy|transpose|convert|bitcast)", instruction) or re.search(r"/convert_element_type$", op_name):
        return "cast/copy", "both"
    return "other", direction


def _hlo_op_names(dump_dir: str, module: str) -> dict[str, str]:
    """Instruction name -> ``op_name`` metadata in XLA's optimised HLO of ``module`` (text dump)."""
    (path,) = glob.glob(f"{dump_dir}/*.{module}.cpu_after_optimizations.txt")
    names = {}
    for line in Path(path).read_text().splitlines():
        match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*op_name=\"([^\"]*)\"", line)
        if match:
            names.setdefault(match.group(1), match.group(2))
    return names


def torch_kind(frames: list[str]) -> tuple[str, str]:
    """(kind, direction) of a PyTorch op from its frames, outermost first."""
    for frame in frames:
        for pattern, kind in _TORCH_FRAMES:
            if re.search(pattern, frame):
                return kind
    return "other", "both"


def _trace_training_steps(
    model_name: str,
    size: int,
    base: int,
    depth: int,
    batch: int,
    steps: int,
    warmup: int,
    precision: str,
    batch_norm: str,
    jit_compile: bool,
    start_trace,
    stop_trace,
):
    """Builds and compiles the kseg model, warms it up, then runs ``steps`` training steps between
    ``start_trace(logdir)`` and ``stop_trace()`` (the backend's XPlane profiler). Returns the mean
    wall seconds per step and the trace's ``XSpace``."""
    import keras
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    from kseg import losses, models

    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy(precision)
    model = models.build(model_name, input_shape=(size, size, 3), base_filters=base, depth=depth, batch_norm=batch_norm)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=losses.BCE(), jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    x = rng.random((batch, size, size, 3), dtype=np.float32)
    y = (rng.random((batch, size, size, 1)) > 0.5).astype(np.float32)
    for _ in range(warmup):
        model.train_on_batch(x, y)
    with tempfile.TemporaryDirectory() as logdir:
        start_trace(logdir)
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        wall = (time.perf_counter() - start) / steps
        stop_trace()
        space = xplane_pb2.XSpace()
        space.ParseFromString(Path(sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))[-1]).read_bytes())
    return wall, space


def profile_keras(
    model_name: str,
    size: int,
    base: int,
    depth: int,
    batch: int,
    steps: int,
    warmup: int,
    precision: str,
    batch_norm: str = "fast",
) -> dict:
    import tensorflow as tf

    wall, space = _trace_training_steps(
        model_name,
        size,
        base,
        depth,
        batch,
        steps,
        warmup,
        precision,
        batch_norm,
        jit_compile=False,
        start_trace=tf.profiler.experimental.start,
        stop_trace=tf.profiler.experimental.stop,
    )
    by_kind, by_op = collections.Counter(), collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue  # executor threads carry the op events; other lines are wrappers
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if not re.fullmatch(r"[^:]+:\w+", name):
                    continue  # ExecutorState::Process and similar wrappers, not ops
                ms = event.duration_ps / 1e9 / steps
                by_kind[keras_kind(name)] += ms
                by_op[re.sub(r"^_MklNative|^_Mkl", "", name.rpartition(":")[2])] += ms
    return {"step_ms": 1000 * wall, "by_kind": by_kind, "by_op": by_op}


def dump_hlo_to(dump_dir: str) -> None:
    """Has XLA write the training step's optimised HLO to ``dump_dir``; XLA reads its flags when
    JAX's backend starts, so this must come before the first JAX computation."""
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={dump_dir} --xla_dump_hlo_as_text"
        " --xla_dump_hlo_module_re=.*train_step.*"
    )


def profile_keras_jax(
    model_name: str,
    size: int,
    base: int,
    depth: int,
    batch: int,
    steps: int,
    warmup: int,
    precision: str,
    batch_norm: str = "fast",
    dump_dir: str = "",
) -> dict:
    """Like :func:`profile_keras`, for Keras on JAX: XLA's compiled training step, its thunks timed
    by ``jax.profiler`` and named by the HLO that :func:`dump_hlo_to` had XLA write to ``dump_dir``
    (call it before anything starts JAX's backend)."""
    import jax

    wall, space = _trace_training_steps(
        model_name,
        size,
        base,
        depth,
        batch,
        steps,
        warmup,
        precision,
        batch_norm,
        jit_compile=True,
        start_trace=jax.profiler.start_trace,
        stop_trace=jax.profiler.stop_trace,
    )
    op_names = _hlo_op_names(dump_dir, "jit_train_step")
    by_kind, by_op, by_hlo = collections.Counter(), collections.Counter(), collections.Counter()
    for plane in space.planes:
        stat_names = {key: meta.name for key, meta in plane.stat_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                stats = {stat_names.get(stat.metadata_id): stat for stat in event.stats}
                if "hlo_op" not in stats or "hlo_module" not in stats:
                    continue  # Python frames and thread-pool bookkeeping, not XLA's thunks
                module_stat, op_stat = stats["hlo_module"], stats["hlo_op"]
                module = stat_names.get(module_stat.ref_value) if module_stat.ref_value else module_stat.str_value
                if module != "jit_train_step":
                    continue
                instruction = stat_names.get(op_stat.ref_value) if op_stat.ref_value else op_stat.str_value
                ms = event.duration_ps / 1e9 / steps
                op_name = op_names.get(instruction, "")
                by_kind[jax_kind(op_name, instruction)] += ms
                instruction_kind = re.sub(r"\.\d+$", "", instruction)
                by_op[instruction_kind] += ms
                # where each kind's time goes: the instruction and the op it came from, layer
                # indices folded (enc0_block1_conv -> enc#_block#_conv)
                by_hlo[instruction_kind + " <- " + re.sub(r"\d+", "#", op_name)] += ms
    return {"step_ms": 1000 * wall, "by_kind": by_kind, "by_op": by_op, "by_hlo": by_hlo}


def load_torch_impl(impl: str):
    """The module building the native network: torch_twin (``twin``) or the outside
    torch_reference (``reference``); both have ``build(name, base, depth)``."""
    path = TORCH_TWIN if impl == "twin" else TORCH_REFERENCE
    spec = importlib.util.spec_from_file_location(f"kseg_profile_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def profile_torch(
    model_name: str,
    size: int,
    base: int,
    depth: int,
    batch: int,
    steps: int,
    warmup: int,
    impl: str = "twin",
    bf16: bool = True,
) -> dict:
    import torch

    torch.manual_seed(0)
    model = load_torch_impl(impl).build(model_name, base, depth).to(memory_format=torch.channels_last)
    x = torch.rand(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, 1, size, size) > 0.5).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step():  # torch_twin's bf16-cl (or fp32-cl) training step
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x).float(), y)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - start) / steps
    by_kind, by_op = collections.Counter(), collections.Counter()
    for event in prof.events():
        frames, parent = [], event
        while parent is not None:
            frames.insert(0, parent.name)
            parent = parent.cpu_parent
        ms = event.self_cpu_time_total / 1000 / steps  # self time: nested ops are not counted twice
        by_kind[torch_kind(frames)] += ms
        by_op[event.name] += ms
    return {"step_ms": 1000 * wall, "by_kind": by_kind, "by_op": by_op}


def table(keras_profs: dict[str, dict], torch_prof: dict) -> str:
    """One row per (layer kind, direction): each Keras backend's ms per step, PyTorch's, and their ratios."""
    profs = [*keras_profs.values(), torch_prof]
    kinds = sorted(
        set().union(*(prof["by_kind"] for prof in profs)),
        key=lambda k: -max(prof["by_kind"].get(k, 0) for prof in profs),
    )
    backends = list(keras_profs)
    lines = [
        "| layer kind | direction | "
        + " | ".join(f"Keras/{b} ms per step" for b in backends)
        + " | PyTorch ms per step | "
        + " | ".join(f"{b} / PyTorch" for b in backends)
        + " |",
        "|---|---|" + "---|" * (2 * len(backends) + 1),
    ]

    def row(label: str, direction: str, values: list[float], torch_value: float, floor: float = 0.05) -> str:
        ratios = [f"{v / torch_value:.2f}" if torch_value > floor else "" for v in values]
        cells = [f"{v:.1f}" for v in values] + [f"{torch_value:.1f}"] + ratios
        return f"| {label} | {direction} | " + " | ".join(cells) + " |"

    for kind, direction in kinds:
        values = [prof["by_kind"].get((kind, direction), 0.0) for prof in keras_profs.values()]
        lines.append(row(kind, direction, values, torch_prof["by_kind"].get((kind, direction), 0.0)))
    lines.append(
        row(
            "**sum of op times**",
            "",
            [sum(p["by_kind"].values()) for p in keras_profs.values()],
            sum(torch_prof["by_kind"].values()),
        )
    )
    lines.append(row("**step wall time**", "", [p["step_ms"] for p in keras_profs.values()], torch_prof["step_ms"]))
    return "\n".join(lines)


def top_ops(prof: dict, n: int) -> str:
    return ", ".join(f"{op} {ms:.1f}" for op, ms in prof["by_op"].most_common(n))


def _as_json(prof: dict) -> dict:
    payload = {
        "step_ms": prof["step_ms"],
        "by_kind": {f"{k}/{d}": v for (k, d), v in prof["by_kind"].items()},
        "by_op": dict(prof["by_op"].most_common()),
    }
    if "by_hlo" in prof:
        payload["by_hlo"] = dict(collections.Counter(prof["by_hlo"]).most_common(60))
    return payload


def _from_json(payload: dict) -> dict:
    return {
        "step_ms": payload["step_ms"],
        "by_kind": collections.Counter({tuple(key.rsplit("/", 1)): v for key, v in payload["by_kind"].items()}),
        "by_op": collections.Counter(payload["by_op"]),
        **({"by_hlo": payload["by_hlo"]} if "by_hlo" in payload else {}),
        "precision": payload.get("precision"),
    }


def _profile_one_keras_backend(backend: str, shape: tuple, precision: str, batch_norm: str, out: Path) -> None:
    """The child process's work: one Keras backend's profile, written to ``out`` as JSON."""
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory() as dump_dir:
        if backend == "jax":
            dump_hlo_to(dump_dir)
        if precision == "auto":
            from kseg.experiment.config import resolve_precision

            precision = resolve_precision("auto")
        if backend == "jax":
            prof = profile_keras_jax(*shape, precision, batch_norm, dump_dir=dump_dir)
        else:
            prof = profile_keras(*shape, precision, batch_norm)
    out.write_text(json.dumps({**_as_json(prof), "precision": precision}))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="unet", choices=["segnet", "unet", "unet2"])
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--base", type=int, default=32)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=3, help="profiled steps (after the warm-up)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--keras-backends",
        nargs="+",
        default=["tensorflow"],
        choices=["tensorflow", "jax"],
        help="the Keras backends to profile, each in a process of its own (JAX: its compiled step)",
    )
    p.add_argument(
        "--precision",
        default="mixed_bfloat16",
        choices=["float32", "mixed_bfloat16", "auto"],
        help="Keras' policy (auto: kseg's precision=auto per backend); PyTorch autocasts to bf16 "
        "unless float32, or with auto where the CPU has bf16 hardware",
    )
    p.add_argument(
        "--batch-norm",
        default="fast",
        choices=["keras", "fast"],
        help="the Keras models' normalisation layer (fast: what the cpu preset trains with)",
    )
    p.add_argument(
        "--torch-impl",
        default="twin",
        choices=["twin", "reference"],
        help="native network: benchmarks/torch_twin.py or ../shared/bench/torch_reference.py",
    )
    p.add_argument("--force-bf16", action="store_true", help="bf16 even on a CPU without bf16 hardware")
    p.add_argument("--top", type=int, default=12, help="how many of the costliest ops to list")
    p.add_argument("--out", type=Path, help="write the profiles as JSON")
    p.add_argument("--child", nargs=2, metavar=("BACKEND", "JSON"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    shape = (args.model, args.image_size, args.base, args.depth, args.batch, args.steps, args.warmup)
    if args.child:
        _profile_one_keras_backend(args.child[0], shape, args.precision, args.batch_norm, Path(args.child[1]))
        return
    if args.torch_impl == "reference" and not TORCH_REFERENCE.exists():
        print(
            f"SKIP profile: {TORCH_REFERENCE} not found (a plain clone has no ../shared/bench); "
            "--torch-impl twin profiles against benchmarks/torch_twin.py",
            flush=True,
        )
        return
    from _hardware import device as hardware

    info = hardware.machine_info()
    print(hardware.describe(info), flush=True)
    if args.precision == "mixed_bfloat16" and not (info["bf16_supported"] or args.force_bf16):
        print(
            f"SKIP bf16 (Keras mixed_bfloat16, torch bf16 autocast): {info['bf16_reason']}; "
            "profiling float32 instead (--force-bf16 keeps bf16)",
            flush=True,
        )
        args.precision = "float32"
    bf16 = args.precision == "mixed_bfloat16" or (
        args.precision == "auto" and (info["bf16_supported"] or args.force_bf16)
    )
    keras_profs = {}
    with tempfile.TemporaryDirectory() as scratch:
        for backend in args.keras_backends:  # one process each: the backend is fixed when Keras is imported
            out = Path(scratch) / f"{backend}.json"
            command = [
                sys.executable,
                __file__,
                *(argv if argv is not None else sys.argv[1:]),
                "--child",
                backend,
                str(out),
            ]
            subprocess.run(command, check=True)
            keras_profs[backend] = _from_json(json.loads(out.read_text()))
    torch_prof = profile_torch(*shape, impl=args.torch_impl, bf16=bf16)
    keras_setting = ", ".join(
        f"{b} {prof['precision']}" + (" (XLA)" if b == "jax" else " XLA off") for b, prof in keras_profs.items()
    )
    print(
        f"{args.model}, {args.image_size} px, base {args.base}, batch {args.batch}: Keras {keras_setting}, "
        f"{args.batch_norm} batch norm, vs PyTorch ({args.torch_impl}) {'bf16' if bf16 else 'fp32'} "
        f"channels-last; ms per training step "
        f"(mean of {args.steps} profiled steps after {args.warmup} warm-up)\n"
    )
    print(table(keras_profs, torch_prof))
    for backend, prof in keras_profs.items():
        print(f"\nKeras/{backend} costliest ops (ms/step): {top_ops(prof, args.top)}")
    print(f"PyTorch costliest ops (ms/step): {top_ops(torch_prof, args.top)}")
    if args.out:
        payload = {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": info,
            **{
                f"keras_{backend}": {**_as_json(prof), "precision": prof["precision"]}
                for backend, prof in keras_profs.items()
            },
            "torch_native": _as_json(torch_prof),
        }
        args.out.write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
