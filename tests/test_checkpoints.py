"""utils.checkpoints: the per-run lock across processes, corrupt files set aside (never overwritten), stale
temp files of killed writers removed."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from utils import checkpoints, files

ROOT = Path(__file__).resolve().parents[1]


def test_a_second_corrupt_last_pt_does_not_overwrite_the_first(tmp_path):
    for text in ("first broken file", "second broken file"):
        (tmp_path / "last.pt").write_text(text)
        with pytest.warns(UserWarning, match="unreadable"):
            assert checkpoints.load_state(tmp_path) is None
    assert (tmp_path / "last.pt.corrupt").read_text() == "first broken file"
    assert (tmp_path / "last.pt.corrupt-2").read_text() == "second broken file"


def test_prev_pt_is_used_when_last_pt_is_unreadable(tmp_path):
    checkpoints.save_state(tmp_path, {"epoch": 1})
    checkpoints.save_state(tmp_path, {"epoch": 2})
    (tmp_path / "last.pt").write_bytes(b"\0" * 10)
    with pytest.warns(UserWarning):
        assert checkpoints.load_state(tmp_path)["epoch"] == 1


def test_temp_files_of_killed_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    stale = tmp_path / f".last.pt.tmp{int(dead.stdout)}"  # a full-size temp file whose writer was killed
    stale.write_bytes(b"x" * 1000)
    mine = tmp_path / f".last.pt.tmp{os.getpid()}"  # ours (a write in progress) is never touched
    mine.write_bytes(b"y")
    checkpoints.tidy(tmp_path)
    assert not stale.exists() and mine.exists()
    mine.unlink()
    stale.write_bytes(b"x")
    files.atomic_write(tmp_path / "last.pt", lambda p: torch.save({"epoch": 3}, p))  # every write tidies too
    assert not stale.exists() and torch.load(tmp_path / "last.pt", weights_only=True) == {"epoch": 3}


HOLD = "import sys, time\nfrom utils import checkpoints\nwith checkpoints.run_lock(sys.argv[1]):\n" \
       "    print('holding', flush=True)\n    time.sleep(float(sys.argv[2]))\n"


def test_the_run_lock_excludes_a_second_process(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), "3"], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    with (pytest.raises(checkpoints.RunBusy, match="another process"),
          checkpoints.run_lock(folder, wait=False)):
        pass
    start = time.perf_counter()
    with checkpoints.run_lock(folder, wait=True, poll=0.1):  # waits for the holder, then gets it
        waited = time.perf_counter() - start
    assert holder.wait(timeout=10) == 0 and waited > 1.0  # it held the lock ~3 s after printing
    holder.stdout.close()
    with checkpoints.run_lock(folder), checkpoints.run_lock(folder, wait=False):  # re-entrant in a process
        pass


def test_one_lock_per_real_folder_whatever_the_path_it_is_reached_by(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # relative, before its parent exists, then again once it does (the store, then train.fit): re-entered
    with checkpoints.run_lock("ck/quick/run", wait=False), checkpoints.run_lock("ck/quick/run", wait=False):
        pass
    (tmp_path / "big" / "run").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "big")  # a symlinked checkpoints root
    (tmp_path / "ck" / "quick" / "other").symlink_to(tmp_path / "big" / "run")  # a symlinked run folder
    real = tmp_path / "big" / ".run.lock"
    for name in ("link/run", tmp_path / "big" / "run", "ck/quick/other", "ck/../big/run"):
        assert checkpoints.lock_path(name) == real, name
    with checkpoints.run_lock("link/run", wait=False), checkpoints.run_lock("ck/quick/other", wait=False):
        pass
