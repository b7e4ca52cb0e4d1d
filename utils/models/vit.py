"""The week-8 "ViT zoo": timm's ViT, Swin, TNT (family "vit"), MLP-Mixer (family "mixer"), and
perceiver-pytorch's Perceiver and Perceiver IO (family "perceiver").

Names: `<arch>_<size>[_p<patch>]`, size one of test < mini < tiny < small < base (`test_*` for the tiny test
variants, as every family has), patch the side of the patches the model cuts from the native image
(`vit_small_p4`, `swin_tiny_p2`, `mixer_mini_p4`; Perceivers take pixels, no patch). The 224x224
architectures keep timm's names (`vit_small_patch16_224`).

timm models keep timm's layer names (`patch_embed`, `blocks.11`, `norm`, `head`; Swin `layers.3`, Mixer
`blocks.7`) with our `input` stage attached in front (common.attach_input). Small-image configurations run
at the dataset's native size with patch 4 (2 for Swin). The `PRETRAINED_224` architectures (ViT-S/16,
Swin-T, TNT-S, Mixer-B/16) resize to 224 and repeat grey channels so that timm's ImageNet weights apply.
Each builder's overrides are the keys of its config. TNT's `pixel_size` (None: timm's own embedding) makes its
inner tokens the TNT paper's non-overlapping pixel squares (`tnt_pixels`); perceiver_medium / large / xl are
the ViT-zoo study's Perceiver ladder (`perceiver_rung`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import timm
import torch
import torch.nn as nn
from perceiver_pytorch import Perceiver, PerceiverIO
from perceiver_pytorch.perceiver_pytorch import fourier_encode
from timm.models.mlp_mixer import MlpMixer
from timm.models.swin_transformer import SwinTransformer
from timm.models.tnt import TNT
from timm.models.vision_transformer import VisionTransformer

from ..files import data_root
from .common import (
    InputAdapter,
    WeightsUnreachable,
    attach_input,
    default_stats,
    merge_overrides,
    no_pretrained,
)
from .registry import register_model

Stats = Sequence[float] | None
Make = Callable[[int, int, int, dict], nn.Module]  # make(num_classes, in_chans, img_size, cfg) -> network


class ImagePerceiver(Perceiver):
    """Perceiver (Jaegle et al. 2021) on images; it appends Fourier position features itself."""

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:  # (B, C, H, W), normalised by `input`
        return super().forward(x.permute(0, 2, 3, 1), **kwargs)  # perceiver-pytorch wants channels last


def fourier_positions(img_size: int, num_bands: int) -> torch.Tensor:
    """(img_size**2, 2 * (2 * num_bands + 1)) sin/cos features of pixel positions in [-1, 1] (to Nyquist)."""
    axis = torch.linspace(-1.0, 1.0, img_size)
    pos = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1)  # (H, W, 2)
    return fourier_encode(pos, float(img_size), num_bands).flatten(2).flatten(0, 1)


class PixelPerceiverIO(PerceiverIO):
    """Perceiver IO (Jaegle et al. 2022) on flattened pixel tokens (value + Fourier position); one learned
    query cross-attends to the latents and is decoded to the logits."""

    def __init__(self, in_chans: int, img_size: int, num_classes: int, num_freq_bands: int, queries_dim: int,
                 **kwargs):
        pos = fourier_positions(img_size, num_freq_bands)  # (H*W, P)
        super().__init__(dim=in_chans + pos.shape[1], queries_dim=queries_dim, logits_dim=num_classes,
                         **kwargs)
        self.register_buffer("pos", pos, persistent=False)
        self.query = nn.Parameter(torch.randn(1, queries_dim))  # the decoder LayerNorms it: scale is moot

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W), normalised by `input`
        tokens = x.flatten(2).transpose(1, 2)  # (B, H*W, C)
        tokens = torch.cat([tokens, self.pos.expand(len(x), -1, -1)], dim=-1)  # (B, H*W, C + P)
        return super().forward(tokens, queries=self.query)[:, 0]  # (B, 1, classes) -> (B, classes)


def _timm_make(cls: type[nn.Module]) -> Make:
    return lambda nc, c, s, cfg: cls(img_size=s, in_chans=c, num_classes=nc, **cfg)


def _tnt_make(nc: int, c: int, s: int, cfg: dict) -> nn.Module:
    """timm's TNT; with `pixel_size` set, its "pixels" (visual words) are the non-overlapping pixel_size x
    pixel_size squares of each patch, each projected linearly to `inner_dim` (see tnt_pixels)."""
    cfg = dict(cfg)
    pixel = cfg.pop("pixel_size", None)
    if pixel is None:
        return TNT(img_size=s, in_chans=c, num_classes=nc, **cfg)
    patch = cfg["patch_size"]
    if s % patch or patch % pixel:
        raise ValueError(f"TNT needs the patch to tile the image and the pixel to tile the patch; got image "
                         f"{s}, patch {patch}, pixel {pixel} (both must divide exactly)")
    net = TNT(img_size=s, in_chans=c, num_classes=nc, **{**cfg, "first_stride": pixel})
    return tnt_pixels(net, pixel)


def tnt_pixels(net: TNT, pixel: int) -> TNT:
    """Make TNT's pixel embedding the TNT paper's visual words (Han et al. 2021, and lucidrains'
    transformer-in-transformer `pixel_size`): each patch cut into (patch / pixel)^2 squares of pixel x pixel,
    each square linearly projected (a convolution with kernel = stride = pixel, applied per patch). timm's
    own embedding is a 7x7 convolution with stride `first_stride` (padding 3) over each patch: the same
    (patch / first_stride)^2 inner tokens, but each sees a 7x7 window that overlaps its neighbours."""
    old = net.pixel_embed.proj
    net.pixel_embed.proj = nn.Conv2d(old.in_channels, old.out_channels, kernel_size=pixel, stride=pixel)
    net.pixel_embed.proj.to(device=old.weight.device, dtype=old.weight.dtype)
    return net


def _perceiver_make(nc: int, c: int, s: int, cfg: dict) -> nn.Module:
    return ImagePerceiver(input_channels=c, input_axis=2, max_freq=float(s), num_classes=nc, **cfg)


def _perceiver_io_make(nc: int, c: int, s: int, cfg: dict) -> nn.Module:
    return PixelPerceiverIO(c, s, nc, **cfg)


VIT_TINY = dict(patch_size=4, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0, drop_rate=0.0,
                drop_path_rate=0.0)
PERCEIVER = dict(depth=4, num_latents=128, latent_dim=256, cross_heads=1, latent_heads=4, cross_dim_head=64,
                 latent_dim_head=64, self_per_cross_attn=2, num_freq_bands=8, attn_dropout=0.0,
                 ff_dropout=0.0, weight_tie_layers=False)
PERCEIVER_IO = dict(depth=6, num_latents=128, latent_dim=256, cross_heads=1, latent_heads=4,
                    cross_dim_head=64, latent_dim_head=64, queries_dim=128, num_freq_bands=8, decoder_ff=True,
                    weight_tie_layers=False)


def perceiver_rung(latent_dim: int) -> dict:
    """The ViT-zoo study's Perceiver ladder (medium / large / XL: 0.29M / 1.15M / 4.43M parameters on
    3x32x32 with 10 classes; its configurations are not at hand, only those counts). One rule gives those
    counts within 2.5%: 2 cross-attentions into 64 latents (one head as wide as the latents), each followed
    by one latent self-attention (latent_dim / 16 heads of 32), Fourier features in 8 bands, dropout 0.1 in
    attention and feed-forward (the study ablated dropout); only the latent width doubles from rung to rung
    (64, 128, 256), which quadruples the parameters as the study's counts do (x3.97, x3.85). `resolution`
    (None: the images' own side) resizes the images first: the CPU-sized ladder of quick reads 14x14."""
    return {**PERCEIVER, "resolution": None, "depth": 2, "num_latents": 64, "latent_dim": latent_dim,
            "cross_heads": 1, "cross_dim_head": latent_dim, "latent_heads": max(1, latent_dim // 16),
            "latent_dim_head": 32, "self_per_cross_attn": 1, "num_freq_bands": 8, "attn_dropout": 0.1,
            "ff_dropout": 0.1}


_TINY_PERCEIVER = dict(num_latents=16, latent_dim=32, latent_heads=2, cross_dim_head=16, latent_dim_head=16,
                       num_freq_bands=4)

# name: (family, make, config = the valid overrides, docstring)
ZOO: dict[str, tuple[str, Make, dict, str]] = {
    "vit_tiny_p4": ("vit", _timm_make(VisionTransformer), VIT_TINY,
                    "ViT-Tiny (embed 192, depth 12, 3 heads) on 4x4 patches of the native image (5.4M)."),
    "vit_small_p4": ("vit", _timm_make(VisionTransformer),
                     {**VIT_TINY, "embed_dim": 384, "num_heads": 6, "drop_path_rate": 0.1},
                     "ViT-Small (embed 384, depth 12, 6 heads) on 4x4 patches of the native image (21.3M)."),
    "swin_tiny_p2": ("vit", _timm_make(SwinTransformer),
                    dict(patch_size=2, window_size=4, embed_dim=96, depths=(2, 2, 6, 2),
                         num_heads=(3, 6, 12, 24), mlp_ratio=4.0, drop_path_rate=0.1),
                    "Swin-T widths and depths for small images: patch 2, window 4 (stages of 16, 8, 4, 2 "
                    "tokens a side at 32x32; timm pads the odd 7x7 stage at 28x28). 27.5M params."),
    "tnt_small_p4": ("vit", _tnt_make,
              dict(patch_size=4, first_stride=1, embed_dim=384, inner_dim=24, depth=12, num_heads_outer=6,
                   num_heads_inner=4, drop_path_rate=0.1, pixel_size=None),
              "Transformer-in-Transformer, TNT-S widths; each 4x4 patch is 16 inner pixel tokens (23.3M)."),
    "mixer_small_p4": ("mixer", _timm_make(MlpMixer),
                dict(patch_size=4, num_blocks=8, embed_dim=512, mlp_ratio=(0.5, 4.0), drop_path_rate=0.0),
                "MLP-Mixer-S widths (8 blocks, 512 channels) on 4x4 patches (17.1M params)."),
    "perceiver_base": ("perceiver", _perceiver_make, PERCEIVER,
                  "Perceiver: 128 latents of 256, 4 cross-attentions each followed by 2 self-attentions; "
                  "Fourier position features up to the image's Nyquist frequency (11.8M params)."),
    "perceiver_io_base": ("perceiver", _perceiver_io_make, PERCEIVER_IO,
                     "Perceiver IO: pixel tokens cross-attended once into 128 latents of 256, 6 "
                     "self-attentions, one learned query decoded to the logits (7.4M params)."),
    # The ViT-zoo study's Perceiver ladder (perceiver_rung): its parameter counts at 3x32x32, 10 classes.
    "perceiver_medium": ("perceiver", _perceiver_make, perceiver_rung(64),
                         "Perceiver medium of the ViT-zoo study: 64 latents of 64 (0.30M; study 0.29M)."),
    "perceiver_large": ("perceiver", _perceiver_make, perceiver_rung(128),
                        "Perceiver large of the ViT-zoo study: 64 latents of 128 (1.15M; study 1.15M)."),
    "perceiver_xl": ("perceiver", _perceiver_make, perceiver_rung(256),
                     "Perceiver XL of the ViT-zoo study: 64 latents of 256 (4.53M; study 4.43M)."),
    # Mini variants: the same architectures sized for CPU training (the quick profile).
    "vit_mini_p4": ("vit", _timm_make(VisionTransformer),
                    dict(patch_size=4, embed_dim=96, depth=6, num_heads=3, mlp_ratio=2.0, drop_rate=0.0,
                         drop_path_rate=0.0),
                    "ViT on 4x4 patches, embed 96, depth 6, 3 heads, MLP ratio 2 (0.46M): CPU-sized."),
    "swin_mini_p2": ("vit", _timm_make(SwinTransformer),
                  dict(patch_size=2, window_size=4, embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 8),
                       mlp_ratio=2.0, drop_path_rate=0.0),
                  "Swin with patch 2, window 4, embed 32, three stages of 2 blocks (0.39M): CPU-sized."),
    "tnt_mini_p4": ("vit", _tnt_make,
                 dict(patch_size=4, first_stride=1, embed_dim=64, inner_dim=8, depth=4, num_heads_outer=2,
                      num_heads_inner=1, mlp_ratio=2.0, drop_path_rate=0.0, pixel_size=None),
                 "TNT with embed 64, inner 8, depth 4 on 4x4 patches (0.18M): CPU-sized."),
    "mixer_mini_p4": ("mixer", _timm_make(MlpMixer),
                   dict(patch_size=4, num_blocks=4, embed_dim=128, mlp_ratio=(0.5, 2.0), drop_path_rate=0.0),
                   "MLP-Mixer with 4 blocks of 128 channels on 4x4 patches (0.29M): CPU-sized."),
    "perceiver_mini": ("perceiver", _perceiver_make,
                       {**PERCEIVER, **_TINY_PERCEIVER, "num_latents": 32, "latent_dim": 64, "depth": 2,
                        "self_per_cross_attn": 1},
                       "Perceiver with 32 latents of 64, 2 cross-attentions (0.22M): CPU-sized."),
    "perceiver_io_mini": ("perceiver", _perceiver_io_make,
                          {**PERCEIVER_IO, **_TINY_PERCEIVER, "num_latents": 32, "latent_dim": 64, "depth": 2,
                           "queries_dim": 32},
                          "Perceiver IO with 32 latents of 64, 2 self-attentions (0.19M): CPU-sized."),
    # Tiny variants for tests and the smoke profile: milliseconds on CPU.
    "test_vit": ("vit", _timm_make(VisionTransformer),
                 dict(patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0),
                 "Tiny ViT for tests."),
    "test_swin": ("vit", _timm_make(SwinTransformer),
                  dict(patch_size=2, window_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2),
                       mlp_ratio=2.0, drop_path_rate=0.0),
                  "Tiny Swin for tests."),
    "test_tnt": ("vit", _tnt_make,
                 dict(patch_size=4, first_stride=1, embed_dim=32, inner_dim=8, depth=2, num_heads_outer=2,
                      num_heads_inner=1, mlp_ratio=2.0, pixel_size=None),
                 "Tiny TNT for tests."),
    "test_mixer": ("mixer", _timm_make(MlpMixer),
                   dict(patch_size=4, num_blocks=2, embed_dim=32, mlp_ratio=(0.5, 2.0)),
                   "Tiny MLP-Mixer for tests."),
    "test_perceiver": ("perceiver", _perceiver_make,
                       {**PERCEIVER, **_TINY_PERCEIVER, "depth": 1, "self_per_cross_attn": 1},
                       "Tiny Perceiver for tests."),
    "test_perceiver_io": ("perceiver", _perceiver_io_make,
                          {**PERCEIVER_IO, **_TINY_PERCEIVER, "depth": 1, "queries_dim": 16},
                          "Tiny Perceiver IO for tests."),
}


