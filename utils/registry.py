"""One small registry for everything looked up by name: models, datasets, image modifications, image
parametrisations, loader backends.

    MODELS = Registry("model")
    @MODELS.register("resnet18_cifar", family="cnn")   # or MODELS.add(name, obj, **meta)
    def resnet18_cifar(...): ...
    MODELS["resnet18_cifar"]; MODELS.meta("resnet18_cifar")["family"]; MODELS.names("mlp_*")

A name registered twice is a ValueError; an unknown name is a KeyError that lists the registered ones.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind  # "model", "dataset", ...: used in error messages
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict] = {}

    def add(self, name: str, obj: T, **meta) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._items[name], self._meta[name] = obj, meta
        return obj

    def register(self, name: str | None = None, **meta) -> Callable[[T], T]:
        """Decorator: registers the function under `name` (default: its __name__)."""
        return lambda obj: self.add(name or obj.__name__, obj, **meta)

    def check(self, name: str) -> str:
        if name not in self._items:
            names = ", ".join(self.names())
            raise KeyError(f"unknown {self.kind} {name!r}; registered {self.kind}s: {names}")
        return name

    def __getitem__(self, name: str) -> T:
        return self._items[self.check(name)]

    def meta(self, name: str) -> dict:
        return self._meta[self.check(name)]

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)  # registration order

    def __len__(self) -> int:
        return len(self._items)
