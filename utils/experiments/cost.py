"""What a model costs: size, FLOPs, activation memory, latency and throughput (calibration: utils.metrics).

    count_params(net)                               # (total, trainable)
    param_bytes(net)                                # bytes of the parameters (buffers not included)
    count_flops(net, (1, 28, 28))                   # FLOPs of a forward pass on one image (multiply-add = 2)
    summary(net, (1, 28, 28)).activation_bytes      # torchinfo's forward/backward pass size
    measure(net, (1, 28, 28), batch_sizes=(1, 64), mode="bf16")   # DataFrame, one row per batch size
    headline(throughput); pareto_front(x, y); cost_table(...)   # the notebook's tables

Timing covers the model only: inputs are made on the device before the clock starts, the model is warmed
up, and every call is timed with device synchronisation (CUDA events on a GPU, time.perf_counter on a CPU).
Latency is reported as the median and inter-quartile range over the repeats; throughput is
batch size / median latency.

Modes (`MODES`) and what "the device cannot run it" means here (`supported_modes` says which apply):
- "fp32": eager float32; always.
- "bf16": eager under bf16 autocast. On CUDA it needs native bf16 (Ampere or later); on a CPU it needs
  native bf16 arithmetic (AVX512-BF16 or AMX). Without it PyTorch emulates bf16 through float32, which
  runs but times the emulation, not the format, so the mode is refused.
- "compile": `torch.compile` (inductor). A CPU needs a C++ compiler on PATH ($CXX, g++, c++ or clang++);
  CUDA needs triton and compute capability >= 7.0; both need dynamo support for this Python.
- "channels_last": a copy of the model and the input in channels-last memory format; CNNs only (see
  `is_cnn`), since for an MLP or a ViT it only reorders the input tensor.
A refused mode raises ValueError naming the modes this model and device support.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .. import cpu, metrics, models
from ..config import resolve
from ..models import eval_mode, model_device
from ..progress import bar as progress_bar
from ..timing import sync, time_calls

MODES = ("fp32", "bf16", "compile", "channels_last")
Shape = Sequence[int]  # one sample's shape, e.g. (C, H, W); the batch dimension is added here


# ---------------------------------------------------------------- size and FLOPs


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts; a parameter shared between modules counts once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def param_bytes(model: nn.Module, buffers: bool = False) -> int:
    """Bytes the parameters occupy (numel x element size); `buffers=True` adds BatchNorm statistics etc."""
    tensors = list(model.parameters()) + (list(model.buffers()) if buffers else [])
    return sum(t.numel() * t.element_size() for t in tensors)


def count_flops(model: nn.Module, input_shape: Shape, batch_size: int = 1) -> int:
    """FLOPs of one forward pass on a batch of `batch_size` samples of `input_shape`, in eval mode.

    Counted by torch.utils.flop_counter.FlopCounterMode: a multiply-add counts as 2 FLOPs, and only
    matrix products, convolutions and attention are counted (bias adds, activations, norms and softmax are
    not), so a bias-free Linear(i, o) on batch B is exactly 2 * B * i * o."""
    x = torch.rand(batch_size, *input_shape, device=model_device(model))
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOPS)
    with eval_mode(model), torch.no_grad(), counter:
        model(x)
    return int(counter.get_total_flops())


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)  # the two attention matmuls, 2 per MAC


# Ops torch's counter does not know: without this, attention through scaled_dot_product_attention on a CPU
# (its fused flash kernel) would count 0 FLOPs while the same attention on CUDA is counted.
_EXTRA_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


# ---------------------------------------------------------------- torchinfo summary


class Summary:
    """torchinfo's per-layer table (`table`, a string) and its totals, in bytes."""

    def __init__(self, stats, input_bytes: int):
        self.table = str(stats)
        self.params, self.trainable = int(stats.total_params), int(stats.trainable_params)
        self.param_bytes = int(stats.total_param_bytes)
        self.input_bytes = input_bytes  # the float32 batch (torchinfo's own figure adds Python overhead)
        # torchinfo's "forward/backward pass size": the outputs of every leaf layer that has parameters,
        # x2 (the activation and its gradient). A training-memory estimate, not a measured peak.
        self.activation_bytes = int(stats.total_output_bytes)

    def __repr__(self) -> str:
        return self.table


def summary(model: nn.Module, input_shape: Shape, batch_size: int = 1, depth: int = 3) -> Summary:
    """torchinfo.summary on a batch of `batch_size` samples of `input_shape` (eval mode, model's device)."""
    import torchinfo

    with eval_mode(model):
        stats = torchinfo.summary(
            model,
            input_size=(batch_size, *input_shape),
            depth=depth,
            device=model_device(model),
            col_names=("output_size", "num_params", "mult_adds"),
            mode="eval",
            verbose=0,
        )
    return Summary(stats, input_bytes=4 * batch_size * math.prod(input_shape))