def _zoo_builder(name: str, make: Make, defaults: dict, doc: str):
    def build(num_classes: int = 10, in_chans: int = 3, img_size: int = 32, mean: Stats = None,
              std: Stats = None, pretrained: bool = False, **overrides) -> nn.Module:
        no_pretrained(name, pretrained)
        cfg = merge_overrides(name, defaults, overrides)
        size = cfg.pop("resolution", None)  # the side images are resized to first; None: their own
        model = make(num_classes, in_chans, size or img_size, cfg)
        model.num_classes = num_classes
        return attach_input(model, InputAdapter(*default_stats(in_chans, mean, std), size=size))

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"{doc} Overrides: {', '.join(defaults)}."
    return build


for _name, (_family, *_spec) in ZOO.items():
    register_model(_family, _name)(_zoo_builder(_name, *_spec))


# timm's 224x224 architectures, registered to be fine-tuned from their published ImageNet weights (01
# notebook). name: docstring; `pretrained=True` loads the architecture's default tag from the HF hub.
PRETRAINED_224: dict[str, str] = {
    "vit_small_patch16_224": "timm's ViT-S/16 (22M params; weights: ImageNet-21k, fine-tuned on 1k).",
    "swin_tiny_patch4_window7_224": "timm's Swin-T, window 7 (28M params; weights: ImageNet-1k).",
    "tnt_s_patch16_224": "timm's Transformer-in-Transformer TNT-S/16 (24M params; weights: ImageNet-1k).",
    "mixer_b16_224": "timm's MLP-Mixer-B/16 (60M params; weights: ImageNet-21k, fine-tuned on 1k).",
}


