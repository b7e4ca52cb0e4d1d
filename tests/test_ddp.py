"""utils.distributed: torchrun + DDP on CPU (gloo, 2 processes) against the 1-process engine, and each rank's
slice of the loaders.

Three torchrun launches serve every 2-process test: one uninterrupted launch runs the CLI three times (a
LayerNorm MLP; a BatchNorm + dropout + mixup MLP; the LayerNorm MLP on ffcv), a store run and a refused ragged
loader, then a launch of the second CLI run is SIGKILLed after epoch 2 and a third resumes it. The imports
dominate (torch, timm, ffcv: ~10 s a process). The file: ~75 CPU-s; 131 s wall on 2 cores shared with other
jobs (load ~7), of which the first launch 58 s and the kill + resume 40 s.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.distributed as dist
from once import once

from utils import checkpoints, data, distributed, metrics, models, store, train
from utils.data import Augment

ROOT = Path(__file__).resolve().parents[1]
# The 2-process run vs the 1-process run at the same global batch is not bit-exact: each rank averages the
# loss over its half of the batch and DDP averages the two gradients, another float32 summation order than
# one mean over the batch. Weights then agree to float32 rounding (~1e-7 relative), except the rare weight
# whose gradient is ~0: AdamW divides by sqrt(v), which turns rounding noise into up to ~lr per step there.
# Measured (test_mlp, 9 steps at lr <= 1e-3; the smoke store run, 14 steps at lr <= 3e-3): per-tensor
# |dw| / |w| <= 7e-7 and 1.2e-5; 1 and 2 weights of 115,504 off by more than 1e-6; max |dw| 2.4e-6, 4.7e-5.
REL_NORM = 1e-4  # per tensor: |w_2 - w_1| / |w_1| (Frobenius)
OUTLIERS = 1e-4  # at most this fraction of all weights differ by more than 1e-6
LOSS_RTOL = 1e-5  # train/val losses of the two runs (float64 sums of float32 losses)
FILES = ["history.csv", "model.json", "model.safetensors"]  # a finished run's folder (states dropped)


def assert_close_weights(one: dict, two: dict) -> None:
    assert one.keys() == two.keys() and not any(k.startswith("module.") for k in two)  # no DDP prefix
    for k in one:
        assert (two[k] - one[k]).norm() <= REL_NORM * one[k].norm(), k
        assert (two[k] - one[k]).abs().max() < 1e-3, k  # even there, far below the weights' scale
    off = sum(((two[k] - one[k]).abs() > 1e-6).sum().item() for k in one)
    assert off <= OUTLIERS * sum(v.numel() for v in one.values()), off

WORKER = """\
import json, os, signal, sys
from pathlib import Path
import torch
import utils.train as t
from utils import data, distributed, metrics, models, store

kill_at, real_epoch, real_fit, shutdown = int(os.environ.get("KILL_AT", "-1")), t.train_epoch, t.fit, \\
    distributed.shutdown
distributed.shutdown = lambda: None  # one process group for every job of this launch

def train_epoch(*a):
    if a[-1] == kill_at:  # both ranks, at the start of that epoch: last.pt of the one before is written
        os.kill(os.getpid(), signal.SIGKILL)
    return real_epoch(*a)

def fit(model, train_loader, val_loader, cfg, test_loader=None):
    hist = real_fit(model, train_loader, val_loader, cfg, test_loader)
    whole = data.make_loader(val_loader._source, 100, train=False, shard=(0, 1))  # every val image, unsharded
    out = {"history": hist.drop(columns=["train_seconds", "images_per_s"]).to_dict("list"),
           "val": metrics.evaluate(model, val_loader), "test": metrics.evaluate(model, test_loader),
           "val_unsharded": metrics.evaluate(model, whole), "val_batches": len(val_loader),
           "shard": [train_loader.rank, train_loader.world_size, train_loader.local_batch],
           "weights": {k: v.sum().item() for k, v in model.state_dict().items()}}
    folder = Path(cfg.checkpoint_dir)
    (folder.parent / f"{folder.name}.rank{distributed.rank()}.json").write_text(json.dumps(out))
    return hist

