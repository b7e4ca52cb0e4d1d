"""`load_dataset`: decode a split once, keep it as plain uint8/int64 tensors in a cache file, reuse it."""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ..files import atomic_write, data_root
from .registry import DatasetInfo, ImageSet, get_info, get_reader
from .sources import SPLIT_ALIASES, source_dir
from .splits import stratified_subset

CACHE_VERSION = 2  # bump when a reader's output changes; old cache files are then ignored
_NOT_HASHED = {"download"}  # kwargs that do not change the decoded data
_NO_FILES = {"synthetic"}  # made from kwargs alone
_UNWRITABLE: set[Path] = set()  # cache folders already warned about this process: one warning each


def data_dir(root: str | Path | None = None) -> Path:
    """Where datasets and caches live: `root`, else $MLPZOOM_DATA, else `<repo>/data`."""
    return Path(root).expanduser() if root is not None else data_root()


def source_files(name: str, split: str, root: Path) -> list[Path]:
    """The files a split is decoded from (walked, sorted); none for datasets made without files."""
    if name in _NO_FILES:
        return []
    if name == "image-folder":  # the split's folder, and train/ whose folder names are the classes
        folders = {Path(root) / split, Path(root) / "train"}
    else:
        folders = {source_dir(name, root)}
    return sorted(p for f in folders if f.is_dir() for p in f.rglob("*") if p.is_file())


def source_signature(name: str, split: str, root: Path) -> str:
    """A hash of (path, size, modification time) of every source file: a file added, removed or rewritten
    gives another cache file, so the decode cache never serves another folder's images."""
    digest = hashlib.sha1()
    for p in source_files(name, split, root):
        stat = p.stat()
        digest.update(f"{p}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


def cache_path(name: str, split: str, root: Path, kwargs: dict) -> Path:
    """`<root>/cache/<name>-<split>-<hash>.pt`; the hash covers the resolved source folder, its files
    (source_signature) and the reader's kwargs."""
    key = {"v": CACHE_VERSION, "source": str(source_dir(name, root).resolve()),
           "files": source_signature(name, split, root),
           "kwargs": {k: v for k, v in kwargs.items() if k not in _NOT_HASHED}}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return root / "cache" / f"{name}-{split}-{digest}.pt"


def save_cache(ds: ImageSet, path: Path) -> None:
    """torch.save of plain tensors and builtins (loadable with weights_only=True), written atomically."""
    ds.fingerprint()  # computed once here, kept in meta: later loads need not hash the pixels again
    blob = {"images": ds.images.contiguous(), "labels": ds.labels.contiguous(), "info": asdict(ds.info),
            "split": ds.split, "meta": ds.meta}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # through Python: a full disk is OSError ENOSPC, not torch's basic_ios
            torch.save(blob, f)
    atomic_write(path, write)


def try_save_cache(ds: ImageSet, path: Path) -> None:
    """save_cache, or one warning per folder when it cannot be written (full or read-only data folder):
    the decoded split is in memory, so the run works on and only the next run decodes again."""
    try:
        save_cache(ds, path)
    except (OSError, RuntimeError) as err:  # RuntimeError: torch's writer failing on the file
        if path.parent not in _UNWRITABLE:
            _UNWRITABLE.add(path.parent)
            warnings.warn(f"could not write the decode cache in {path.parent} ({err}); working on with the "
                          "decoded data in memory (decoded again next run): free space there or set "
                          "$MLPZOOM_DATA", stacklevel=3)


def read_cache(path: Path) -> ImageSet:
    blob = torch.load(path, weights_only=True)
    info = {k: tuple(v) if isinstance(v, list) else v for k, v in blob["info"].items()}
    return ImageSet(blob["images"], blob["labels"], DatasetInfo(**info), blob["split"], blob["meta"])


def read_cache_or_set_aside(path: Path) -> ImageSet | None:
    """The cached split, or None after renaming an unreadable cache to `<name>.corrupt` (`.corrupt-N`
    when taken) with a one-line warning: a cache is derived from the source files, so it is rebuilt, but a
    file is never deleted."""
    try:
        return read_cache(path)
    except Exception as err:  # truncated zip, wrong pickle, wrong keys or shapes: all mean "rebuild it"
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:200]  # one line
        warnings.warn(f"decode cache {path} is unreadable ({reason}); {_set_aside(path)}, rebuilding it from "
                      "the source files", stacklevel=3)
        return None


