"""utils.train: evaluate's numbers, learning, schedules, mixup, checkpoints and bit-exact resumption."""

import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn as nn

from utils import checkpoints, data, metrics, models, train
from utils.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def test_fit_learns_and_returns_history(synth, build):
    cfg = TrainConfig(epochs=3, batch_size=64, lr=3e-3, warmup_epochs=1, progress=False)
    model = build("test_mlp", synth[0])
    before = metrics.evaluate(model, data.make_loader(synth[1], 256, train=False))["top1"]
    hist = train.fit(model, *train.make_loaders(*synth, cfg), cfg)
    assert list(hist["epoch"]) == [1, 2, 3]
    assert {"train_loss", "train_acc", "val_loss", "val_top1", "val_top5", "lr", "images_per_s"} <= set(hist)
    assert before < 0.2 and hist["val_top1"].iloc[-1] > 0.9  # chance is 0.1
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    assert not model.training


def test_schedule_warmup_then_cosine_to_min_lr():
    model = nn.Linear(2, 2)
    cfg = TrainConfig(epochs=4, lr=0.1, warmup_epochs=1, warmup_lr=0.001, min_lr=0.01)
    opt = train.make_optimizer(model, cfg)
    sched = train.make_scheduler(opt, cfg, steps_per_epoch=10)
    lrs = []
    for step in range(40):
        sched.step_update(num_updates=step)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.001)
    assert lrs[5] == pytest.approx(0.001 + 0.5 * (0.1 - 0.001))  # linear warmup, half way
    cos = lambda t: 0.01 + 0.5 * (0.1 - 0.01) * (1 + math.cos(math.pi * t / 40))
    assert lrs[10] == pytest.approx(cos(10)) and lrs[39] == pytest.approx(cos(39))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))  # decreasing after warmup


@pytest.mark.parametrize("optimizer", train.OPTIMIZERS)
def test_every_optimizer_reduces_the_loss(optimizer, synth, build):
    lr = {"sgd": 0.05, "lion": 3e-4, "lamb": 0.02}.get(optimizer, 3e-3)
    cfg = TrainConfig(
        epochs=2, batch_size=64, optimizer=optimizer, lr=lr, schedule="constant", progress=False
    )
    hist = train.fit(build("test_mlp", synth[0]), *train.make_loaders(synth[0], None, cfg), cfg)
    assert hist["train_loss"].iloc[1] < 0.8 * hist["train_loss"].iloc[0]
    assert hist["lr"].iloc[-1] == lr  # constant schedule


def test_weight_decay_spares_biases_and_norms(build):
    model = build("test_mlp", data.load_dataset("synthetic", "test", n=10, size=8, cache=False))
    groups = train.make_optimizer(model, TrainConfig(weight_decay=0.05)).param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.ndim > 1), name


def test_mixup_mixes_images_and_labels():
    x, y = torch.rand(6, 1, 2, 2), torch.arange(6)
    xm, ya, yb, lam = train.mixup(x, y, 0.4, np.random.default_rng(0))
    assert torch.equal(ya, y) and sorted(yb.tolist()) == list(range(6)) and 0 < lam < 1
    assert torch.allclose(xm, lam * x + (1 - lam) * x[yb])  # y is the identity, so yb is the permutation


def test_nonfinite_loss_stops_training(synth, build):
    cfg = TrainConfig(epochs=1, batch_size=64, lr=1e30, optimizer="sgd", schedule="constant", progress=False)
    with pytest.raises(FloatingPointError, match="lower the lr"):
        train.fit(build("test_mlp", synth[0]), *train.make_loaders(synth[0], None, cfg), cfg)


# ---------------------------------------------------------------- checkpoints and resumption


class Interrupt(Exception):
    pass


class StopAtEpoch:
    """Wraps a loader and raises Interrupt when epoch `stop` begins (an interrupted run)."""

    def __init__(self, loader, stop: int):
        self.loader, self.stop = loader, stop
        self.device, self.info = loader.device, loader.info

    def __len__(self):
        return len(self.loader)

    def set_epoch(self, epoch):
        if epoch == self.stop:
            raise Interrupt
        self.loader.set_epoch(epoch)

    def __iter__(self):
        return iter(self.loader)

    def data_key(self):
        return self.loader.data_key()


def resume_cfg(folder, **kw) -> TrainConfig:
    # dropout, batch norm, mixup and label smoothing: every source of randomness and state is exercised
    return TrainConfig(
        epochs=3,
        batch_size=64,
        lr=2e-3,
        warmup_epochs=1,
        mixup_alpha=0.5,
        label_smoothing=0.1,
        checkpoint_dir=str(folder),
        progress=False,
        **kw,
    )


