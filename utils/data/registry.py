"""Dataset registry: what each dataset is (`DatasetInfo`) and how to read it (a reader function)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..registry import Registry


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    classes: tuple[str, ...]
    channels: int
    image_size: int  # pixels per side; every registered set is square
    mean: tuple[float, ...]  # per channel, of [0, 1] pixels
    std: tuple[float, ...]


@dataclass
class ImageSet:
    """A decoded split: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    info: DatasetInfo
    split: str = "train"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"labels must be int64 (N,), got {self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: int | None) -> ImageSet:
        """The first n images (None, or n >= len: all of them, the same object)."""
        return self if n is None or n >= len(self) else self.subset(n)

    def as_float(self) -> torch.Tensor:
        """The images as float32 (N, C, H, W) in [0, 1]."""
        return self.images.float() / 255

    def subset(self, n_or_index: int | torch.Tensor) -> ImageSet:
        """The first n images, or the images at an index tensor."""
        idx = slice(0, n_or_index) if isinstance(n_or_index, int) else n_or_index
        meta = {k: v for k, v in self.meta.items() if k != "fingerprint"}  # other images: another print
        return ImageSet(self.images[idx], self.labels[idx], self.info, self.split, meta)

    def fingerprint(self) -> str:
        """A content hash of the decoded split: shape, class names, every pixel and label (16 hex digits;
        computed once, ~0.1 s per 150 MB, and kept in meta). Two sets with the same print hold the same
        data."""
        if "fingerprint" not in self.meta:
            digest = hashlib.blake2b(digest_size=8)
            digest.update(repr((tuple(self.images.shape), self.info.classes)).encode())
            for t in (self.images, self.labels):
                digest.update(t.contiguous().cpu().numpy().tobytes())
            self.meta["fingerprint"] = digest.hexdigest()
        return self.meta["fingerprint"]

    def data_key(self) -> dict:
        """What identifies this data for a stored run: dataset name, split, size and fingerprint."""
        return {"dataset": self.info.name, "split": self.split, "n": len(self),
                "fingerprint": self.fingerprint()}


Reader = Callable[..., ImageSet]  # reader(split, root, **kwargs) -> ImageSet
DATASETS: Registry[Reader] = Registry("dataset")


def register_dataset(info: DatasetInfo) -> Callable[[Reader], Reader]:
    """Decorator: `@register_dataset(INFO) def read(split, root, **kw) -> ImageSet`."""
    return DATASETS.register(info.name, info=info)


def list_datasets(pattern: str = "*") -> list[str]:
    return DATASETS.names(pattern)


def get_info(name: str) -> DatasetInfo:
    """The registered info (for "base[0-4]" the base's: its classes are known only once loaded)."""
    return DATASETS.meta(name.split("[", 1)[0])["info"]


def get_reader(name: str) -> Reader:
    return DATASETS[name]


_SELECTION = re.compile(r"\[\d+(-\d+)?(,\d+(-\d+)?)*\]")  # "[0-4]", "[0,3,7]", "[0-4,9]"


def check_dataset_name(name: str) -> str:
    """`name` if it is a registered dataset, optionally with a class selection ("fashion-mnist[0-4]");
    else a one-line ValueError listing the valid names. Names become results folders, so a path
    ("../../x", "a/b") must never pass."""
    base, bracket, rest = str(name).partition("[")
    if base in list_datasets() and (not bracket or _SELECTION.fullmatch(bracket + rest)):
        return name
    raise ValueError(f"unknown dataset {name!r}; datasets: {', '.join(list_datasets())}, optionally with "
                     "classes as <name>[0-4] or <name>[0,3,7]")
