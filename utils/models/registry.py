"""Model registry (timm style): `@register_model(family)` on a builder, `create_model(name, ...)`.

Families: "mlp", "cnn", "vit" (transformers: ViT, Swin, TnT), and the two families of the week-8 zoo that
are neither: "mixer" (MLP-Mixer: an MLP on patches) and "perceiver" (Perceiver, Perceiver IO: cross-attention
into latents). A study of MLPs against ViTs must not count a Mixer as a ViT.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from ..registry import Registry

FAMILIES = ("mlp", "cnn", "vit", "mixer", "perceiver")
Builder = Callable[..., nn.Module]  # builder(num_classes, in_chans, img_size, **overrides) -> nn.Module
MODELS: Registry[Builder] = Registry("model")


def register_model(family: str, name: str | None = None) -> Callable[[Builder], Builder]:
    """Register a builder under its function name (or `name`) in one of FAMILIES."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return MODELS.register(name, family=family)


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.names(pattern)


def family(name: str) -> str:
    """One of FAMILIES: a registered model's, or a run's ("resnet18_cifar@seed1": its model's)."""
    return MODELS.meta(name.split("@", 1)[0])["family"]


def get_builder(name: str) -> Builder:
    return MODELS[name]
