"""Where things live and how they are written: the three roots and the one atomic-write helper.

    data_root(), results_root(), checkpoints_root()   # $MLPZOOM_DATA / _RESULTS / _CHECKPOINTS or <repo>/
    atomic_write(path, lambda tmp: torch.save(obj, tmp))  # a crash never leaves a half file at `path`
    save_json(obj, path)

Every file this project writes goes through `atomic_write`: the content is written to a temp file beside
the target and renamed onto it. A temp file left by a killed process (SIGKILL skips `finally`) is removed
by the next write of the same file once its process is gone, so interrupted writes never pile up.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _root(env: str, default: str) -> Path:
    value = os.environ.get(env)
    return Path(value).expanduser() if value else REPO / default


def data_root() -> Path:
    """Datasets and decode caches: $MLPZOOM_DATA, else `<repo>/data`."""
    return _root("MLPZOOM_DATA", "data")


def results_root() -> Path:
    """Tables, figures, executed notebooks: $MLPZOOM_RESULTS, else `<repo>/results`."""
    return _root("MLPZOOM_RESULTS", "results")


def checkpoints_root() -> Path:
    """Trained weights, model cards, activation caches: $MLPZOOM_CHECKPOINTS, else `<repo>/checkpoints`."""
    return _root("MLPZOOM_CHECKPOINTS", "checkpoints")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete `.<name>.tmp<pid>` files beside `path` whose writer process no longer exists."""
    removed = []
    for tmp in path.parent.glob(f".{path.name}.tmp*"):
        pid = tmp.name.rsplit(".tmp", 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """`write(tmp)` then rename `tmp` onto `path`: a crash mid-write never leaves a half file at `path`,
    and a failed write leaves the previous file as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def link_or_copy(source: Path, target: Path) -> Path:
    """`target` as a hard link to `source` (no bytes copied), or, where the filesystem has none, an atomic
    copy. Safe with atomic_write: a later write of either name makes a new file, never changing the other."""
    def link(tmp: Path) -> None:
        try:
            os.link(source, tmp)
        except OSError:  # another filesystem, or none with hard links
            shutil.copyfile(source, tmp)
    return atomic_write(target, link)


def free_space(path: str | Path) -> str:
    """The space left on the disk holding `path` (its nearest existing folder), e.g. "1.2 GB"."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    return f"{free / 1e9:.1f} GB" if free >= 1e8 else f"{free / 1e6:.1f} MB"


def write_failed(path: str | Path, err: BaseException) -> OSError:
    """A one-line OSError for a failed write of `path`: the cause and the free space left there (torch's
    writer on a full disk says only `basic_ios::clear` or `file write failed`)."""
    cause = (str(err).strip().splitlines() or [""])[0][:200]
    return OSError(f"could not write {path} ({type(err).__name__}: {cause}); {free_space(path)} free on "
                   "that disk: if it is full, free space (or move the folder to a bigger disk) and rerun")


def save_json(obj, path: str | Path) -> Path:
    return atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=str) + "\n"))


def read_json(path: str | Path, what: str = "file") -> dict:
    """JSON from `path`; an unreadable file is a ValueError naming it and what to do."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} ({what}) is not valid JSON ({err}); delete it to rebuild it") from err
