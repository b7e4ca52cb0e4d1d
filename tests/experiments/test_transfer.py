"""utils.experiments.transfer: k images per class counted, the validation set disjoint from the pool, every
k trained for the same number of optimizer steps, the fine-tune head new even when the class counts match,
LP-FT's head the probe's (its step-0 logits the probe's), the probe's head in the store key, BatchNorm
statistics kept while fine-tuning, and the lr chosen on validation."""

import math
from dataclasses import replace

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from utils import data, hooks, store, train
from utils.experiments import probes, transfer


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def synth():
    """(train, test): synthetic gratings, 10 classes, 3x8x8."""
    kw = dict(size=8, cache=False)
    return (data.load_dataset("synthetic", "train", n=400, **kw),
            data.load_dataset("synthetic", "test", n=100, **kw))


BASE = train.TrainConfig(epochs=3, batch_size=256, eval_batch_size=256, lr=2e-3, warmup_epochs=1)


def test_per_class_takes_k_of_each_class_or_everything(synth):
    ds = synth[0]
    counts = torch.bincount(ds.labels, minlength=10)
    sub = transfer.per_class(ds, 7, seed=0)
    assert torch.bincount(sub.labels, minlength=10).tolist() == [7] * 10
    assert transfer.per_class(ds, 7, seed=0).images.equal(sub.images)  # seeded
    assert len(transfer.per_class(ds, None)) == len(ds) and len(transfer.per_class(ds, 10_000)) == len(ds)
    assert counts.min() >= 7


def test_transfer_splits_are_disjoint_and_stratified(synth):
    ds = synth[0]
    tagged = data.ImageSet(ds.images, ds.labels, ds.info, ds.split, {})
    ids = torch.arange(len(ds))
    tagged.images[:, 0, 0, 0] = (ids % 256).to(torch.uint8)  # pixel (0, 0, 0) + position: a sample id
    tagged.images[:, 0, 0, 1] = (ids // 256).to(torch.uint8)
    pool, val = transfer.transfer_splits(tagged, n_val=50, seed=0)
    key = lambda s: set((s.images[:, 0, 0, 0].long() + 256 * s.images[:, 0, 0, 1].long()).tolist())  # noqa: E731
    assert len(val) == 40  # min(50, 10% of 400)
    assert len(pool) + len(val) == len(ds) and not key(pool) & key(val)
    assert torch.bincount(val.labels, minlength=10).tolist() == [4] * 10
    assert not key(transfer.per_class(pool, 5)) & key(val)


@pytest.mark.parametrize("batch, steps, max_epochs",
                         [(256, 100, 40), (64, 100, 40), (256, 40, 40), (128, 60, 60)])
def test_every_k_gets_the_same_number_of_steps(batch, steps, max_epochs):
    """The 04 protocol's sizes (quick: 5 classes x 10 / 100 / 1000, sklearn-digits' pool of 1,293): the old
    budget capped k=10 and k=100 at 40 steps and gave k=1000 114."""
    base = train.TrainConfig(epochs=5, batch_size=batch, warmup_epochs=1)
    for n in (50, 500, 5000, 100, 1000, 1293):
        recipe = transfer.budget_recipe(base, n, steps, max_epochs=max_epochs)
        assert transfer.steps_of(recipe, n) == steps, (n, recipe.train.batch_size, recipe.train.epochs)
        assert recipe.train.epochs <= max_epochs and recipe.train.warmup_epochs == 0


def test_step_plan_by_hand():
    assert transfer.step_plan(50, 256, 40, 40) == (50, 40)  # one batch of all 50 per epoch
    assert transfer.step_plan(500, 256, 40, 40) == (256, 40)  # 1 step a pass (a random 256 of the 500)
    assert transfer.step_plan(500, 256, 40, 20) == (250, 20)
    assert transfer.step_plan(5000, 256, 40, 40) == (250, 2)  # 20 batches a pass, two passes
    assert transfer.step_plan(5000, 64, 40, 40) == (122, 1)  # the only way: one pass of 40 batches (122-125)
    assert transfer.step_plan(5000, 256, 100, 40) == (250, 5)
    with pytest.raises(ValueError, match="exactly 7 steps"):
        transfer.step_plan(5, 256, 7, 6)  # 7 batches of 5 images need 7 passes


def test_a_run_takes_exactly_its_steps(synth):
    """Counted in training: forward passes in training mode during fit (one per optimizer step)."""
    ds = synth[0].subset(torch.arange(130))
    for steps in (6, 10):  # the old budget: 3 passes of one batch of 130, 3 steps
        cfg = transfer.budget_recipe(BASE, len(ds), steps, max_epochs=3).train
        net = store.models.create_for("test_mlp", ds.info, seed=0)
        calls: list[bool] = []
        net.register_forward_pre_hook(lambda m, x, calls=calls: calls.append(m.training))
        train.fit(net, *train.make_loaders(ds, None, replace(cfg, progress=False)), cfg)
        assert sum(calls) == steps


@pytest.fixture
def source(tmp_path, synth):
    """A 'stored' source run of test_mlp for the same number of classes as the target, head perturbed."""
    info = synth[0].info
    net = store.models.create_for("test_mlp", info, seed=7)
    with torch.no_grad():
        net.head.weight.add_(1.0)
    folder = tmp_path / "src"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))
    return folder, net


