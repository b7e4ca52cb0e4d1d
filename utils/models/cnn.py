"""CNN family: ResNet-18 and VGG13-bn for 32x32 images, a small fast CNN for CPU, and a tiny test CNN.

Layer names: ResNet and the small CNNs `input`, `stem`, `layer1..layerN`, `pool`, `head`; VGG `input`,
`features`, `flatten`, `classifier` (torchvision's layout: `classifier.4` is the second 4096-d ReLU).
No in-place activations anywhere, so a forward hook on any layer sees that layer's own output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from .common import InputAdapter, default_stats, merge_overrides, no_pretrained
from .registry import register_model

Stats = Sequence[float] | None


def conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (no bias: BN follows) -> BatchNorm -> ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016): two 3x3 convs, identity or 1x1-conv shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetCifar(nn.Module):
    """ResNet for small images: 3x3 stride-1 stem, no max-pool, stages at 1x, 1/2, 1/4, 1/8 resolution."""

    def __init__(
        self, adapter: InputAdapter, in_chans: int, num_classes: int, layers: Sequence[int], width: int
    ):
        super().__init__()
        self.input = adapter
        self.stem = conv_bn(in_chans, width)
        c_in = width
        for i, n_blocks in enumerate(layers):
            c_out, stride = width * 2**i, 1 if i == 0 else 2
            blocks = [
                BasicBlock(c_in if j == 0 else c_out, c_out, stride if j == 0 else 1) for j in range(n_blocks)
            ]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            c_in = c_out
        self.n_layers = len(layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (B, C, h, w) -> (B, C)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, num_classes)
        x = self.stem(self.input(x))
        for i in range(self.n_layers):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.head(self.pool(x))


VGG13 = (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
    """VGG with BatchNorm and torchvision's classifier layout, for small images.

    Max-pools round up (ceil_mode), so 28x28 input ends at 1x1 like 32x32 does; the first classifier
    layer takes 512 * s * s features, s being the final feature map side (1 for 28..32 pixels).
    """

    def __init__(
        self,
        adapter: InputAdapter,
        in_chans: int,
        num_classes: int,
        img_size: int,
        cfg: Sequence[int | str] = VGG13,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.input = adapter
        layers: list[nn.Module] = []
        c_in, side = in_chans, img_size
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
                side = math.ceil(side / 2)
            else:
                layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                c_in = v
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(c_in * side * side, 4096),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(),  # classifier.4: the 4096-d features, as in torchvision's VGG
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(self.input(x))))


class SmallCNN(nn.Module):
    """Stages of 3x3 conv-BN-ReLU, each ending in a 2x2 max-pool (`stem`, `layer1`, ...), then an average pool
    to `pool_size` x `pool_size`, flatten, dropout and a linear `head`.

    `widths[i]` is stage i's channel count, `convs[i]` its number of convs; keeping a 4x4 map before the head
    (instead of a global pool) matters for Fashion-MNIST accuracy at this size.
    """

    def __init__(self, adapter: InputAdapter, in_chans: int, num_classes: int, widths: Sequence[int],
                 convs: Sequence[int], pool_size: int = 4, dropout: float = 0.0):
        super().__init__()
        self.input = adapter
        c_ins = (in_chans, *widths[:-1])
        stages = [_stage(c_in, c_out, n) for c_in, c_out, n in zip(c_ins, widths, convs, strict=True)]
        self.stem = stages[0]
        for i, stage in enumerate(stages[1:]):
            self.add_module(f"layer{i + 1}", stage)
        self.n_layers = len(stages) - 1
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(pool_size), nn.Flatten(), nn.Dropout(dropout))
        self.head = nn.Linear(widths[-1] * pool_size**2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.input(x))
        for i in range(self.n_layers):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.head(self.pool(x))


def _stage(c_in: int, c_out: int, n_convs: int) -> nn.Sequential:
    convs = [conv_bn(c_in if j == 0 else c_out, c_out) for j in range(n_convs)]
    return nn.Sequential(*convs, nn.MaxPool2d(2, ceil_mode=True))  # ceil: 7x7 -> 4x4, not 3x3


def _adapter(in_chans: int, mean: Stats, std: Stats) -> InputAdapter:
    return InputAdapter(*default_stats(in_chans, mean, std))  # CNNs run at the native resolution


@register_model("cnn")
def resnet18_cifar(num_classes: int = 10, in_chans: int = 3, img_size: int = 32, mean: Stats = None,
                   std: Stats = None, pretrained: bool = False, **overrides) -> ResNetCifar:
    """ResNet-18 for CIFAR (BasicBlocks [2, 2, 2, 2], 11,173,962 parameters, 10 classes); override: width."""
    no_pretrained("resnet18_cifar", pretrained)
    cfg = merge_overrides("resnet18_cifar", dict(width=64), overrides)
    return ResNetCifar(_adapter(in_chans, mean, std), in_chans, num_classes, (2, 2, 2, 2), cfg["width"])


@register_model("cnn")
def vgg13_bn_cifar(num_classes: int = 10, in_chans: int = 3, img_size: int = 32, mean: Stats = None,
                   std: Stats = None, pretrained: bool = False, **overrides) -> VGG:
    """VGG13 with BatchNorm; classifier 4096-4096-classes with dropout (override `dropout`, 0.5); 28.3M
    parameters at 32x32."""
    no_pretrained("vgg13_bn_cifar", pretrained)
    cfg = merge_overrides("vgg13_bn_cifar", dict(dropout=0.5), overrides)
    return VGG(_adapter(in_chans, mean, std), in_chans, num_classes, img_size, VGG13, cfg["dropout"])


@register_model("cnn")
def cnn_small(num_classes: int = 10, in_chans: int = 3, img_size: int = 32, mean: Stats = None,
              std: Stats = None, pretrained: bool = False, **overrides) -> SmallCNN:
    """Small fast CNN for CPU runs: conv-BN-ReLU stages of 32, 64 (two convs), 128 channels, each ending in a
    max-pool, a 4x4 map into the linear head (0.15M parameters). Fashion-MNIST test accuracy with AdamW,
    one-cycle lr 3e-3, batch 256, flips: 0.922 after 4 epochs (5 min on 2 CPU cores), 0.928 after 5.
    Overrides: `width` (first stage; later ones double), `convs` (per stage), `dropout` before the head."""
    no_pretrained("cnn_small", pretrained)
    cfg = merge_overrides("cnn_small", dict(width=32, convs=(1, 2, 1), dropout=0.2), overrides)
    widths = tuple(cfg["width"] * 2**i for i in range(len(cfg["convs"])))
    adapter = _adapter(in_chans, mean, std)
    return SmallCNN(adapter, in_chans, num_classes, widths, cfg["convs"], 4, cfg["dropout"])


@register_model("cnn")
def test_cnn(num_classes: int = 10, in_chans: int = 3, img_size: int = 32, mean: Stats = None,
             std: Stats = None, pretrained: bool = False, **overrides) -> SmallCNN:
    """Tiny CNN (2 stages of 8 and 16 channels, global average pool) for tests and the smoke profile."""
    no_pretrained("test_cnn", pretrained)
    cfg = merge_overrides("test_cnn", dict(width=8, dropout=0.0), overrides)
    widths = (cfg["width"], 2 * cfg["width"])
    return SmallCNN(_adapter(in_chans, mean, std), in_chans, num_classes, widths, (1, 1), 1, cfg["dropout"])
