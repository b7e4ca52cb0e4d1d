"""PGD throughput (images/s): utils.attacks.pgd against torchattacks' PGD, same model, batch and settings.

    python -m benchmarks.attacks --models cnn_small,mlp_b4_wi256 --batch-size 128 --steps 10 --device cpu

L-inf eps 8/255, step 2/255, random start, `--steps` iterations, on random (C, H, W) images in [0, 1]
(untrained models: the cost of a step does not depend on the weights). One warm-up call per attack, then
`--repeats` timed calls each, interleaved (so load on a shared machine hits both alike), median reported.
Ours runs without early stop: the same work as torchattacks (early_stop=True only saves more).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchattacks

from utils import models
from utils.experiments import attacks
from utils.timing import sync


def seconds(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def bench(name: str, args: argparse.Namespace) -> list[tuple[str, str, float]]:
    """[(model, attack, images/s)] for ours and torchattacks' PGD on one model."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = models.create_model(name, num_classes=10, in_chans=args.channels, img_size=args.size).to(device)
    model.eval()
    x = torch.rand(args.batch_size, args.channels, args.size, args.size, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    eps, alpha = 8 / 255, 2 / 255
    ref = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=args.steps, random_start=True)
    runs = {
        "utils.attacks.pgd": lambda: attacks.pgd(model, x, y, eps, steps=args.steps, step_size=alpha),
        "torchattacks.PGD": lambda: ref(x, y),
    }
    times = {k: [] for k in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(args.repeats):
        for k, fn in runs.items():
            times[k].append(seconds(fn, device))
    return [(name, k, args.batch_size / statistics.median(t)) for k, t in times.items()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="cnn_small,mlp_b4_wi256")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--size", type=int, default=28, help="image side (pixels)")
    args = parser.parse_args(argv)
    shape = f"{args.channels}x{args.size}x{args.size}"
    print(f"PGD L-inf 8/255, {args.steps} steps, batch {args.batch_size} x {shape}, {args.device}, "
          f"{torch.get_num_threads()} torch threads, median of {args.repeats}")
    rows = [r for name in args.models.split(",") for r in bench(name, args)]
    base = {m: rate for m, k, rate in rows if k == "torchattacks.PGD"}
    print("\n| model | attack | images/s | vs torchattacks |\n|---|---|---:|---:|")
    for m, k, rate in rows:
        print(f"| {m} | {k} | {rate:,.0f} | {rate / base[m]:.2f}x |")


if __name__ == "__main__":
    main()
