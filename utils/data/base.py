"""What every loader backend shares: the augmentation spec, (seed, epoch) seeding, the epoch loop, uint8 ->
float. The backends (`loaders.py`: resident, torch; `ffcv.py`) build on this module and nothing else of
each other's."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

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
    """What every backend shares: len, batch_size, info, set_epoch and the epoch counter."""

    def __init__(self, ds: ImageSet, batch_size: int, *, train: bool, device: str | torch.device,
                 augment: Augment, seed: int, drop_last: bool):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
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
        return n // bs if self.drop_last else -(-n // bs)

    def __iter__(self) -> Iterator[Batch]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self.batches(epoch)

    def batches(self, epoch: int) -> Iterator[Batch]:
        raise NotImplementedError


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32).div_(255)  # uint8 -> [0, 1]; division keeps k/255 exact to round trip
