"""Feature inversion (Mahendran & Vedaldi 2015): images whose features at a layer match those of target
images, to see what a layer keeps and what it throws away (notebook 08).

    inv = invert(model, "blocks.1", targets, steps=200)     # targets (N, C, H, W) in [0, 1]
    inv.images; inv.feature_distance; inv.pixel_error     # (N, C, H, W) in [0, 1]; (N,); (N,)
    layer = pick_at_depth(feature_viz.stage_layers(model), 0.5)   # the stage half way through

Per image, with phi the layer's tensor flattened to (D,) and x the pixels in [0, 1]:

    loss(x) = ||phi(x) - phi(x0)||^2 / ||phi(x0)||^2                   normalised feature distance
            + alpha_weight * mean_pixels |x - 0.5|^alpha                   alpha-norm penalty (alpha ~ 6)
            + tv_weight * mean_pixels (dx^2 + dy^2)^(beta / 2)             total variation (beta ~ 2)

dx, dy: differences to the right and lower neighbour (the last row and column have none). Pixels are
centred at 0.5 (the middle of [0, 1]) and the penalties are means, not sums, so their weights do not depend
on the image size. The optimiser is SGD with momentum on the pixels themselves, from seeded
N(0.5, (1/6)^2) noise, clamped to [0, 1] after every step. Each image's gradient is divided by its mean
absolute value before the momentum step (the normalised step of feature_viz's original rule): `lr` is then
a step in pixel units, the same for every layer, whereas the normalised distance's raw gradient shrinks
with the layer's width; lr decays linearly to 0 over the steps so the last steps refine.

Layers are named as in `utils.hooks` ("blocks.1", "head:input"). The model's first module `input`
normalises (an invertible affine map), so "input" must give back the target images; "input:input" is the
pixels themselves. The forward pass stops at the layer (the rest of the network is not run).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch import Tensor

from ..hooks import hooked, stage_layers
from ..models import frozen, model_device
from ..progress import bar as progress_bar

POINTS = ("output", "input")


@dataclass(frozen=True)
class Inversion:
    images: Tensor  # (N, C, H, W) in [0, 1] on the CPU: the reconstructions
    feature_distance: Tensor  # (N,) ||phi(x) - phi(x0)||^2 / ||phi(x0)||^2 of the final images
    pixel_error: Tensor  # (N,) RMSE of the final images to the targets, pixel units ([0, 1] scale)
    loss: Tensor  # (steps + 1, N): row t is the loss in step t's forward pass (before its update); the
    # last row is the final images' loss
    distance: Tensor  # (steps + 1, N): the normalised feature distance, rows as in `loss`
    layer: str


# ---------------------------------------------------------------- penalties


def alpha_norm(x: Tensor, alpha: float) -> Tensor:
    """(B, C, H, W) -> (B,): mean over pixels of |x - 0.5|^alpha."""
    return (x - 0.5).abs().pow(alpha).mean((1, 2, 3))


def total_variation(x: Tensor, beta: float) -> Tensor:
    """(B, C, H, W) -> (B,): mean over the (H-1) x (W-1) pixels with both neighbours, and channels, of
    ((x[i, j+1] - x[i, j])^2 + (x[i+1, j] - x[i, j])^2)^(beta / 2)."""
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    sq = dx.pow(2) + dy.pow(2)
    # beta < 2 has an infinite slope at 0: a tiny floor keeps the gradient finite on flat patches
    return (sq if beta == 2 else (sq + 1e-12).pow(beta / 2)).mean((1, 2, 3))


# ---------------------------------------------------------------- features


class _Stop(Exception):
    """Raised by the hook once the layer's tensor is in hand: the rest of the network is not run."""


def hook_name(layer: str, layer_point: str) -> str:
    """"blocks.1" + "input" -> "blocks.1:input"; a layer already naming its point is kept."""
    if layer_point not in POINTS:
        raise ValueError(f"layer_point must be one of {POINTS}; got {layer_point!r}")
    if ":" in layer:
        if layer_point != "output":
            raise ValueError(f"{layer!r} already names its point; leave layer_point at 'output'")
        return layer
    return layer if layer_point == "output" else f"{layer}:input"


