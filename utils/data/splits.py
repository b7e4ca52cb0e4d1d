"""Seeded, stratified index selections: subsets that keep every class, and the validation split.

    idx = stratified_index(labels, 512, seed=0)    # 512 positions, every class in proportion, sorted
    train, val = train_val_split(ds, 0.1, seed=0)  # 10% of each class held out for every choice

Allocation per class is proportional with largest remainders (ties to the lower class), so a subset of n
from a balanced set has n / K (+-1) of each class; the chosen positions are sorted, so a subset keeps the
split's order. A class present in the set that would get no image is an error, not a silent drop.
"""

from __future__ import annotations

import torch

from .registry import ImageSet


def class_counts(labels: torch.Tensor, n: int) -> torch.Tensor:
    """How many of each class a stratified selection of n takes: (K,) int64, summing to n."""
    have = torch.bincount(labels)
    share = have.double() * n / len(labels)
    take = share.floor().long()
    remainder = share - take
    order = sorted(range(len(have)), key=lambda k: (-float(remainder[k]), k))
    for k in order[: n - int(take.sum())]:
        take[k] += 1
    return torch.minimum(take, have)


def stratified_index(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """n positions of `labels` (N,), stratified by class and drawn at random within each class from `seed`;
    sorted. ValueError when n is not in 1..N or a present class would get none."""
    if not 0 < n <= len(labels):
        raise ValueError(f"a subset needs 1 <= n <= {len(labels)} images; got n={n}")
    take, present = class_counts(labels, n), torch.bincount(labels) > 0
    empty = (present & (take == 0)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"a subset of {n} of {len(labels)} images leaves class(es) {empty} "
                         "without an image; "
                         f"use n >= {int(present.sum())} (one per class) or more")
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for k in range(len(take)):
        members = (labels == k).nonzero().flatten()
        picks.append(members[torch.randperm(len(members), generator=gen)[: int(take[k])]])
    return torch.cat(picks).sort().values


def stratified_subset(ds: ImageSet, n: int | None, seed: int = 0) -> ImageSet:
    """`n` images of ds chosen by stratified_index (None or n >= len: all of ds)."""
    if n is None or n >= len(ds):
        return ds
    return ds.subset(stratified_index(ds.labels, n, seed))


def train_val_split(ds: ImageSet, fraction: float = 0.1, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """(train, validation): `fraction` of each class held out at random from `seed`, the rest for training;
    both keep the split's order. The validation part is named split "val"."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1); got {fraction}")
    n_val = max(int(torch.bincount(ds.labels).gt(0).sum()), round(fraction * len(ds)))
    val_idx = stratified_index(ds.labels, n_val, seed)
    keep = torch.ones(len(ds), dtype=torch.bool)
    keep[val_idx] = False
    train, val = ds.subset(keep.nonzero().flatten()), ds.subset(val_idx)
    if torch.bincount(train.labels, minlength=ds.info.num_classes).eq(0).any() and len(train):
        missing = (torch.bincount(train.labels, minlength=ds.info.num_classes)
                   .eq(0).nonzero().flatten().tolist())
        raise ValueError(f"class(es) {missing} have no training image left after the validation split")
    val.split = "val"
    return train, val
