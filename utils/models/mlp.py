"""MLP family: the bottleneck MLP of Bachmann et al. 2023 ("Scaling MLPs: A Tale of Inductive Bias") and a
plain MLP for ablations.

Layer names: `input`, `flatten`, `stem`, `blocks.0..N-1`, `norm`, `head`. The paper models take the image
resized to 64x64 (the `resolution` override), flattened channel-major as in the original code.

Like the original `BottleneckMLP` there is no LayerNorm before the head: `norm` is an identity layer (still
hookable) unless `final_norm=True`, so that the authors' released checkpoints reproduce their outputs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..files import atomic_write, checkpoints_root
from .common import (
    InputAdapter,
    WeightsUnreachable,
    default_stats,
    load_weights,
    merge_overrides,
    no_pretrained,
    strip_prefixes,
)
from .registry import register_model

Stats = Sequence[float] | None


class BottleneckBlock(nn.Module):
    """x + W2 GELU(W1 LayerNorm(x)), inner width expansion * width (pre-norm residual MLP block).
    norm=False: no LayerNorm (an identity `norm`, still hookable): the ablation of the paper's block norm."""

    def __init__(self, width: int, expansion: int = 4, dropout: float = 0.0, norm: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(width) if norm else nn.Identity()
        self.fc1 = nn.Linear(width, expansion * width)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(expansion * width, width)
        self.drop = nn.Dropout(dropout)  # after the residual sum, as in the original code

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, width)
        return self.drop(x + self.fc2(self.act(self.fc1(self.norm(x)))))


class BottleneckMLP(nn.Module):
    def __init__(self, adapter: InputAdapter, in_features: int, num_classes: int, depth: int, width: int,
                 expansion: int = 4, final_norm: bool = False, dropout: float = 0.0, block_norm: bool = True):
        super().__init__()
        self.input = adapter
        self.flatten = nn.Flatten()  # (B, C, R, R) -> (B, C*R*R)
        self.stem = nn.Linear(in_features, width)
        blocks = (BottleneckBlock(width, expansion, dropout, block_norm) for _ in range(depth))
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.LayerNorm(width) if final_norm else nn.Identity()
        self.head = nn.Linear(width, num_classes)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, num_classes)
        x = F.dropout(self.stem(self.flatten(self.input(x))), self.dropout, self.training)
        return self.head(self.norm(self.blocks(x)))


NORMS = ("none", "batch", "layer")  # mlp_plain's `norm`: after every hidden Linear, before the ReLU
FEATURES = ("pixels", "fourier", "sine")  # mlp_plain's `features`: the input representation


def norm_layer(norm: str, width: int) -> nn.Module:
    """BatchNorm1d, LayerNorm or an identity over `width` features."""
    if norm not in NORMS:
        raise ValueError(f"mlp_plain: norm must be one of {', '.join(NORMS)}; got {norm!r}")
    return {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}[norm](width) if norm != "none" else nn.Identity()


class PlainBlock(nn.Module):
    """Linear -> (BatchNorm | LayerNorm) -> ReLU -> Dropout, plus the input when `skip` and the widths agree.
    The norm layer is named `bn` whatever its kind (one name for hooks)."""

    def __init__(self, d_in: int, d_out: int, norm: str, dropout: float, skip: bool):
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)
        self.bn = norm_layer(norm, d_out)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)
        self.skip = skip and d_in == d_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, d_in) -> (B, d_out)
        out = self.drop(self.act(self.bn(self.fc(x))))
        return x + out if self.skip else out


class FourierFeatures(nn.Module):
    """Random Fourier features of the whole (normalised) pixel vector x, after Tancik et al. 2020:
    [sin(2 pi x B), cos(2 pi x B)], B (d_in, n) fixed Gaussian with entries N(0, (scale / sqrt(d_in))^2), so
    2 pi x B has a standard deviation of about 2 pi scale for unit-variance pixels. B comes from its own
    generator seeded with `seed` (the same B for a seed, whatever torch's global state) and is a buffer, so
    it is in the state dict and a model rebuilt from its card gets the same B."""

    def __init__(self, d_in: int, n: int, scale: float, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("B", torch.randn(d_in, n, generator=gen) * (scale / d_in**0.5))
        self.out_features = 2 * n

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, d_in) -> (B, 2n)
        proj = 2 * torch.pi * x @ self.B
        return torch.cat([proj.sin(), proj.cos()], dim=1)


