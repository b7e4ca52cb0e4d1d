"""`load_dataset`: decode a split once, keep it as plain uint8/int64 tensors in a cache file, reuse it."""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from ..files import atomic_write, data_root
from .registry import DatasetInfo, ImageSet, get_reader
from .sources import SPLIT_ALIASES, source_dir

CACHE_VERSION = 1  # bump when a reader's output changes; old cache files are then ignored
_NOT_HASHED = {"download"}  # kwargs that do not change the decoded data


def data_dir(root: str | Path | None = None) -> Path:
    """Where datasets and caches live: `root`, else $MLPZOOM_DATA, else `<repo>/data`."""
    return Path(root).expanduser() if root is not None else data_root()


def cache_path(name: str, split: str, root: Path, kwargs: dict) -> Path:
    """`<root>/cache/<name>-<split>-<hash>.pt`; the hash covers the resolved source folder and kwargs."""
    key = {"v": CACHE_VERSION, "source": str(source_dir(name, root).resolve()),
           "kwargs": {k: v for k, v in kwargs.items() if k not in _NOT_HASHED}}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return root / "cache" / f"{name}-{split}-{digest}.pt"


def save_cache(ds: ImageSet, path: Path) -> None:
    """torch.save of plain tensors and builtins (loadable with weights_only=True), written atomically."""
    blob = {"images": ds.images.contiguous(), "labels": ds.labels.contiguous(), "info": asdict(ds.info),
            "split": ds.split, "meta": ds.meta}
    atomic_write(path, lambda p: torch.save(blob, p))


def read_cache(path: Path) -> ImageSet:
    blob = torch.load(path, weights_only=True)
    info = {k: tuple(v) if isinstance(v, list) else v for k, v in blob["info"].items()}
    return ImageSet(blob["images"], blob["labels"], DatasetInfo(**info), blob["split"], blob["meta"])


def load_dataset(name: str, split: str = "train", root: str | Path | None = None, subset: int | None = None,
                 cache: bool = True, **kwargs) -> ImageSet:
    """One split as uint8 images (N, C, H, W) and int64 labels (N,), decoded once and cached.

    root: the data folder (default $MLPZOOM_DATA or <repo>/data); subset: keep the first n images.
    kwargs go to the reader (e.g. synthetic: num_classes, channels, size, n, seed; image-folder: size;
    download=False: never try to download).
    """
    reader = get_reader(name)  # KeyError listing the registered names
    split = SPLIT_ALIASES.get(name, {}).get(split, split)
    root = data_dir(root)
    path = cache_path(name, split, root, kwargs)
    if cache and path.exists():
        ds = read_cache(path)
    else:
        ds = reader(split, root, **kwargs)
        if cache:
            try:
                save_cache(ds, path)
            except OSError as err:  # e.g. a read-only data folder: work on, just slower next time
                warnings.warn(f"could not write the cache {path}: {err}", stacklevel=2)
    ds.meta.setdefault("cache_dir", str(path.parent))
    if subset is not None:
        ds = ds.subset(subset)  # clone: do not keep the full split's storage alive
        ds = ImageSet(ds.images.clone(), ds.labels.clone(), ds.info, ds.split, ds.meta)
    return ds
