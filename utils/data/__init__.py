"""Datasets as uint8 tensors, decoded once and cached, and fast loaders over them.

    ds = load_dataset("fashion-mnist", split="train")   # ImageSet: images uint8 (N, C, H, W), labels int64
    loader = make_loader(ds, batch_size=512, train=True, device="cpu", backend="resident")
    for x, y in loader: ...                              # x float32 (B, C, H, W) in [0, 1], y int64

Readers register themselves on import (sources, folders, synthetic); `list_datasets()` names them.
"""

from __future__ import annotations

from pathlib import Path

from . import folders, sources, synthetic  # noqa: F401  (registers the readers)
from .base import Augment, default_augment
from .cache import data_dir, load_dataset
from .loaders import BACKENDS, make_loader
from .registry import DatasetInfo, ImageSet, get_info, get_reader, list_datasets, register_dataset
from .splits import stratified_index, stratified_subset, train_val_split


def write_beton(ds: ImageSet, path: str | Path) -> Path:
    """`ds` as an FFCV `.beton` with exact pixels (needs ffcv; see utils/data/ffcv.py)."""
    from .ffcv import write_beton as _write

    return _write(ds, path)


__all__ = [
    "Augment", "BACKENDS", "DatasetInfo", "ImageSet", "data_dir", "default_augment", "get_info",
    "get_reader", "list_datasets", "load_dataset", "make_loader", "register_dataset", "stratified_index",
    "stratified_subset", "train_val_split", "write_beton",
]
