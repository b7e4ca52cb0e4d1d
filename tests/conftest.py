"""Shared fixtures: a private data folder, small image sets whose labels are sample ids, the synthetic
gratings most tests learn on, and the model builder for a dataset."""

import os

# A last.pt every epoch in every test and in every process the tests start (notebook kernels, plan workers,
# torchrun): tests kill and resume runs after a given epoch. The default policy (a state every 10 minutes of
# training, none kept once finished) has its own tests in test_train.py.
os.environ["MLPZOOM_CHECKPOINT_EVERY_S"] = "0"

# `make test` runs two pytest-xdist workers (issue 24): each gets its share of the cores, and so does every
# process it starts (OMP_NUM_THREADS is read by torch at import). Two workers with two GEMM threads each on
# two cores ran 7x slower (CI at 1651cc7); one thread each ran two rehearsal notebooks in 77 s against 118 s
# one after the other with two threads (README).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _WORKERS))

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from utils import data, models  # noqa: E402
from utils.data import DatasetInfo, ImageSet  # noqa: E402

if _WORKERS > 1:
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

@pytest.fixture(scope="session")
def shared_tmp(tmp_path_factory) -> Path:
    """A folder shared by every pytest-xdist worker of this session (the session's temp folder without xdist):
    the smoke and rehearsal notebooks run in it, each once, whichever worker asks first (`once`)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


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


# ------------------------------------------------------------ two workers, the long tests first (issue 24)

# The notebook runs, longest first (the rehearsal's timings of CI at ba3a1d0 and of a run alone here), in
# pairs that mix the profiles: pytest-xdist hands each worker two tests to start with, then one whenever it
# is free. The rehearsal's 01 trains its trio first (every rehearsal notebook waits for it), while the other
# worker runs smoke's plan and 04. The two 07s come right after (each runs what its profile still lacks):
# placed last, both went to one worker, which ran them alone for their last 50 s (timeline at 5729abb).
_FIRST = [("rehearsal", "01"), ("smoke", "01"), ("smoke", "04"), ("rehearsal", "04"), ("rehearsal", "09"),
          ("smoke", "09"), ("smoke", "06"), ("rehearsal", "06"), ("rehearsal", "08"), ("smoke", "08"),
          ("smoke", "02"), ("rehearsal", "02"), ("rehearsal", "03"), ("smoke", "03"), ("smoke", "05"),
          ("rehearsal", "05"), ("smoke", "07"), ("rehearsal", "07")]


def _place(item) -> tuple[int, int]:
    """Sort key: the notebook runs in _FIRST's order (07s last), then the short tests, then the tests that
    read every notebook's output (the redraw, the report, the plan), when the notebooks are done."""
    file, name = item.nodeid.split("::")[0], item.name
    notebook = item.callspec.params.get("name", "")[:2] if hasattr(item, "callspec") else ""
    for profile, test in (("smoke", "test_notebook_runs_under_smoke"),
                          ("rehearsal", "test_notebook_runs_under_the_rehearsal")):
        if name.startswith(test):
            return (0, _FIRST.index((profile, notebook))) if (profile, notebook) in _FIRST else (2, 0)
    if file.endswith("test_notebooks.py") and not name.startswith("test_notebook_is_committed_clean"):
        return (2, 1)  # the redraw, the report, the plan
    if file.endswith("test_ddp.py") and "launched" in getattr(item, "fixturenames", ()):
        # the torchrun launch (once per session) first among the short tests, the quick tests that read it
        # after them all (the long kill test among them): no worker waits for it (a waiting worker sat idle
        # 62 s in CI at ed5b6ff)
        return (1, -1) if name == DDP_LAUNCHES else (1, 0) if name == DDP_KILLED else (1, 1)
    return (1, 0)


DDP_LAUNCHES = "test_two_processes_match_one_process_at_the_same_global_batch"
DDP_KILLED = "test_killed_two_process_run_resumes_and_equals_the_uninterrupted_one"


def pytest_collection_modifyitems(items):
    items.sort(key=_place)  # stable: the order within a place stays the files' order


def pytest_sessionfinish(session):
    """The rehearsal's shared folder (GBs of full-size checkpoints) goes once every worker is done: here in
    the pytest-xdist controller, or in the only process."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        factory = getattr(session.config, "_tmp_path_factory", None)
        if factory is not None:
            shutil.rmtree(factory.getbasetemp() / "rehearsal", ignore_errors=True)