t.train_epoch, t.fit = train_epoch, fit
for job in json.loads(sys.argv[1]):
    if job[0] == "store":
        net = store.get_or_train(job[1], "synthetic", "smoke", progress=False)
    elif job[0] == "ragged":  # 80 images, global batch 64, drop_last=False: rank 0 takes 2 steps, rank 1 one
        ds = data.load_dataset("synthetic", "train", subset=80)
        try:
            real_fit(models.create_for("test_mlp", ds.info), data.make_loader(ds, 64, train=True,
                     drop_last=False), None, t.TrainConfig(epochs=1, progress=False))
        except ValueError as err:
            Path(f"{job[1]}.rank{distributed.rank()}.txt").write_text(str(err))
    else:
        t.main(job)
shutdown()
"""


def cli_args(out: Path, model: str, *extra: str) -> list[str]:
    return ["--model", model, "--dataset", "synthetic", "--subset", "256", "--epochs", "3",
            "--batch-size", "64", "--eval-batch-size", "64", "--device", "cpu", "--out", str(out),
            "--progress", "false", *extra]


def ln_args(out):  # LayerNorm bottleneck MLP, no dropout: the 1- and 2-process runs compute the same thing
    return cli_args(out, "test_mlp")


def bn_args(out):  # every source of randomness and state: per-rank BN, dropout, mixup, label smoothing
    return cli_args(out, "mlp_plain", "--set", "depth=2", "--set", "width=32", "--set", "norm=batch",
                    "--set", "dropout=0.2", "--mixup-alpha", "0.5", "--label-smoothing", "0.1")


def torchrun(root: Path, jobs: list, kill_at: int = -1) -> subprocess.CompletedProcess:
    """One `python -m torch.distributed.run --standalone --nproc_per_node=2` launch (a free port: standalone)
    of the worker, running `jobs` in order."""
    worker = root / "worker.py"
    worker.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLPZOOM_DATA": str(root / "data"),
           "MLPZOOM_CHECKPOINTS": str(root / "ck"), "KILL_AT": str(kill_at), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker),
           json.dumps(jobs)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(folder / "model.safetensors"))


def ranks(folder: Path) -> list[dict]:
    return [json.loads((folder.parent / f"{folder.name}.rank{r}.json").read_text()) for r in (0, 1)]


needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available in this build")


@pytest.fixture(scope="module")
def launched(shared_tmp):
    """The uninterrupted 2-process launch: ln/ and bn/ by the CLI, a smoke store run of test_mlp, ffcv/ (the
    CLI with backend ffcv). Once per session: the test worker that asks first launches it, the other waits
    for it (`once`; a module fixture alone ran it on both workers, 115 s each in CI)."""
    root = shared_tmp / "ddp"
    jobs = [ln_args(root / "ln"), bn_args(root / "bn"), ["store", "test_mlp"],
            [*ln_args(root / "ffcv"), "--backend", "ffcv", "--epochs", "1"], ["ragged", str(root / "ragged")]]

    def launch() -> subprocess.CompletedProcess:
        root.mkdir(parents=True, exist_ok=True)
        done = torchrun(root, jobs)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done
    return root, once(shared_tmp, "ddp-launch", launch)


# ---------------------------------------------------------------- (a) 2 processes at B == 1 process at B


@needs_gloo
def test_two_processes_match_one_process_at_the_same_global_batch(launched, tmp_path, monkeypatch):
    root, _ = launched
    monkeypatch.setenv("MLPZOOM_DATA", str(root / "data"))
    train.main(ln_args(tmp_path / "one"))
    assert_close_weights(weights(tmp_path / "one"), weights(root / "ln"))
    h1, h2 = checkpoints.read_history(tmp_path / "one"), checkpoints.read_history(root / "ln")
    for a, b in zip(h1, h2, strict=True):
        assert a["lr"] == b["lr"]  # the same schedule: 3 updates per epoch in both
        for k in ("train_loss", "val_loss"):
            assert a[k] == pytest.approx(b[k], rel=LOSS_RTOL), k
        assert abs(a["train_acc"] - b["train_acc"]) <= 1 / 192  # at most one of 192 images flips
        assert abs(a["val_top1"] - b["val_top1"]) <= 1 / 26
    card = json.loads((root / "ln" / "model.json").read_text())
    assert card["world_size"] == 2 and card["train_config"]["batch_size"] == 64  # the global batch
    assert ranks(root / "ln")[1]["shard"] == [1, 2, 32]  # rank 1 of 2, 32 images per step


@needs_gloo
def test_the_store_trains_under_torchrun_like_one_process(launched, tmp_path, monkeypatch):
    root, _ = launched
    folder = root / "ck" / "smoke" / "synthetic" / "test_mlp"
    assert sorted(os.listdir(folder)) == [*FILES, "store.json"]
    monkeypatch.setenv("MLPZOOM_DATA", str(root / "data"))
    monkeypatch.setenv("MLPZOOM_CHECKPOINTS", str(tmp_path / "ck"))
    one = store.get_or_train("test_mlp", "synthetic", "smoke", progress=False).state_dict()
    assert_close_weights(one, weights(folder))
    r0, r1 = ranks(folder)
    assert r0["weights"] == r1["weights"]  # every rank returns the same model


@needs_gloo
def test_ffcv_backend_under_torchrun_scores_the_saved_model(launched, monkeypatch):
    root, _ = launched
    monkeypatch.setenv("MLPZOOM_DATA", str(root / "data"))
    card = json.loads((root / "ffcv" / "model.json").read_text())
    model = models.create_model(card["model"], **card["model_config"])
    model.load_state_dict(weights(root / "ffcv"))
    test = metrics.evaluate(model, data.make_loader(data.load_dataset("synthetic", "test"), 250, train=False))
    assert card["metrics"]["test_top1"] == test["top1"]  # the betons were written once, by rank 0
    assert ranks(root / "ffcv")[1]["shard"] == [1, 2, 32] and ranks(root / "ffcv")[1]["val_batches"] == 1


@needs_gloo
def test_ranks_with_different_step_counts_are_refused_on_every_rank(launched):
    root, _ = launched  # instead of one rank waiting forever in DDP's gradient sync
    for r in (0, 1):
        assert (root / f"ragged.rank{r}.txt").read_text() == (
            "the training loader takes [2, 1] steps on ranks 0..1; every rank must take the same steps: use "
            "drop_last=True (the default for training)")


# ---------------------------------------------------------------- (b) killed under torchrun, resumed


@needs_gloo
def test_killed_two_process_run_resumes_and_equals_the_uninterrupted_one(launched, tmp_path):
    root, _ = launched
    run = tmp_path / "bn_killed"  # its own folders: the launch's are read by the other worker's tests
    killed = torchrun(tmp_path, [bn_args(run)], kill_at=2)
    assert killed.returncode != 0 and not (run / "model.json").exists()
    assert sorted(os.listdir(run)) == ["last.pt", "prev.pt"]  # no temp files, no per-rank files
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and len(state["rng_ranks"]) == 2
    assert not torch.equal(state["rng_ranks"][0]["rng"], state["rng_ranks"][1]["rng"])  # a stream per rank
    resumed = torchrun(tmp_path, [bn_args(run)])  # the same command again: resumes at epoch 3
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    whole, again = weights(root / "bn"), weights(run)
    assert all(torch.equal(whole[k], again[k]) for k in whole)  # bit for bit, BN buffers included
    assert ranks(run)[0]["history"] == ranks(root / "bn")[0]["history"]


# ---------------------------------------------------------------- (c) one set of files, (d) the same metrics


@needs_gloo
def test_rank_zero_writes_one_set_of_files(launched):
    root, done = launched
    for run, epochs in (("ln", 3), ("bn", 3), ("ffcv", 1)):  # last.pt, prev.pt: removed once finished
        assert sorted(os.listdir(root / run)) == FILES
        lines = len((root / run / "history.csv").read_text().splitlines())
        assert lines == 1 + epochs  # a header and a row per epoch, once
    leftovers = [p.name for p in root.rglob("*") if ".tmp" in p.name]
    assert leftovers == []
    assert done.stdout.count('"checkpoint_dir"') == 3  # the CLI's summary: rank 0 prints, once per run
    assert done.stderr.count("SyncBatchNorm is GPU-only") == 2  # warned once per process (bn run only)


@needs_gloo
def test_evaluation_is_identical_on_every_rank(launched):
    root, _ = launched
    for run in ("ln", "bn"):
        r0, r1 = ranks(root / run)
        assert r0["val"] == r1["val"] and r0["test"] == r1["test"] and r0["history"] == r1["history"]
        assert r0["weights"] == r1["weights"]  # BN buffers too: rank 0's, broadcast
        assert r0["val_batches"] == 1 and r1["val_batches"] == 0  # 26 val images: rank 1's slice is empty
        whole = r0["val_unsharded"]  # the same model evaluated on every image by one rank alone
        assert r0["val"]["top1"] == whole["top1"] and r0["val"]["top5"] == whole["top5"]
        assert r0["val"]["loss"] == pytest.approx(whole["loss"], rel=1e-6)
        card = json.loads((root / run / "model.json").read_text())
        assert card["metrics"]["test_top1"] == r0["test"]["top1"]


# ---------------------------------------------------------------- each rank's slice (no processes)


@pytest.mark.parametrize("train_", [True, False])
def test_resident_rank_slices_make_up_the_one_process_batches(train_, make_id_set):
    ds = make_id_set(70)  # labels are sample ids
    kw = dict(train=train_, augment=Augment(pad=2, flip=True), seed=3)
    one = data.make_loader(ds, 16, **kw)
    parts = [data.make_loader(ds, 16, shard=(r, 4), **kw) for r in range(4)]
    assert [len(p) for p in parts] == ([4] * 4 if train_ else [5, 5, 4, 4])  # eval: 70 = 4 x 16 + 6
    for epoch in (0, 1):
        for p in [one, *parts]:
            p.set_epoch(epoch)
        sliced = [list(p) for p in parts]
        for i, (x, y) in enumerate(one):
            pieces = [s[i] for s in sliced if i < len(s)]
            assert torch.equal(torch.cat([q[1] for q in pieces]), y)  # the same images, in order
            assert torch.equal(torch.cat([q[0] for q in pieces]), x)  # with the same crops and flips


def test_torch_loader_ranks_share_the_order(make_id_set):
    ds = make_id_set(64)
    kw = dict(train=True, backend="torch", num_workers=0, seed=1)
    one = [y for _, y in data.make_loader(ds, 16, **kw)]
    parts = [[y for _, y in data.make_loader(ds, 16, shard=(r, 2), **kw)] for r in (0, 1)]
    assert all(torch.equal(torch.cat([parts[0][i], parts[1][i]]), one[i]) for i in range(4))


def test_a_global_batch_that_does_not_split_is_refused(make_id_set):
    with pytest.raises(ValueError, match=r"batch size 64 \(the global batch\) does not split over 3 "
                       r"processes; use a multiple of 3, e\.g\. 63"):
        data.make_loader(make_id_set(100), 64, train=True, shard=(0, 3))


def test_one_process_is_unchanged(make_id_set, synth):
    loader = data.make_loader(make_id_set(10), 4, train=False)
    assert (loader.rank, loader.world_size, loader.local_batch, len(loader)) == (0, 1, 4, 3)
    assert distributed.on_main(lambda x: x + 1, 1) == 2 and distributed.summed(2, 3.5) == [2.0, 3.5]
    assert (distributed.rank(), distributed.world_size(), distributed.setup("cpu")) == (0, 1, "cpu")
