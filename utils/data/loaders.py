"""Batches of [0, 1] float images on the device: `make_loader(ds, ..., backend=...)`.

Backends: "resident" (the fast path: the whole uint8 set on the device, batch-wide crop + flip there),
"torch" (torchvision transforms in DataLoader workers: the baseline) and "ffcv" (.beton files).

Every backend yields (x, y): x float32 (B, C, H, W) in [0, 1], y int64 (B,), both on `device`. The order and
augmentation of epoch e depend only on (seed, e): `set_epoch(e)` before iterating reproduces them (resumed
runs see the same batches); without it an internal counter advances once per pass. Under torchrun each rank
serves its slice of every batch (EpochLoader, utils/distributed.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from ..registry import Registry
from .base import NO_AUGMENT, Augment, Batch, EpochLoader, default_augment, epoch_seed, to_float
from .registry import ImageSet

# ---------------------------------------------------------------- resident: whole set on the device


def row_buffer(images: torch.Tensor, pad: int, flip: bool) -> torch.Tensor:
    """1-D uint8: every row of (N, C, H, W) zero-padded to W + 2 pad, then (flip) the same rows mirrored,
    then W + 2 pad zeros. Size (1 + flip) * (1 + 2 pad / W) times the images."""
    w = images.shape[-1]
    rows = F.pad(images.reshape(-1, w), (pad, pad))  # (N*C*H, W + 2 pad)
    mirrored = [rows.flip(-1).reshape(-1)] if flip else []
    return torch.cat([rows.reshape(-1), *mirrored, rows.new_zeros(w + 2 * pad)])


def crop_rows(buf: torch.Tensor, shape: torch.Size, idx: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
              flip: torch.Tensor | None, pad: int) -> torch.Tensor:
    """uint8 (B, C, H, W): out[b, c, y, x] = image[idx[b], c, y + dy[b], x + dx[b]], zero outside the image,
    then mirrored along x where flip[b].

    Every output row is one W-long window of `buf` (from `row_buffer`): a crop row starts at pad + dx in
    its padded row, a mirrored one at pad - dx in the mirrored copy; rows outside the image read the zero
    tail. So the whole batch is a single uint8 index_select of B*C*H windows, with no per-image work.
    """
    n, c, h, w = shape
    wp = w + 2 * pad
    windows = buf.as_strided((buf.numel() - w + 1, w), (1, 1))  # every W-long window; a view, no copy
    src = torch.arange(h, device=idx.device) + dy[:, None]  # (B, H) source row of each output row
    row = (idx[:, None, None] * c + torch.arange(c, device=idx.device)[None, :, None]) * h + src[:, None, :]
    offset = pad + dx if flip is None else torch.where(flip, n * c * h * wp + pad - dx, pad + dx)  # (B,)
    start = row * wp + offset[:, None, None]  # (B, C, H) window starts in buf
    inside = ((src >= 0) & (src < h))[:, None, :]
    start = torch.where(inside, start, buf.numel() - wp)
    return windows.index_select(0, start.reshape(-1)).view(len(idx), c, h, w)


class ResidentLoader(EpochLoader):
    """uint8 images live on the device; a batch is one uint8 gather that crops and flips, then float."""

    def __init__(self, ds: ImageSet, batch_size: int, **kw):
        super().__init__(ds, batch_size, **kw)
        self.shape, self.labels = ds.images.shape, ds.labels.to(self.device)
        images = ds.images.to(self.device)  # (N, C, H, W) uint8, moved once
        augmented = self.augment != NO_AUGMENT
        # With augmentation keep only the row buffer (padded rows, plus mirrored ones for flips).
        self.buf = row_buffer(images, self.augment.pad, self.augment.flip) if augmented else None
        self.images = None if augmented else images

    def batches(self, epoch: int) -> Iterator[Batch]:
        n, pad, dev = self.num_samples, self.augment.pad, self.device
        gen = torch.Generator(device=dev).manual_seed(epoch_seed(self.seed, epoch))
        order = torch.randperm(n, generator=gen, device=dev) if self.train else torch.arange(n, device=dev)
        shift = torch.randint(-pad, pad + 1, (2, n), generator=gen, device=dev)  # (dy, dx) per position
        flip = torch.rand(n, generator=gen, device=dev) < 0.5
        for part in self.slices():  # this rank's slice of every batch
            idx = order[part]
            if self.buf is None:
                x = self.images.index_select(0, idx)
            else:
                x = crop_rows(self.buf, self.shape, idx, shift[0, part], shift[1, part],
                              flip[part] if self.augment.flip else None, pad)
            yield to_float(x), self.labels.index_select(0, idx)


# ---------------------------------------------------------------- torch: the DataLoader baseline


class TransformedImages(torch.utils.data.Dataset):
    """Per-image torchvision transforms on a uint8 (N, C, H, W) tensor; items (x (C, H, W), label)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[i]), self.labels[i]


def torchvision_transform(augment: Augment, size: tuple[int, int]):
    """transforms.v2 on uint8 tensors: RandomCrop(padding), RandomHorizontalFlip, ToDtype(float32)."""
    from torchvision.transforms import v2

    steps = [v2.RandomCrop(size, padding=augment.pad)] if augment.pad > 0 else []
    steps += [v2.RandomHorizontalFlip()] if augment.flip else []
    return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True)])


