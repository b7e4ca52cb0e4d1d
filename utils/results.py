"""The run context of a notebook and what is saved beside every number (config + environment).

    cfg = attacks.config(profile, **overrides)   # the notebook's typed config (utils.config)
    run = start("02_adversarial_robustness", profile, dataset, models, device, cfg=cfg, seed=0)
    run.cfg["n_images"]                  # what config.json holds: cfg's fields, flat
    save_table(df, run.out / "robust_accuracy.csv")   # tidy tables: one row per model x setting
    run.finish()                         # the last cell: the run's folder replaces the previous one

A run writes into `<results>/<profile>/<dataset>/<notebook>.running/`; `finish()` swaps that folder in for
`<notebook>/` in one rename, so a run that fails half-way leaves the last complete run's tables, figures
and config.json together and untouched. config.json holds the resolved parameters (only this profile's
values) and the environment (git revision, versions, device).

One process at a time runs a notebook for a (profile, dataset): `start` takes the lock
`<results>/<profile>/<dataset>/.<notebook>.lock` (an flock, which the OS releases when the process dies, so
a killed run never blocks the next one) and `finish` releases it; a second run fails at once with
NotebookBusy instead of deleting the first's folder.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import cpu as cpu_info
from .checkpoints import RunBusy, lock_path, run_lock
from .data.registry import check_dataset_name
from .files import REPO, atomic_write, checkpoints_root, read_json, results_root, save_json
from .models.common import set_cpu_autocast
from .profiles import PROFILES, Profile, get_profile

__all__ = ["REPO", "NotebookBusy", "NotebookRun", "atomic_write", "checkpoints_root", "environment",
           "load_config", "read_table", "results_dir", "results_root", "save_arrays", "save_config",
           "save_json", "save_table", "start"]


_LOCKS: dict[Path, ExitStack] = {}  # notebook folder -> its held lock, from start() until finish()


class NotebookBusy(RuntimeError):
    """Another process is running this notebook for the same profile and dataset."""


def results_dir(profile: str, dataset: str, notebook: str) -> Path:
    """`<results>/<profile>/<dataset>/<notebook>/` (created); the dataset must be a registered name."""
    folder = results_root() / check_profile_name(profile) / check_dataset_name(dataset) / notebook
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def check_profile_name(profile: str) -> str:
    """A profile's name (it becomes a folder name): KeyError listing the profiles otherwise."""
    if profile not in PROFILES:
        raise KeyError(f"unknown profile {profile!r}; profiles: {', '.join(PROFILES)}")
    return profile


