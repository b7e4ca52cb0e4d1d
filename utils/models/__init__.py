"""Models: one registry over the families (mlp, cnn, vit, mixer, perceiver), each model taking [0, 1] images.

    m = create_model("resnet18_cifar", num_classes=10, in_chans=3, img_size=32, mean=info.mean, std=info.std)
    list_models("mlp_*"); family("vit_small_patch16_224")  # -> "vit"

Every model's first submodule is `input` (normalise with the dataset's mean/std, resize to the network's own
resolution), so callers always feed (B, in_chans, img_size, img_size) pixels in [0, 1] and get (B, classes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

from . import cnn, mlp, vit
from .common import (
    InputAdapter,
    WeightsUnreachable,
    attach_input,
    autocast,
    eval_mode,
    frozen,
    head_name,
    load_weights,
    model_device,
    read_state_dict,
    set_cpu_autocast,
)
from .mlp import is_paper_state_dict, load_paper_state_dict
from .registry import FAMILIES, family, get_builder, list_models, register_model

__all__ = [
    "FAMILIES",
    "InputAdapter",
    "WeightsUnreachable",
    "attach_input",
    "autocast",
    "set_cpu_autocast",
    "cnn",
    "create_for",
    "create_model",
    "eval_mode",
    "frozen",
    "family",
    "list_models",
    "load_checkpoint",
    "load_paper_state_dict",
    "mlp",
    "model_device",
    "register_model",
    "vit",
]


def create_model(
    name: str,
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    img_size: int = 32,  # pixels per side of the images the model will be fed
    mean: Sequence[float] | None = None,  # per channel, of [0, 1] pixels; None: 0.5
    std: Sequence[float] | None = None,
    pretrained: bool | str = False,
    checkpoint: str | Path | None = None,  # .safetensors, or a torch.save'd state dict
    **overrides,
) -> nn.Module:
    """Build a registered model (unknown name: KeyError listing the registered ones); load `checkpoint`."""
    builder = get_builder(name)
    model = builder(num_classes=num_classes, in_chans=in_chans, img_size=img_size, mean=mean, std=std,
                    pretrained=pretrained, **overrides)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, num_classes)
    model.model_name = name
    model.input.expect, model.input.model_name = (in_chans, img_size), name  # refuse other shapes, say which
    # What a model card needs to rebuild it: create_model(name, **model.model_config, checkpoint=path).
    stats = dict(mean=None if mean is None else list(mean), std=None if std is None else list(std))
    model.model_config = dict(num_classes=num_classes, in_chans=in_chans, img_size=img_size, **stats,
                              **getattr(model, "resolved_overrides", overrides))
    return model


def create_for(name: str, info, seed: int | None = None, **kw) -> nn.Module:
    """create_model for a dataset (a DatasetInfo: classes, channels, size, mean, std), initialised from
    torch's global generator seeded with `seed` when given."""
    if seed is not None:
        torch.manual_seed(seed)
    return create_model(name, num_classes=info.num_classes, in_chans=info.channels, img_size=info.image_size,
                        mean=info.mean, std=info.std, **kw)


def load_checkpoint(model: nn.Module, path: str | Path, num_classes: int) -> None:
    """Load weights saved by this project, by timm (a hub `model.safetensors`) or by the Scaling-MLPs authors
    (their key layout is detected). A head for another number of classes is dropped with a warning."""
    sd = read_state_dict(path)
    if isinstance(model, mlp.BottleneckMLP) and is_paper_state_dict(sd):
        load_paper_state_dict(model, sd)
    else:
        load_weights(model, sd, head=head_name(model, num_classes))
