#!/usr/bin/env python3
"""Where one training step's time goes: kseg on Keras/TensorFlow next to native PyTorch.

Profiles a few training steps of one model with each framework's own profiler (TensorFlow's
``tf.profiler`` trace, read back from its XPlane file; ``torch.profiler`` for the native network:
``benchmarks/torch_twin.py`` by default, or with ``--torch-impl reference`` the outside
``../shared/bench/torch_reference.py``, skipped with one line where absent) and sums op time per
layer kind (conv, batchnorm, relu, down-/up-sampling, concat, loss, optimizer, ...) and direction
(forward, backward), so the two columns can be compared line by line.

    python benchmarks/profile_step.py --model unet                 # 128 px, base 32, batch 16, bf16
    python benchmarks/profile_step.py --model unet --out benchmarks/profile_unet.json

Keras runs as kseg's CPU default (mixed_bfloat16, XLA off); PyTorch in its best mode here (bf16
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
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
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


def torch_kind(frames: list[str]) -> tuple[str, str]:
    """(kind, direction) of a PyTorch op from its frames, outermost first."""
    for frame in frames:
        for pattern, kind in _TORCH_FRAMES:
            if re.search(pattern, frame):
                return kind
    return "other", "both"


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
    import keras
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    from kseg import losses, models

    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy(precision)
    model = models.build(model_name, input_shape=(size, size, 3), base_filters=base, depth=depth, batch_norm=batch_norm)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=losses.BCE(), jit_compile=False)
    rng = np.random.default_rng(0)
    x = rng.random((batch, size, size, 3), dtype=np.float32)
    y = (rng.random((batch, size, size, 1)) > 0.5).astype(np.float32)
    for _ in range(warmup):
        model.train_on_batch(x, y)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        wall = (time.perf_counter() - start) / steps
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(Path(sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))[-1]).read_bytes())
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


def table(keras_prof: dict, torch_prof: dict) -> str:
    kinds = sorted(
        set(keras_prof["by_kind"]) | set(torch_prof["by_kind"]),
        key=lambda k: -max(keras_prof["by_kind"].get(k, 0), torch_prof["by_kind"].get(k, 0)),
    )
    lines = [
        "| layer kind | direction | Keras/TF ms per step | PyTorch ms per step | Keras / PyTorch |",
        "|---|---|---|---|---|",
    ]
    for kind, direction in kinds:
        k, t = keras_prof["by_kind"].get((kind, direction), 0.0), torch_prof["by_kind"].get((kind, direction), 0.0)
        ratio = f"{k / t:.2f}" if t > 0.05 else ""
        lines.append(f"| {kind} | {direction} | {k:.1f} | {t:.1f} | {ratio} |")
    k_sum, t_sum = sum(keras_prof["by_kind"].values()), sum(torch_prof["by_kind"].values())
    lines.append(f"| **sum of op times** | | {k_sum:.1f} | {t_sum:.1f} | {k_sum / t_sum:.2f} |")
    lines.append(
        f"| **step wall time** | | {keras_prof['step_ms']:.1f} | {torch_prof['step_ms']:.1f} | "
        f"{keras_prof['step_ms'] / torch_prof['step_ms']:.2f} |"
    )
    return "\n".join(lines)


def top_ops(prof: dict, n: int) -> str:
    return ", ".join(f"{op} {ms:.1f}" for op, ms in prof["by_op"].most_common(n))


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
        "--precision",
        default="mixed_bfloat16",
        choices=["float32", "mixed_bfloat16"],
        help="Keras' policy; PyTorch autocasts to bf16 with mixed_bfloat16",
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
    p.add_argument("--out", type=Path, help="write both profiles as JSON")
    args = p.parse_args(argv)
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
    bf16 = args.precision == "mixed_bfloat16"
    # The profile reads TensorFlow's own trace; set before profile_keras imports Keras.
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    shape = (args.model, args.image_size, args.base, args.depth, args.batch, args.steps, args.warmup)
    keras_prof = profile_keras(*shape, args.precision, args.batch_norm)
    torch_prof = profile_torch(*shape, impl=args.torch_impl, bf16=bf16)
    print(
        f"{args.model}, {args.image_size} px, base {args.base}, batch {args.batch}: Keras/TensorFlow "
        f"{args.precision} XLA off, {args.batch_norm} batch norm, "
        f"vs PyTorch ({args.torch_impl}) {'bf16' if bf16 else 'fp32'} "
        f"channels-last; ms per training step "
        f"(mean of {args.steps} profiled steps after {args.warmup} warm-up)\n"
    )
    print(table(keras_prof, torch_prof))
    print(f"\nKeras/TF costliest ops (ms/step): {top_ops(keras_prof, args.top)}")
    print(f"PyTorch costliest ops (ms/step): {top_ops(torch_prof, args.top)}")
    if args.out:
        payload = {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": info,
            **{
                name: {
                    "step_ms": prof["step_ms"],
                    "by_kind": {f"{k}/{d}": v for (k, d), v in prof["by_kind"].items()},
                    "by_op": dict(prof["by_op"].most_common()),
                }
                for name, prof in (("keras_tensorflow", keras_prof), ("torch_native", torch_prof))
            },
        }
        args.out.write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
