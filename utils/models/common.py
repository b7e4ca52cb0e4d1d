"""The input stage every model starts with ([0, 1] images -> normalised, resized tensors), checkpoint loading,
and the shared execution helpers: model_device, eval_mode, frozen, autocast (predictions: utils.metrics)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import safetensors.torch
import torch
import torch.nn as nn
import torch.nn.functional as F


class InputAdapter(nn.Module):
    """Normalise with the dataset's mean/std, then resize to the network's input size if it differs.

    Models own this stage so that attacks, feature visualisation and timing always feed [0, 1] pixels.
    Single-channel images are repeated to `out_chans` channels when the network wants more.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        size: int | None = None,
        out_chans: int | None = None,
    ):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.size = size
        self.out_chans = out_chans
        self.expect: tuple[int, int] | None = None  # (channels, side) of the images fed; set by create_model
        self.model_name = "model"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1]
        want = None if self.expect is None else (self.expect[0], self.expect[1], self.expect[1])
        if want is not None and (x.ndim != 4 or tuple(x.shape[1:]) != want):
            c, side = self.expect
            raise ValueError(f"{self.model_name} takes images of {c}x{side}x{side} (channels x height x "
                             f"width, batched: (B, {c}, {side}, {side})), got {tuple(x.shape)}; "
                             "build it for this data with create_model(..., in_chans=, img_size=)")
        x = (x - self.mean) / self.std
        if self.out_chans is not None and x.shape[1] != self.out_chans:
            x = x.expand(-1, self.out_chans, -1, -1)
        if self.size is not None and x.shape[-1] != self.size:
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True
            )
        return x

    def extra_repr(self) -> str:
        return f"size={self.size}, out_chans={self.out_chans}"


class WeightsUnreachable(RuntimeError):
    """Published weights could not be downloaded (offline); the message says how to provide them by hand."""


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's (first) parameter."""
    return next(model.parameters()).device


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode inside (no dropout, BatchNorm statistics untouched); its previous mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients inside (attacks, feature visualisation: gradients w.r.t. the input
    only); the mode and the requires_grad flags restored after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.requires_grad_(False)
    try:
        with eval_mode(model):
            yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


_CPU_AUTOCAST = False  # the rehearsal profile turns it on (results.start): full's autocast flags run on a CPU


def set_cpu_autocast(on: bool) -> None:
    """Let `autocast` run bf16 autocast on CPUs too (the rehearsal: full's mixed-precision path, on a CPU)."""
    global _CPU_AUTOCAST
    _CPU_AUTOCAST = bool(on)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA when `enabled`; a no-op context elsewhere (bf16 on a CPU is emulated or slow),
    unless set_cpu_autocast(True)."""
    kind = torch.device(device).type
    on = enabled and (kind == "cuda" or (kind == "cpu" and _CPU_AUTOCAST))
    return torch.autocast(kind if kind in ("cuda", "cpu") else "cpu", dtype=torch.bfloat16, enabled=on)


def _apply_input(module: nn.Module, args: tuple) -> tuple:
    return (module.input(args[0]), *args[1:])


def attach_input(model: nn.Module, adapter: InputAdapter) -> nn.Module:
    """Give a third-party model (timm, perceiver) our input stage, keeping its layer names top level.

    The adapter becomes `model.input` and runs as a forward pre-hook, so `"blocks.11"` and `"head"` still
    name the same layers as in timm.
    """
    model.input = adapter
    # Put `input` first, so named_modules()/children() list it first as in our own models.
    rest = [(k, m) for k, m in model._modules.items() if k != "input"]
    model._modules.clear()
    model._modules.update([("input", adapter), *rest])
    model.register_forward_pre_hook(_apply_input)
    return model


def merge_overrides(model_name: str, defaults: dict, overrides: dict) -> dict:
    """`defaults` updated by `overrides`; an unknown key is a TypeError naming the valid ones."""
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise TypeError(f"{model_name}: unknown override(s) {unknown}; valid overrides: {sorted(defaults)}")
    return {**defaults, **overrides}


def no_pretrained(model_name: str, pretrained: bool) -> None:
    """Builders of models trained only in this project call this: pretrained=True is a clear ValueError."""
    if pretrained:
        raise ValueError(
            f"{model_name}: no pretrained weights exist for this model; train it (01_vit_finetuning) "
            "and pass checkpoint=<path to its .safetensors> instead"
        )


def default_stats(in_chans: int, mean: Sequence[float] | None, std: Sequence[float] | None):
    """Dataset statistics, or the neutral 0.5/0.5 when none are given."""
    return (
        tuple(mean) if mean is not None else (0.5,) * in_chans,
        tuple(std) if std is not None else (0.5,) * in_chans,
    )


_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile prefixes
_TRAINER_KEYS = ("model", "state_dict", "model_state")  # where training checkpoints keep the weights


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a torch.save'd state dict (loaded with weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            sd = safetensors.torch.load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # SafetensorError, a truncated zip, a bad pickle: the library names no file
        raise ValueError(f"checkpoint {str(path)!r} is unreadable ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200] if str(err) else ''}); it is damaged or not a "
                         "weights file: copy or train it again") from err
    if not isinstance(sd, dict):
        raise ValueError(f"checkpoint {str(path)!r} holds a {type(sd).__name__}, not a state dict; pass the "
                         "file of the model's weights")
    for key in _TRAINER_KEYS:  # a training checkpoint {"model": state_dict, "optimizer": ..., "epoch": ...}
        if isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    return strip_prefixes(sd)


def strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def head_name(model: nn.Module, num_classes: int) -> str | None:
    """Name of the classifier: the last nn.Linear with `num_classes` outputs."""
    names = [
        n for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == num_classes
    ]
    return names[-1] if names else None


def load_weights(
    model: nn.Module, sd: dict[str, torch.Tensor], head: str | None, may_miss: tuple[str, ...] = ("input.",)
) -> None:
    """Strict load, except: a head of another shape (another class count) is dropped with a warning and
    stays freshly initialised, and keys under `may_miss` (our input buffers) may be absent."""
    own, sd = model.state_dict(), dict(sd)
    head_keys = [k for k in sd if head is not None and k.startswith(head + ".")]
    dropped = any(k in own and own[k].shape != sd[k].shape for k in head_keys)
    if dropped:
        shapes = {k: tuple(sd[k].shape) for k in head_keys}
        warnings.warn(
            f"checkpoint head {head!r} {shapes} does not fit this model's {model_classes(model, head)} "
            "classes: head not loaded, it stays freshly initialised (fine-tune it)",
            stacklevel=3,
        )
        for k in head_keys:
            del sd[k]
    missing, unexpected = model.load_state_dict(sd, strict=False)
    tolerated = may_miss + ((head + ".",) if dropped else ())
    missing = [k for k in missing if not k.startswith(tolerated)]
    if missing or unexpected:
        raise RuntimeError(
            f"checkpoint does not fit the model: missing keys {missing}, unexpected keys {unexpected}"
        )


def model_classes(model: nn.Module, head: str) -> int:
    return model.get_submodule(head).out_features
