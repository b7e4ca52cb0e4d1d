"""Synthetic pixels in a real dataset's own file format, for the rehearsal profile and for tests: CIFAR-10
and CIFAR-100 python pickle batches and STL-10 binaries holding class-dependent gratings
(utils.data.synthetic), so that the full code path (decoding, caches, loaders, models, notebooks) runs
offline exactly as it will on the real files.

    write_cifar("cifar10", data_root() / "rehearsal", n_train=60, n_test=20)

The files go under a folder of their own (the rehearsal's `<data>/rehearsal/`), never where the real
dataset lives, so a fake file can never be trained on as CIFAR.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from ..files import atomic_write
from .sources import CIFAR10, CIFAR100, SUBDIRS
from .synthetic import class_params, render

_LAYOUT = {  # name: (info, training files, label key, meta file, its names key)
    "cifar10": (CIFAR10, [f"data_batch_{i}" for i in range(1, 6)], b"labels", "batches.meta", b"label_names"),
    "cifar100": (CIFAR100, ["train"], b"fine_labels", "meta", b"fine_label_names"),
}


def _batch(labels: torch.Tensor, gen: torch.Generator, num_classes: int) -> tuple:
    images = render(labels, 32, class_params(num_classes, 3), gen)  # (n, 3, 32, 32) uint8
    return images.reshape(len(labels), -1).numpy(), labels.tolist()


def write_cifar(name: str, root: str | Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> Path:
    """`root/<cifar folder>/` with the dataset's pickle files (train split over its batches, test), balanced
    labels, atomically written; returns the folder. Existing files are left as they are."""
    info, train_files, label_key, meta, names_key = _LAYOUT[name]
    folder = Path(root) / SUBDIRS[name]
    gen = torch.Generator().manual_seed(seed)
    k = info.num_classes
    balanced = lambda n: (torch.arange(n) % k)[torch.randperm(n, generator=gen)]  # noqa: E731
    train_labels = balanced(n_train).chunk(len(train_files))  # the split balanced, over its batch files
    test_file = "test_batch" if name == "cifar10" else "test"
    for file, labels in [*zip(train_files, train_labels, strict=True), (test_file, balanced(n_test))]:
        if (folder / file).exists():
            continue
        data, lab = _batch(labels, gen, k)
        blob = {b"batch_label": file.encode(), b"data": data, label_key: lab}
        atomic_write(folder / file, lambda p, b=blob: p.write_bytes(pickle.dumps(b)))
    names = {names_key: [c.encode() for c in info.classes]}
    if not (folder / meta).exists():
        atomic_write(folder / meta, lambda p: p.write_bytes(pickle.dumps(names)))
    return folder


def write_stl10(root: str | Path, n_train: int = 30, n_test: int = 20, seed: int = 0) -> Path:
    """`root/stl10_binary/`: {train,test}_X.bin (uint8 planes of 96x96, column-major), _y.bin (1..10)."""
    folder = Path(root) / SUBDIRS["stl10"]
    gen = torch.Generator().manual_seed(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        if (folder / f"{split}_y.bin").exists():
            continue
        labels = (torch.arange(n) % 10)[torch.randperm(n, generator=gen)]
        images = render(labels, 96, class_params(10, 3), gen).numpy()  # (n, 3, 96, 96) row-major
        column_major = images.transpose(0, 1, 3, 2).tobytes()
        atomic_write(folder / f"{split}_X.bin", lambda p, x=column_major: p.write_bytes(x))
        ones_based = (labels + 1).numpy().astype("uint8").tobytes()
        atomic_write(folder / f"{split}_y.bin", lambda p, y=ones_based: p.write_bytes(y))
    return folder


# The rehearsal's datasets: (writer, training images, test images). CIFAR-100 has more, so that 04's target
# cifar100[0-9] (ten of its classes) still has a few images per class.
REHEARSAL = ((lambda root, a, b: write_cifar("cifar10", root, a, b), 60, 20),
             (lambda root, a, b: write_cifar("cifar100", root, a, b), 300, 100),
             (write_stl10, 30, 20))


def write_rehearsal(root: str | Path) -> list[Path]:
    """Every dataset the rehearsal profile reads, in its own format, under `root` (its <data>/rehearsal/)."""
    return [write(root, n_train, n_test) for write, n_train, n_test in REHEARSAL]