# ---------------------------------------------------------------- which modes a device can run


def is_cnn(model: nn.Module) -> bool:
    """A registered model: its family is "cnn". Otherwise: it has a convolution with overlapping windows
    (stride < kernel), which a ViT's or Mixer's patch embedding (stride == kernel) does not."""
    name = getattr(model, "model_name", None)
    if name in models.list_models():
        return models.family(name) == "cnn"
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return any(s < k for m in convs for s, k in zip(m.stride, m.kernel_size, strict=True))


def _cpu_has_bf16() -> bool:
    """Native bf16 arithmetic on this CPU (AVX512-BF16 or AMX; utils.cpu, which $MLPZOOM_CPU_BF16 forces)."""
    return cpu.native_bf16()


def _cuda_has_bf16() -> bool:
    """Native bf16 on the GPU (Ampere and later); the default of is_bf16_supported also accepts emulation."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


def _has_cxx_compiler() -> bool:
    return any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c)


def _can_compile(device: torch.device) -> bool:
    if not torch._dynamo.is_dynamo_supported():
        return False
    if device.type == "cpu":
        return _has_cxx_compiler()
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.get_device_capability(device)[0] >= 7


def supported_modes(model: nn.Module, device: str | torch.device) -> tuple[str, ...]:
    """The modes of MODES that `model` can be measured in on `device` (see the module docstring)."""
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"timing supports cpu and cuda devices; got {device}")
    ok = {
        "fp32": True,
        "bf16": _cuda_has_bf16() if device.type == "cuda" else _cpu_has_bf16(),
        "compile": _can_compile(device),
        "channels_last": is_cnn(model),
    }
    return tuple(m for m in MODES if ok[m])


def check_mode(model: nn.Module, device: str | torch.device, mode: str) -> None:
    """ValueError, naming the supported modes, when `mode` is unknown or cannot run here."""
    if mode not in MODES:
        raise ValueError(f"unknown timing mode {mode!r}; modes: {', '.join(MODES)}")
    supported = supported_modes(model, device)
    if mode not in supported:
        why = {
            "bf16": "needs native bf16 (CUDA: Ampere or later; CPU: AVX512-BF16 or AMX)",
            "compile": "needs a C++ compiler on a CPU, triton and sm_70+ on CUDA",
            "channels_last": "applies to CNNs only",
        }[mode]
        raise ValueError(
            f"mode {mode!r} cannot run for {getattr(model, 'model_name', type(model).__name__)} on "
            f"{torch.device(device)} ({why}); supported here: {', '.join(supported)}"
        )


# ---------------------------------------------------------------- latency and throughput


def _prepare(model: nn.Module, mode: str, x: torch.Tensor, backend: str = "inductor"
             ) -> tuple[Callable, torch.Tensor]:
    """(forward function, input) for a mode; the caller's model is never modified."""
    if mode == "bf16":
        def forward(t):
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                return model(t)
        return forward, x
    if mode == "compile":
        torch.compiler.reset()  # each batch size compiles its own static graph (no recompile limit)
        return torch.compile(model, dynamic=False, backend=backend), x
    if mode == "channels_last":
        net = copy.deepcopy(model).to(memory_format=torch.channels_last)
        return net, x.contiguous(memory_format=torch.channels_last)
    return model, x


def _one_batch_size(model, input_shape, batch_size, device, mode, repeats, warmup, max_seconds,
                    backend="inductor") -> dict:
    x = torch.rand(batch_size, *input_shape, device=device)  # made before the clock starts
    forward, x = _prepare(model, mode, x, backend)
    t0 = time.perf_counter()
    forward(x)  # the first call: compilation for "compile", allocator and kernel selection for the rest
    sync(device)
    first = time.perf_counter() - t0
    for _ in range(warmup):
        forward(x)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = np.asarray(time_calls(lambda: forward(x), device, repeats, max_seconds))
    q25, med, q75 = np.percentile(times, [25, 50, 75])
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return {
        "mode": mode,
        "batch_size": batch_size,
        "repeats": len(times),
        "latency_ms": med * 1e3,  # median seconds per call -> ms
        "latency_q25_ms": q25 * 1e3,
        "latency_q75_ms": q75 * 1e3,
        "latency_iqr_ms": (q75 - q25) * 1e3,
        "throughput": batch_size / med,  # images/s at the median latency
        "first_call_ms": first * 1e3,  # includes compilation in "compile" mode
        "peak_mem_mb": peak,  # CUDA: peak allocated during the timed calls, weights included; CPU: NaN
    }


