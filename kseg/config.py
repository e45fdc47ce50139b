"""One run's configuration, the presets it starts from, and the hash that identifies it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import keras

# Each preset is a complete set of RunConfig defaults; flags override single fields.
PRESETS: dict[str, dict[str, Any]] = {
    # Seconds: for tests and a first look at the pipeline.
    "smoke": dict(
        image_size=32, eval_size=64, base_filters=4, depth=2, epochs=2, batch_size=4, lr=1e-3,
        patience=2, synthetic_n=24, split_sizes=(12, 6, 6),
    ),
    # A laptop-class CPU: the 9-pair grid at one seed in about 20 minutes on 2 cores
    # (README, "The cpu preset", says how these numbers were chosen).
    "cpu": dict(
        image_size=128, eval_size=256, base_filters=16, depth=4, epochs=40, batch_size=8, lr=1e-3,
        patience=12,
    ),
    # The original notebook's protocol, for a GPU.
    "paper": dict(
        image_size=256, eval_size=256, base_filters=64, depth=4, epochs=100, batch_size=8, lr=1e-4,
        patience=30,
    ),
}

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that decides what one training run computes.

    ``dataset`` and ``precision`` should be resolved (``kseg.data.load_dataset`` names the dataset
    it loaded, ``resolve_precision`` picks the policy) before the config is hashed, so the hash
    says what actually ran.
    """

    model: str
    loss: str
    seed: int = 0
    dataset: str = "auto"
    preset: str = "cpu"
    image_size: int = 128
    eval_size: int = 256
    base_filters: int = 16
    depth: int = 4
    epochs: int = 40
    batch_size: int = 8
    lr: float = 1e-3
    patience: int = 12
    precision: str = "auto"
    jit_compile: str = "auto"
    augment: bool = True
    split_sizes: tuple = (100, 50, 50)
    synthetic_n: int = 200

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "RunConfig":
        if preset not in PRESETS:
            raise ValueError(f"Unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
        fields = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(preset=preset, **fields)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def config_hash(self) -> str:
        """12 hex digits of SHA-256 over every field and the Keras backend: two rows share it
        exactly when they ran the same experiment."""
        payload = {**self.to_dict(), "backend": keras.backend.backend()}
        blob = json.dumps(payload, sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @property
    def run_id(self) -> str:
        return f"{self.model}-{self.loss}-seed{self.seed}-{self.config_hash}"


def _on_gpu() -> bool:
    """True where Keras' backend sees a GPU (device names differ: "gpu:0", "cuda:0", ...)."""
    try:
        devices = keras.distribution.list_devices()
    except (AttributeError, NotImplementedError):
        # The torch backend has no distribution library; a tensor shows where Keras puts data.
        devices = [str(keras.ops.convert_to_tensor(0.0).device)]
    return any(d.lower().split(":")[0].endswith(("gpu", "cuda")) for d in devices)


def device_description() -> str:
    """Where runs execute, for the leaderboard: "gpu" or the CPU's model name and core count."""
    if _on_gpu():
        return "gpu"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = "cpu"
    return f"{model} ({os.cpu_count()} cores)"


def _cpu_has_bf16() -> bool:
    """True where the CPU has native bf16 matrix units (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str = "auto") -> str:
    """``auto`` is mixed_bfloat16 where the hardware computes bf16 natively (a GPU, or a CPU with
    AVX512-BF16/AMX, where TensorFlow trained 1.3-1.7x and Keras-on-torch 1.3-2.1x faster than in
    float32, at the same IoU: BENCHMARKS.md), else float32. JAX stays float32 on a CPU: there
    its bf16 trained at 0.91-1.06x its float32 speed, no gain for the lost precision."""
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
    if precision != "auto":
        return precision
    if _on_gpu():
        return "mixed_bfloat16"
    if _cpu_has_bf16() and keras.backend.backend() != "jax":
        return "mixed_bfloat16"
    return "float32"


def resolve_jit_compile(jit_compile: str | bool = "auto") -> bool:
    """``auto``: on for JAX (it always compiles) and for TensorFlow on a GPU; off for TensorFlow on
    a CPU, where XLA trained at 0.53-0.92x the speed of its own kernels (BENCHMARKS.md), and for
    PyTorch, whose torch.compile costs minutes per model and breaks on some ops."""
    if isinstance(jit_compile, bool):
        return jit_compile
    if jit_compile in ("true", "True", "1"):
        return True
    if jit_compile in ("false", "False", "0"):
        return False
    if jit_compile != "auto":
        raise ValueError(f"jit_compile must be auto, true or false; got {jit_compile!r}.")
    backend = keras.backend.backend()
    if backend == "jax":
        return True
    return backend == "tensorflow" and _on_gpu()
