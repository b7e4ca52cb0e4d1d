"""benchmarks.train_step and benchmarks.gpu run end to end on tiny models and report consistent numbers
(no timing test)."""

import math

import numpy as np
import pandas as pd
import torch

from benchmarks import gpu, train_step
from utils import models
from utils.experiments import cost


def test_train_step_table(capsys):
    train_step.main(["--models", "test_mlp", "--batch-sizes", "4", "--modes", "fp32,bf16", "--warmup", "1",
                     "--steps", "1", "--repeats", "1", "--device", "cpu"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("training-step images/s on cpu")
    fp32, bf16, ratio = map(float, lines[-1].split()[-3:])  # "test_mlp 4 <fp32> <bf16> <ratio>"
    assert fp32 > 0 and bf16 > 0 and math.isclose(ratio, bf16 / fp32, rel_tol=0.02, abs_tol=0.01)


def close(a, b) -> bool:
    return bool(np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=1e-9))


def test_gpu_table_on_cpu(tmp_path, capsys):
    """--small on a CPU: one table, every section's rows, positive finite rates, MFU blank without a peak."""
    modes = [m for m in ("fp32", "bf16") if m in cost.supported_modes(models.create_model("test_mlp"), "cpu")]
    threads = torch.get_num_threads()
    table = gpu.main(["--device", "cpu", "--small", "--modes", ",".join(modes), "--repeats", "2", "--n",
                      "512", "--batch-sizes", "8", "--pgd-batch", "8", "--out", str(tmp_path / "gpu.csv")])
    assert torch.get_num_threads() == threads  # ffcv's import and loaders set it; the script restores it
    out = capsys.readouterr().out
    assert out.startswith("benchmarks.gpu on CPU (cpu)") and out.count("| section |") == 1
    assert len(out.strip().splitlines()) == 2 + 2 + len(table)  # header, blank, column names + rule, rows
    k = 3 * len(modes)  # models x modes; train at batch 8, infer at 1 and 8, pgd: ours and torchattacks
    assert table.section.value_counts().to_dict() == {"device": 2, "loader": 3, "train": k, "pgd": 2 * k,
                                                      "infer": 2 * k}
    assert set(table[table.section == "infer"].batch) == {1, 8}
    measured = table[(table.section != "device") & ~table.note.str.startswith("skipped")]
    assert {"resident", "torch"} <= set(measured[measured.section == "loader"].model)  # ffcv: if importable
    assert len(measured) >= len(table) - 3  # only the device rows and (without ffcv) its loader row
    assert (measured.images_per_s > 0).all() and measured.images_per_s.map(math.isfinite).all()
    assert table[table.extra_kind == "MFU"].extra.isna().all()  # a CPU has no known peak
    loader = measured[measured.section == "loader"]
    assert ((loader.extra > 0) & (loader.extra < 1)).all()  # a fraction of the measured copy bandwidth
    ours = table[table.model.str.endswith(" utils pgd")]
    theirs = table[table.model.str.endswith(" torchattacks")]
    assert close(ours.extra, ours.images_per_s.to_numpy() / theirs.images_per_s.to_numpy())
    saved = pd.read_csv(tmp_path / "gpu.csv")
    assert saved.shape == table.shape and close(saved.images_per_s.fillna(-1), table.images_per_s.fillna(-1))


def test_gpu_mfu_with_peak(capsys):
    """--peak-tflops fills MFU: images/s x 3 (train) or 1 (infer) x forward FLOPs per image / peak."""
    table = gpu.main(["--device", "cpu", "--small", "--sections", "train,infer", "--models", "test_mlp",
                      "--modes", "fp32", "--batch-sizes", "8", "--repeats", "2", "--peak-tflops", "0.5"])
    assert "| MFU " in capsys.readouterr().out
    flops = cost.count_flops(models.create_model("test_mlp"), (3, 32, 32))
    for section, passes in (("train", 3), ("infer", 1)):
        rows = table[table.section == section]
        assert len(rows) == {"train": 1, "infer": 2}[section] and (rows.extra > 0).all()
        assert close(rows.extra, rows.images_per_s * passes * flops / 0.5e12)


def test_gpu_peak_table_names():
    """Variants match before their base names (L40S is not an L4, A100 not an A10); unknown -> None."""
    names = {"NVIDIA H100 80GB HBM3": 989.0, "NVIDIA H100 PCIe": 756.0, "NVIDIA H200": 989.0,
             "NVIDIA A100-SXM4-80GB": 312.0, "NVIDIA L40S": 362.0, "NVIDIA L4": 121.0, "NVIDIA A10": 125.0,
             "NVIDIA GeForce RTX 4090": 165.2, "Tesla T4": 65.0, "Tesla V100-SXM2-16GB": 125.0,
             "NVIDIA A10G": None, "NVIDIA GeForce GTX 1080": None}
    assert {n: gpu.known_peak(n) for n in names} == names


def test_gpu_train_skips_after_oom(monkeypatch):
    """A batch that runs out of memory gets an OOM note, the larger ones a skip note; smaller ones run."""
    def fake_rate(base, batch, mode, args):
        if batch >= 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return 100.0

    monkeypatch.setattr(gpu, "train_rate", fake_rate)
    args = gpu.parse(["--device", "cpu", "--small", "--modes", "fp32", "--batch-sizes", "32,8,16"])
    rows = list(gpu.train_rows("test_mlp", models.create_model("test_mlp"), 1000, args, peak=1e12))
    assert [(r["batch"], r["note"]) for r in rows] == [
        (8, ""), (16, "OOM: skipped"), (32, "skipped: OOM at batch 16")]
    assert rows[0]["images_per_s"] == 100.0 and close(rows[0]["extra"], 100.0 * 3 * 1000 / 1e12)
    assert all(math.isnan(r["images_per_s"]) for r in rows[1:])
