"""once(): work that the pytest-xdist workers of a session share, run by whichever asks first (issue 24).
Its own module, without conftest's imports (torch, utils), so a process that only needs it starts fast."""

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import filelock
import pytest

T = TypeVar("T")


def once(folder: Path, key: str, work: Callable[[], T], timeout_s: float = 3600) -> T:
    """work() run by exactly one process of the session, whichever asks first; every other process waits for
    it and gets the same value (pickled in `folder`), or fails naming the error. Only work that has started
    is ever waited for, so two workers cannot wait for each other: a test that needs several results asks for
    each (running the ones nobody took yet). pytest-xdist orders nothing between workers; this is the
    smallest thing that lets notebooks that depend on one another run on both (issue 24)."""
    folder.mkdir(parents=True, exist_ok=True)
    done, claim = folder / f"{key}.pkl", filelock.FileLock(folder / f"{key}.lock")
    if not done.exists():
        claim.acquire(timeout=timeout_s)  # another worker at it: wait until it lets go (or dies)
        try:
            if not done.exists():
                try:
                    value = work()
                    outcome = ("ok", value)
                    return value
                except BaseException as err:  # pytest.fail's Failed too
                    outcome = ("error", f"{type(err).__name__}: {err}".splitlines()[0])
                    raise
                finally:
                    tmp = done.with_name(f"{done.name}.tmp{os.getpid()}")
                    tmp.write_bytes(pickle.dumps(outcome))
                    tmp.replace(done)
        finally:
            claim.release()
    status, value = pickle.loads(done.read_bytes())
    if status != "ok":
        pytest.fail(f"{key} failed in another test: {value}")
    return value
