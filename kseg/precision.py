"""The precision and compilation a run uses when its config says ``auto``, chosen for the hardware
(:mod:`kseg.device`) and the Keras backend; :func:`kseg.experiment.run.resolve_config` resolves both before a
run's identity is hashed."""

from __future__ import annotations

from kseg import device
from kseg._errors import invalid_value, unknown_name

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


def resolve_precision(precision: str = "auto") -> str:
    """``auto`` is mixed_bfloat16 where the hardware computes bf16 natively (a GPU, or a CPU with
    AVX512-BF16/AMX, where TensorFlow trained 1.3-1.7x and Keras-on-torch 1.3-2.1x faster than in
    float32, at the same IoU: docs/benchmarks.md), else float32. JAX stays float32 on a CPU: there
    its bf16 trained at 0.91-1.06x its float32 speed, no gain for the lost precision."""
    if precision not in PRECISIONS:
        raise unknown_name("precision", precision, PRECISIONS)
    if precision != "auto":
        return precision
    import keras  # here: PRECISIONS, a flag's choices, needs no backend

    if device.on_gpu():
        return "mixed_bfloat16"
    if device.cpu_has_bf16() and keras.backend.backend() != "jax":
        return "mixed_bfloat16"
    return "float32"


def resolve_jit_compile(jit_compile: str | bool = "auto") -> bool:
    """``auto``: on for JAX (it always compiles); for TensorFlow on a GPU and on a CPU without bf16
    hardware, where XLA trained float32 at 1.27-1.58x the speed of TensorFlow's own kernels (a
    2-core AVX2 EPYC); off for TensorFlow on a CPU with bf16, where XLA trained at 0.53-0.92x of
    them (docs/benchmarks.md), and for PyTorch, whose torch.compile costs minutes per model (139 s for
    U-Net on the AVX2 EPYC) and breaks on some ops."""
    if isinstance(jit_compile, bool):
        return jit_compile
    if jit_compile in ("true", "True", "1"):
        return True
    if jit_compile in ("false", "False", "0"):
        return False
    if jit_compile != "auto":
        raise invalid_value("jit_compile", "auto, true or false", jit_compile)
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        return True
    return backend == "tensorflow" and (device.on_gpu() or not device.cpu_has_bf16())


__all__ = ["PRECISIONS", "resolve_precision", "resolve_jit_compile"]