class SineFeatures(nn.Module):
    """Every (normalised) pixel value x expanded to [x, sin(a_1 x), ..., sin(a_k x)] for fixed frequencies a
    (a buffer): elementwise, where Fourier features mix all pixels. (B, d) -> (B, d * (k + 1))."""

    def __init__(self, d_in: int, freqs: Sequence[float]):
        super().__init__()
        self.register_buffer("freqs", torch.tensor([float(a) for a in freqs]))
        self.out_features = d_in * (len(freqs) + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        waves = torch.sin(x.unsqueeze(-1) * self.freqs)  # (B, d, k)
        return torch.cat([x.unsqueeze(-1), waves], dim=-1).flatten(1)


class PlainMLP(nn.Module):
    """`depth` hidden layers of `width` units: `features` (an identity for raw pixels), `stem` (the first
    hidden layer), `blocks` (the others), `head`."""

    def __init__(self, adapter: InputAdapter, in_features: int, num_classes: int, depth: int, width: int,
                 norm: str, skip: bool, dropout: float, features: nn.Module | None = None):
        super().__init__()
        if depth < 1:
            raise ValueError(f"mlp_plain: depth must be >= 1, got {depth}")
        self.input = adapter
        self.flatten = nn.Flatten()
        self.features = features if features is not None else nn.Identity()
        d_in = getattr(self.features, "out_features", in_features)
        self.stem = PlainBlock(d_in, width, norm, dropout, skip=False)
        hidden = (PlainBlock(width, width, norm, dropout, skip) for _ in range(depth - 1))
        self.blocks = nn.Sequential(*hidden)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(self.features(self.flatten(self.input(x))))))


# ---------------------------------------------------------------------------------------------------------
# Builders: fn(num_classes, in_chans, img_size, mean, std, pretrained=False, **overrides) -> model

# name: (blocks, width, input resolution or None for the native image size, docstring)
BOTTLENECKS = {
    "mlp_b12_wi1024": (12, 1024, 64, "Paper B-12/Wi-1024 at 64x64 (113,343,498 parameters, 10 RGB classes)."),
    "mlp_b12_wi512": (12, 512, 64, "Paper B-12/Wi-512 at 64x64 (31.5M parameters)."),
    "mlp_b6_wi1024": (6, 1024, 64, "Paper B-6/Wi-1024 at 64x64 (63.0M parameters)."),
    "mlp_b6_wi512": (6, 512, 64, "Paper B-6/Wi-512 at 64x64 (18.9M parameters)."),
    "mlp_b4_wi256": (4, 256, None, "The paper's architecture small enough for CPU: 4 blocks of width 256 at "
                     "the native resolution, no resizing (2.31M parameters at 28x28x1, 2.89M at 32x32x3)."),
    "test_mlp": (2, 32, None, "Tiny bottleneck MLP (2 blocks of width 32, native resolution) for tests."),
}
_PRETRAINED_DOC = (
    " `pretrained=True`: the authors' ImageNet-21k weights; 'in21k_cifar10' / 'in21k_cifar100': their CIFAR "
    "fine-tunes (PAPER_CHECKPOINTS). Overrides: resolution, expansion, final_norm, dropout, net_chans, "
    "block_norm."
)


def _bottleneck_builder(name: str, blocks: int, width: int, resolution: int | None, doc: str):
    def build(num_classes: int = 10, in_chans: int = 3, img_size: int = 32, mean: Stats = None,
              std: Stats = None, pretrained: bool | str = False, **overrides) -> BottleneckMLP:
        if resolution is None:
            no_pretrained(name, pretrained)
        # net_chans: channels the network takes; 3 for the paper's RGB checkpoints (grey images are repeated)
        # block_norm=False: no LayerNorm inside the blocks (an ablation; the paper's blocks have it)
        defaults = dict(resolution=resolution or img_size, expansion=4, final_norm=False, dropout=0.0,
                        net_chans=3 if pretrained else in_chans, block_norm=True)
        cfg = merge_overrides(name, defaults, overrides)
        adapter = InputAdapter(*default_stats(in_chans, mean, std), size=cfg["resolution"],
                               out_chans=cfg["net_chans"])
        model = BottleneckMLP(adapter, cfg["net_chans"] * cfg["resolution"] ** 2, num_classes, blocks, width,
                              cfg["expansion"], cfg["final_norm"], cfg["dropout"], cfg["block_norm"])
        if pretrained:
            load_paper_state_dict(model, download_paper_checkpoint(name, pretrained))
        model.resolved_overrides = cfg  # for the model card: rebuilding needs no `pretrained`
        return model

    build.__name__ = build.__qualname__ = name
    build.__doc__ = doc + (_PRETRAINED_DOC if resolution else "")
    return build