def test_fine_tune_head_is_new_when_the_class_counts_match(synth, source):
    folder, src = source
    info = synth[0].info
    budget = transfer.Budget(steps=4, max_epochs=4, seed=0)
    recipe = transfer.transfer_recipe("fine-tune", BASE, 100, budget, source="x/src")
    net = store.build("test_mlp", info, recipe, folder)
    fresh = store.models.create_for("test_mlp", info, seed=0)
    assert net.head.weight.equal(fresh.head.weight) and net.head.bias.equal(fresh.head.bias)
    assert not net.head.weight.equal(src.head.weight)
    body = [k for k in src.state_dict() if not k.startswith("head.")]
    assert all(net.state_dict()[k].equal(src.state_dict()[k]) for k in body)  # the backbone is the source's
    assert recipe.train.backbone_lr_scale == 0.1 and recipe.train.frozen_bn_stats


def test_lp_ft_starts_from_the_probe(tmp_path, synth, source):
    """LP-FT's head is the probe fitted on the frozen features: at step 0 the network's logits are the
    probe's, and the probe's weights are part of the store key."""
    folder, src = source
    tr, te = synth
    feats = lambda ds: hooks.collect_activations(src.eval(), ds, "head:input", progress=False)  # noqa: E731
    f_tr = feats(tr)
    probe = probes.fit_linear_probe(f_tr, tr.labels, num_classes=10, seed=0)
    head = transfer.save_head(probe, tmp_path / "heads" / "probe.safetensors")
    budget = transfer.Budget(steps=4, max_epochs=4, seed=0)
    recipe = transfer.transfer_recipe("LP-FT", BASE, 100, budget, source="x/src", head_file=head)
    net = store.build("test_mlp", tr.info, recipe, folder).eval()
    assert net.head.weight.equal(probe.weight) and net.head.bias.equal(probe.bias)
    with torch.no_grad():
        x = te.images.float() / 255
        torch.testing.assert_close(net(x), probe(feats(te)), rtol=1e-5, atol=1e-5)
    scores = probes.linear_probe(f_tr, tr.labels, feats(te), te.labels, num_classes=10, seed=0)
    assert (net(x).argmax(1) == te.labels).double().mean().item() == pytest.approx(scores["top1"], abs=0.011)
    # another probe, another key
    splits = store.Splits(tr, te, te)
    key = store.store_key("m@lpft", recipe, splits)
    with torch.no_grad():
        probe.bias.add_(0.01)
    transfer.save_head(probe, head)
    assert store.store_key("m@lpft", recipe, splits) != key
    scratch = transfer.transfer_recipe("scratch", BASE, 100, budget)
    assert "head_init" not in store.store_key("m@scratch", scratch, splits)  # scratch keys as before