def private_rng(batches: Iterator, seed: int) -> Iterator:
    """Run each next(batches) on its own CPU RNG stream (for num_workers=0, where transforms use the
    global RNG): reproducible per seed, and the caller's global RNG is left untouched."""
    state = torch.Generator().manual_seed(seed).get_state()
    while True:
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(state)
            batch = next(batches, None)
            state = torch.get_rng_state()
        if batch is None:
            return
        yield batch


class RankSlices(torch.utils.data.Sampler):
    """The batches of DataLoader(shuffle=train, generator=gen, drop_last) cut to the loader's rank slice."""

    def __init__(self, loader: EpochLoader, gen: torch.Generator):
        data = range(loader.num_samples)
        order = torch.utils.data.RandomSampler(data, generator=gen) if loader.train else data
        self.batches = torch.utils.data.BatchSampler(order, loader.batch_size, loader.drop_last)
        self.lo, self.hi = loader.rank * loader.local_batch, (loader.rank + 1) * loader.local_batch

    def __iter__(self) -> Iterator[list[int]]:
        return (b[self.lo : self.hi] for b in self.batches if b[self.lo : self.hi])


class TorchLoader(EpochLoader):
    """torch DataLoader + transforms.v2 per image in `num_workers` processes; batches moved to the device."""

    def __init__(self, ds: ImageSet, batch_size: int, *, num_workers: int = 2, **kw):
        super().__init__(ds, batch_size, **kw)
        transform = torchvision_transform(self.augment, tuple(ds.images.shape[-2:]))
        self.dataset = TransformedImages(ds.images, ds.labels, transform)
        self.num_workers = num_workers

    def batches(self, epoch: int) -> Iterator[Batch]:
        # The generator drives the sampler and the workers' base seed (worker k: base + k), so a fresh
        # DataLoader per epoch makes order and augmentation a function of (seed, epoch).
        # Under torchrun every rank draws the same order and takes its slice of each batch (RankSlices); the
        # augmentation is drawn per worker, so it differs from the one-process run's.
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        batching = ({"batch_sampler": RankSlices(self, gen)} if self.world_size > 1 else
                    {"batch_size": self.batch_size, "shuffle": self.train, "drop_last": self.drop_last})
        loader = torch.utils.data.DataLoader(self.dataset, **batching, generator=gen,
                                             num_workers=self.num_workers,
                                             pin_memory=self.device.type == "cuda")
        if self.num_workers > 0:
            batches = iter(loader)
        else:  # transforms run here, on the global RNG: give them their own (seed, epoch) stream
            batches = private_rng(iter(loader), epoch_seed(self.seed, -epoch - 1))
        for x, y in batches:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


# ---------------------------------------------------------------- the one entry point


def _ffcv_loader(ds: ImageSet, batch_size: int, **kw) -> EpochLoader:
    from .ffcv import FFCVLoader  # only this backend needs ffcv (and numba): imported on first use

    return FFCVLoader(ds, batch_size, **kw)


# backend name -> factory(ds, batch_size, train=, device=, augment=, seed=, drop_last=, num_workers=, path=)
BACKENDS: Registry = Registry("loader backend")
BACKENDS.add("resident", lambda ds, bs, num_workers, path, **kw: ResidentLoader(ds, bs, **kw))
BACKENDS.add("torch", lambda ds, bs, num_workers, path, **kw: TorchLoader(ds, bs, num_workers=num_workers,
                                                                         **kw))
BACKENDS.add("ffcv", lambda ds, bs, num_workers, path, **kw: _ffcv_loader(ds, bs, num_workers=num_workers,
                                                                          path=path, **kw))


MAX_LOADER_WORKERS = 16  # decoding threads (ffcv) or processes (torch) per training process, at most


def host_workers() -> int:
    """Loader workers sized to the host (issue 26: a fixed 2 left a 16-core GPU box decoding on 2 threads):
    the cores this process may use, shared by the torchrun processes of this node, at most
    MAX_LOADER_WORKERS; at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_LOADER_WORKERS, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def make_loader(ds: ImageSet, batch_size: int, *, train: bool, device: str | torch.device = "cpu",
                backend: str = "resident", augment: Augment | None = None, seed: int = 0,
                drop_last: bool | None = None, num_workers: int | None = None, path: str | None = None,
                shard: tuple[int, int] | None = None) -> EpochLoader:
    """An iterable of (x float32 (B, C, H, W) in [0, 1], y int64 (B,)) on `device`.

    train: shuffle, and augment by default (`Augment()`; no flip for mnist/svhn); eval: in order, no
    augmentation. augment=Augment(pad=0, flip=False) switches augmentation off. drop_last defaults to train.
    num_workers: DataLoader processes (torch) or decoding threads (ffcv); None: host_workers(). path: the
    .beton file (ffcv; an existing file is used as is, a missing one is written from ds; None: next to the
    cache).
    shard: (rank, world size) whose slice of each batch of `batch_size` (the global batch) to serve; None:
    the torchrun process group's, (0, 1) without one (see EpochLoader).
    """
    factory = BACKENDS[backend]  # KeyError listing the backends
    augment = default_augment(ds.info, train) if augment is None else augment
    workers = host_workers() if num_workers is None else num_workers
    return factory(ds, batch_size, num_workers=workers, path=path, train=train, device=device,
                   augment=augment, seed=seed, drop_last=train if drop_last is None else drop_last,
                   shard=shard)
