"""Every numbered notebook: committed clean, and executes top to bottom under the smoke profile."""

import json
from pathlib import Path

import pytest

from utils import run_notebooks

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = [p.name for p in run_notebooks.find_notebooks(ROOT)]

if NOTEBOOKS:

    @pytest.mark.parametrize("name", NOTEBOOKS)
    def test_notebook_is_committed_clean(name):
        cells = json.loads((ROOT / name).read_text())["cells"]
        assert not any(c.get("outputs") for c in cells if c["cell_type"] == "code"), "strip outputs"
        params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(params) == 1 and "profile" in "".join(params[0]["source"])

    @pytest.mark.parametrize("name", NOTEBOOKS)
    def test_notebook_runs_under_smoke(name, tmp_path, monkeypatch):
        monkeypatch.setenv("MLPZOOM_RESULTS", str(tmp_path / "results"))
        monkeypatch.setenv("MLPZOOM_CHECKPOINTS", str(tmp_path / "checkpoints"))
        (result,) = run_notebooks.run("smoke", only=[name[:2]], root=ROOT)
        assert result.ok, result
