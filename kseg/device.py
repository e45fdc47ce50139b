"""What kseg knows about the hardware it runs on: the CPU's model name and flags, whether bf16
has hardware support, whether Keras sees a GPU, and the device string that enters every run's
identity. The benchmarks (``benchmarks/``) print and record the same facts.

bf16 counts as supported only with ``avx512_bf16`` or ``amx_bf16`` (x86) or ``bf16`` (Arm's
``Features``). Without them PyTorch and oneDNN emulate bf16 with fp32 arithmetic plus
conversions, slower than fp32 itself: precision ``auto`` then trains in float32, and the
benchmarks skip bf16.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

# The flags printed and recorded: fp32 SIMD width, then bf16 dot products and AMX tiles.
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
CPUINFO = Path("/proc/cpuinfo")


def read_cpuinfo() -> str:
    """/proc/cpuinfo's text, or "" where there is none (macOS, Windows). Tests replace this."""
    try:
        return CPUINFO.read_text()
    except OSError:
        return ""


def cpu_flags() -> set[str]:
    """The first CPU's feature flags (x86 ``flags``, Arm ``Features``) from ``read_cpuinfo``."""
    for line in read_cpuinfo().splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


def cpu_model() -> str:
    """``lscpu``'s "Model name" (several lines on hybrid CPUs are joined with " / "); else
    /proc/cpuinfo's "model name"; else the platform's processor string."""
    if shutil.which("lscpu"):
        try:
            out = subprocess.run(
                ["lscpu"], capture_output=True, text=True, timeout=10, env={**os.environ, "LC_ALL": "C"}
            ).stdout
            names = [
                line.partition(":")[2].strip() for line in out.splitlines() if line.strip().startswith("Model name:")
            ]
            if names:
                return " / ".join(dict.fromkeys(names))
        except (OSError, subprocess.SubprocessError):
            pass
    for line in read_cpuinfo().splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "model name":
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def bf16_support(flags: set[str] | None = None) -> tuple[bool, str]:
    """(supported, why): whether bf16 is worth timing on this CPU, and the reason in words."""
    flags = cpu_flags() if flags is None else flags
    present = [f for f in BF16_FLAGS if f in flags]
    if present:
        return True, f"CPU has {', '.join(present)}"
    if not flags:
        return False, "CPU flags unknown (no /proc/cpuinfo): bf16 hardware support cannot be confirmed"
    return False, "CPU has no avx512_bf16 nor amx_bf16 flag: bf16 would be emulated, slower than fp32"


def machine_info(flags: set[str] | None = None) -> dict:
    """The JSON-ready record of this machine: CPU model, relevant flags, bf16, core count."""
    flags = cpu_flags() if flags is None else flags
    bf16, why = bf16_support(flags)
    return {
        "cpu_model": cpu_model(),
        "cpu_flags": {f: f in flags for f in RELEVANT_FLAGS},
        "bf16_supported": bf16,
        "bf16_reason": why,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }


def describe(info: dict) -> str:
    """One line for the top of the output."""
    flags = " ".join(f"{f}={'yes' if on else 'no'}" for f, on in info["cpu_flags"].items())
    return f"cpu: {info['cpu_model']} ({info['cpus']} cpus); flags: {flags}"


def cpu_kind(cpuinfo: str | None = None) -> str:
    """The CPU kind a timing belongs to, in the words kseg's docs use: the vendor's line (with
    AMD's core generation where its family says it) and the widest matrix/vector feature, e.g.
    "AMD EPYC Zen 4, avx512_bf16", "AMD EPYC Zen 3, avx2" or "Intel Xeon, amx". Times carry
    between machines of one kind, not across kinds."""
    cpuinfo = read_cpuinfo() if cpuinfo is None else cpuinfo
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    flags = set(fields.get("flags", fields.get("features", "")).split())
    isa = next((f for f in ("amx_tile", "avx512_bf16", "avx512f", "avx2") if f in flags), "baseline")
    isa = "amx" if isa == "amx_tile" else isa
    name = fields.get("model name", "") or "cpu"
    vendor = fields.get("vendor_id", "")
    if vendor == "AuthenticAMD" and fields.get("cpu family", "").isdigit():
        family = int(fields["cpu family"])
        generation = "Zen 5" if family == 26 else ("Zen 4" if "avx512f" in flags else "Zen 3") if family == 25 else ""
        name = f"{name} {generation}".strip()
    elif vendor == "GenuineIntel":
        name = " ".join(name.replace("(R)", "").replace("(TM)", "").split())
    return f"{name}, {isa}"


def cpu_has_bf16() -> bool:
    """True where the CPU computes bf16 natively (:data:`BF16_FLAGS`)."""
    return bf16_support()[0]


def on_gpu() -> bool:
    """True where Keras' backend sees a GPU (device names differ: "gpu:0", "cuda:0", ...)."""
    import keras  # here, so that the benchmarks' driver can read the CPU without a backend

    try:
        devices = keras.distribution.list_devices()
    except (AttributeError, NotImplementedError):
        # The torch backend has no distribution library; a tensor shows where Keras puts data.
        devices = [str(keras.ops.convert_to_tensor(0.0).device)]
    return any(d.lower().split(":")[0].endswith(("gpu", "cuda")) for d in devices)


def device_description() -> str:
    """Where runs execute, for the leaderboard and every run's identity: "gpu", or /proc/cpuinfo's
    model name and the core count (not lscpu's longer name: the committed rows' hashes hold this)."""
    if on_gpu():
        return "gpu"
    model = next(
        (line.split(":", 1)[1].strip() for line in read_cpuinfo().splitlines() if line.startswith("model name")), "cpu"
    )
    return f"{model} ({os.cpu_count()} cores)"


__all__ = [
    "BF16_FLAGS",
    "RELEVANT_FLAGS",
    "bf16_support",
    "cpu_flags",
    "cpu_has_bf16",
    "cpu_kind",
    "cpu_model",
    "describe",
    "device_description",
    "machine_info",
    "on_gpu",
    "read_cpuinfo",
]
