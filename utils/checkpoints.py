"""A training run's folder: resumable state, the final files, and the lock that keeps one writer.

    with run_lock(folder):                   # a second process waits here (or fails at once)
        state = load_state(folder)           # last.pt, else prev.pt; unreadable ones set aside, named
        save_state(folder, {...})            # last.pt written atomically, the previous one kept as prev.pt
        write_final(folder, weights, history, card)   # model.safetensors, history.csv, model.json
        drop_states(folder)                  # last.pt and prev.pt, once the final files exist
        read_card(folder), read_weights(folder), read_history(folder, epochs)  # Unreadable (a ValueError)
                                             # naming the file, why and what to do
        unreadable_finals(folder)            # {final file: why} for those that cannot be used

Nothing here ever overwrites a file it cannot read: an unreadable file is renamed `<name>.corrupt`
(`<name>.corrupt-2`, ... when that exists) and named in a warning. A write that fails (a full disk) is an
OSError naming the file and the space left; the file it would have replaced stays as it was.
"""

from __future__ import annotations

import fcntl
import json
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import safetensors.torch
import torch
from safetensors import SafetensorError

from .files import atomic_write, remove_stale_temps, write_failed

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


def write(path: Path, write_to: Callable[[Path], object]) -> None:
    """atomic_write; a failed write (a full disk: OSError, or torch's `basic_ios::clear` RuntimeError) is an
    OSError naming the file and the space left, and the previous file stays as it was."""
    try:
        atomic_write(path, write_to)
    except (OSError, RuntimeError, SafetensorError) as err:
        raise write_failed(path, err) from err


def _torch_save(obj, path: Path) -> None:
    with open(path, "wb") as f:  # through Python: a full disk is OSError ENOSPC, not torch's basic_ios
        torch.save(obj, f)


def save_state(folder: Path, state: dict) -> None:
    """`last.pt`: everything a resumption needs; the previous one is kept as `prev.pt`."""
    last = folder / "last.pt"
    if last.exists():
        last.replace(folder / "prev.pt")
    write(last, lambda p: _torch_save(state, p))


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
    write(folder / "model.safetensors", lambda p: safetensors.torch.save_file(weights, str(p)))
    write(folder / "history.csv", lambda p: pd.DataFrame(history).to_csv(p, index=False))
    write_json(card, folder / "model.json")


def drop_states(folder: Path) -> None:
    """Remove last.pt and prev.pt once every final file exists (a state is ~4x the weights: model, AdamW's
    two moments, RNG); until then they are what a damaged final file is rebuilt from."""
    if has_final(folder):
        for name in ("last.pt", "prev.pt"):
            (Path(folder) / name).unlink(missing_ok=True)


def write_json(obj, path: Path) -> None:
    write(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=str) + "\n"))


class Unreadable(ValueError):
    """A final file that cannot be used: its path, why (`reason`) and what to do, in one line."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path} is unreadable ({reason}); {_FIX}")
        self.reason = reason


_FIX = ("delete it and rerun: it is rebuilt from last.pt when that holds the finished run, otherwise the "
        "run is trained again")


CARD_KEYS = {"model": str, "model_config": (dict, type(None)), "train_config": dict, "epochs": int}
# what reading a card relies on (rebuilding the model, checking the config, the history's length)


def read_card(folder: Path) -> dict:
    """model.json; an unreadable one, or one that is not a model card (another JSON shape), is a ValueError
    naming it and what to do."""
    path = Path(folder) / "model.json"
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise Unreadable(path, f"{type(err).__name__}: {err}") from err
    wrong = [k for k, kind in CARD_KEYS.items()
             if not isinstance(card, dict) or not isinstance(card.get(k), kind)]
    if wrong:
        raise Unreadable(path, f"not a model card: no valid {', '.join(wrong)}")
    return card


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors; an unreadable one is a ValueError naming it and what to do."""
    path = Path(folder) / "model.safetensors"
    try:
        weights = safetensors.torch.load_file(str(path), device="cpu")
    except Exception as err:  # SafetensorError, OSError, ...
        raise Unreadable(path, f"{type(err).__name__}: {err}") from err
    bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:  # a diverged run's weights: a model that answers NaN is no model to serve
        raise Unreadable(path, f"NaN or inf in {len(bad)} tensors, e.g. {bad[0]}")
    return weights


def read_history(folder: Path, epochs: int | None = None) -> list[dict]:
    """history.csv (one row per epoch); one cut short (a half-copied file: fewer rows than `epochs`, the
    card's, or a row missing values) or unreadable is a ValueError naming it and what to do."""
    path = Path(folder) / "history.csv"
    try:
        hist = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise Unreadable(path, f"{type(err).__name__}: {err}") from err
    rows = list(hist["epoch"]) if "epoch" in hist else None
    if rows != list(range(1, len(hist) + 1)) or hist.isna().any().any() or epochs not in (None, len(hist)):
        rows_of = f" of the card's {epochs} epochs" if epochs else ""
        raise Unreadable(path, f"cut short: {len(hist.dropna())} complete rows{rows_of}")
    return hist.to_dict("records")


def unreadable_finals(folder: Path) -> dict[str, str]:
    """The final files that exist but cannot be used, with why (history.csv: or shorter than the card)."""
    folder, bad = Path(folder), {}
    card = _readable(read_card, folder, "model.json", bad)
    _readable(read_weights, folder, "model.safetensors", bad)
    _readable(lambda f: read_history(f, card and card["epochs"]), folder, "history.csv", bad)
    return bad


def _readable(read: Callable[[Path], object], folder: Path, name: str, bad: dict[str, str]):
    """read(folder) when `name` exists and can be used; else None (and `name`'s reason in `bad`)."""
    if not (folder / name).exists():
        return None
    try:
        return read(folder)
    except Unreadable as err:
        bad[name] = err.reason
        return None