for _name, _spec in BOTTLENECKS.items():
    register_model("mlp", _name)(_bottleneck_builder(_name, *_spec))


@register_model("mlp")
def mlp_plain(num_classes: int = 10, in_chans: int = 3, img_size: int = 32, mean: Stats = None,
              std: Stats = None, pretrained: bool = False, **overrides) -> PlainMLP:
    """Plain ReLU MLP at the native resolution; overrides depth (hidden layers), width, norm ("none", "batch",
    "layer"), skip (residual connections between equal-width layers), dropout, resolution, and the input
    representation `features`: "pixels" (raw), "fourier" (fourier_features random Fourier features at
    fourier_scale, B drawn from feature_seed) or "sine" ([x, sin(a x) for a in sine_freqs] per pixel)."""
    no_pretrained("mlp_plain", pretrained)
    defaults = dict(depth=4, width=512, norm="none", skip=False, dropout=0.0, resolution=img_size,
                    features="pixels", fourier_features=1024, fourier_scale=1.0, feature_seed=0,
                    sine_freqs=(1.0, 2.0, 4.0, 8.0))
    cfg = merge_overrides("mlp_plain", defaults, overrides)
    if cfg["features"] not in FEATURES:
        raise ValueError(f"mlp_plain: features must be one of {', '.join(FEATURES)}; got {cfg['features']!r}")
    adapter = InputAdapter(*default_stats(in_chans, mean, std), size=cfg["resolution"])
    d_in = in_chans * cfg["resolution"] ** 2
    features = None
    if cfg["features"] == "fourier":
        features = FourierFeatures(d_in, cfg["fourier_features"], cfg["fourier_scale"], cfg["feature_seed"])
    elif cfg["features"] == "sine":
        features = SineFeatures(d_in, cfg["sine_freqs"])
    model = PlainMLP(adapter, d_in, num_classes, cfg["depth"], cfg["width"], cfg["norm"], cfg["skip"],
                     cfg["dropout"], features)
    model.resolved_overrides = cfg  # the card rebuilds the same features (and B, from feature_seed)
    return model


# ---------------------------------------------------------------------------------------------------------
# The authors' released checkpoints (github.com/gregorbachmann/scaling_mlps)

# Their BottleneckMLP keys -> ours.
_PAPER_KEYS = (
    (r"^linear_in\.", "stem."),
    (r"^linear_out\.", "head."),
    (r"^layernorms\.(\d+)\.", r"blocks.\1.norm."),
    (r"^blocks\.(\d+)\.block\.0\.", r"blocks.\1.fc1."),
    (r"^blocks\.(\d+)\.block\.2\.", r"blocks.\1.fc2."),
)

# (model, tag) -> (the authors' checkpoint name, Google Drive file id), from their utils/download.py.
PAPER_CHECKPOINTS = {
    ("mlp_b12_wi1024", "in21k"): ("B-12_Wi-1024_res_64_imagenet21_epochs_800",
                                  "1rcV8RXij_kW9X2zSLNyNOTO_bKUjE0cJ"),
    ("mlp_b12_wi512", "in21k"): ("B-12_Wi-512_res_64_imagenet21_epochs_600",
                                 "1sL9j_4FFeBTWTzuRFbHLfwrmPVLXhUtW"),
    ("mlp_b6_wi1024", "in21k"): ("B-6_Wi-1024_res_64_imagenet21_epochs_800",
                                 "1cmO3QSz_hfHtyzkUOZnPmXPxIE2YzEbf"),
    ("mlp_b6_wi512", "in21k"): ("B-6_Wi-512_res_64_imagenet21_epochs_800",
                                "1QV3a99UT8llfh9zDDuNKWDH_5c6S_YT5"),
    ("mlp_b12_wi1024", "in21k_cifar10"): ("B-12_Wi-1024_res_64_cifar10_epochs_20",
                                          "1GyxuewoOzMRhzEOyUrIBLQzquc-QEYNV"),
    ("mlp_b12_wi512", "in21k_cifar10"): ("B-12_Wi-512_res_64_cifar10_epochs_20",
                                         "1F1NvoOsYCgsn1GOZcwsoToOtsw-9Aw1v"),
    ("mlp_b6_wi1024", "in21k_cifar10"): ("B-6_Wi-1024_res_64_cifar10_epochs_20",
                                         "1Tyd5CkROPCMQybnrZ_o1wiAW7VoK6AfJ"),
    ("mlp_b6_wi512", "in21k_cifar10"): ("B-6_Wi-512_res_64_cifar10_epochs_20",
                                        "1VjHgjheSm_w7xPtheEmY5kV_KE4-38zQ"),
    ("mlp_b12_wi1024", "in21k_cifar100"): ("B-12_Wi-1024_res_64_cifar100_epochs_40",
                                           "1LNqC58cSwtuDr-C4bk1O3GA_vAWls-UH"),
    ("mlp_b12_wi512", "in21k_cifar100"): ("B-12_Wi-512_res_64_cifar100_epochs_20",
                                          "1KIULehrqOyxIkZj0HiqowNmBy4Ye1EQ2"),
    ("mlp_b6_wi1024", "in21k_cifar100"): ("B-6_Wi-1024_res_64_cifar100_epochs_20",
                                          "1FrRb78bjun6QGbbH-pCWDaaE_8LWW785"),
}