def features(model: nn.Module, layer: str, x: Tensor) -> Tensor:
    """The layer's tensor on x, flattened per image to (B, D) float32 (graph kept for x's gradient)."""
    got: dict[str, Tensor] = {}

    def grab(t: Tensor) -> None:
        got["t"] = t
        raise _Stop

    with hooked(model, layer, grab):
        try:
            model(x)
        except _Stop:
            pass
    if "t" not in got:
        raise ValueError(f"layer {layer!r} was not reached in the forward pass")
    return got["t"].flatten(1).float()


def feature_distance(phi: Tensor, phi0: Tensor) -> Tensor:
    """(B, D), (B, D) -> (B,): ||phi - phi0||^2 / ||phi0||^2 (a zero target norm is floored at 1e-12)."""
    return (phi - phi0).pow(2).sum(1) / phi0.pow(2).sum(1).clamp_min(1e-12)


# ---------------------------------------------------------------- the loop


def _losses(model: nn.Module, layer: str, x: Tensor, phi0: Tensor, alpha: float, alpha_weight: float,
            beta: float, tv_weight: float) -> tuple[Tensor, Tensor]:
    """(loss, distance), each (B,), of images x against target features phi0 (B, D)."""
    dist = feature_distance(features(model, layer, x), phi0)
    loss = dist
    if alpha_weight:
        loss = loss + alpha_weight * alpha_norm(x, alpha)
    if tv_weight:
        loss = loss + tv_weight * total_variation(x, beta)
    return loss, dist


def start_noise(shape: Sequence[int], seed: int) -> Tensor:
    """Seeded N(0.5, (1/6)^2) pixels clamped to [0, 1], on the CPU (the same on every device)."""
    return (0.5 + torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed)) / 6).clamp(0, 1)


def invert(
    model: nn.Module,
    layer: str,
    targets: Tensor,
    *,
    steps: int = 200,
    lr: float = 0.05,  # mean pixel step at the start (the gradient is normalised per image); decays linearly
    momentum: float = 0.9,
    alpha: float = 6.0,
    alpha_weight: float = 1.0,  # |x - 0.5|^6 <= 1/64: matters only near 0 and 1 (clamping bounds it anyway)
    beta: float = 2.0,
    tv_weight: float = 0.05,  # mean squared gradient of a natural image is ~0.01-0.05 per pixel
    seed: int = 0,
    layer_point: str = "output",
    progress: bool = False,
) -> Inversion:
    """Reconstruct each target image (N, C, H, W) in [0, 1] from its features at `layer` (the loss and the
    optimiser in the module docstring). The model is frozen inside (eval mode, no parameter gradients),
    its mode and requires_grad flags restored after; the same seed gives the same images."""
    name, device = hook_name(layer, layer_point), model_device(model)
    x0 = targets.detach().float().to(device)
    x = start_noise(x0.shape, seed).to(device).requires_grad_()
    opt = torch.optim.SGD([x], lr=lr, momentum=momentum)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 - t / max(steps, 1))
    penalties = dict(alpha=alpha, alpha_weight=alpha_weight, beta=beta, tv_weight=tv_weight)
    losses, dists = [], []
    with frozen(model):
        with torch.no_grad():
            phi0 = features(model, name, x0)  # (N, D)
        for _ in progress_bar(range(steps), desc=f"invert {name}", disable=not progress, leave=False):
            loss, dist = _losses(model, name, x, phi0, **penalties)
            (grad,) = torch.autograd.grad(loss.sum(), x)  # images are independent: each sees its own loss
            x.grad = grad / grad.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, 1, 1, 1)
            opt.step()
            sched.step()
            with torch.no_grad():
                x.clamp_(0, 1)
            losses.append(loss.detach())
            dists.append(dist.detach())
        with torch.no_grad():
            loss, dist = _losses(model, name, x, phi0, **penalties)
    losses.append(loss)
    dists.append(dist)
    rmse = (x.detach() - x0).pow(2).mean((1, 2, 3)).sqrt()
    return Inversion(x.detach().cpu(), dist.cpu(), rmse.cpu(), torch.stack(losses).cpu(),
                     torch.stack(dists).cpu(), name)


