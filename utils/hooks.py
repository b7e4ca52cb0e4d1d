"""Any named layer's tensors: record them, replace them, or collect them over a dataset with a cache.

    with recording(net, ["blocks.1", "head:input"]) as acts:   # filled by every forward pass
        net(x); acts["blocks.1"]                               # (B, ...) as the layer produced it
    with hooked(net, "head:input", lambda t: t * 0):           # a returned tensor replaces the layer's
        net(x)
    feats = collect_activations(net, ds, "layer2", cache=path) # (N, D) float32 on the CPU, cached
    many = collect_many(net, ds, ["stem", "blocks.0"])         # one pass over ds for several layers

Layers are named as in `model.named_modules()`: "head" is the output of `head`, "head:input" its (first)
input. Activations are flattened per image to (N, D). A cache is reused only while the model's weights
(`fingerprint`), the layer, the images (their content fingerprint) and the storage dtype are the same.
float16 storage keeps ~3 significant digits: pass dtype=torch.float32 where small differences matter.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
import torch.nn as nn

from .data import ImageSet, make_loader
from .files import atomic_write, checkpoints_root
from .models import eval_mode, model_device
from .progress import bar as progress_bar

POINTS = ("output", "input")
STAGE = re.compile(r"^(stem|patch_embed|layer\d+|layers\.\d+|blocks\.\d+)$")


def stage_layers(model: nn.Module) -> list[str]:
    """The model's representation stages in forward order: stem / patch embedding, then every block or stage
    (MLP `blocks.i`, CNN `layerN`, ViT and Mixer `blocks.i`, Swin `layers.i`); for a VGG the ReLUs of
    `features`. The names probes, CKA, inversion and unit visualisation hook."""
    return [n for n, m in model.named_modules()
            if STAGE.match(n) or (n.startswith("features.") and isinstance(m, nn.ReLU))]


def parse_layer(layer: str) -> tuple[str, str]:
    """"head" -> ("head", "output"); "head:input" -> ("head", "input")."""
    name, _, point = layer.partition(":")
    if point not in ("", *POINTS):
        raise ValueError(f"layer must be '<module>' or '<module>:input'; got {layer!r}")
    return name, point or "output"


def _first(t):
    return t[0] if isinstance(t, tuple) else t


@contextmanager
def hooked(model: nn.Module, layer: str, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> Iterator:
    """Inside, every forward calls fn(t) on the layer's tensor t (its output, or its first input for
    "<module>:input"); a tensor fn returns replaces t. The hook is removed on exit, errors included."""
    name, point = parse_layer(layer)
    module = model.get_submodule(name)  # a clear AttributeError for a wrong name
    if point == "input":
        def pre(_, args):
            new = fn(args[0])
            return None if new is None else (new, *args[1:])
        handle = module.register_forward_pre_hook(pre)
    else:
        def post(_, args, out):
            new = fn(_first(out))
            if new is None:
                return None
            return (new, *out[1:]) if isinstance(out, tuple) else new
        handle = module.register_forward_hook(post)
    try:
        yield model
    finally:
        handle.remove()


@contextmanager
def recording(model: nn.Module, layers: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """A dict that every forward pass fills with the tensors of `layers` (graph kept: gradients flow)."""
    acts: dict[str, torch.Tensor] = {}
    with ExitStack() as stack:
        for layer in layers:
            stack.enter_context(hooked(model, layer, lambda t, k=layer: acts.__setitem__(k, t)))
        yield acts


def fingerprint(model: nn.Module) -> str:
    """A hash of the model's weights and buffers: a cache made from other weights is not reused."""
    sha = hashlib.sha1()
    for name, t in model.state_dict().items():
        sha.update(name.encode())
        sha.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()[:16]


def activation_path(profile: str, dataset: str, run: str, layer: str, split: str, n: int | None) -> Path:
    """`<checkpoints>/<profile>/<dataset>/activations/<run>__<layer>__<split><n>.pt`."""
    slug = layer.replace(":", "-")
    return checkpoints_root() / profile / dataset / "activations" / f"{run}__{slug}__{split}{n or 'all'}.pt"


def _key(model_print: str, layer: str, ds: ImageSet, dtype: torch.dtype, reduce: Callable | None) -> dict:
    return {"fingerprint": model_print, "layer": layer, "split": ds.split, "dataset": ds.info.name,
            "n": len(ds), "data": ds.fingerprint(), "dtype": str(dtype),
            "reduce": getattr(reduce, "__name__", None)}


def _load(cache: Path | None, key: dict) -> torch.Tensor | None:
    if cache is None or not Path(cache).exists():
        return None
    try:
        blob = torch.load(cache, map_location="cpu", weights_only=True)
    except Exception:  # unreadable: recompute and overwrite
        return None
    return blob["acts"].float() if blob.get("key") == key else None


def _store(cache: Path, key: dict, acts: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Write acts as `dtype` where it cannot overflow (else float32); returns what a later load gives."""
    stored = acts.to(dtype) if acts.abs().max() < torch.finfo(dtype).max else acts
    atomic_write(Path(cache), lambda p: torch.save({"key": key, "acts": stored}, p))
    return stored.float()


@torch.no_grad()
def collect_many(model: nn.Module, ds: ImageSet, layers: Sequence[str], *, n: int | None = None,
                 batch_size: int = 256, caches: dict[str, Path] | None = None,
                 dtype: torch.dtype = torch.float16, progress: bool = True,
                 reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Activations of several layers on the first n images of ds (None: all) in one pass: layer -> (N, D)
    float32 on the CPU. With `caches` (layer -> path), each layer is stored as `dtype` and reused while the
    weights, layer, images and `reduce` are the same; only the missing layers are computed. reduce: applied
    to each batch's tensor (B, ...) before it is flattened (e.g. pooling a conv map)."""
    ds = ds.subset(min(n or len(ds), len(ds)))
    caches = caches or {}
    model_print = fingerprint(model) if caches else ""
    keys = {layer: _key(model_print, layer, ds, dtype, reduce) for layer in layers}
    out = {layer: _load(caches.get(layer), keys[layer]) for layer in layers}
    todo = [layer for layer, acts in out.items() if acts is None]
    if todo:
        chunks: dict[str, list[torch.Tensor]] = {layer: [] for layer in todo}
        loader = make_loader(ds, batch_size, train=False, device=model_device(model))
        with eval_mode(model), ExitStack() as stack:
            for layer in todo:
                save = lambda t, k=layer: chunks[k].append((reduce(t) if reduce else t).detach().flatten(1)
                                                           .float().cpu())
                stack.enter_context(hooked(model, layer, save))
            desc = f"activations {', '.join(todo)}"
            for x, _ in progress_bar(loader, desc=desc, disable=not progress, leave=False):
                model(x)
        for layer in todo:
            acts = torch.cat(chunks[layer])  # (N, D) float32
            out[layer] = _store(caches[layer], keys[layer], acts, dtype) if layer in caches else acts
    return out


def collect_activations(model: nn.Module, ds: ImageSet, layer: str, *, n: int | None = None,
                        batch_size: int = 256, cache: Path | None = None, dtype: torch.dtype = torch.float16,
                        progress: bool = True) -> torch.Tensor:
    """The layer's activations on the first n images of ds (None: all), (N, D) float32 on the CPU, stored as
    `dtype` in `cache` (reused while model weights, layer, split and n are the same)."""
    caches = {layer: Path(cache)} if cache is not None else None
    return collect_many(model, ds, [layer], n=n, batch_size=batch_size, caches=caches, dtype=dtype,
                        progress=progress)[layer]