def _set_aside(path: Path) -> str:
    """Rename `path` to the first free `<name>.corrupt`, `.corrupt-2`, ...; says what happened."""
    bad, k = path.with_name(path.name + ".corrupt"), 2
    while bad.exists():
        bad, k = path.with_name(f"{path.name}.corrupt-{k}"), k + 1
    try:
        path.replace(bad)
    except OSError as err:  # a read-only data folder: the split is still decoded, just not cached
        return f"could not set it aside ({err})"
    return f"kept as {bad.name}"


def parse_name(name: str) -> tuple[str, list[int] | None]:
    """"cifar100[0-9]" -> ("cifar100", [0, ..., 9]); "fashion-mnist[0,2,4]" -> (..., [0, 2, 4]); "mnist" ->
    ("mnist", None). A bracket selects classes (by label, in the order given) from the registered set."""
    if not name.endswith("]") or "[" not in name:
        return name, None
    base, sel = name[:-1].split("[", 1)
    classes = []
    try:
        for part in sel.split(","):
            lo, _, hi = part.partition("-")
            classes += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise ValueError(f"{name!r}: select classes as <dataset>[0-4] or <dataset>[0,3,7]") from None
    return base, classes


def info_of(name: str) -> DatasetInfo:
    """What load_dataset(name) will report as its info, without reading any image: the registered info, for
    a class selection with only those classes (utils.plan counts with it)."""
    base, classes = parse_name(name)
    info = get_info(base)
    if classes is None:
        return info
    kept = tuple(info.classes[c] for c in classes) if info.classes else tuple(map(str, classes))
    return replace(info, name=name, num_classes=len(classes), classes=kept)


def select_classes(ds: ImageSet, name: str, classes: list[int]) -> ImageSet:
    """The images of `classes`, relabelled 0..k-1 in that order, as a dataset called `name`."""
    if (not classes or max(classes) >= ds.info.num_classes or min(classes) < 0
            or len(set(classes)) < len(classes)):
        raise ValueError(f"{name}: classes must be distinct labels of {ds.info.name} "
                         f"(0..{ds.info.num_classes - 1})")
    relabel = torch.full((ds.info.num_classes,), -1, dtype=torch.int64)
    relabel[torch.tensor(classes)] = torch.arange(len(classes))
    keep = (relabel[ds.labels] >= 0).nonzero().flatten()
    kept = [ds.info.classes[c] for c in classes] if ds.info.classes else [str(c) for c in classes]
    info = replace(ds.info, name=name, num_classes=len(classes), classes=tuple(kept))
    return ImageSet(ds.images[keep].clone(), relabel[ds.labels[keep]], info, ds.split, dict(ds.meta))


def load_dataset(name: str, split: str = "train", root: str | Path | None = None, subset: int | None = None,
                 cache: bool = True, subset_seed: int = 0, **kwargs) -> ImageSet:
    """One split as uint8 images (N, C, H, W) and int64 labels (N,), decoded once and cached.

    name: a registered dataset, or one with a class selection, "cifar100[0-9]" (relabelled 0..k-1;
    transfer to new classes).
    root: the data folder (default $MLPZOOM_DATA or <repo>/data); subset: keep n images, stratified by
    class and drawn from `subset_seed` (splits.stratified_subset: every class in proportion, split order
    kept; files sorted by class never lose whole classes).
    kwargs go to the reader (e.g. synthetic: num_classes, channels, size, n, seed; image-folder: size;
    download=False: never try to download).
    """
    base, classes = parse_name(name)
    if classes is not None:
        ds = select_classes(load_dataset(base, split, root, cache=cache, **kwargs), name, classes)
        return stratified_subset(ds, subset, subset_seed) if subset is not None else ds
    reader = get_reader(name)  # KeyError listing the registered names
    if subset is not None and subset < 1:
        raise ValueError(f"subset must be >= 1 image; got {subset}")
    split = SPLIT_ALIASES.get(name, {}).get(split, split)
    root = data_dir(root)
    path = cache_path(name, split, root, kwargs)
    ds = read_cache_or_set_aside(path) if cache and path.exists() else None
    if ds is None:
        ds = reader(split, root, **kwargs)
        if cache:
            try_save_cache(ds, path)
    ds.meta.setdefault("cache_dir", str(path.parent))
    if subset is not None and subset < len(ds):
        ds = stratified_subset(ds, subset, subset_seed)
        ds = ImageSet(ds.images.clone(), ds.labels.clone(), ds.info, ds.split, ds.meta)  # free the full split
    return ds
