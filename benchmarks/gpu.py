"""One table of throughput against the device's physical limits: loaders, training, PGD, inference.

    python -m benchmarks.gpu                                        # CUDA, the paper's models
    python -m benchmarks.gpu --sections train,infer --models vit_small_p4 --modes bf16,compile --out gpu.csv
    python -m benchmarks.gpu --device cpu --small                   # a check of the script: tiny models

One row per measurement: section, model (or backend), mode, batch, images/s, extra, note.
- device: memory bandwidth, from a copy of a large tensor on the device (read + write bytes/s; a host
  memcpy on a CPU), and peak dense bf16 FLOP/s (PEAK_TFLOPS by device name, or --peak-tflops; else no MFU).
- loader: images/s per backend on CIFAR-shaped data (uint8 3x32x32, pad-4 crop + flip, float32 on the
  device); extra = images/s / (bandwidth / BYTES_PER_IMAGE), the least any loader moves per image. Wall
  time per epoch between device-wide syncs (host work and ffcv's own CUDA streams count), after a warm-up.
- train: forward, cross-entropy, backward, AdamW (utils.train.make_optimizer) on random [0, 1] images;
  extra = MFU = images/s x 3 x forward FLOPs per image / peak dense bf16 FLOP/s in every mode (backward
  ~ 2 x forward; cost.count_flops: multiply-add = 2, matmuls, convolutions and attention only; the MLP's
  64x64 resize counts through its larger matmuls). An out-of-memory batch is skipped, and the larger ones.
- pgd: PGD-10 (L-inf 8/255, step 2/255, random start), utils.experiments.attacks.pgd and torchattacks.PGD
  on the same model and batch, interleaved; extra = ours / torchattacks. fp32 and bf16 only.
- infer: utils.experiments.cost.measure (eval, no grad) at batch 1 and the largest batch; note = median
  latency (IQR); extra = MFU with 1 x forward FLOPs.
Modes: fp32 (eager, float32 matmul precision as set: see the header), bf16 (autocast), compile
(torch.compile of the fp32 model; not in --small's default, as C++ builds take minutes on a CPU),
channels_last (CNNs). Times are medians of --repeats synchronised calls after warm-up
(utils.timing.time_calls: CUDA events on a GPU, perf_counter on a CPU).
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import re
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
import torchattacks

from benchmarks.loaders import cifar_shaped
from utils import models
from utils.data import Augment, make_loader
from utils.experiments import attacks, cost
from utils.timing import sync, time_calls
from utils.train import TrainConfig, make_optimizer

SECTIONS = ("loader", "train", "pgd", "infer")
SHAPE = (3, 32, 32)  # CIFAR; the MLP resizes to 64x64 inside
BYTES_PER_IMAGE = 3 * 32 * 32 * (1 + 4)  # uint8 read + float32 written
MAX_SECONDS = 10.0  # per measurement: stop repeating after this much timing (after min(repeats, 5) calls)
# Peak dense (non-sparse) tensor TFLOP/s, bf16 with fp32 accumulate (fp16 on T4 and V100, which lack bf16),
# vendor datasheet (NVIDIA product datasheets; Ampere/Ada whitepapers for the RTX cards). First match wins
# (case-insensitive search of torch.cuda.get_device_name()), so variants precede their base names.
PEAK_TFLOPS = (
    (r"H100.*PCIe", 756.0), (r"H100.*NVL", 835.0), (r"H100", 989.0),  # H100 plain: SXM
    (r"H200.*NVL", 835.0), (r"H200", 989.0),
    (r"A100", 312.0), (r"L40S", 362.0), (r"\bL4\b", 121.0), (r"\bA10\b", 125.0),
    (r"RTX 4090", 165.2), (r"RTX 3090", 71.0), (r"\bT4\b", 65.0), (r"V100", 125.0),
)
# Flag defaults, full size (CUDA) and --small (a CPU check of the script). n: loader images; steps: training
# steps per timed block; warmup: untimed training steps / inference calls; workers: DataLoader processes /
# ffcv threads; copy_mib: the bandwidth copy (MiB); threads: torch's CPU threads, 0 = as set (one for --small:
# tiny ops on a shared CPU spend most of their time waiting at thread barriers)
FULL = dict(models="mlp_b12_wi1024,resnet18_cifar,vit_small_p4", batch_sizes="512,4096",
            modes="fp32,bf16,compile", n=50000, loader_batch=512, pgd_batch=512, repeats=5, steps=3,
            warmup=3, workers=8, copy_mib=1024, threads=0)
SMALL = dict(models="test_mlp,test_cnn,test_vit", batch_sizes="8,32", modes="fp32,bf16", n=2048,
             loader_batch=256, pgd_batch=16, repeats=3, steps=1, warmup=1, workers=1, copy_mib=64,
             threads=1)


# ---------------------------------------------------------------- rows and the table


def row(section: str, model: str, mode: str, batch: int | str = "", rate: float | None = None,
        extra: float | None = None, kind: str = "", note: str = "") -> dict:
    nan = float("nan")  # blank in the table
    return dict(section=section, model=model, mode=mode, batch=batch, images_per_s=nan if rate is None
                else rate, extra=nan if extra is None else extra, extra_kind=kind, note=note)


def show_extra(r: dict) -> str:
    if math.isnan(r["extra"]):
        return ""
    if r["extra_kind"].startswith("vs "):
        return f"{r['extra']:.2f}x {r['extra_kind']}"
    return f"{r['extra_kind']} {r['extra']:.2%}"


def markdown(table: pd.DataFrame) -> str:
    lines = ["| section | model / backend | mode | batch | images/s | extra | note |",
             "|---|---|---|---:|---:|---:|---|"]
    for r in table.to_dict("records"):
        rate = "" if math.isnan(r["images_per_s"]) else f"{r['images_per_s']:,.0f}"
        cells = (r["section"], r["model"], r["mode"], r["batch"], rate, show_extra(r), r["note"])
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def progress(r: dict) -> dict:
    """One plain line per measurement on stderr (the table waits for the end)."""
    print("[gpu]", *(r[k] for k in ("section", "model", "mode", "batch", "images_per_s", "note")),
          file=sys.stderr, flush=True)
    return r


# ---------------------------------------------------------------- device limits


def peak_flops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    """(peak dense bf16 FLOP/s or None, where it came from)."""
    if override is not None:
        return override * 1e12, "--peak-tflops"
    if device.type != "cuda":
        return None, "unknown on a CPU: MFU blank (give --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    tflops = known_peak(name)
    if tflops is None:
        return None, f"{name} not in PEAK_TFLOPS: MFU blank (give --peak-tflops)"
    return tflops * 1e12, "vendor datasheet, dense bf16"


def known_peak(device_name: str) -> float | None:
    """PEAK_TFLOPS's entry for a CUDA device name, e.g. "NVIDIA H100 PCIe" -> 756.0; None if unknown."""
    return next((t for pattern, t in PEAK_TFLOPS if re.search(pattern, device_name, re.IGNORECASE)), None)