def git_revision() -> str:
    """The checked-out commit (with `-dirty` when tracked files changed), or 'unknown' outside git."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=10)
        rev = run("rev-parse", "--short=12", "HEAD")
        if rev.returncode != 0:
            return "unknown"
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: str | torch.device | None = None) -> str:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = cpu_info.model()
    return f"{cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


# One precision for float32 work on CUDA (issue 26): cuDNN already runs float32 convolutions in TF32, so the
# CNN's attacks and features were TF32 while the MLP's and ViT's matmuls ran in IEEE float32 (about a sixth
# of the TF32 rate). Every notebook sets matmuls to TF32 too (CPU arithmetic is untouched); training runs in
# bf16 autocast either way.
CUDA_FP32_PRECISION = "tf32"


def set_cuda_fp32_precision() -> None:
    torch.backends.cuda.matmul.fp32_precision = CUDA_FP32_PRECISION
    torch.backends.cudnn.conv.fp32_precision = CUDA_FP32_PRECISION


def environment(device: str | torch.device | None = None) -> dict:
    """What a number depends on besides the config: code revision, versions, device, time."""
    return {
        "git_revision": git_revision(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "device": device_name(device),
        "cuda_fp32": (f"matmul {torch.backends.cuda.matmul.fp32_precision}, conv "
                      f"{torch.backends.cudnn.conv.fp32_precision}") if torch.cuda.is_available() else None,
        "hostname": platform.node(),
        "time_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def save_config(folder: Path, config: dict, device: str | torch.device | None = None) -> Path:
    """`folder/config.json`: {"config": the resolved config, "environment": environment()}."""
    return save_json({"config": config, "environment": environment(device)}, Path(folder) / "config.json")


def load_config(folder: Path) -> dict:
    """The "config" part of `folder/config.json`."""
    return read_json(Path(folder) / "config.json", "a notebook's config")["config"]


def save_table(df: pd.DataFrame, path: Path) -> Path:
    """A pandas DataFrame as CSV (no index column), written atomically."""
    return atomic_write(path, lambda p: df.to_csv(p, index=False))


def save_tables(tables: dict[str, pd.DataFrame], folder: Path) -> list[Path]:
    """Each table of {name: DataFrame} as `folder/<name>.csv` (save_table)."""
    return [save_table(df, Path(folder) / f"{name}.csv") for name, df in tables.items()]


def save_arrays(arrays: dict, path: Path) -> Path:
    """Named numpy arrays (images for figures) as a compressed .npz, written atomically."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: numpy would otherwise append .npz to the temp name
            np.savez_compressed(f, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write(path, write)


def read_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


@dataclass(frozen=True)
class NotebookRun:
    """What a notebook works on, resolved once from its `parameters` cell (None: the profile's choice)."""

    notebook: str
    profile: str  # the profile's name; `p` is the Profile itself
    dataset: str
    models: list[str]  # the comparison trio [mlp, cnn, vit] unless the notebook names others
    device: str
    out: Path  # where this run writes: <results>/<profile>/<dataset>/<notebook>.running/ until finish()
    cfg: dict = field(default_factory=dict)  # the notebook's resolved parameters (this profile's values)
    p: Profile | None = None

    @property
    def final(self) -> Path:
        """<results>/<profile>/<dataset>/<notebook>/: where the run's files are after finish()."""
        return self.out.with_name(self.notebook)

    def save_dataset(self, info) -> Path:
        """`dataset.json`: what figures need to know of the data (class names in label order, shape)."""
        described = {"name": info.name, "num_classes": info.num_classes, "classes": list(info.classes),
                     "channels": info.channels, "image_size": info.image_size}
        return save_json(described, self.out / "dataset.json")

    def finish(self) -> Path:
        """Swap this run's folder in for the previous complete run (which is deleted); returns it."""
        old = self.final.with_name(f"{self.notebook}.previous")
        shutil.rmtree(old, ignore_errors=True)
        if self.final.exists():
            self.final.rename(old)
        self.out.rename(self.final)
        shutil.rmtree(old, ignore_errors=True)
        release_notebook(self.final)
        print(f"results: {self.final}")
        return self.final


def lock_notebook(final: Path) -> None:
    """Hold the lock of a notebook's results folder until release_notebook (or this process ends): a
    second process that starts the notebook would delete this run's `.running/` folder and mix tables."""
    if final in _LOCKS:  # this process runs the notebook again (a Jupyter kernel): it holds the lock
        return
    stack = ExitStack()
    try:
        stack.enter_context(run_lock(final, wait=False))  # checkpoints' flock: gone with its process
    except RunBusy:
        path = lock_path(final)
        pid = path.read_text().strip() if path.exists() else ""
        who = f"process {pid}" if pid.isdigit() else "another process"
        raise NotebookBusy(f"{final.name} ({final.parent.parent.name}, {final.parent.name}) is being run by "
                           f"{who} (lock {path}); wait for it to finish or stop it (a Jupyter kernel "
                           "holds it until the run's finish() or a kernel restart), then run again") from None
    lock_path(final).write_text(f"{os.getpid()}\n")  # in place, never replaced: the flock is on this inode
    _LOCKS[final] = stack


def release_notebook(final: Path) -> None:
    """Let another process run the notebook (no-op when this process does not hold its lock)."""
    stack = _LOCKS.pop(final, None)
    if stack is not None:
        stack.close()


def start(notebook: str, profile: str | None = None, dataset: str | None = None,
          models: list[str] | None = None, device: str | None = None, *, cfg: object | None = None,
          threads: int | None = None, **config) -> NotebookRun:
    """Resolve a notebook's parameters against its profile, create an empty folder for this run and write
    config.json there: the resolved parameters (the fields of `cfg`, the notebook's typed config from
    utils.config, then `config` as given) and the environment. threads: torch's CPU threads (None: torch's
    default), set before the environment is recorded."""
    p = get_profile(profile)
    set_cpu_autocast(p.autocast_here)  # the rehearsal: full's bf16 autocast, where this CPU has native bf16
    set_cuda_fp32_precision()
    if threads:
        torch.set_num_threads(threads)
        config["threads"] = threads
    dataset = check_dataset_name(dataset or p.dataset)  # it becomes a folder: never a path
    running = results_root() / p.name / dataset / f"{notebook}.running"
    lock_notebook(running.with_name(notebook))  # before touching the folder another run may be writing
    shutil.rmtree(running, ignore_errors=True)  # left by a run that failed: it is not a result
    running.mkdir(parents=True)
    typed = dataclasses.asdict(cfg) if cfg is not None else {}
    values = {**typed, **config}
    models = list(models or p.trio)
    run = NotebookRun(notebook, p.name, dataset, models, device or p.device, running, values, p)
    resolved = {"notebook": notebook, "profile": run.profile, "dataset": run.dataset, "models": run.models,
                "device": run.device, **values}
    save_config(running, resolved, run.device)
    from . import store  # the store's request log names the notebook that asked (utils.plan's tests)

    store.context["notebook"] = notebook
    return run
