"""conftest.once: the notebook runs the pytest-xdist workers share happen once per session (issue 24)."""

import subprocess
import sys
from pathlib import Path

import pytest
from once import once

ROOT = Path(__file__).resolve().parents[1]


def test_the_work_runs_once_and_every_caller_gets_its_value(tmp_path):
    calls = []
    work = lambda: calls.append(1) or {"top1": 0.5}
    assert once(tmp_path, "k", work) == {"top1": 0.5}
    assert once(tmp_path, "k", work) == {"top1": 0.5} and calls == [1]


def test_a_failure_is_raised_where_it_happened_and_named_to_every_later_caller(tmp_path):
    def broken():
        raise ValueError("no such layer")

    with pytest.raises(ValueError, match="no such layer"):
        once(tmp_path, "k", broken)
    with pytest.raises(pytest.fail.Exception, match="k failed in another test: ValueError: no such layer"):
        once(tmp_path, "k", lambda: 1)


def test_a_second_process_waits_for_the_first_and_does_not_run_the_work(tmp_path):
    """Two processes at once: one sleeps 2 s in the work and writes a marker; the other gets its value."""
    script = (f"import sys, time; sys.path.insert(0, {str(ROOT / 'tests')!r}); from once import once; "
              f"from pathlib import Path; d = Path({str(tmp_path)!r}); "
              "v = once(d, 'k', lambda: (d / f'ran{sys.argv[1]}').touch() or time.sleep(2) or sys.argv[1]); "
              "print(v)")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT) for i in range(2)]
    outs = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert len(list(tmp_path.glob("ran*"))) == 1 and len(outs) == 1
