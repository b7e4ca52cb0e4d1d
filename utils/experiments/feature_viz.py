"""Feature visualisation (activation maximisation): images that maximise a class logit or a unit. How
periodic those images are is recurrence's question; the tile shuffle is texture_shape's.

    obj = class_logit(3)                        # or unit("blocks.1", 17), 0.5 * unit(...) + class_logit(3)
    vis = visualize(model, [obj, class_logit(4)], steps=256, param="pixels", transforms=ORIGINAL, seed=0)
    vis.images                                  # (K, C, H, W) in [0, 1]: image k maximises objective k
    vis.trace                                   # (steps + 1, K): each objective at every step

The original study optimised raw pixels from N(0.5, (1/6)^2) noise toward a class logit with the normalised
gradient step `x += step / mean|g| * g` and a Gaussian blur of the image after every step (kernel 5, sigma
0.5 -> 0.1): `visualize(..., param="pixels", step_rule="normalized", transforms=ORIGINAL)`. The Fourier
parametrisation with decorrelated colour and Adam follow Lucent (github.com/greentfrapp/lucent).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..config import resolve
from ..hooks import recording, stage_layers
from ..models import frozen, model_device
from ..progress import bar as progress_bar
from ..registry import Registry

# ---------------------------------------------------------------- objectives

REDUCTIONS = ("mean", "cls", "center")


@dataclass(frozen=True)
class Term:
    """weight * one unit of one layer's output, per image."""

    layer: str | None  # a module name ("blocks.1", "layer2"); None: the model's output (the logits)
    index: int  # unit (B, D), channel (B, C, H, W) or token feature (B, T, D)
    reduce: str = "mean"  # over positions: "mean" (a channel, or a feature over all tokens), "cls"
    # (token 0 of (B, T, D)), "center" (the middle position of (B, C, H, W)); ignored for (B, D)
    relu: bool = False  # False: the layer's output as hooked (pre-activation for Linear/conv layers)
    weight: float = 1.0

    def value(self, act: Tensor) -> Tensor:  # act: the layer's output (B, ...) -> (B,)
        act = act.relu() if self.relu else act
        if act.dim() == 2:
            return act[:, self.index]
        if act.dim() == 3 and self.reduce in ("mean", "cls"):  # (B, T, D): timm ViT tokens
            feature = act[..., self.index]  # (B, T)
            return feature.mean(1) if self.reduce == "mean" else feature[:, 0]
        if act.dim() == 4 and self.reduce in ("mean", "center"):  # (B, C, H, W)
            channel = act[:, self.index]  # (B, H, W)
            h, w = channel.shape[1:]
            return channel.mean((1, 2)) if self.reduce == "mean" else channel[:, h // 2, w // 2]
        raise ValueError(f"reduce={self.reduce!r} does not apply to an output of shape {tuple(act.shape)}")

    @property
    def label(self) -> str:
        what = "class" if self.layer is None else f"{self.layer}:{self.reduce}" + ":relu" * self.relu
        return f"{what} {self.index}" if self.weight == 1 else f"{self.weight:g}*{what} {self.index}"


@dataclass(frozen=True)
class Objective:
    """A weighted sum of terms; one value per image. Compose with + and scalar * (-1 * obj to minimise)."""

    terms: tuple[Term, ...]

    def __call__(self, acts: dict[str | None, Tensor]) -> Tensor:  # acts: layer -> output -> (B,)
        return sum(t.weight * t.value(acts[t.layer]) for t in self.terms)

    def __add__(self, other: Objective) -> Objective:
        return Objective(self.terms + other.terms)

    def __mul__(self, scale: float) -> Objective:
        return Objective(tuple(replace(t, weight=t.weight * scale) for t in self.terms))

    __rmul__ = __mul__

    @property
    def layers(self) -> set[str]:
        return {t.layer for t in self.terms if t.layer is not None}

    @property
    def label(self) -> str:
        return " + ".join(t.label for t in self.terms)


def class_logit(index: int) -> Objective:
    return Objective((Term(None, index),))


def unit(layer: str, index: int, reduce: str = "mean", relu: bool = False) -> Objective:
    """Unit / channel / token feature `index` of the named layer's output (see Term)."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}; got {reduce!r}")
    return Objective((Term(layer, index, reduce, relu),))


# ---------------------------------------------------------------- parametrisations

# Lucent's colour correlation (sqrt of the ImageNet RGB covariance), columns scaled to norm <= 1.
COLOR_CORRELATION_SVD_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))


def color_matrix(channels: int) -> Tensor:
    """(C, C) map from decorrelated to image colour: Lucent's for RGB, the identity otherwise (grey)."""
    if channels != 3:
        return torch.eye(channels)
    m = torch.tensor(COLOR_CORRELATION_SVD_SQRT)
    return m / m.norm(dim=0).max()


def frequencies(h: int, w: int) -> Tensor:
    """(H, W // 2 + 1) radial frequency of rfft2's bins, in cycles per pixel."""
    return (torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.rfftfreq(w)[None, :] ** 2).sqrt()


def gaussian_kernel(size: int, sigma: float) -> Tensor:
    """(size,) normalised 1-d Gaussian weights centred on the middle tap."""
    taps = torch.arange(size, dtype=torch.float32) - size // 2
    k = torch.exp(-(taps**2) / (2 * sigma**2))
    return k / k.sum()


def blur(x: Tensor, size: int, sigma: float) -> Tensor:
    """Separable Gaussian blur of (B, C, H, W), kernel size x size, reflected borders."""
    c, k = x.shape[1], gaussian_kernel(size, sigma).to(x)
    x = F.pad(x, (size // 2,) * 4, mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, size), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, size, 1), groups=c)


class PixelImage:
    """Raw pixels, the original's parametrisation: the parameter is the image (B, C, H, W), drawn from
    N(0.5, (1/6)^2) and clipped to [0, 1] after every step."""

    def __init__(self, shape: tuple[int, ...], gen: torch.Generator, device: torch.device):
        x = (0.5 + torch.randn(shape, generator=gen) / 6).clamp(0, 1)
        self.param = x.to(device).requires_grad_()

    def image(self) -> Tensor:  # (B, C, H, W) in [0, 1]
        return self.param

    @torch.no_grad()
    def after_step(self, blur_size: int | None, sigma: float | None) -> None:
        self.param.clamp_(0, 1)
        if blur_size:
            self.param.copy_(blur(self.param, blur_size, sigma))


class FourierImage:
    """Lucent's Fourier parametrisation: rfft2 coefficients (B, C, H, W//2+1, 2) ~ N(0, sd^2), scaled by
    1 / max(f, 1/max(H, W))^decay (a 1/f spectrum, like natural images), inverse FFT, divided by 4,
    colour-decorrelated (color_matrix), then a sigmoid into (0, 1)."""

    def __init__(self, shape: tuple[int, ...], gen: torch.Generator, device: torch.device,
                 sd: float = 0.01, decay: float = 1.0):
        b, c, h, w = shape
        self.size, self.freqs = (h, w), frequencies(h, w).to(device)
        self.scale = 1 / self.freqs.clamp_min(1 / max(h, w)) ** decay  # (H, W//2+1)
        self.color = color_matrix(c).to(device)
        self.param = (torch.randn(b, c, h, w // 2 + 1, 2, generator=gen) * sd).to(device).requires_grad_()

    def image(self) -> Tensor:
        spectrum = torch.view_as_complex(self.param) * self.scale
        x = torch.fft.irfft2(spectrum, s=self.size, norm="ortho") / 4  # (B, C, H, W)
        return torch.sigmoid(torch.einsum("dc,bchw->bdhw", self.color, x))

    @torch.no_grad()
    def after_step(self, blur_size: int | None, sigma: float | None) -> None:
        if blur_size:  # a Gaussian blur is a product in the Fourier domain (of the image before the sigmoid)
            gain = torch.exp(-2 * math.pi**2 * sigma**2 * self.freqs**2)
            self.param.mul_(gain[..., None])


PARAMETRISATIONS: Registry[type] = Registry("image parametrisation")
PARAMETRISATIONS.add("pixels", PixelImage)
PARAMETRISATIONS.add("fourier", FourierImage)

# ---------------------------------------------------------------- regularisers, step rules, the loop


@dataclass(frozen=True)
class Transforms:
    """Regularisers and robustness transforms; each is off at its default."""

    blur_size: int | None = None  # Gaussian blur of the image after every step (kernel side, pixels)
    blur_sigma: tuple[float, float] = (0.5, 0.1)  # sigma (pixels) at the first and last step, linear between
    jitter: int = 0  # shift by up to +-jitter pixels (circular, random per step) before every forward
    tv: float = 0.0  # weight of the total variation penalty: mean |x[i+1]-x[i]| over both axes, per image
    l2: float = 0.0  # weight of the L2 penalty: mean (x - 0.5)^2 per image

    def sigma(self, step: int, steps: int) -> float:
        start, end = self.blur_sigma
        return start + (end - start) * step / max(steps - 1, 1)

    def penalty(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B,)
        tv = (x.diff(dim=-1).abs().mean((1, 2, 3)) + x.diff(dim=-2).abs().mean((1, 2, 3))) if self.tv else 0
        l2 = (x - 0.5).pow(2).mean((1, 2, 3)) if self.l2 else 0
        return self.tv * tv + self.l2 * l2 + x.new_zeros(len(x))

    def shift(self, x: Tensor, gen: torch.Generator) -> Tensor:
        if not self.jitter:
            return x
        dy, dx = torch.randint(-self.jitter, self.jitter + 1, (2,), generator=gen).tolist()
        return torch.roll(x, (dy, dx), dims=(-2, -1))


ORIGINAL = Transforms(blur_size=5)  # the original study: blur kernel 5, sigma 0.5 -> 0.1, every step
PLAIN = Transforms()  # no regulariser at all
ROBUST = Transforms(jitter=1, tv=0.05, l2=0.05)  # Lucent-style jitter plus small penalties

STEP_RULES = ("normalized", "adam")
DEFAULT_LR = {"normalized": 0.01, "adam": 0.05}  # the original's step; Lucent's Adam learning rate


@dataclass(frozen=True)
class Visualization:
    images: Tensor  # (K, C, H, W) in [0, 1], on the CPU; image k maximises objective k
    trace: Tensor  # (steps + 1, K): row t < steps is objective k of image k in step t's forward pass (after
    # jitter, before that step's update); the last row is the final images, untransformed
    labels: tuple[str, ...]  # the objectives' labels


def native_shape(model: nn.Module) -> tuple[int, int, int]:
    """(C, H, W) the model takes, from create_model's model_config."""
    cfg = getattr(model, "model_config", None)
    if cfg is None:
        raise ValueError("the model has no model_config (not from create_model): pass image_shape=(C, H, W)")
    return cfg["in_chans"], cfg["img_size"], cfg["img_size"]


def _values(model: nn.Module, x: Tensor, objectives: list[Objective], acts: dict) -> Tensor:
    acts[None] = model(x)  # the hooks fill in the named layers
    return torch.stack([obj(acts)[k] for k, obj in enumerate(objectives)])  # (K,)


def _step(param: Tensor, grad: Tensor, lr: float) -> None:
    """The original's normalised ascent x += lr / mean|g| * g, the mean over each image's own gradient."""
    mean_abs = grad.abs().flatten(1).mean(1).clamp_min(1e-12)  # (B,)
    param.add_(lr * grad / mean_abs.view(-1, *[1] * (grad.dim() - 1)))


def visualize(
    model: nn.Module,
    objectives: Objective | Sequence[Objective],
    *,
    steps: int = 256,
    param: str = "pixels",
    transforms: Transforms = ORIGINAL,
    step_rule: str = "normalized",
    lr: float | None = None,  # None: DEFAULT_LR[step_rule]
    seed: int = 0,
    image_shape: tuple[int, int, int] | None = None,  # (C, H, W); None: the model's native size
    progress: bool = False,
) -> Visualization:
    """Optimise one image per objective, all in one batch (image k sees only objective k's gradient), and
    return them with the objective trace. The same seed gives the same images."""
    objs = [objectives] if isinstance(objectives, Objective) else list(objectives)
    if param not in PARAMETRISATIONS or step_rule not in STEP_RULES:
        raise ValueError(f"param must be one of {PARAMETRISATIONS.names()} and step_rule one of "
                         f"{STEP_RULES}; got {param!r}, {step_rule!r}")
    device, lr = model_device(model), DEFAULT_LR[step_rule] if lr is None else lr
    gen = torch.Generator().manual_seed(seed)
    img = PARAMETRISATIONS[param]((len(objs), *(image_shape or native_shape(model))), gen, device)
    adam = torch.optim.Adam([img.param], lr=lr, maximize=True) if step_rule == "adam" else None
    trace = []
    with frozen(model), recording(model, sorted(set().union(*(o.layers for o in objs)))) as acts:
        for t in progress_bar(range(steps), desc="visualize", disable=not progress, leave=False):
            x = img.image()
            values = _values(model, transforms.shift(x, gen), objs, acts)
            (grad,) = torch.autograd.grad(values.sum() - transforms.penalty(x).sum(), img.param)
            if adam is None:
                with torch.no_grad():
                    _step(img.param, grad, lr)
            else:
                img.param.grad = grad
                adam.step()
            img.after_step(transforms.blur_size, transforms.sigma(t, steps))
            trace.append(values.detach())
        with torch.no_grad():
            x = img.image()
            trace.append(_values(model, x, objs, acts))
    return Visualization(x.detach().cpu(), torch.stack(trace).cpu(), tuple(o.label for o in objs))


# ---------------------------------------------------------------- which layers to look at

def pick_layers(model: nn.Module, n: int) -> list[str]:
    """n stages spread evenly from the first to the last (fewer when the model has fewer)."""
    names = stage_layers(model)
    if not names:
        raise ValueError("no stem/patch_embed/layerN/blocks.i layers: name the layers yourself")
    return [names[i] for i in sorted(set(np.linspace(0, len(names) - 1, n).round().astype(int)))]


# ---------------------------------------------------------------- notebook 08: its knobs


@dataclass(frozen=True)
class Config:
    """08's knobs. Defaults are full's; SMALLER holds what the other profiles change. quick, measured on 2
    shared CPU cores, one thread, per step at 28x28: 30 class images mlp_b4_wi256 18 ms, cnn_small 73 ms,
    vit_mini_p4 121 ms; at 256 steps, trained and random weights: class images ~110 s, units ~70 s,
    Fourier ~20 s; tile shuffle ~25 s: ~4 min in all."""

    steps: int = 1000  # optimisation steps per image (the original: 1000)
    n_classes: int = 10  # visualise classes 0 .. n-1
    n_starts: int = 4  # starting noise images per class (periodicity samples)
    n_layers: int = 4  # layers per model for unit visualisations
    n_units: int = 8  # the first units / channels of each layer
    n_test: int | None = None  # test images for the tile shuffle (the first n); None: all
    param: str = "pixels"  # "pixels" (the original) | "fourier" (Lucent)
    step_rule: str = "normalized"  # "normalized" (the original: step lr / mean|g| * g) | "adam"
    lr: float = 0.01  # the original's step
    blur_size: int | None = 5  # Gaussian blur after every step, kernel side (the original); None: none
    blur_sigma: list[float] = field(default_factory=lambda: [0.5, 0.1])  # (pixels) at the first, last step
    jitter: int = 0  # random shift of up to +-jitter pixels before every forward pass
    tv: float = 0.0  # total-variation penalty weight
    l2: float = 0.0  # L2 penalty weight (around grey 0.5)
    compare_fourier: bool = True  # also class images in Lucent's setting (Fourier, Adam lr 0.05, jitter 1 px)
    tile_grids: list[int] = field(default_factory=lambda: [2, 4])  # tile-shuffle grids (2 for 2x2 tiles)
    invert_depth: float = 0.25  # feature inversion at the stage at this relative depth (pick_at_depth)
    n_invert: int = 8  # inverted images: the first test image of each of the first n classes
    invert_steps: int = 1000  # SGD steps of inversion.invert


SMALLER = {
    "quick": dict(steps=256, n_starts=3, n_layers=3, n_units=6, n_test=2000, n_invert=6, invert_steps=300),
    "smoke": dict(steps=40, n_classes=3, n_starts=2, n_layers=2, n_units=3, n_test=256, n_invert=2,
                  invert_steps=30),
    "rehearsal": dict(steps=5, n_classes=2, n_starts=2, n_layers=1, n_units=2, n_test=8, n_invert=2,
                      invert_steps=5),
}


def config(profile: str | None = None, **overrides) -> Config:
    """08's config under `profile`, with `overrides` (checked: unknown knobs and wrong types are errors)."""
    return resolve(Config, profile, SMALLER, overrides)


def transforms_of(cfg: Config) -> Transforms:
    """The regularisers a config asks for."""
    return Transforms(cfg.blur_size, tuple(cfg.blur_sigma), cfg.jitter, cfg.tv, cfg.l2)


def visualize_options(cfg: Config, seed: int = 0, progress: bool = False) -> dict:
    """visualize's keyword arguments for a config: the steps, parametrisation, step rule and regularisers."""
    return dict(steps=cfg.steps, param=cfg.param, step_rule=cfg.step_rule, lr=cfg.lr,
                transforms=transforms_of(cfg), seed=seed, progress=progress)


def lucent_options(cfg: Config, seed: int = 0, progress: bool = False) -> dict:
    """visualize's keyword arguments in Lucent's setting (Fourier, Adam lr 0.05, jitter 1 px), cfg's steps."""
    return dict(steps=cfg.steps, param="fourier", step_rule="adam", lr=0.05, transforms=Transforms(jitter=1),
                seed=seed, progress=progress)


# ---------------------------------------------------------------- notebook 08's tables


def class_objectives(classes: Sequence[int], n_starts: int) -> list[Objective]:
    """One class-logit objective per start and class, start-major: objective k is class classes[k % n]."""
    return [class_logit(c) for _ in range(n_starts) for c in classes]


def unit_objectives(nets: dict[str, nn.Module], n_layers: int, n_units: int) -> dict[str, list[Objective]]:
    """Per model: units 0 .. n_units - 1 of each of its pick_layers(net, n_layers), layer-major."""
    layers = {name: pick_layers(net, n_layers) for name, net in nets.items()}
    return {name: [unit(layer, i) for layer in layers[name] for i in range(n_units)] for name in nets}


def visualize_groups(groups: dict[str, dict[str, nn.Module]],
                     objectives: Sequence[Objective] | dict[str, Sequence[Objective]],
                     **kwargs) -> dict[tuple[str, str], Visualization]:
    """visualize(net, objectives, **kwargs) for every network of every group (kind -> model -> network), in
    that order, keyed (kind, model); `objectives`: one list for every network, or model -> its own list."""
    return {(kind, name): visualize(net, objectives[name] if isinstance(objectives, dict) else objectives,
                                    **kwargs)
            for kind, group in groups.items() for name, net in group.items()}


def image_arrays(vis: dict[tuple[str, str], Visualization], what: str) -> dict[str, np.ndarray]:
    """{"<kind>_<what>_<model>": the images (K, C, H, W) in [0, 1]} of visualize_groups' results."""
    return {f"{kind}_{what}_{name}": v.images.numpy() for (kind, name), v in vis.items()}


def class_images(groups: dict[str, dict[str, nn.Module]], objectives: Sequence[Objective], noise: Tensor,
                 **kwargs) -> tuple[dict[tuple[str, str], Visualization], dict[str, np.ndarray]]:
    """The class visualisations of every network (visualize_groups) and their images with two controls:
    {"<kind>_class_<model>": (K, C, H, W), "noise": `noise`, the images the optimisation starts from
    (K, C, H, W), "blurred": that noise through the same optimiser and blur schedule with a zero objective
    on the first group's first network (smoothness alone)}, all in [0, 1]."""
    vis = visualize_groups(groups, objectives, **kwargs)
    first = next(iter(next(iter(groups.values())).values()))
    blurred = visualize(first, [0 * o for o in objectives], **kwargs).images
    return vis, image_arrays(vis, "class") | {"noise": noise.numpy(), "blurred": blurred.numpy()}


def trace_table(vis: dict[tuple[str, str], Visualization], objectives: Sequence[Objective],
                n_classes: int) -> pd.DataFrame:
    """One row per (kind, model) x image x step of class visualisations made with class_objectives: model,
    kind, the class, the start (k // n_classes), the step (0 .. steps) and the objective (the logit)."""
    return pd.concat([pd.DataFrame({"model": name, "kind": kind, "class": objectives[k].terms[0].index,
                                    "start": k // n_classes, "step": np.arange(len(v.trace)),
                                    "objective": v.trace[:, k]})
                      for (kind, name), v in vis.items() for k in range(len(objectives))], ignore_index=True)


def trace_ends(trace: pd.DataFrame) -> pd.DataFrame:
    """trace_table's mean objective per (model, kind) at the first and the last step (one column each)."""
    ends = trace[trace.step.isin([0, trace.step.max()])]
    return ends.pivot_table(index=["model", "kind"], columns="step", values="objective")


def units_table(objectives: dict[str, Sequence[Objective]]) -> pd.DataFrame:
    """One row per unit objective of unit_objectives: model, layer, index (in the images' order)."""
    return pd.DataFrame([{"model": name, "layer": o.terms[0].layer, "index": o.terms[0].index}
                         for name, objs in objectives.items() for o in objs])
