"""Shared fixtures: a private data folder, small image sets whose labels are sample ids, the synthetic
gratings most tests learn on, and the model builder for a dataset."""

import os

# A last.pt every epoch in every test and in every process the tests start (notebook kernels, plan workers,
# torchrun): tests kill and resume runs after a given epoch. The default policy (a state every 10 minutes of
# training, none kept once finished) has its own tests in test_train.py.
os.environ["MLPZOOM_CHECKPOINT_EVERY_S"] = "0"

import pytest  # noqa: E402
import torch  # noqa: E402

from utils import data, models  # noqa: E402
from utils.data import DatasetInfo, ImageSet  # noqa: E402


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


@pytest.fixture(scope="session")
def synth():
    """(train, test): synthetic gratings, 3 x 16 x 16, 10 classes, 1024 / 256 images; a tiny model learns
    them in a few epochs (test_mlp: > 90% after 3)."""
    kw = dict(size=16, cache=False)
    train = data.load_dataset("synthetic", "train", n=1024, **kw)
    return train, data.load_dataset("synthetic", "test", n=256, **kw)


@pytest.fixture(scope="session")
def build():
    """build(name, ds_or_info, seed=0, **overrides): the registered model for that data, seeded."""
    def make(name, ds, seed=0, **overrides):
        return models.create_for(name, getattr(ds, "info", ds), seed=seed, **overrides)
    return make


@pytest.fixture(scope="module")
def tiny():
    """(test_mlp in eval mode, seeded; 64 synthetic 3x8x8 test images)."""
    ds = data.load_dataset("synthetic", "test", n=64, size=8, cache=False)
    torch.manual_seed(0)
    net = models.create_model("test_mlp", num_classes=ds.info.num_classes, in_chans=ds.info.channels,
                              img_size=ds.info.image_size, mean=ds.info.mean, std=ds.info.std)
    return net.eval(), ds


# ------------------------------------------------------------- what a slow CI says about itself (issue 24)

_SECONDS_PER_FILE: dict[str, float] = {}


def cpu_line() -> str:
    from utils import cpu, profiles

    how = ("autocasts to bf16 every epoch" if profiles.PROFILES["rehearsal"].autocast_here else
           "trains in fp32 (bf16 emulated here); tests/test_bf16.py checks full's bf16 path")
    return f"{cpu.describe()}; the rehearsal {how}"


def pytest_report_header(config):
    return [cpu_line()]


def pytest_runtest_logreport(report):
    file = report.nodeid.split("::")[0]
    _SECONDS_PER_FILE[file] = _SECONDS_PER_FILE.get(file, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(cpu_line())  # -q hides the header; a slow run explains itself here
    for file in ("tests/test_rehearsal.py", "tests/test_bf16.py"):
        if file in _SECONDS_PER_FILE:
            seconds = _SECONDS_PER_FILE[file]
            terminalreporter.write_line(f"{file}: {seconds:.0f} s (setup, calls and teardown)")