def _pretrained_builder(arch: str, doc: str):
    def build(num_classes: int = 10, in_chans: int = 3, img_size: int = 32, mean: Stats = None,
              std: Stats = None, pretrained: bool = False, **overrides) -> nn.Module:
        cfg = merge_overrides(arch, dict(drop_rate=0.0, drop_path_rate=0.1), overrides)
        local = mirrored_weights(arch) if pretrained else None
        overlay = {"pretrained_cfg_overlay": {"file": str(local)}} if local is not None else {}
        try:
            model = timm.create_model(arch, pretrained=pretrained, num_classes=num_classes, **cfg, **overlay)
        except OSError as err:  # the hub's offline and connection errors are all OSErrors
            raise WeightsUnreachable(_hub_unreachable(arch, err)) from err
        weights = timm.models.get_pretrained_cfg(arch)  # the statistics the weights were trained with
        return attach_input(model, InputAdapter(weights.mean, weights.std, size=224, out_chans=3))

    build.__name__ = build.__qualname__ = arch
    build.__doc__ = (
        f"{doc} Images are resized to 224x224, grey repeated to RGB, and normalised with the weights' own "
        "mean/std (the dataset's are not used: a frozen backbone expects its training statistics). "
        "Overrides: drop_rate, drop_path_rate."
    )
    return build


