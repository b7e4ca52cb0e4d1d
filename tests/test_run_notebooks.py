"""utils.run_notebooks: profile injection, executed copies, failures reported by name and cell."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

from utils import run_notebooks


def write_notebook(path, *sources, params="profile = 'quick'"):
    nb = nbformat.v4.new_notebook()  # no kernelspec metadata: the runner names the kernel itself
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, *(nbformat.v4.new_code_cell(s) for s in sources)]
    nbformat.write(nb, path)


@pytest.fixture
def notebooks(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPZOOM_RESULTS", str(tmp_path / "results"))
    root = tmp_path / "nb"
    root.mkdir()
    write_notebook(root / "01_ok.ipynb", "open('ran.txt', 'w').write(profile)")
    write_notebook(root / "02_fails.ipynb", "x = 1", "raise ValueError('broken on purpose')")
    write_notebook(root / "03_ok_too.ipynb", "open('ran3.txt', 'w').write(profile)")
    (root / "notes.ipynb").write_text("not numbered, never run")
    return root


def test_runs_all_reports_failure_by_cell(notebooks, tmp_path):
    runs = run_notebooks.run("smoke", root=notebooks)
    assert [r.name for r in runs] == ["01_ok.ipynb", "02_fails.ipynb", "03_ok_too.ipynb"]
    assert [r.ok for r in runs] == [True, False, True]  # a failure does not stop the rest
    assert runs[1].error == "cell 4: ValueError: broken on purpose"  # In [4]: after the injected cell
    assert (notebooks / "ran.txt").read_text() == "smoke"  # injected, and run in the notebook's folder
    executed = json.loads((tmp_path / "results" / "smoke" / "executed" / "01_ok.ipynb").read_text())
    injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert 'profile = "smoke"' in "".join(injected[0]["source"])


def test_main_exit_codes_and_selection(notebooks, capsys):
    assert run_notebooks.main(["--profile", "smoke", "--only", "01,03", "--root", str(notebooks)]) == 0
    assert "2 of 2 notebooks ran" in capsys.readouterr().out
    assert run_notebooks.main(["--profile", "smoke", "--only", "02", "--root", str(notebooks)]) == 1
    assert "FAILED 02_fails.ipynb: cell 4: ValueError" in capsys.readouterr().out


def test_a_root_without_notebooks_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLPZOOM_RESULTS", str(tmp_path / "results"))
    with pytest.raises(SystemExit) as exit_:
        run_notebooks.main(["--profile", "smoke", "--root", str(tmp_path)])
    assert exit_.value.code == 2 and "no numbered notebooks" in capsys.readouterr().err


def test_only_strips_spaces_and_matches_whole_numbers(notebooks, capsys):
    assert run_notebooks.main(["--profile", "smoke", "--only", " 01, 03 ", "--root", str(notebooks)]) == 0
    assert "2 of 2 notebooks ran" in capsys.readouterr().out
    for bad in ("0", "", ","):
        with pytest.raises(SystemExit) as exit_:
            run_notebooks.main(["--profile", "smoke", "--only", bad, "--root", str(notebooks)])
        assert exit_.value.code == 2 and "no notebook matches" in capsys.readouterr().err
    assert [p.name for p in run_notebooks.find_notebooks(notebooks, ["01_ok", "03_ok_too.ipynb"])] == [
        "01_ok.ipynb", "03_ok_too.ipynb"]


def test_dataset_and_parameters_reach_every_notebook(notebooks, tmp_path):
    write_notebook(notebooks / "04_params.ipynb", "open('p.txt', 'w').write(f'{dataset} {seed} {profile}')",
                   params="profile = 'quick'\ndataset = None\nseed = 0")
    assert run_notebooks.main(["--profile", "smoke", "--only", "04", "--dataset", "mnist", "-p", "seed=3",
                               "--root", str(notebooks)]) == 0
    assert (notebooks / "p.txt").read_text() == "mnist 3 smoke"


def test_output_is_streamed_with_the_notebook_number(notebooks, capsys):
    write_notebook(notebooks / "05_talks.ipynb", "print('epoch 1/2: loss 0.5')")
    run_notebooks.run("smoke", only=["05"], root=notebooks)
    out = capsys.readouterr().out
    assert "  [05] epoch 1/2: loss 0.5" in out


def test_a_failed_rerun_keeps_the_last_good_executed_copy(notebooks, tmp_path):
    executed = tmp_path / "results" / "smoke" / "executed"
    (good,) = run_notebooks.run("smoke", only=["01"], root=notebooks)
    before = (executed / "01_ok.ipynb").read_text()
    write_notebook(notebooks / "01_ok.ipynb", "raise RuntimeError('now broken')")
    (bad,) = run_notebooks.run("smoke", only=["01"], root=notebooks)
    assert good.ok and not bad.ok and bad.executed == executed / "01_ok.failed.ipynb"
    assert (executed / "01_ok.ipynb").read_text() == before  # untouched
    assert "now broken" in (executed / "01_ok.failed.ipynb").read_text()
    assert not list(executed.glob(".*running*"))


def test_bad_names_list_the_valid_ones(notebooks):
    with pytest.raises(ValueError, match="01_ok.ipynb, 02_fails.ipynb, 03_ok_too.ipynb"):
        run_notebooks.run("smoke", only=["09"], root=notebooks)
    with pytest.raises(KeyError, match="smoke, quick, full"):
        run_notebooks.run("tiny", root=notebooks)


def test_profile_and_dataset_are_flags_and_datasets_are_names_not_paths(notebooks, capsys):
    args = ["--profile", "smoke", "--only", "01", "--root", str(notebooks)]
    flag = "-p {0}=... is not a notebook parameter here; give it as --{0}"
    for extra, said in ((["-p", "profile=quick"], flag.format("profile")),
                        (["-p", "dataset=mnist"], flag.format("dataset")),
                        (["--dataset", "../../x"], "unknown dataset '../../x'; datasets: cifar10, ")):
        with pytest.raises(SystemExit) as exit_:
            run_notebooks.main(args + extra)
        assert exit_.value.code == 2 and said in capsys.readouterr().err
    with pytest.raises(ValueError, match="give it as --profile"):
        run_notebooks.run("smoke", root=notebooks, parameters={"profile": "quick"})
    assert not (notebooks / "ran.txt").exists()  # refused before any notebook ran


def test_each_run_has_its_own_working_copy_and_dead_runs_copies_go(notebooks, tmp_path):
    executed = tmp_path / "results" / "smoke" / "executed"
    executed.mkdir(parents=True)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a process that has ended
    alive, dead = executed / ".01_ok.running-1.ipynb", executed / f".01_ok.running-{gone}.ipynb"
    alive.write_text("another run's copy")  # pid 1 lives as long as the machine
    dead.write_text("left by a killed run")
    write_notebook(notebooks / "01_ok.ipynb", "import glob, os\n"
                   "open('w.txt', 'w').write(' '.join(sorted(os.path.basename(p) for p in "
                   f"glob.glob({str(executed)!r} + '/.01_ok.running*'))))")
    (run,) = run_notebooks.run("smoke", only=["01"], root=notebooks)
    mine = f".01_ok.running-{os.getpid()}.ipynb"  # the copy papermill writes while the notebook runs
    assert run.ok and (notebooks / "w.txt").read_text() == f".01_ok.running-1.ipynb {mine}"
    assert alive.read_text() == "another run's copy" and not dead.exists()


def test_a_knob_reaches_the_notebooks_whose_typed_config_has_it(tmp_path, monkeypatch, capsys):
    """-p KEY=VALUE for a knob of utils.config's typed configs becomes `overrides` of the notebooks that have
    it (02's n_transfer, 05's repeats); a shared parameter reaches every notebook; a typo or a wrong type
    fails before anything runs, listing the knobs."""
    monkeypatch.setenv("MLPZOOM_RESULTS", str(tmp_path / "results"))
    for stem in ("02_adversarial_robustness", "05_inference_time"):
        record = f"open('{stem[:2]}.txt', 'w').write(repr((seed, overrides)))"
        write_notebook(tmp_path / f"{stem}.ipynb", record, params="profile = None\nseed = 0\noverrides = {}")
    args = ["--profile", "smoke", "--root", str(tmp_path), "-p", "seed=2"]
    assert run_notebooks.main([*args, "-p", "n_transfer=16", "-p", "repeats=3"]) == 0
    assert (tmp_path / "02.txt").read_text() == "(2, {'n_transfer': 16})"
    assert (tmp_path / "05.txt").read_text() == "(2, {'repeats': 3})"
    with pytest.raises(SystemExit) as exit_:
        run_notebooks.main([*args, "-p", "n_imgs=3"])
    assert exit_.value.code == 2 and "no selected notebook has the knob 'n_imgs'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_notebooks.main([*args, "--only", "05", "-p", "repeats=fast"])
    assert "override repeats='fast' is not a int" in capsys.readouterr().err


def test_two_kernels_never_share_their_sockets(tmp_path, monkeypatch):
    """Kernels on IPC sockets, each under its own path prefix in the temp folder: jupyter_client's default
    (`kernel-ipc-N` in the working directory, the first N whose file is absent) gave two kernels started at
    once by two test workers the same sockets."""
    monkeypatch.chdir(tmp_path)
    manager = run_notebooks._ipc_kernel_manager()
    a, b = manager(kernel_name="python3"), manager(kernel_name="python3")
    assert a.transport == b.transport == "ipc" and a.ip != b.ip
    for km in (a, b):
        assert Path(km.ip).is_absolute() and Path(km.ip).parent == Path(tempfile.gettempdir())
        km.write_connection_file()
        km.cleanup_connection_file()
    assert not list(tmp_path.iterdir())  # nothing in the working directory