def measure(
    model: nn.Module,
    input_shape: Shape,
    *,
    batch_sizes: Sequence[int] = (1, 16, 64, 256),
    device: str | torch.device | None = None,
    mode: str = "fp32",
    repeats: int = 50,
    warmup: int = 5,
    max_seconds: float | None = None,  # per batch size: stop repeating after this much timing
    progress: bool = True,
    compile_backend: str = "inductor",  # torch.compile's backend in "compile" mode
) -> pd.DataFrame:
    """Latency (median, quartiles; ms per batch) and throughput (images/s) of the model alone, in eval mode
    without gradients, one row per batch size (columns: see `_one_batch_size`). `device` defaults to the
    model's; a model elsewhere is copied there. Raises ValueError for a mode this model/device cannot run."""
    device = torch.device(device) if device is not None else model_device(model)
    check_mode(model, device, mode)
    net = model if model_device(model) == device else copy.deepcopy(model).to(device)
    rows = []
    bar = progress_bar(batch_sizes, desc=f"{getattr(model, 'model_name', 'model')} {mode}", leave=False,
               disable=not progress)
    with eval_mode(net), torch.no_grad():
        for b in bar:
            rows.append(_one_batch_size(net, input_shape, b, device, mode, repeats, warmup, max_seconds,
                                        compile_backend))
    if mode == "compile":
        torch.compiler.reset()  # leave no compiled graphs of this model behind
    return pd.DataFrame(rows)


def headline(throughput: pd.DataFrame) -> pd.DataFrame:
    """Per mode (and per model when a `model` column is present): the latency at the smallest batch size
    measured, the best throughput, the batch size that gave it and its peak memory."""
    keys = [k for k in ("model", "mode") if k in throughput.columns]
    rows = []
    for key, g in throughput.groupby(keys, sort=False):
        small, best = g.loc[g.batch_size.idxmin()], g.loc[g.throughput.idxmax()]
        rows.append({
            **dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)),
            "latency_batch": int(small.batch_size),
            "latency_ms": small.latency_ms,
            "latency_iqr_ms": small.latency_iqr_ms,
            "best_batch": int(best.batch_size),
            "best_throughput": best.throughput,
            "best_peak_mem_mb": best.get("peak_mem_mb", float("nan")),  # CUDA only
        })
    return pd.DataFrame(rows)


