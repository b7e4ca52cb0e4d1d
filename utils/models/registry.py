"""Model registry (timm style): `@register_model(family)` on a builder, `create_model(name, ...)`."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

import torch.nn as nn

FAMILIES = ("mlp", "cnn", "vit")
Builder = Callable[..., nn.Module]  # builder(num_classes, in_chans, img_size, **overrides) -> nn.Module
_BUILDERS: dict[str, Builder] = {}
_FAMILY: dict[str, str] = {}


def register_model(family: str, name: str | None = None) -> Callable[[Builder], Builder]:
    """Register a builder under its function name (or `name`) in one of FAMILIES."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")

    def wrap(fn: Builder) -> Builder:
        key = name or fn.__name__
        if key in _BUILDERS:
            raise ValueError(f"model {key!r} registered twice")
        _BUILDERS[key] = fn
        _FAMILY[key] = family
        return fn

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    return sorted(n for n in _BUILDERS if fnmatch.fnmatch(n, pattern))


def _check_name(name: str) -> str:
    if name not in _BUILDERS:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    return name


def family(name: str) -> str:
    """'mlp', 'cnn' or 'vit'."""
    return _FAMILY[_check_name(name)]


def get_builder(name: str) -> Builder:
    return _BUILDERS[_check_name(name)]
