"""What every loader backend shares: the augmentation spec, (seed, epoch) seeding, the epoch loop, uint8 ->
float, and the rank's slice of each batch under torchrun. The backends (`loaders.py`: resident, torch;
`ffcv.py`) build on this module and nothing else of each other's."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .. import distributed
from .registry import DatasetInfo, ImageSet

Batch = tuple[torch.Tensor, torch.Tensor]
_DIGITS = {"mnist", "svhn"}  # a mirrored digit is another symbol (or none): no flips by default


@dataclass(frozen=True)
class Augment:
    pad: int = 4  # random crop after zero padding by this many pixels per side (0: no crop)
    flip: bool = True  # horizontal flip with probability 0.5


NO_AUGMENT = Augment(pad=0, flip=False)


def default_augment(info: DatasetInfo, train: bool) -> Augment:
    """Pad-4 crop + flip for training (no flip for digits), nothing for evaluation."""
    return Augment(flip=info.name not in _DIGITS) if train else NO_AUGMENT


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed that depends only on (seed, epoch), decorrelated across both."""
    digest = hashlib.blake2b(f"{seed}/{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class EpochLoader:
    """What every backend shares: len, batch_size, info, set_epoch and the epoch counter.

    shard (rank, world_size), default the torchrun process group's (else (0, 1)): batch_size is the global
    batch B; this rank serves positions [r B/W, (r+1) B/W) of every batch of the epoch's order, so the ranks'
    slices of batch i together are the one-process batch i. B must be a multiple of W (else ValueError); in
    the last, short batch of an eval loader a rank's slice may be shorter or empty (then skipped)."""

    def __init__(self, ds: ImageSet, batch_size: int, *, train: bool, device: str | torch.device,
                 augment: Augment, seed: int, drop_last: bool, shard: tuple[int, int] | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.rank, self.world_size = shard or (distributed.rank(), distributed.world_size())
        if batch_size % self.world_size:
            w = self.world_size
            raise ValueError(f"batch size {batch_size} (the global batch) does not split over {w} processes; "
                             f"use a multiple of {w}, e.g. {max(batch_size - batch_size % w, w)}")
        self.local_batch = batch_size // self.world_size  # images per rank and step
        self.batch_size, self.train, self.augment = batch_size, train, augment
        self.device, self.seed, self.drop_last = torch.device(device), seed, drop_last
        self.info, self.num_samples = ds.info, len(ds)
        self.epoch = 0  # the epoch the next pass will be
        self._source = ds  # for data_key(): the fingerprint is computed only when asked for

    def data_key(self) -> dict:
        """The dataset name, split, size and content fingerprint of the images this loader serves."""
        return self._source.data_key()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n, bs = self.num_samples, self.batch_size
        return n // bs if self.drop_last else max(0, -(-(n - self.rank * self.local_batch) // bs))

    def slices(self) -> Iterator[slice]:
        """This rank's positions in the epoch's order, one slice per batch (all of it in one process)."""
        stop = self.num_samples - self.num_samples % self.batch_size if self.drop_last else self.num_samples
        for s in range(self.rank * self.local_batch, stop, self.batch_size):
            yield slice(s, min(s + self.local_batch, stop))

    def __iter__(self) -> Iterator[Batch]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self.batches(epoch)

    def batches(self, epoch: int) -> Iterator[Batch]:
        raise NotImplementedError


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32).div_(255)  # uint8 -> [0, 1]; division keeps k/255 exact to round trip