# ---------------------------------------------------------------- which layer


def pick_at_depth(layers: Sequence[str], fraction: float) -> str:
    """The layer at relative depth `fraction` in [0, 1] of `layers` (in forward order): index
    round(fraction * (len - 1)), halves rounded up; 0 the first, 1 the last."""
    if not layers:
        raise ValueError("no layers to pick from")
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1]; got {fraction}")
    return layers[math.floor(fraction * (len(layers) - 1) + 0.5)]


# ---------------------------------------------------------------- notebook 08's table


def first_of_each_class(labels: Tensor, n_classes: int) -> Tensor:
    """The index of the first image of each class 0 .. n_classes - 1 (the inversion targets)."""
    return torch.tensor([int(torch.nonzero(labels == c)[0, 0]) for c in range(n_classes)])


def inversion_table(networks: dict[tuple[str, str], nn.Module], x0: Tensor, index: Tensor,
                    classes: Sequence[str], labels: Tensor, *, depth: float, steps: int, seed: int = 0,
                    family=str, progress: bool = False) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Invert the targets x0 (N, C, H, W) in [0, 1] at the stage at relative `depth` of each network, keyed
    (kind, model) (kind: "trained" or "random"): one row per network x image (layer, its relative depth, the
    test index and class, feature distance and pixel RMS error at the start and the end), and the images
    {"targets": x0, "<kind>_<model>": reconstructions}."""
    start = start_noise(x0.shape, seed)
    arrays, rows = {"targets": x0.numpy()}, []
    for (kind, name), net in networks.items():
        stages = stage_layers(net)
        layer = pick_at_depth(stages, depth)
        out = invert(net, layer, x0, steps=steps, seed=seed, progress=progress)
        arrays[f"{kind}_{name}"] = out.images.numpy()
        rows += [{"model": name, "family": family(name), "kind": kind, "layer": layer,
                  "relative_depth": stages.index(layer) / max(len(stages) - 1, 1), "image": k,
                  "test_index": int(index[k]), "class": classes[int(labels[k])],
                  "start_distance": out.distance[0, k].item(),
                  "feature_distance": out.feature_distance[k].item(),
                  "pixel_error": out.pixel_error[k].item(),
                  "start_pixel_error": (start[k] - x0[k]).pow(2).mean().sqrt().item()}
                 for k in range(len(x0))]
    return pd.DataFrame(rows), arrays


def class_inversions(groups: dict[str, dict[str, nn.Module]], test, n_classes: int, *, depth: float,
                     steps: int, seed: int = 0, family=str, progress: bool = False
                     ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """inversion_table of the first image of each class 0 .. n - 1 of `test` (a data.ImageSet: uint8 images,
    labels, info.classes; n: n_classes, at most the number of classes) for every network of `groups` (kind ->
    model -> network), in that order."""
    first = first_of_each_class(test.labels, min(n_classes, test.info.num_classes))
    x0 = test.subset(first).as_float()  # (N, C, H, W) in [0, 1]
    networks = {(kind, name): net for kind, group in groups.items() for name, net in group.items()}
    return inversion_table(networks, x0, first, test.info.classes, test.labels[first], depth=depth,
                           steps=steps, seed=seed, family=family, progress=progress)


def inversion_summary(inverted: pd.DataFrame) -> pd.DataFrame:
    """inversion_table's mean relative depth, feature distance, pixel error and start pixel error per
    (model, kind, layer), in first-seen order."""
    return inverted.groupby(["model", "kind", "layer"], sort=False)[
        ["relative_depth", "feature_distance", "pixel_error", "start_pixel_error"]].mean()
