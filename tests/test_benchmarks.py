"""benchmarks.train_step runs end to end on a tiny model and reports consistent ratios (no timing test)."""

import math

from benchmarks import train_step


def test_train_step_table(capsys):
    train_step.main(["--models", "test_mlp", "--batch-sizes", "4", "--modes", "fp32,bf16", "--warmup", "1",
                     "--steps", "1", "--repeats", "1", "--device", "cpu"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("training-step images/s on cpu")
    fp32, bf16, ratio = map(float, lines[-1].split()[-3:])  # "test_mlp 4 <fp32> <bf16> <ratio>"
    assert fp32 > 0 and bf16 > 0 and math.isclose(ratio, bf16 / fp32, rel_tol=0.02, abs_tol=0.01)
