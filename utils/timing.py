"""Timing as accelerators demand it: synchronise, then read the clock.

    sync(device)                                     # wait for queued CUDA work; a no-op on a CPU
    time_calls(fn, device, repeats=20, max_seconds=None)   # seconds per call, synchronised

Used by the cost experiment (05), the training loop's images/s, and the benchmarks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def time_calls(fn: Callable[[], object], device: torch.device, repeats: int, max_seconds: float | None
                ) -> list[float]:
    """Seconds per call of `fn`, synchronised: CUDA events on a GPU, perf_counter on a CPU. Stops early
    after `max_seconds` of timing, but never before min(repeats, 5) calls."""
    times, start = [], time.perf_counter()
    for i in range(repeats):
        if device.type == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) / 1e3)  # ms -> s
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        if max_seconds is not None and i + 1 >= min(repeats, 5) and time.perf_counter() - start > max_seconds:
            break
    return times


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
