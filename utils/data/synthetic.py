"""`synthetic`: class-dependent oriented sinusoidal gratings plus noise; any shape, no files needed.

Class k has its own orientation, spatial frequency and colour (grey level for 1 channel); each image
draws a random phase, window position, mirror image, contrast and pixel noise. A one-hidden-layer MLP
reaches ~100% on the default 3-channel set in 2 epochs (~60% on 1 channel after 4), so it serves tests
and the smoke profile. Deterministic per (seed, split, kwargs).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .registry import DatasetInfo, ImageSet, register_dataset
from .sources import channel_stats, check_split

# Defaults (10 classes, 3 x 32 x 32); mean/std measured on the default train split.
SYNTHETIC = DatasetInfo(
    "synthetic", 10, tuple(f"grating_{k}" for k in range(10)), 3, 32,
    (0.1621, 0.1621, 0.1621), (0.1719, 0.1717, 0.1716),
)
DEFAULT_N = {"train": 5000, "test": 1000}


def class_params(num_classes: int, channels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per class: orientation (K,) radians in [0, pi/2), frequency (K,) cycles per side in [2, 5),
    colour (K, C) in [-1, 1] (tints the mean and scales the wave per channel)."""
    k = torch.arange(num_classes, dtype=torch.float32)
    theta = 0.5 * math.pi * k / num_classes  # mirrored per image (below), so flips keep the class
    freq = 2.0 + 3.0 * ((k * 0.618034) % 1.0)  # golden-ratio steps: neighbours in angle differ in frequency
    c = torch.arange(channels, dtype=torch.float32)
    color = torch.cos(2 * math.pi * (k[:, None] / num_classes + c[None, :] / channels))  # hue around a circle
    if channels == 1:  # one channel: a grey ramp instead (a circle would give k and K - k the same grey)
        color = (2 * k / max(num_classes - 1, 1) - 1)[:, None]
    return theta, freq, color


def render(labels: torch.Tensor, size: int, params: tuple, gen: torch.Generator) -> torch.Tensor:
    """uint8 (n, C, size, size) gratings for int labels (n,), drawing per-image randomness from gen.

    A grating patch under a Gaussian window on a black background (so zero-padded crops look natural),
    with random phase, window position, contrast, mirror image and pixel noise.
    """
    theta, freq, color = (t[labels] for t in params)
    n, channels = len(labels), color.shape[1]
    gap = math.pi / len(params[0]) * 0.5  # between neighbouring classes' orientations
    theta = theta + (torch.rand(n, generator=gen) - 0.5) * gap * 0.5  # jitter: +-1/4 of the gap
    mirror = torch.rand(n, generator=gen) < 0.5
    theta = torch.where(mirror, math.pi - theta, theta)  # a mirror image is the same class
    phase = torch.rand(n, generator=gen) * 2 * math.pi  # = a random shift of the wave
    contrast = 0.5 + 0.5 * torch.rand(n, generator=gen)
    center = 0.5 + 0.2 * (torch.rand(2, n, generator=gen) - 0.5)  # window centre (y, x), image units
    pos = (torch.arange(size, dtype=torch.float32) + 0.5) / size  # pixel centres in (0, 1)
    y, x = pos[None, :, None], pos[None, None, :]
    u = x * theta.cos()[:, None, None] + y * theta.sin()[:, None, None]
    wave = torch.sin(2 * math.pi * freq[:, None, None] * u + phase[:, None, None])  # (n, H, W) in [-1, 1]
    r2 = (y - center[0][:, None, None]) ** 2 + (x - center[1][:, None, None]) ** 2
    window = torch.exp(-r2 / (2 * 0.22**2))  # (n, H, W), 1 at the centre
    tint = 0.55 + 0.25 * color  # (n, C) mean brightness per channel, by class
    amp = 0.3 * contrast[:, None] * (0.6 + 0.4 * color.abs())  # (n, C) wave amplitude
    img = window[:, None] * (tint[:, :, None, None] + amp[:, :, None, None] * wave[:, None])
    img = img + 0.05 * torch.randn(n, channels, size, size, generator=gen)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


@register_dataset(SYNTHETIC)
def read_synthetic(split: str, root: Path, num_classes: int = 10, channels: int = 3, size: int = 32,
                   n: int | None = None, seed: int = 0) -> ImageSet:
    split = check_split("synthetic", split, ("train", "test"))
    n = DEFAULT_N[split] if n is None else n
    gen = torch.Generator().manual_seed(2 * seed + (split == "test"))  # distinct stream per (seed, split)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]  # balanced, shuffled
    params = class_params(num_classes, channels)
    chunks = [render(labels[i : i + 2048], size, params, gen) for i in range(0, n, 2048)]
    images = torch.cat(chunks) if chunks else torch.empty(0, channels, size, size, dtype=torch.uint8)
    mean, std = channel_stats(images)
    classes = tuple(f"grating_{k}" for k in range(num_classes))
    info = DatasetInfo("synthetic", num_classes, classes, channels, size, mean, std)
    return ImageSet(images, labels, info, split, {"seed": seed})