def bandwidth(device: torch.device, mib: int, repeats: int) -> float:
    """Bytes/s of copying a `mib` MiB tensor into another on the device (read + write counted)."""
    src = torch.empty(mib * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up: touches the pages on a CPU
    sync(device)
    return 2 * src.numel() / median_seconds(lambda: dst.copy_(src), device, max(repeats, 10))


# ---------------------------------------------------------------- helpers shared by the sections


def fresh_inputs(batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(batch)
    x = torch.rand(batch, *SHAPE, generator=gen)  # (B, C, H, W) in [0, 1]
    return x.to(device), torch.randint(0, 10, (batch,), generator=gen).to(device)


def is_oom(err: BaseException) -> bool:
    """CUDA (or cuBLAS) out of memory, also when torch.compile wraps it in its own error."""
    text = str(err).lower()
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in text or "alloc_failed" in text


def guarded(fn: Callable[[], object], device: torch.device) -> tuple[object | None, str]:
    """(fn(), "") or (None, why): "OOM: skipped", or "failed: ..." with the traceback on stderr, so that one
    broken measurement does not end a long run. Memory and compiled graphs are freed either way."""
    try:
        return fn(), ""
    except Exception as err:
        if is_oom(err):
            return None, "OOM: skipped"
        traceback.print_exc()
        return None, f"failed: {type(err).__name__}: {(str(err).splitlines() or [''])[0][:80]}"
    finally:
        torch.compiler.reset()
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def autocast(device: torch.device, mode: str):
    """bf16 autocast, on a CPU too (utils.models.autocast is a no-op there: its bf16 would time fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if mode == "bf16" else nullcontext()


def prepare(net: torch.nn.Module, x: torch.Tensor, mode: str) -> tuple[Callable, torch.Tensor]:
    """(forward, input) for a mode; bf16 is the caller's autocast."""
    if mode == "channels_last":
        return net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    if mode == "compile":
        return torch.compile(net, dynamic=False), x
    return net, x


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    return statistics.median(time_calls(fn, device, repeats, MAX_SECONDS))


# ---------------------------------------------------------------- 1. loaders


def wall_seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of fn between two device-wide syncs (a loader's host work and ffcv's own streams count)."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def loader_rate(backend: str, ds, args: argparse.Namespace, tmp: Path) -> tuple[float | None, str]:
    if backend == "ffcv":
        try:
            import utils.data.ffcv  # noqa: F401
        except ImportError as err:
            return None, f"skipped: {str(err).splitlines()[0][:90]}"
    loader = make_loader(ds, args.loader_batch, train=True, device=args.device,
                         backend=backend, augment=Augment(pad=4, flip=True), num_workers=args.workers,
                         path=str(tmp / "bench.beton"))
    epoch = lambda: sum(len(y) for _x, y in loader)  # images per epoch (drop_last), made on the device
    seen = epoch()  # warm-up: workers, numba compilation, allocator
    seconds = [wall_seconds(epoch, torch.device(args.device)) for _ in range(args.repeats)]
    return seen / statistics.median(seconds), ""


def loader_rows(args: argparse.Namespace, bytes_per_s: float) -> Iterator[dict]:
    bound = bytes_per_s / BYTES_PER_IMAGE  # images/s if every image cost only its minimum bytes
    ds, threads = cifar_shaped(args.n), torch.get_num_threads()
    where = {"resident": "set on the device", "torch": f"{args.workers} DataLoader workers",
             "ffcv": f"{args.workers} ffcv threads"}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            rate, note = loader_rate(backend, ds, args, Path(tmp))
            torch.set_num_threads(threads)  # ffcv sets torch's thread count to its own (1 on import)
            note = note or f"N={args.n}, {where.get(backend, '')}"
            yield row("loader", backend, "uint8->fp32", args.loader_batch, rate,
                      None if rate is None else rate / bound, "BW", note)


# ---------------------------------------------------------------- 2. training


def train_rate(base: torch.nn.Module, batch: int, mode: str, args: argparse.Namespace) -> float:
    device = torch.device(args.device)
    net = copy.deepcopy(base).to(device).train()
    x, y = fresh_inputs(batch, device)
    forward, x = prepare(net, x, mode)
    opt = make_optimizer(net, TrainConfig())  # AdamW, as training uses

    def step() -> None:
        with autocast(device, mode):
            logits = forward(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):  # compilation, cuDNN/cuBLAS selection, optimizer state
        step()
    sync(device)
    block = lambda: [step() for _ in range(args.steps)]
    return args.steps * batch / median_seconds(block, device, args.repeats)


def mfu(rate: float | None, flops: float, peak: float | None) -> float | None:
    return None if rate is None or peak is None else rate * flops / peak


def train_rows(name: str, base: torch.nn.Module, flops: int, args: argparse.Namespace,
               peak: float | None) -> Iterator[dict]:
    device = torch.device(args.device)
    for mode in args.modes.split(","):
        if mode not in cost.supported_modes(base, device):
            yield row("train", name, mode, note=f"skipped: {mode} not supported for {name} on {device.type}")
            continue
        oom_at = None
        for batch in sorted(map(int, args.batch_sizes.split(","))):
            if oom_at is not None:
                yield row("train", name, mode, batch, note=f"skipped: OOM at batch {oom_at}")
                continue
            rate, note = guarded(lambda b=batch, m=mode: train_rate(base, b, m, args), device)
            oom_at = batch if note.startswith("OOM") else None
            yield row("train", name, mode, batch, rate, mfu(rate, 3 * flops, peak), "MFU", note)


# ---------------------------------------------------------------- 3. PGD


def pgd_rows(name: str, base: torch.nn.Module, args: argparse.Namespace) -> Iterator[dict]:
    device = torch.device(args.device)
    net = copy.deepcopy(base).to(device).eval()
    x, y = fresh_inputs(args.pgd_batch, device)
    eps, alpha = 8 / 255, 2 / 255
    ref = torchattacks.PGD(net, eps=eps, alpha=alpha, steps=10, random_start=True)
    runs = {"utils pgd": lambda: attacks.pgd(net, x, y, eps, steps=10, step_size=alpha),
            "torchattacks": lambda: ref(x, y)}
    for mode in [m for m in args.modes.split(",") if m in ("fp32", "bf16")]:
        if mode not in cost.supported_modes(net, device):
            yield row("pgd", name, mode, note=f"skipped: {mode} not supported on {device.type}")
            continue
        times, note = guarded(lambda m=mode: interleaved(runs, device, m, args.repeats), device)
        if times is None:
            yield row("pgd", name, mode, args.pgd_batch, note=note)
            continue
        ours, theirs = (args.pgd_batch / statistics.median(times[k]) for k in runs)
        yield row("pgd", f"{name} utils pgd", mode, args.pgd_batch, ours, ours / theirs, "vs torchattacks",
                  "utils.experiments.attacks.pgd, no early stop")
        yield row("pgd", f"{name} torchattacks", mode, args.pgd_batch, theirs, note="torchattacks.PGD")


def interleaved(runs: dict[str, Callable], device: torch.device, mode: str, repeats: int) -> dict[str, list]:
    """Seconds per call of each attack, alternating (load on a shared machine hits both alike)."""
    times = {k: [] for k in runs}
    with autocast(device, mode):
        for fn in runs.values():
            fn()  # warm-up
        for _ in range(repeats):
            for k, fn in runs.items():
                times[k] += time_calls(fn, device, 1, None)
    return times


# ---------------------------------------------------------------- 4. inference


def infer_rows(name: str, base: torch.nn.Module, flops: int, args: argparse.Namespace,
               peak: float | None) -> Iterator[dict]:
    device = torch.device(args.device)
    batches = sorted({1, max(map(int, args.batch_sizes.split(",")))})
    for mode in args.modes.split(","):
        if mode not in cost.supported_modes(base, device):
            yield row("infer", name, mode, note=f"skipped: {mode} not supported for {name} on {device.type}")
            continue
        table, note = guarded(lambda m=mode: cost.measure(
            base, SHAPE, batch_sizes=batches, device=device, mode=m, repeats=3 * args.repeats,
            warmup=args.warmup, max_seconds=MAX_SECONDS, progress=False), device)
        if table is None:
            yield row("infer", name, mode, max(batches), note=note)
            continue
        for r in table.to_dict("records"):
            note = f"latency {r['latency_ms']:.3g} ms (IQR {r['latency_iqr_ms']:.2g})"
            rate = r["throughput"]
            yield row("infer", name, mode, r["batch_size"], rate, mfu(rate, flops, peak), "MFU", note)


# ---------------------------------------------------------------- main


def model_rows(args: argparse.Namespace, sections: list[str], peak: float | None) -> Iterator[dict]:
    for name in args.models.split(","):
        torch.manual_seed(0)
        base = models.create_model(name, num_classes=10, in_chans=3, img_size=32)  # CPU; copied per run
        flops = cost.count_flops(base, SHAPE)  # forward FLOPs per image
        if "train" in sections:
            yield from train_rows(name, base, flops, args, peak)
        if "pgd" in sections:
            yield from pgd_rows(name, base, args)
        if "infer" in sections:
            yield from infer_rows(name, base, flops, args, peak)


def device_rows(args: argparse.Namespace, device: torch.device) -> tuple[list[dict], float, float | None]:
    bytes_per_s = bandwidth(device, args.copy_mib, args.repeats)
    peak, source = peak_flops(device, args.peak_tflops)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    tflops = f"{peak / 1e12:,.1f} TFLOP/s, " if peak else ""
    rows = [row("device", name, "copy", note=f"memory bandwidth {bytes_per_s / 1e9:,.1f} GB/s (measured "
                f"{args.copy_mib} MiB copy, read + write) = {bytes_per_s / BYTES_PER_IMAGE:,.0f} images/s at "
                f"{BYTES_PER_IMAGE} B/image"),
            row("device", name, "bf16", note=f"peak {tflops}{source}")]
    return rows, bytes_per_s, peak


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"],
                   default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--small", action="store_true", help="tiny test_* models, small N and batches (seconds)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {SECTIONS}")
    p.add_argument("--models", help=f"comma-separated; default {FULL['models']} (--small: {SMALL['models']})")
    p.add_argument("--batch-sizes", help=f"training; default {FULL['batch_sizes']} ({SMALL['batch_sizes']})")
    p.add_argument("--modes", help=f"of {', '.join(cost.MODES)}; default {FULL['modes']} ({SMALL['modes']})")
    p.add_argument("--repeats", type=int, help="timed calls per measurement (median reported)")
    p.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s, instead of PEAK_TFLOPS")
    p.add_argument("--out", help="also write the table as CSV here")
    p.add_argument("--backends", default="resident,torch,ffcv", help="loader backends")
    for key in ("n", "loader_batch", "pgd_batch", "steps", "warmup", "workers", "copy_mib", "threads"):
        p.add_argument(f"--{key.replace('_', '-')}", type=int, help=f"default {FULL[key]} ({SMALL[key]})")
    args = p.parse_args(argv)
    for key, value in (SMALL if args.small else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    bad = [m for m in args.modes.split(",") if m not in cost.MODES]
    bad += [s for s in args.sections.split(",") if s not in SECTIONS]
    if bad:
        p.error(f"unknown {bad}; modes: {', '.join(cost.MODES)}; sections: {', '.join(SECTIONS)}")
    return args


def measure_all(args: argparse.Namespace) -> pd.DataFrame:
    device, sections = torch.device(args.device), args.sections.split(",")
    rows, bytes_per_s, peak = device_rows(args, device)
    if "loader" in sections:
        rows += map(progress, loader_rows(args, bytes_per_s))
    rows += map(progress, model_rows(args, sections, peak))
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Run the benchmark, print the markdown table (and write --out); returns the table."""
    args, before = parse(argv), torch.get_num_threads()
    torch.set_num_threads(args.threads or before)
    try:
        table = measure_all(args)
    finally:
        torch.set_num_threads(before)
    print(f"benchmarks.gpu on {table.model[0]} ({args.device}), torch {torch.__version__}, "
          f"{args.threads or before} threads, fp32 matmul precision {torch.get_float32_matmul_precision()}; "
          f"medians of {args.repeats}; MFU = images/s x 3 (train) or 1 (infer) x forward FLOPs / peak bf16\n")
    print(markdown(table))
    if args.out:
        table.to_csv(args.out, index=False)
    return table


if __name__ == "__main__":
    main()
