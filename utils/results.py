"""Where results and checkpoints go, and what is saved beside every number (config + environment).

    out = results_dir("quick", "fashion-mnist", "02_adversarial_robustness")  # created
    save_config(out, {"eps": [0, 0.01]})          # config.json: the resolved config + environment()
    save_table(df, out / "robust_accuracy.csv")   # tidy tables: one row per model x setting

Roots: $MLPZOOM_RESULTS / $MLPZOOM_CHECKPOINTS when set (tests point them at temp folders), else
`<repo>/results` and `<repo>/checkpoints`.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def results_root() -> Path:
    return Path(os.environ.get("MLPZOOM_RESULTS") or REPO / "results")


def checkpoints_root() -> Path:
    return Path(os.environ.get("MLPZOOM_CHECKPOINTS") or REPO / "checkpoints")


def results_dir(profile: str, dataset: str, notebook: str) -> Path:
    """`<results>/<profile>/<dataset>/<notebook>/`, created."""
    folder = results_root() / profile / dataset / notebook
    folder.mkdir(parents=True, exist_ok=True)
    return folder


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


def cpu_model() -> str:
    """The processor's name from /proc/cpuinfo (Linux); platform.processor() is empty there."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def device_name(device: str | torch.device | None = None) -> str:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = cpu_model() or platform.machine()
    return f"{cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def environment(device: str | torch.device | None = None) -> dict:
    """What a number depends on besides the config: code revision, versions, device, time."""
    return {
        "git_revision": git_revision(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "device": device_name(device),
        "hostname": platform.node(),
        "time_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """`write(tmp)` then rename onto `path`: a crash mid-write never leaves a half file at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_json(obj, path: Path) -> Path:
    return atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=str) + "\n"))


def save_config(folder: Path, config: dict, device: str | torch.device | None = None) -> Path:
    """`folder/config.json`: {"config": the resolved config, "environment": environment()}."""
    return save_json({"config": config, "environment": environment(device)}, Path(folder) / "config.json")


def save_table(df, path: Path) -> Path:
    """A pandas DataFrame as CSV (no index column), written atomically."""
    return atomic_write(path, lambda p: df.to_csv(p, index=False))


@dataclass(frozen=True)
class NotebookRun:
    """What a notebook works on, resolved from its `parameters` cell (None: the profile's choice)."""

    profile: str
    dataset: str
    models: list[str]  # the comparison trio [mlp, cnn, vit] unless the notebook names others
    device: str
    out: Path  # results/<profile>/<dataset>/<notebook>/


def start(
    notebook: str,
    profile: str | None = None,
    dataset: str | None = None,
    models: list[str] | None = None,
    device: str | None = None,
    **config,
) -> NotebookRun:
    """Resolve a notebook's parameters against its profile, create its results folder and write
    config.json there (the resolved parameters + `config` + the environment)."""
    from .profiles import get_profile

    p = get_profile(profile)
    run = NotebookRun(
        p.name,
        dataset or p.dataset,
        list(models or p.trio),
        device or p.device,
        results_dir(p.name, dataset or p.dataset, notebook),
    )
    save_config(run.out, {"notebook": notebook, **asdict(run), **config}, run.device)
    return run