def test_fine_tuning_keeps_the_source_batchnorm_statistics(synth):
    tr = synth[0]
    net = store.models.create_for("test_cnn", tr.info, seed=0)
    stats = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    assert stats
    recipe = transfer.transfer_recipe("fine-tune", BASE, 100, transfer.Budget(steps=2, max_epochs=2),
                                      source="x/src")
    cfg = recipe.train
    before = net.head.weight.clone()
    train.fit(net, *train.make_loaders(tr.subset(torch.arange(100)), None, cfg), cfg)
    assert all(net.state_dict()[k].equal(v) for k, v in stats.items())
    assert not net.head.weight.equal(before)
    scratch = transfer.transfer_recipe("scratch", BASE, 100, transfer.Budget(steps=2, max_epochs=2)).train
    train.fit(net, *train.make_loaders(tr.subset(torch.arange(100)), None, scratch), scratch)
    assert not all(net.state_dict()[k].equal(v) for k, v in stats.items())  # scratch re-estimates


def test_lr_is_chosen_on_validation():
    trials = pd.DataFrame({"target": ["t"] * 4, "model": ["m"] * 4,
                           "method": ["fine-tune"] * 2 + ["LP-FT"] * 2,
                           "lr_scale": [1.0, 0.1, 1.0, 0.1], "val_top1": [0.6, 0.7, 0.8, 0.8],
                           "top1": [0.9, 0.1, 0.2, 0.3]})
    best = transfer.chosen_lr(trials).set_index("method").lr_scale
    assert best["fine-tune"] == 0.1 and best["LP-FT"] == 1.0  # never the test column; ties: the first tried
    diverged = trials.assign(val_top1=[float("nan"), 0.2, float("nan"), float("nan")])
    best = transfer.chosen_lr(diverged).set_index("method").lr_scale
    assert best["fine-tune"] == 0.1 and best["LP-FT"] == 1.0  # a diverged trial loses; all diverged: first


def test_a_transfer_run_that_diverges_is_a_row_not_an_error(tmp_path, monkeypatch, synth):
    """SGD at lr 1e30 turns the loss NaN in the first epoch: NaN scores, diverged=True, nothing stored."""
    from utils import store

    monkeypatch.setenv("MLPZOOM_CHECKPOINTS", str(tmp_path))
    tr, te = synth
    budget = transfer.Budget(steps=2, max_epochs=2)
    recipe = transfer.transfer_recipe("scratch", replace(BASE, optimizer="sgd", lr=1e30), 100, budget)
    splits = store.Splits(tr.subset(torch.arange(100)), te.subset(torch.arange(50)), te)
    row = transfer.trained_metrics("test_mlp@scratch-k10", "synthetic", "smoke", recipe, splits)
    assert row["diverged"] and math.isnan(row["test_top1"]) and math.isnan(row["val_top1"])
    assert not store.is_stored("test_mlp@scratch-k10", "synthetic", "smoke")


def test_run_names_and_methods():
    assert transfer.run_name("cnn_small", "LP-FT", 10, 0.1) == "cnn_small@lpft-k10-lr0.1"
    assert transfer.run_name("cnn_small", "fine-tune", None) == "cnn_small@ft-kall"
    with pytest.raises(ValueError, match="head file"):
        transfer.transfer_recipe("LP-FT", BASE, 100, transfer.Budget(4, 4), source="x/y")


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_no_two_ks_train_on_the_same_images(profile):
    """A k at or above a target's images per class is all of it: two such ks would train the same run twice
    (issue 26: full's k=1000 was all 450 per class of both targets)."""
    from utils.plan import profile_of

    cfg = transfer.config(profile)
    for target in cfg.targets:
        sizes = [transfer.TransferTask(cfg, "resnet18_cifar", target, "scratch", k, 1.0, 0).n_train(
            profile_of(profile)) for k in cfg.trained_per_class]
        assert len(set(sizes)) == len(sizes), (target, cfg.trained_per_class, sizes)