def pareto_front(x: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """Boolean mask of the points not dominated when both x and y are better larger (e.g. throughput and
    accuracy): no other point is >= in both and > in one."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ge = (x[None, :] >= x[:, None]) & (y[None, :] >= y[:, None])  # [i, j]: j at least as good as i
    gt = (x[None, :] > x[:, None]) | (y[None, :] > y[:, None])
    return ~(ge & gt).any(axis=1)


def cost_table(throughput: pd.DataFrame, sizes: pd.DataFrame, quality: pd.DataFrame, **meta) -> pd.DataFrame:
    """05's tidy table, one row per model x mode: headline latency/throughput, sizes, top-1, ECE, `meta`
    columns (dataset, device, ...), and on_front: not beaten in both throughput and top-1 by another row."""
    cost = headline(throughput).merge(sizes, on="model").merge(quality, on="model").assign(**meta)
    return cost.assign(on_front=pareto_front(cost.best_throughput, cost.top1))


def wide_table(cost: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """cost_table pivoted to one row per model: size, FLOPs, memory, top-1, ECE, then per mode
    "latency <mode>" (ms at the smallest batch, IQR in brackets) and "throughput <mode>" (images/s at the
    best batch, the batch in brackets); "–" where a mode did not run."""
    show = cost.assign(
        latency=cost.latency_ms.map("{:.2f}".format) + " (IQR " + cost.latency_iqr_ms.map("{:.2f}".format)
        + ")",
        throughput=cost.best_throughput.map("{:,.0f}".format) + " (" + cost.best_batch.astype(str) + ")")
    wide = show.pivot(index="model", columns="mode", values=["latency", "throughput"])
    order = [(v, m) for v in ("latency", "throughput") for m in MODES if (v, m) in wide.columns]
    wide = wide[order].fillna("–")
    wide.columns = [f"{v} {m}" for v, m in wide.columns]
    front = cost.drop_duplicates("model").set_index("model")
    front = front.assign(params_m=front.params / 1e6, mflops=front.flops_per_image / 1e6)
    front = front[["params_m", "param_mb", "mflops", "activation_mb", "top1", "ece"]].round(3)
    return front.join(wide).assign(device=cost.device.iloc[0]).loc[list(models)]


# ---------------------------------------------------------------- notebook 05: its knobs and its tables


@dataclass(frozen=True)
class Config:
    """05's knobs. Defaults are full's; SMALLER holds what the other profiles change."""

    modes: list[str] = field(default_factory=lambda: list(MODES))  # timing modes; one a device or model
    # cannot run is skipped with the reason
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32, 128, 512, 1024])  # images per call
    repeats: int = 100  # timed calls per batch size, at most
    warmup: int = 10  # untimed calls after the first
    max_seconds: float = 10.0  # per batch size: stop repeating after this much timing
    n_images: int | None = None  # test images for top-1 and ECE (the first n); None: all
    n_bins: int = 15  # equal-width confidence bins for ECE and the reliability diagrams
    compile_backend: str = "inductor"  # torch.compile's backend in "compile" mode
    # "compile" mode times these of batch_sizes only: each batch size is a compile of its own static graph
    # (~40 s per model on a GPU box: estimate.RATES COMPILE_S; all six were 12 of full's counted minutes,
    # 1, 128 and 1024 were 6: issue 26's budget keeps the two ends, latency and throughput)
    compile_batch_sizes: list[int] = field(default_factory=lambda: [1, 1024])
    threads: int | None = None  # torch's CPU threads; None: torch's default. 1 on a shared CPU: with 2
    # threads on 2 busy cores every parallel op waits for a descheduled thread (batch-1: 80 ms, not 0.15)


SMALLER = {
    # quick leaves out "compile": inductor took 7-30 s per model and batch size on the 2-core CPU
    "quick": dict(modes=["fp32", "bf16", "channels_last"], batch_sizes=[1, 16, 64, 256], repeats=20, warmup=1,
                  max_seconds=2.0, threads=1),
    "smoke": dict(modes=["fp32", "bf16", "channels_last"], batch_sizes=[1, 8], repeats=5, warmup=1,
                  max_seconds=0.3, threads=1),
    # one batch size; dynamo traces each full-size model and AOTAutograd builds its graph (where a compile
    # fails: graph breaks, unsupported ops), but no inductor code is generated: on a CPU that is C++, which
    # full on a GPU never builds (triton), and it took ~60 s of CI's 05 with a cold cache
    "rehearsal": dict(batch_sizes=[1], repeats=2, warmup=1, max_seconds=0.3, compile_backend="aot_eager"),
}


def config(profile: str | None = None, **overrides) -> Config:
    """05's config under `profile`, with `overrides` (checked: unknown knobs and wrong types are errors)."""
    return resolve(Config, profile, SMALLER, overrides)


def size_table(nets: Mapping[str, nn.Module], shape: Shape) -> tuple[pd.DataFrame, dict[str, str]]:
    """Per model: parameters (all, trainable), parameter MB, FLOPs per image and torchinfo's activation MB
    at batch 1; and each model's torchinfo table as text."""
    rows, tables = [], {}
    for name, net in nets.items():
        total, trainable = count_params(net)
        info = summary(net, shape, depth=2)
        tables[name] = info.table
        rows.append({"model": name, "params": total, "trainable": trainable,
                     "param_mb": param_bytes(net) / 2**20, "flops_per_image": count_flops(net, shape),
                     "activation_mb": info.activation_bytes / 2**20})
    return pd.DataFrame(rows), tables


def batch_sizes(cfg: Config, mode: str) -> list[int]:
    """The batch sizes a mode is timed at: cfg.batch_sizes (for "compile": those in compile_batch_sizes)."""
    return [b for b in cfg.batch_sizes if mode != "compile" or b in cfg.compile_batch_sizes]


def throughput_table(nets: Mapping[str, nn.Module], shape: Shape, cfg: Config, device: str | torch.device
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`measure` for every model x mode of cfg: (one row per model x mode x batch size, the skipped model x
    mode pairs with the reason)."""
    frames, skipped = [], []
    for name, net in nets.items():
        for mode in cfg.modes:
            try:
                df = measure(net, shape, batch_sizes=batch_sizes(cfg, mode), device=device, mode=mode,
                             repeats=cfg.repeats, warmup=cfg.warmup, max_seconds=cfg.max_seconds,
                             compile_backend=cfg.compile_backend)
            except ValueError as err:  # a mode this device or model cannot run
                skipped.append({"model": name, "mode": mode, "reason": str(err)})
                continue
            frames.append(df.assign(model=name))
    return pd.concat(frames, ignore_index=True), pd.DataFrame(skipped, columns=["model", "mode", "reason"])


def quality_table(nets: Mapping[str, nn.Module], loader, n_bins: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Top-1 and ECE per model from the softmax of one float32 pass, and the reliability bins."""
    quality, bins = [], []
    for name, net in nets.items():
        probs, labels = metrics.predict_proba(net, loader)
        quality.append({"model": name, "top1": (probs.argmax(1) == labels).float().mean().item(),
                        "ece": metrics.expected_calibration_error(probs, labels, n_bins)})
        bins.append(metrics.reliability_bins(probs, labels, n_bins).assign(model=name))
    return pd.DataFrame(quality), pd.concat(bins, ignore_index=True)
