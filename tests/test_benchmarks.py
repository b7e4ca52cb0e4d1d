"""benchmarks.train_step and benchmarks.full_path run end to end on tiny models and report consistent
numbers (no timing test); the estimate counts with full_path's measured rates."""

import json
import math

import pandas as pd
import pytest

from benchmarks import full_path, train_step
from utils import estimate, plan


def test_train_step_table(capsys):
    train_step.main(["--models", "test_mlp", "--batch-sizes", "4", "--modes", "fp32,bf16", "--warmup", "1",
                     "--steps", "1", "--repeats", "1", "--device", "cpu"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("training-step images/s on cpu")
    fp32, bf16, ratio = map(float, lines[-1].split()[-3:])  # "test_mlp 4 <fp32> <bf16> <ratio>"
    assert fp32 > 0 and bf16 > 0 and math.isclose(ratio, bf16 / fp32, rel_tol=0.02, abs_tol=0.01)


def test_full_path_measures_the_estimates_rates_and_the_plan_counts_with_them(tmp_path, capsys, monkeypatch):
    """--device cpu (toy sizes): a row per section, every rate of estimate.RATES that a device can measure
    (not AUTOATTACK_ROBUST: it needs trained models), each positive; `--estimate --measured` counts with
    them."""
    monkeypatch.setattr(estimate, "MEASURED", {})  # use_measured fills the module's dict: this test's only
    table = full_path.main(["--device", "cpu", "--out", str(tmp_path)])
    assert capsys.readouterr().out.startswith("benchmarks.full_path on CPU (cpu)")
    assert set(table.section) == {"gemm", "copy", "fit", "attack", "checkpoint", "overhead", "sae", "compile",
                                  "host"}
    rates = pd.read_csv(tmp_path / "rates.csv")
    assert set(rates.rate) == set(estimate.RATES) - {"AUTOATTACK_ROBUST"} and (rates.value > 0).all()
    assert (pd.read_csv(tmp_path / "measurements.csv").value > 0).all()
    args = ["--profile", "full", "--only", "09", "--estimate", "--json"]
    assert plan.main(args) == 0
    assumed = json.loads(capsys.readouterr().out)
    assert plan.main([*args, "--measured", str(tmp_path / "rates.csv")]) == 0
    measured = json.loads(capsys.readouterr().out)
    sae = measured["rates"]["SAE_STEP_S"]
    assert sae["measured"] and sae["value"] == rates.set_index("rate").value["SAE_STEP_S"]
    assert not measured["rates"]["AUTOATTACK_ROBUST"]["measured"]
    # a 2-core CPU's rates: every minute counted is longer than at the H200's assumed ones
    for key in ("training_minutes", "analysis_minutes"):
        assert measured["total"][key] > 10 * assumed["total"][key] > 0


def test_a_rates_file_with_an_unknown_rate_is_one_line_naming_the_known_ones(tmp_path, capsys):
    path = tmp_path / "rates.csv"
    path.write_text("rate,value,unit,source\nH100_FLOPS,1e15,FLOP/s,typo\n")
    with pytest.raises(SystemExit):
        plan.main(["--profile", "full", "--only", "09", "--estimate", "--measured", str(path)])
    err = capsys.readouterr().err
    assert "unknown rates H100_FLOPS; known: H200_BF16_FLOPS" in err and not estimate.MEASURED