# ---------------------------------------------------------------- 04's tables


def test_source_nets_are_both_stored_seeds_and_the_seed_0_recipe_at_initialisation(monkeypatch, synth):
    from utils.profiles import get_profile

    cfg, info, asked = transfer.config("smoke"), synth[0].info, []

    def get_or_train(name, dataset, profile, *, recipe, device):
        asked.append((name, dataset, profile.name, recipe.train.seed, device))
        return store.models.create_for("test_mlp", info, seed=100 + recipe.train.seed)

    monkeypatch.setattr(store, "get_or_train", get_or_train)
    nets = transfer.source_nets(cfg, ["test_mlp", "test_cnn"], info, get_profile("smoke"), "cpu")
    assert list(nets) == [(m, t) for m in ("test_mlp", "test_cnn") for t in ("s0", "s1", "init")]
    assert asked == [(f"{m}@source-s{s}", "fashion-mnist[0-4]", "smoke", s, "cpu")
                     for m in ("test_mlp", "test_cnn") for s in (0, 1)]
    init, fresh = nets["test_cnn", "init"], store.models.create_for("test_cnn", info, seed=0)
    assert not init.training and all(v.equal(fresh.state_dict()[k]) for k, v in init.state_dict().items())
    summarized = lambda runs, dataset, profile: pd.DataFrame({"run": runs, "dataset": dataset})  # noqa: E731
    monkeypatch.setattr(store, "summarize", summarized)
    table = transfer.sources_table(cfg, ["test_mlp", "test_cnn"], get_profile("smoke"))
    assert table.run.tolist() == ["test_mlp@source-s0", "test_mlp@source-s1", "test_cnn@source-s0",
                                  "test_cnn@source-s1"]
    assert set(table.dataset) == {"fashion-mnist[0-4]"}


def test_target_tasks_leave_out_a_target_without_files(monkeypatch, capsys):
    def target_splits(profile, target, info, n_val, seed):
        if target == "missing":
            raise FileNotFoundError("no files")
        return target, n_val, seed

    monkeypatch.setattr(transfer, "target_splits", target_splits)
    cfg = transfer.config("smoke", targets=["a", "missing", "b"])
    assert transfer.target_tasks(cfg, None, None, seed=3) == {"a": ("a", 50, 3), "b": ("b", 50, 3)}
    assert capsys.readouterr().out == "missing: skipped (no files)\n"


