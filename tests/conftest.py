"""Shared fixtures: a private data folder, and small image sets whose labels are sample ids."""

import pytest
import torch

from utils.data import DatasetInfo, ImageSet


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """$MLPZOOM_DATA -> a fresh temp folder, so nothing touches <repo>/data."""
    root = tmp_path / "data"
    monkeypatch.setenv("MLPZOOM_DATA", str(root))
    return root


def id_set(n: int = 60, channels: int = 3, size: int = 8, name: str = "ids", seed: int = 0) -> ImageSet:
    """n random uint8 images (C, size, size), label i = sample id i (order and coverage are visible)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(1, 256, (n, channels, size, size), dtype=torch.uint8, generator=gen)
    stats = (0.5,) * channels, (0.25,) * channels
    info = DatasetInfo(name, n, tuple(map(str, range(n))), channels, size, *stats)
    return ImageSet(images, torch.arange(n), info)


@pytest.fixture
def make_id_set():
    return id_set
