"""What this CPU is and whether it computes bf16 natively, read from /proc/cpuinfo without torch, so that
`.ci/run` can say it before anything is installed (`python3 -m utils.cpu`).

Why it matters: on a CPU without native bf16 (no AVX512-BF16, no AMX-BF16 on x86; no BF16 on Arm), torch
emulates bf16 matmuls, and a bf16-autocast training step of a transformer is several times slower than fp32
(measured on a 2-core AVX2 EPYC: vit_small_p4, batch 8, 3 s fp32 vs 25 s bf16; issue 24). The rehearsal
profile autocasts on a CPU only where this says yes; tests/test_bf16.py checks full's bf16 path on any CPU.

    native_bf16()   # True / False; MLPZOOM_CPU_BF16=0 (or 1) forces the answer, e.g. to time the slow path
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 flags; Arm's "Features" line says "bf16"
FORCE = "MLPZOOM_CPU_BF16"  # "0": act as if there were no native bf16; "1": as if there were


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux
        return []


def model() -> str:
    """The processor's name (the first 'model name' line), else platform.processor()."""
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def flags() -> set[str]:
    """The feature flags of the first processor ('flags' on x86, 'Features' on Arm)."""
    for line in _cpuinfo():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def bf16_flags() -> list[str]:
    """The native-bf16 flags this CPU has, in NATIVE_BF16_FLAGS order (empty: bf16 is emulated)."""
    have = flags()
    return [f for f in NATIVE_BF16_FLAGS if f in have]


def native_bf16() -> bool:
    """Whether bf16 autocast runs natively here; $MLPZOOM_CPU_BF16 ("0" / "1") overrides the flags."""
    forced = os.environ.get(FORCE, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        raise ValueError(f"{FORCE} must be 0 or 1 (or unset); got {forced!r}")
    return bool(bf16_flags())


def describe() -> str:
    """One line: 'CPU: <model>, <n> cores; native bf16: yes (avx512_bf16)'."""
    found = bf16_flags()
    native = native_bf16()
    why = ", ".join(found) if found else "no " + "/".join(NATIVE_BF16_FLAGS[:2])
    forced = f"; forced by {FORCE}={os.environ[FORCE]}" if os.environ.get(FORCE, "").strip() else ""
    return f"CPU: {model()}, {os.cpu_count()} cores; native bf16: {'yes' if native else 'no'} ({why}{forced})"


if __name__ == "__main__":
    print(describe())