def test_lr_trials_and_the_transfer_table(monkeypatch, tmp_path, synth):
    """One target, one model, k = 2 and 10 (trained runs at k = 2 only), the store's training replaced by
    known validation scores: the trials are the lr grid of fine-tune and LP-FT on validation only, the chosen
    lr (fine-tune 0.1; LP-FT 1.0, its 0.1 diverged) is the one each final run trains at, and the table has
    a row per method in a fixed order with the images per class, lr, batch and steps of each run."""
    from utils.profiles import get_profile

    tr, te = synth
    pool, val = transfer.transfer_splits(tr, n_val=50)  # 40 validation images
    cfg = transfer.config("smoke", per_class=[2, 10], trained_per_class=[2], lr_grid=[1.0, 0.1])
    net, smoke = store.models.create_for("test_mlp", tr.info, seed=0).eval(), get_profile("smoke")
    head = tmp_path / "t-test_mlp-k2.safetensors"
    monkeypatch.setattr(transfer, "head_file", lambda p, target, m, k, source: tmp_path / f"{target}-{m}-k{k}"
                                                                                       ".safetensors")
    val_top1 = {"test_mlp@ft-k2": 0.5, "test_mlp@ft-k2-lr0.1": 0.7, "test_mlp@lpft-k2": 0.6,
                "test_mlp@lpft-k2-lr0.1": math.nan}
    asked = []

    def trained_metrics(name, dataset, profile, recipe, splits, device=None):
        asked.append((name, dataset, recipe.head_init, *map(len, splits)))
        v = val_top1.get(name, 0.9)
        return {"val_top1": v, "test_top1": v / 2, "diverged": math.isnan(v)}

    monkeypatch.setattr(transfer, "trained_metrics", trained_metrics)
    tasks, sources = {"t": (pool, val, te)}, {"test_mlp": net}
    trials = transfer.lr_trials(cfg, tasks, sources, smoke, "cpu", seed=0)
    lr, batch = (lambda t: (t.lr, t.batch_size))(store.get_recipe("test_mlp", "smoke").train)
    assert trials.columns.tolist() == ["target", "model", "method", "per_class", "lr_scale", "lr", "val_top1",
                                       "diverged"]
    assert trials.method.tolist() == ["fine-tune", "fine-tune", "LP-FT", "LP-FT"]
    assert trials.lr_scale.tolist() == [1.0, 0.1, 1.0, 0.1] and set(trials.per_class) == {2}
    assert trials.lr.tolist() == pytest.approx([lr, lr / 10, lr, lr / 10])
    assert trials.val_top1.tolist()[:3] == [0.5, 0.7, 0.6]
    assert trials.diverged.tolist() == [False, False, False, True]
    assert head.exists()  # the probe fitted on the 20 images' head inputs, LP-FT's start
    assert asked == [(n, "t", h, 20, 40, 100) for n, h in (("test_mlp@ft-k2", "new"),
                                                             ("test_mlp@ft-k2-lr0.1", "new"),
                                                             ("test_mlp@lpft-k2", str(head)),
                                                             ("test_mlp@lpft-k2-lr0.1", str(head)))]

    asked.clear()
    xgb = []
    monkeypatch.setattr(transfer, "xgboost_pixels", lambda train, test, *, seed, **kw: xgb.append(kw) or {
        "top1": 0.25, "train_top1": float(len(train))})
    fit = lambda tx, ty, vx, vy, *, num_classes, seed: {"top1": float(len(vx)),  # noqa: E731
                                                         "train_top1": float(tx.shape[1]), "loss": 0.0}
    table = transfer.transfer_table(cfg, tasks, sources, trials, smoke, "cpu", 0,
                                    probes={"p1": fit, "p2": fit})
    assert table.columns.tolist() == ["target", "family", "model", "method", "per_class", "top1",
                                      "train_top1", "val_top1", "diverged", "lr", "batch_size", "steps"]
    methods = ["xgboost (pixels)", "p1", "p2"]
    assert table.method.tolist() == methods + list(transfer.METHODS) + methods
    assert table.per_class.tolist() == [2] * 6 + [10] * 3 and xgb == [cfg.xgboost] * 2
    assert table.family.tolist() == ["-"] + ["mlp"] * 5 + ["-", "mlp", "mlp"]
    probe_rows = table[table.method.isin(["p1", "p2"])]
    assert set(probe_rows.top1) == {100.0} and set(probe_rows.train_top1) == {32.0}  # test images; head dims
    assert table.train_top1[0] == 20.0 and table.train_top1[6] == 100.0  # xgboost's k images
    trained = table.iloc[3:6]
    assert [a[0] for a in asked] == ["test_mlp@ft-k2-lr0.1", "test_mlp@lpft-k2", "test_mlp@scratch-k2"]
    assert trained.top1.tolist() == [0.35, 0.3, 0.45] and trained.val_top1.tolist() == [0.7, 0.6, 0.9]
    assert trained.lr.tolist() == pytest.approx([lr / 10, lr, lr]) and set(trained.steps) == {cfg.steps}
    assert set(trained.batch_size) == {transfer.step_plan(20, batch, cfg.steps, cfg.max_epochs)[0]}