def is_paper_state_dict(sd: dict[str, torch.Tensor]) -> bool:
    """True for the original code's key layout (`linear_in`, `layernorms`, `linear_out`)."""
    keys = strip_prefixes(sd)
    return "linear_in.weight" in keys and "linear_out.weight" in keys


def paper_to_ours(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the original BottleneckMLP's keys to this module's names."""
    out = {}
    for key, value in strip_prefixes(sd).items():
        for pattern, repl in _PAPER_KEYS:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def load_paper_state_dict(model: BottleneckMLP, state_dict: dict[str, torch.Tensor]) -> None:
    """Load an original-layout checkpoint into our BottleneckMLP; a head for another number of classes is
    dropped with a warning (fine-tune it)."""
    sd = paper_to_ours(state_dict)
    if any(k.endswith("running_mean") for k in sd):
        raise ValueError("checkpoint is the paper's BatchNorm variant (norm='batch'); only LayerNorm here")
    theirs, ours = sd["stem.weight"].shape[1], model.stem.in_features
    if theirs != ours:
        raise ValueError(
            f"checkpoint takes {theirs} input features (channels * resolution^2, e.g. 3*64*64), "
            f"the model {ours}: pass matching in_chans/resolution"
        )
    may_miss = ("input.", "norm.") if isinstance(model.norm, nn.LayerNorm) else ("input.",)
    load_weights(model, sd, head="head", may_miss=may_miss)


def download_paper_checkpoint(name: str, tag: bool | str) -> dict[str, torch.Tensor]:
    """The authors' weights for `name` (tag True: "in21k"), fetched with gdown into
    `<checkpoints>/paper/` (the checkpoints root, $MLPZOOM_CHECKPOINTS or <repo>/checkpoints)."""
    tag = "in21k" if tag is True else tag
    if (name, tag) not in PAPER_CHECKPOINTS:
        tags = sorted(t for n, t in PAPER_CHECKPOINTS if n == name)
        raise ValueError(f"{name}: no paper checkpoint {tag!r}; pretrained may be True or one of {tags}")
    ckpt_name, file_id = PAPER_CHECKPOINTS[name, tag]
    path = checkpoints_root() / "paper" / f"{ckpt_name}_weights"
    if not path.is_file():
        _gdown(file_id, path, ckpt_name)
    return torch.load(path, map_location="cpu", weights_only=True)


def _gdown(file_id: str, path: Path, ckpt_name: str) -> None:
    url = f"https://drive.google.com/uc?id={file_id}"
    try:
        import gdown

        def fetch(tmp: Path) -> None:
            if gdown.download(id=file_id, output=str(tmp), quiet=False) is None:
                raise OSError("gdown returned no file")

        atomic_write(path, fetch)  # a broken download never looks finished
    except Exception as err:  # gdown raises its own, requests' and OS errors; all mean "not downloaded"
        raise WeightsUnreachable(
            f"could not download the paper checkpoint {ckpt_name} ({type(err).__name__}: {err}). "
            f"On a machine with internet: `gdown {file_id} -O {ckpt_name}_weights` (or open {url}), "
            f"copy the file to {path} or pass checkpoint=<its path> to create_model"
        ) from err
