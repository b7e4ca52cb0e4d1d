"""A training run's folder: resumable state, the final files, and the lock that keeps one writer.

    with run_lock(folder):                   # a second process waits here (or fails at once)
        state = load_state(folder)           # last.pt, else prev.pt; unreadable ones set aside, named
        save_state(folder, {...})            # last.pt written atomically, the previous one kept as prev.pt
        write_final(folder, weights, history, card)   # model.safetensors, history.csv, model.json
        read_final(folder)                   # (weights, card, history); unreadable files named
                                             # with what to do

Nothing here ever overwrites a file it cannot read: an unreadable file is renamed `<name>.corrupt`
(`<name>.corrupt-2`, ... when that exists) and named in a warning.
"""

from __future__ import annotations

import fcntl
import json
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import safetensors.torch
import torch

from .files import atomic_write, remove_stale_temps, save_json

FINAL_FILES = ("model.safetensors", "history.csv", "model.json")
_HELD: dict[str, int] = {}  # lock path -> depth, so one process may re-enter its own lock


class RunBusy(RuntimeError):
    """Another process holds the run's lock and we were told not to wait."""


def lock_path(folder: Path) -> Path:
    """`<parent>/.<run>.lock` beside the run folder (so it survives the folder being moved aside), of the
    resolved path: a relative path, a symlinked checkpoints root and a symlinked run folder all give the
    one lock of the real folder (two names for one folder must never be two locks)."""
    folder = Path(folder).resolve()
    return folder.parent / f".{folder.name}.lock"


@contextmanager
def run_lock(folder: str | Path, wait: bool = True, poll: float = 5.0) -> Iterator[None]:
    """Exclusive per-run lock (fcntl on Linux/macOS). wait=False: RunBusy at once if another process holds
    it; wait=True: block, saying once that we wait. Re-entrant within one process."""
    Path(folder).parent.mkdir(parents=True, exist_ok=True)  # first, so that the path resolves fully
    path = lock_path(Path(folder))
    key = str(path)  # resolved: the same key before and after the run folder exists (else a self-deadlock)
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise RunBusy(f"{folder} is being trained by another process (lock {path}); "
                              "wait for it, or stop it first") from None
            print(f"{Path(folder).name}: another process is training this run; waiting for it ...",
                  flush=True)
            while True:
                time.sleep(poll)
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    continue
        _HELD[key] = 1
        try:
            yield
        finally:
            _HELD.pop(key, None)
            fcntl.flock(handle, fcntl.LOCK_UN)


def set_aside(path: Path, why: str) -> Path:
    """Rename an unreadable file to `<name>.corrupt` (or the first free `.corrupt-N`) and warn."""
    bad = path.with_name(path.name + ".corrupt")
    k = 2
    while bad.exists():
        bad, k = path.with_name(f"{path.name}.corrupt-{k}"), k + 1
    path.replace(bad)
    warnings.warn(f"{path} is unreadable ({why}); kept as {bad.name}", stacklevel=3)
    return bad


def tidy(folder: Path) -> None:
    """Remove temp files of interrupted writes (their writer is gone) from a run folder."""
    for name in ("last.pt", "prev.pt", *FINAL_FILES, "store.json"):
        remove_stale_temps(Path(folder) / name)


def save_state(folder: Path, state: dict) -> None:
    """`last.pt`: everything a resumption needs; the previous one is kept as `prev.pt`."""
    last = folder / "last.pt"
    if last.exists():
        last.replace(folder / "prev.pt")
    atomic_write(last, lambda p: torch.save(state, p))


def load_state(folder: Path) -> dict | None:
    """The newest readable state (`last.pt`, else `prev.pt`); an unreadable file is set aside."""
    for name in ("last.pt", "prev.pt"):
        path = folder / name
        if not path.exists():
            continue
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated zip, bad pickle, ...: any failure means unusable
            set_aside(path, type(err).__name__)
    return None


def has_final(folder: Path) -> bool:
    return all((Path(folder) / f).exists() for f in FINAL_FILES)


def write_final(folder: Path, weights: dict[str, torch.Tensor], history: list[dict], card: dict) -> None:
    """model.safetensors (weights), history.csv, model.json (the model card), each atomically."""
    weights = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    atomic_write(folder / "model.safetensors", lambda p: safetensors.torch.save_file(weights, str(p)))
    atomic_write(folder / "history.csv", lambda p: pd.DataFrame(history).to_csv(p, index=False))
    save_json(card, folder / "model.json")


_FIX = ("delete it and rerun: it is rebuilt from last.pt when that holds the finished run, otherwise the "
        "run is trained again")


def read_card(folder: Path) -> dict:
    """model.json; an unreadable one is a ValueError naming it and what to do."""
    path = Path(folder) / "model.json"
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is unreadable ({type(err).__name__}: {err}); {_FIX}") from err


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors; an unreadable one is a ValueError naming it and what to do."""
    path = Path(folder) / "model.safetensors"
    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except Exception as err:  # SafetensorError, OSError, ...
        raise ValueError(f"{path} is unreadable ({type(err).__name__}: {err}); {_FIX}") from err


def read_history(folder: Path) -> list[dict]:
    return pd.read_csv(Path(folder) / "history.csv").to_dict("records")


def unreadable_finals(folder: Path) -> list[str]:
    """The final files that exist but cannot be read."""
    bad = []
    for name, read in (("model.json", read_card), ("model.safetensors", read_weights)):
        if (Path(folder) / name).exists():
            try:
                read(folder)
            except ValueError:
                bad.append(name)
    return bad

