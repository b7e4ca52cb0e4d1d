"""Loader throughput (images/s) of the resident, torch (DataLoader) and ffcv backends on CIFAR-shaped data.

    python -m benchmarks.loaders --device cpu --n 50000 --batch-size 512 --epochs 3

Same work for every backend: uint8 3x32x32 images, pad-4 random crop + horizontal flip, output float32
in [0, 1] on the device. One warm-up epoch (workers, compilation), then full epochs timed with a sync.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from utils.data import Augment, DatasetInfo, ImageSet, make_loader
from utils.timing import sync


def cifar_shaped(n: int, seed: int = 0) -> ImageSet:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (n,), generator=gen)
    info = DatasetInfo("bench", 10, tuple(map(str, range(10))), 3, 32, (0.5,) * 3, (0.25,) * 3)
    return ImageSet(images, labels, info)


def images_per_second(loader, epochs: int, device: torch.device) -> float:
    """Images/s over `epochs` full passes after one warm-up pass; every batch is consumed on the device."""
    for _batch in loader:  # warm-up
        pass
    sync(device)
    seen, start = 0, time.perf_counter()
    for _ in range(epochs):
        for _x, y in loader:
            seen += len(y)
        sync(device)
    return seen / (time.perf_counter() - start)


def run(backend: str, ds: ImageSet, args: argparse.Namespace, tmp: Path) -> tuple[float | None, str]:
    if backend == "ffcv":
        try:
            import utils.data.ffcv  # noqa: F401
        except ImportError as err:
            return None, f"skipped: {str(err).splitlines()[0][:90]}"
    loader = make_loader(ds, args.batch_size, train=True, device=args.device, backend=backend,
                         augment=Augment(pad=4, flip=True), num_workers=args.workers,
                         path=str(tmp / "bench.beton"))
    return images_per_second(loader, args.epochs, torch.device(args.device)), ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--n", type=int, default=50000, help="images")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader processes / ffcv threads")
    parser.add_argument("--backends", default="resident,torch,ffcv")
    args = parser.parse_args(argv)
    ds = cifar_shaped(args.n)
    print(f"{args.n} images 3x32x32 uint8, batch {args.batch_size}, pad-4 crop + flip -> float32 on "
          f"{args.device}; {args.epochs} timed epochs, {torch.get_num_threads()} torch threads")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            rows.append((backend, *run(backend, ds, args, Path(tmp))))
    base = dict((b, r) for b, r, _ in rows).get("torch")
    print("\n| backend  | images/s | ms/batch | vs torch |\n|----------|---------:|---------:|---------:|")
    for backend, rate, note in rows:
        if rate is None:
            print(f"| {backend:8s} | {note} |")
            continue
        ratio = f"{rate / base:.1f}x" if base else "-"
        print(f"| {backend:8s} | {rate:8.0f} | {1e3 * args.batch_size / rate:8.2f} | {ratio:>8s} |")


if __name__ == "__main__":
    main()
