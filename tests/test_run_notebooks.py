"""utils.run_notebooks: profile injection, executed copies, failures reported by name and cell."""

import json

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


def test_no_notebooks_is_not_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLPZOOM_RESULTS", str(tmp_path / "results"))
    assert run_notebooks.main(["--profile", "smoke", "--root", str(tmp_path)]) == 0
    assert "no numbered notebooks" in capsys.readouterr().out


def test_bad_names_list_the_valid_ones(notebooks):
    with pytest.raises(ValueError, match="01_ok.ipynb, 02_fails.ipynb, 03_ok_too.ipynb"):
        run_notebooks.run("smoke", only=["09"], root=notebooks)
    with pytest.raises(KeyError, match="smoke, quick, full"):
        run_notebooks.run("tiny", root=notebooks)