for _name, _doc in PRETRAINED_224.items():
    register_model("mixer" if _name.startswith("mixer") else "vit", _name)(_pretrained_builder(_name, _doc))


def weights_mirror() -> Path:
    """A local copy of hub weights for offline machines: $MLPZOOM_WEIGHTS, else <data>/weights/, laid out as
    <hub id>/model.safetensors (what `hf download <hub id> model.safetensors --local-dir <hub id>` makes)."""
    env = os.environ.get("MLPZOOM_WEIGHTS")
    return Path(env) if env else data_root() / "weights"


def mirrored_weights(arch: str) -> Path | None:
    """The mirrored weights file of a 224x224 architecture, if it is there (used instead of the hub)."""
    path = weights_mirror() / timm.models.get_pretrained_cfg(arch).hf_hub_id / "model.safetensors"
    return path if path.is_file() else None


def _hub_unreachable(arch: str, err: Exception) -> str:
    hub_id = timm.models.get_pretrained_cfg(arch).hf_hub_id  # timm/vit_small_patch16_224.augreg_in21k_ft_in1k
    return (
        f"{arch}: pretrained weights come from the Hugging Face hub, which is unreachable "
        f"({type(err).__name__}: {err}). On a machine with internet run "
        f"`hf download {hub_id} model.safetensors --local-dir {hub_id}` (or fetch "
        f"https://huggingface.co/{hub_id}/resolve/main/model.safetensors) and put the file at "
        f"{weights_mirror() / hub_id / 'model.safetensors'} (the weights mirror, $MLPZOOM_WEIGHTS), or call "
        f"create_model({arch!r}, checkpoint='<path>/model.safetensors'); with num_classes != 1000 its "
        "ImageNet head is dropped."
    )