def plain(ds, seed=0):
    return models.create_for("mlp_plain", ds.info, seed, depth=2, width=32, norm="batch", dropout=0.2)


def without_timing(hist):
    return hist.drop(columns=["train_seconds", "images_per_s"])


def test_interrupted_and_resumed_equals_uninterrupted(synth, tmp_path):
    ref_model = plain(synth[0])
    ref = train.fit(
        ref_model, *train.make_loaders(*synth, resume_cfg(tmp_path / "ref")), resume_cfg(tmp_path / "ref")
    )

    cfg = resume_cfg(tmp_path / "run")
    tl, vl = train.make_loaders(*synth, cfg)
    with pytest.raises(Interrupt):
        train.fit(plain(synth[0]), StopAtEpoch(tl, 2), vl, cfg)  # epochs 1 and 2 done, then killed
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 2
    assert not (tmp_path / "run" / "model.json").exists()

    torch.manual_seed(123)  # the global RNG state in between must not matter
    resumed_model = plain(synth[0], seed=99)  # fresh weights: all of them come from the checkpoint
    resumed = train.fit(resumed_model, *train.make_loaders(*synth, cfg), cfg)
    assert without_timing(resumed).equals(without_timing(ref))
    for (k, a), b in zip(ref_model.state_dict().items(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_finished_run_loads_instead_of_training(synth, tmp_path):
    cfg = resume_cfg(tmp_path)
    first = plain(synth[0])
    loaders = train.make_loaders(*synth, cfg)
    hist = train.fit(first, *loaders, cfg)
    second = plain(synth[0], seed=5)

    class NoBatches(list):  # a second training pass would fail here
        device, info = torch.device("cpu"), synth[0].info

        def __iter__(self):
            raise AssertionError("trained again")

        def data_key(self):  # the same data
            return loaders[0].data_key()

    again = train.fit(second, NoBatches([0] * 16), loaders[1], cfg)
    assert again.equals(hist)
    assert all(
        torch.equal(a, b)
        for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )


def test_model_card_and_weights(synth, tmp_path):
    cfg = resume_cfg(tmp_path, seed=1)
    model = plain(synth[0])
    hist = train.fit(model, *train.make_loaders(*synth, cfg), cfg)
    card = json.loads((tmp_path / "model.json").read_text())
    assert card["model"] == "mlp_plain" and card["dataset"] == "synthetic" and card["epochs"] == 3
    assert card["metrics"]["val_top1"] == pytest.approx(hist["val_top1"].iloc[-1])
    assert card["params"] == sum(p.numel() for p in model.parameters())
    assert card["train_config"]["seed"] == 1 and "git_revision" in card["environment"]
    rebuilt = models.create_model(
        card["model"], **card["model_config"], checkpoint=tmp_path / "model.safetensors"
    )
    eval_loader = data.make_loader(synth[1], 100, train=False)
    assert metrics.evaluate(rebuilt, eval_loader)["top1"] == pytest.approx(hist["val_top1"].iloc[-1])
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 4


def test_changed_config_refuses_to_resume(synth, tmp_path):
    cfg = resume_cfg(tmp_path)
    train.fit(plain(synth[0]), *train.make_loaders(*synth, cfg), cfg)
    other = resume_cfg(tmp_path, seed=7)
    with pytest.raises(ValueError,
                       match=r"another training config \(seed: 0 -> 7\); use another checkpoint folder"):
        train.fit(plain(synth[0]), *train.make_loaders(*synth, other), other)


def test_corrupt_checkpoint_falls_back_and_is_kept(synth, tmp_path):
    cfg = resume_cfg(tmp_path)
    tl, vl = train.make_loaders(*synth, cfg)
    with pytest.raises(Interrupt):
        train.fit(plain(synth[0]), StopAtEpoch(tl, 2), vl, cfg)
    assert torch.load(tmp_path / "prev.pt", weights_only=True)["epoch"] == 1
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")  # e.g. a truncated copy
    with pytest.warns(UserWarning, match="unreadable"):
        hist = train.fit(plain(synth[0]), *train.make_loaders(*synth, cfg), cfg)
    assert len(hist) == 3  # resumed from epoch 1 (prev.pt), not from scratch
    assert (tmp_path / "last.pt.corrupt").read_bytes() == b"not a checkpoint"


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="adamw, sgd, nesterov, lion, lamb"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainConfig(epochs=2, warmup_epochs=2)


def test_cli_trains_and_writes_checkpoint(data_root, tmp_path, capsys):
    out = tmp_path / "ckpt"
    train.main(
        [
            "--model",
            "test_cnn",
            "--dataset",
            "synthetic",
            "--subset",
            "256",
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--out",
            str(out),
            "--progress",
            "false",
        ]
    )
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["checkpoint_dir"] == str(out) and 0 <= last["val_top1"] <= 1 and 0 <= last["test_top1"] <= 1
    assert (out / "model.safetensors").exists() and json.loads((out / "model.json").read_text())[
        "epochs"
    ] == 1


# ---------------------------------------------------------------- the command line


def cli(out, *extra, model="test_mlp", subset="256", epochs="2"):
    return ["--model", model, "--dataset", "synthetic", "--subset", subset, "--epochs", epochs,
            "--batch-size", "64", "--out", str(out), "--progress", "false", *extra]


def weights(folder):
    return safetensors.torch.load_file(str(folder / "model.safetensors"))


def test_cli_is_reproducible_from_its_seed(data_root, tmp_path, capsys):
    train.main(cli(tmp_path / "a"))
    train.main(cli(tmp_path / "b"))
    train.main(cli(tmp_path / "c", "--seed", "1"))
    a, b, c = (weights(tmp_path / k) for k in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)  # same --seed: the same initialisation and training
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_cli_killed_and_resumed_equals_the_uninterrupted_run(data_root, tmp_path):
    train.main(cli(tmp_path / "whole", epochs="3"))
    killer = ("import os, signal, sys\nimport utils.train as t\nreal = t.train_epoch\n"
              "t.train_epoch = lambda *a: os.kill(os.getpid(), signal.SIGKILL) if a[-1] == 2 else real(*a)\n"
              "t.main(sys.argv[1:])\n")
    env = {**os.environ, "MLPZOOM_DATA": str(data_root)}
    killed = subprocess.run([sys.executable, "-c", killer, *cli(tmp_path / "run", epochs="3")],
                            cwd=ROOT, env=env)
    assert killed.returncode == -signal.SIGKILL and not (tmp_path / "run" / "model.json").exists()
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 2
    train.main(cli(tmp_path / "run", epochs="3"))  # the same command again: resumes at epoch 3
    whole, run = weights(tmp_path / "whole"), weights(tmp_path / "run")
    assert all(torch.equal(whole[k], run[k]) for k in whole)


def test_cli_refuses_to_continue_a_run_on_other_data(data_root, tmp_path, capsys):
    train.main(cli(tmp_path / "run", subset="256"))
    with pytest.raises(SystemExit, match=r"another data .*'n': 230, .*\} -> \{.*'n': 461, "):
        train.main(cli(tmp_path / "run", subset="512"))


def test_cli_errors_are_one_line_and_say_what_is_valid(data_root, tmp_path, capsys):
    cases = {("--model", "resnet19"): "unknown model 'resnet19'; models: .*resnet18_cifar",
             ("--dataset", "cifar11"): "unknown dataset 'cifar11'; datasets: .*cifar10",
             ("--subset", "0"): "must be >= 1", ("--subset", "-5"): "must be >= 1",
             ("--amp", "maybe"): "expected one of 1, true, yes"}
    for (flag, value), message in cases.items():
        args = cli(tmp_path / "x")
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
        with pytest.raises(SystemExit) as exit_:
            train.main(args)
        assert exit_.value.code == 2
        assert re.search(message, capsys.readouterr().err), (flag, value)
    assert not (data_root / "cache").exists()  # refused before any data was read
    args = cli(tmp_path / "x")
    args[args.index("--batch-size") + 1] = "500"
    with pytest.raises(SystemExit):
        train.main(args)
    assert "larger than the 230 training images" in capsys.readouterr().err


def test_every_train_config_field_is_a_flag_and_booleans_are_strict():
    parser = train.cli_parser()
    args = parser.parse_args(["--model", "test_mlp", "--dataset", "synthetic", "--amp", "yes", "--flip", "no",
                              "--crop-pad", "0", "--grad-clip", "none", "--set", "depth=2"])
    assert args.amp is True and args.flip is False and args.crop_pad == 0 and args.grad_clip is None
    assert args.set == [("depth", 2)]
    flags = {a.dest for a in parser._actions}
    assert {f.name for f in dataclasses.fields(TrainConfig)} - {"checkpoint_dir"} <= flags


def test_cli_model_overrides_reach_the_model(data_root, tmp_path, capsys):
    train.main(cli(tmp_path / "plain", "--set", "depth=2", "--set", "width=16", model="mlp_plain",
                   epochs="1"))
    card = json.loads((tmp_path / "plain" / "model.json").read_text())
    assert card["model_config"]["depth"] == 2 and card["model_config"]["width"] == 16


def test_a_batch_larger_than_the_data_is_a_clear_error(synth):
    cfg = TrainConfig(epochs=1, batch_size=4096, progress=False)
    with pytest.raises(ValueError, match="batch_size 4096 is larger than the 1024 training images"):
        train.fit(models.create_for("test_mlp", synth[0].info), *train.make_loaders(*synth, cfg), cfg)


def test_a_field_added_later_at_its_default_does_not_invalidate_stored_runs(synth, tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints, "drop_states", lambda folder: None)  # killed before the states went
    cfg = resume_cfg(tmp_path)
    train.fit(plain(synth[0]), *train.make_loaders(*synth, cfg), cfg)
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    del state["config"]["backbone_lr_scale"]  # as if written before the field existed
    torch.save(state, tmp_path / "last.pt")
    (tmp_path / "model.json").unlink()  # make fit look at last.pt (rebuilding the card)
    again = train.fit(plain(synth[0]), *train.make_loaders(*synth, cfg), cfg)
    assert len(again) == cfg.epochs  # resumed as finished, not refused
    assert train.comparable({**train.resume_config(cfg), "backbone_lr_scale": 1.0}) == train.comparable(
        {k: v for k, v in train.resume_config(cfg).items() if k != "backbone_lr_scale"})


# ---------------------------------------------------------------- issue 28: accepted silently, full disks


def test_lr_and_grad_clip_that_cannot_train_are_refused(synth, build):
    for bad in (dict(lr=-1e-3), dict(lr=float("nan")), dict(grad_clip=0.0), dict(grad_clip=-1.0)):
        with pytest.raises(ValueError, match=r"^(lr must be a positive number|grad_clip must be None \(no "
                                             r"clipping\) or a positive gradient norm).*; got"):
            TrainConfig(**bad)
    assert TrainConfig(grad_clip=None).grad_clip is None and TrainConfig(grad_clip=1.0).grad_clip == 1.0
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.0, progress=False)
    with pytest.raises(ValueError, match="lr=0 trains nothing"):
        train.fit(build("test_mlp", synth[0]), *train.make_loaders(synth[0], None, cfg), cfg)


def test_a_diverged_run_stops_names_its_epoch_and_keeps_its_last_good_checkpoint(synth, build, tmp_path,
                                                                                   monkeypatch):
    """The last step's update breaks the weights after a finite loss: caught before the epoch is saved."""
    real = train.train_epoch

    def breaks_in_epoch_2(model, *a):
        row = real(model, *a)
        if a[-1] == 1:
            with torch.no_grad():
                next(model.parameters()).fill_(float("inf"))
        return row

    monkeypatch.setattr(train, "train_epoch", breaks_in_epoch_2)
    cfg = TrainConfig(epochs=3, batch_size=64, lr=1e-3, progress=False, checkpoint_dir=str(tmp_path / "run"))
    with pytest.raises(FloatingPointError, match=r"^run: the run diverged in epoch 2 \(train_loss [0-9.]+, "
                                                 r"val_loss nan; weights finite: False\): lower the lr .*"
                                                 r"last.pt keeps epoch 1$"):
        train.fit(build("test_mlp", synth[0]), *train.make_loaders(*synth, cfg), cfg)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 1
    assert not any((tmp_path / "run" / name).exists() for name in ("model.json", "model.safetensors"))


def test_a_nonfinite_loss_names_the_run_and_saves_nothing(synth, build, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=64, lr=1e30, optimizer="sgd", schedule="constant", progress=False,
                      checkpoint_dir=str(tmp_path / "lr1e30"))
    with pytest.raises(FloatingPointError, match=r"^lr1e30: loss became nan at epoch 1, .*; nothing was "
                                                 r"saved$"):
        train.fit(build("test_mlp", synth[0]), *train.make_loaders(synth[0], None, cfg), cfg)
    assert sorted(p.name for p in (tmp_path / "lr1e30").iterdir()) == []


def test_a_full_disk_during_a_checkpoint_write_says_so(synth, build, tmp_path, monkeypatch):
    def full(obj, f, *a, **kw):  # what torch's writer says when the disk fills up under it
        raise RuntimeError("basic_ios::clear: iostream error")

    monkeypatch.setattr(torch, "save", full)
    cfg = TrainConfig(epochs=1, batch_size=64, progress=False, checkpoint_dir=str(tmp_path / "run"))
    with pytest.raises(OSError, match=r"^could not write .*run/last.pt \(RuntimeError: basic_ios::clear: "
                                      r"iostream error\); [0-9.]+ [MG]B free on that disk: if it is full, "
                                      r"free space") as err:
        train.fit(build("test_mlp", synth[0]), *train.make_loaders(synth[0], None, cfg), cfg)
    assert "\n" not in str(err.value) and not (tmp_path / "run" / "last.pt").exists()
    assert list((tmp_path / "run").iterdir()) == []  # no temp file left behind


def test_a_frozen_backbone_stays_in_eval_mode_while_its_head_trains(synth, build):
    """trainable="head" (full's ViT-S/16 recipe): the frozen part gives the head the same features every step
    (no dropout, no drop-path) and keeps its BatchNorm statistics; the head learns (issue 26)."""
    from utils import store

    net = build("test_cnn", synth[0])
    store.freeze_except(net, "head")
    bn = next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    stats = bn.running_mean.clone(), bn.running_var.clone()
    head = net.head.weight.detach().clone()
    cfg = TrainConfig(epochs=1, batch_size=64, lr=3e-3, progress=False)
    train.fit(net, *train.make_loaders(*synth, cfg), cfg)
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert not torch.equal(net.head.weight, head)
    train.train_mode(net)
    frozen = [m for n, m in net.named_modules() if n and n != "head" and any(True for _ in m.parameters())]
    assert net.head.training and frozen and not any(m.training for m in frozen)
    from timm.layers import DropPath

    vit = build("test_vit", synth[0])
    for block in vit.blocks:
        block.drop_path1 = block.drop_path2 = DropPath(0.5)  # stochastic depth, as full's ViT-S/16 has
    store.freeze_except(vit, "head")
    features = [train.train_mode(vit).forward_head(vit.forward_features(synth[1].head(8).as_float()),
                                                   pre_logits=True) for _ in range(2)]
    assert torch.equal(*features)  # drop-path off in the frozen blocks
    assert vit.head.training


# ---------------------------------------------------------------- issue 26: the checkpoint policy


def test_states_are_written_by_wall_time_and_removed_once_the_run_is_finished(synth, tmp_path, monkeypatch):
    """A state once checkpoint_every_s has passed since the start or the last state (train.py's clock faked:
    10 s per reading); a finished run keeps only its final files, with the weights of a run that saved every
    epoch."""
    saves = []
    real_save = checkpoints.save_state
    monkeypatch.setattr(checkpoints, "save_state", lambda folder, state: (saves.append(state["epoch"]),
                                                                          real_save(folder, state)))
    readings = iter(range(0, 10_000, 10))
    monkeypatch.setattr(train, "time", types.SimpleNamespace(time=lambda: float(next(readings)),
                                                             perf_counter=time.perf_counter))
    weights = {}
    for every_s, expected in ((0.0, [1, 2, 3]), (15.0, [2]), (25.0, [3]), (1e6, [])):
        saves.clear()
        cfg = resume_cfg(tmp_path / str(every_s), checkpoint_every_s=every_s)
        net = plain(synth[0])
        train.fit(net, *train.make_loaders(*synth, cfg), cfg)
        assert saves == expected, every_s  # start 0; epoch ends read 10, 20, 30 (+10 after each state)
        assert sorted(p.name for p in (tmp_path / str(every_s)).iterdir()) == sorted(checkpoints.FINAL_FILES)
        weights[every_s] = net.state_dict()
    assert all(torch.equal(weights[0.0][k], w[k]) for w in weights.values() for k in w)


def test_the_default_interval_is_ten_minutes_and_the_environment_sets_it(monkeypatch):
    monkeypatch.delenv(train.CHECKPOINT_EVERY_ENV)
    assert train.checkpoint_every(TrainConfig()) == train.CHECKPOINT_EVERY_S == 600.0
    monkeypatch.setenv(train.CHECKPOINT_EVERY_ENV, "30")
    assert train.checkpoint_every(TrainConfig()) == 30.0
    assert train.checkpoint_every(TrainConfig(checkpoint_every_s=5.0)) == 5.0  # the config's own wins
    monkeypatch.setenv(train.CHECKPOINT_EVERY_ENV, "soon")
    with pytest.raises(ValueError, match=r"^\$MLPZOOM_CHECKPOINT_EVERY_S must be seconds >= 0 .*got 'soon'$"):
        train.checkpoint_every(TrainConfig())
    assert "checkpoint_every_s" not in train.resume_config(TrainConfig(checkpoint_every_s=1.0))  # not a key
