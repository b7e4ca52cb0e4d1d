"""experiments.ablations: stored points not retrained, the aggregation's numbers, gradient norms with a known
answer, equal-parameter widths, and studies whose names and recipes mean what they say."""

import math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn as nn

from utils import data, models, store, train
from utils.experiments import ablations
from utils.experiments.ablations import Ablation, Study
from utils.recipes import Recipe
from utils.train import TrainConfig

ROOT = Path(__file__).resolve().parents[2]

RECIPE = Recipe(TrainConfig(epochs=2, batch_size=64, eval_batch_size=256, lr=3e-3, progress=False))
FASHION = data.DatasetInfo("fashion-mnist", 10, tuple("0123456789"), 1, 28, (0.286,), (0.353,))


@pytest.fixture
def ck(tmp_path, monkeypatch, data_root):
    monkeypatch.setenv("MLPZOOM_CHECKPOINTS", str(tmp_path / "ck"))
    return tmp_path / "ck" / "smoke" / "synthetic"


def count_epochs(monkeypatch) -> list[int]:
    calls, real = [], train.train_epoch
    monkeypatch.setattr(train, "train_epoch", lambda *a: calls.append(a[-1]) or real(*a))
    return calls


def tiny_study() -> Study:
    return Study("tiny", "test_mlp", RECIPE, (
        Ablation("baseline"),
        Ablation("smooth", "label smoothing 0.1", {"label_smoothing": 0.1}, seeds=(0,), tags={"knob": 1}),
        Ablation("plain", "a plain MLP", model="mlp_plain", overrides={"depth": 1, "width": 8}, seeds=(1,)),
    ), seeds=(0, 1))


def test_a_point_is_a_stored_run_that_a_second_call_loads(ck, monkeypatch):
    calls, seen = count_epochs(monkeypatch), []
    evaluate = lambda net: seen.append(net.model_name) or {"top1": 0.25}
    rows = ablations.run_study(tiny_study(), "synthetic", "smoke", evaluate=evaluate)
    assert len(calls) == 4 * 2  # baseline x 2 seeds, smooth x 1, plain x 1; two epochs each
    assert list(rows.run) == ["test_mlp@abl-tiny-baseline-s0", "test_mlp@abl-tiny-baseline-s1",
                              "test_mlp@abl-tiny-smooth-s0", "mlp_plain@abl-tiny-plain-s1"]
    assert seen == ["test_mlp"] * 3 + ["mlp_plain"] and (rows.robust_top1 == 0.25).all()
    again = ablations.run_study(tiny_study(), "synthetic", "smoke", evaluate=evaluate)
    assert len(calls) == 8  # nothing retrained
    pd.testing.assert_frame_equal(rows.drop(columns="train_min"), again.drop(columns="train_min"))
    card = store.model_card("test_mlp@abl-tiny-smooth-s0", "synthetic", "smoke")
    assert card["train_config"]["label_smoothing"] == 0.1 and card["train_config"]["seed"] == 0
    assert rows.loc[2, "test_top1"] == card["metrics"]["test_top1"] and rows.loc[2, "knob"] == 1
    n_train = card["data"]["train"]["n"]
    assert n_train == len(store.load_splits("smoke", "synthetic").train) == 461  # 512 less the val split
    assert (rows.train_images == n_train).all()
    assert (rows.steps == 2 * (n_train // 64)).all() and (rows.epochs == 2).all()
    assert rows.loc[3, "params"] == 3 * 32 * 32 * 8 + 8 + 8 * 10 + 10  # the plain MLP on 3x32x32: its own
    assert not rows.diverged.any()


def test_trained_points_load_each_point_with_its_tags_and_mark_the_ends(ck, monkeypatch):
    calls = count_epochs(monkeypatch)
    got = list(ablations.trained_points([tiny_study()], "synthetic", "smoke"))
    assert [t["run"] for t, _, _ in got] == ["test_mlp@abl-tiny-baseline-s0", "test_mlp@abl-tiny-baseline-s1",
                                             "test_mlp@abl-tiny-smooth-s0", "mlp_plain@abl-tiny-plain-s1"]
    assert [end for _, _, end in got] == [True, True, False, True]  # baseline and plain: first and last
    assert got[2][0] == {"run": "test_mlp@abl-tiny-smooth-s0", "model": "test_mlp", "seed": 0, "knob": 1}
    assert [net.model_name for _, net, _ in got] == ["test_mlp"] * 3 + ["mlp_plain"] and len(calls) == 8
    again = list(ablations.trained_points([tiny_study()], "synthetic", "smoke"))
    assert len(calls) == 8 and torch.equal(next(again[3][1].parameters()), next(got[3][1].parameters()))


def test_seeds_change_the_initialisation_and_the_recipe():
    study = tiny_study()
    r0, r1 = (ablations.recipe_for(study, study.ablations[0], s) for s in (0, 1))
    assert (r0.train.seed, r1.train.seed) == (0, 1) and r0.train.lr == r1.train.lr == 3e-3
    plain = ablations.recipe_for(replace(study, base=replace(RECIPE, overrides={"expansion": 2})),
                                 study.get("plain"), 0)
    assert plain.overrides == {"depth": 1, "width": 8}  # another model: only its own overrides
    with pytest.raises(KeyError, match="no ablation 'nope'; ablations: \\['baseline', 'smooth', 'plain'\\]"):
        study.get("nope")


def hand_table() -> pd.DataFrame:
    rows = [("s", "baseline", 0, 0.80, 0.30), ("s", "baseline", 1, 0.82, 0.34),
            ("s", "mixup", 0, 0.85, 0.20), ("s", "mixup", 1, 0.89, 0.22),
            ("s", "close", 0, 0.81, 0.31), ("s", "close", 1, 0.83, 0.33),
            ("s", "one", 0, 0.90, 0.50),
            ("t", "ref", 0, 0.50, 0.10), ("t", "ref", 1, 0.60, 0.10), ("t", "x", 0, 0.70, 0.10)]
    df = pd.DataFrame(rows, columns=["study", "ablation", "seed", "test_top1", "robust_top1"])
    return df.assign(change=df.ablation, model="m", val_top1=df.test_top1 - 0.01, test_top5=1.0,
                     train_min=df.seed + 1.0, params=100, train_images=900, epochs=3, steps=30, lr=1e-3,
                     batch_size=64, run=df.ablation + df.seed.astype(str), diverged=False,
                     label_smoothing=0.0, mixup_alpha=0.0, adversarial=None, adv_eps=0.0)


def test_aggregation_means_spreads_and_deltas():
    agg = ablations.aggregate(hand_table()).set_index(["study", "ablation"])
    assert list(agg.index) == [("s", "baseline"), ("s", "mixup"), ("s", "close"), ("s", "one"), ("t", "ref"),
                               ("t", "x")]
    m = agg.loc["s", "mixup"]
    assert m.seeds == 2 and m.top1_mean == pytest.approx(0.87) and m.top1_std == pytest.approx(0.02 * 2**0.5)
    assert m.delta_top1 == pytest.approx(0.06) and m.delta_robust == pytest.approx(0.21 - 0.32)
    # s.e. of a difference of means: sqrt(0.0008 / 2 + 0.0002 / 2)
    assert m.delta_top1_se == pytest.approx(math.sqrt(0.0005)) and not m.within_spread
    close = agg.loc["s", "close"]
    assert close.delta_top1 == pytest.approx(0.01) and close.within_spread  # 0.01 <= 2 x 0.0141
    base = agg.loc["s", "baseline"]
    assert base.delta_top1 == 0 and base.within_spread and base.train_min == pytest.approx(1.5)
    one = agg.loc["s", "one"]
    assert one.seeds == 1 and math.isnan(one.top1_std) and math.isnan(one.delta_top1_se)
    assert math.isnan(one.within_spread) and one.delta_top1 == pytest.approx(0.09)
    assert agg.loc["t", "x"].delta_top1 == pytest.approx(0.15)  # against its own study's first ablation
    stated = {"params", "train_images", "epochs", "steps", "lr", "batch_size", "val_top1_mean"}
    assert stated <= set(agg.columns)


def test_choices_are_made_on_validation_never_test():
    df = pd.DataFrame({"lr": [1e-3, 1e-3, 3e-3], "val_top1": [0.70, 0.72, 0.75],
                       "test_top1": [0.9, 0.9, 0.1]})
    assert ablations.best_by_val(df, "lr") == 3e-3
    hist = pd.DataFrame({"run": ["a"] * 3 + ["b"] * 2, "epoch": [1, 2, 3, 1, 2],
                         "val_top1": [0.5, 0.7, 0.6, 0.4, 0.45]})
    best = ablations.best_epochs(hist).set_index("run")
    assert best.loc["a", "best_epoch"] == 2 and best.loc["a", "last_val_top1"] == 0.6
    assert best.loc["b", "best_epoch"] == 2 and best.loc["b", "val_top1"] == 0.45


def test_gradient_norms_of_a_linear_chain_have_the_known_answer():
    # y = C B A x with A = a I, B = b I, C = c I (d x d, no bias) and loss = sum(y): dL/dA = b c 1 s^T,
    # dL/dB = a c 1 s^T, dL/dC = a b 1 s^T with s = sum over the batch of x, so ||dL/dA|| = b c sqrt(d) ||s||.
    d, (a, b, c) = 5, (0.5, 2.0, 3.0)
    chain = nn.Sequential(*(nn.Linear(d, d, bias=False) for _ in range(3)))
    for layer, v in zip(chain, (a, b, c), strict=True):
        nn.init.eye_(layer.weight)
        layer.weight.data *= v
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, d, generator=gen), torch.zeros(4, dtype=torch.long)) for _ in range(5)]
    cfg = TrainConfig(lr=0.0, weight_decay=0.0, schedule="constant")  # lr 0: every step sees the same weights
    g = ablations.gradient_norms(chain, batches, cfg, every=2, loss_fn=lambda out, y: out.sum())
    assert sorted(set(g.step)) == [0, 2, 4] and list(g.layer[:3]) == ["0", "1", "2"]
    for step, (x, _) in enumerate(batches):
        if step % 2 == 0:
            s = x.sum(0).norm().item() * d**0.5
            got = g[g.step == step].sort_values("depth").grad_norm.tolist()
            assert got == pytest.approx([b * c * s, a * c * s, a * b * s], rel=1e-5)
    short = ablations.gradient_norms(chain, batches, cfg, steps=2, loss_fn=lambda out, y: out.sum())
    assert sorted(set(short.step)) == [0, 1] and len(short) == 2 * 3


def test_gradients_vanish_through_a_deep_plain_mlp_and_not_with_skips():
    x, y = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(64) % 10
    cfg = TrainConfig(lr=0.0, weight_decay=0.0, schedule="constant")
    first_over_last = {}
    for skip in (False, True):
        info = data.DatasetInfo("x", 64, tuple("0123456789"), 1, 8, (0.5,), (0.5,))
        net = models.create_for("mlp_plain", info, seed=0, depth=30, width=32, skip=skip)
        g = ablations.gradient_norms(net, [(x, y)], cfg)
        first_over_last[skip] = g.grad_norm.iloc[0] / g.grad_norm.iloc[-2]  # stem vs the last hidden layer
    assert first_over_last[False] < 1e-3 < first_over_last[True]


def test_plain_width_for_equal_parameters():
    with torch.device("meta"):
        bottleneck = models.create_for("mlp_b4_wi256", FASHION)
    target = sum(p.numel() for p in bottleneck.parameters())
    plain = ablations.equal_params_plain("mlp_b4_wi256", FASHION)
    assert plain["depth"] == 1 + 2 * 4  # stem + two Linear layers per block
    count = lambda w: ablations.count_params("mlp_plain", FASHION, depth=9, width=w)
    best = abs(count(plain["width"]) - target)
    assert best <= min(abs(count(plain["width"] + k) - target) for k in (-1, 1))
    assert abs(count(plain["width"]) / target - 1) < 0.005
    assert ablations.plain_width_for(784 * 10 + 10 + 10 * 10 + 10, 1, 784, 10) == 10  # depth 1: linear in w
    assert ablations.plain_width_for(count(300), 9, 784, 10) == 300


def test_studies_say_what_they_change():
    base = Recipe(TrainConfig(epochs=4, batch_size=256, lr=1e-3, warmup_epochs=1, label_smoothing=0.1,
                              crop_pad=0), overrides={"depth": 4, "width": 64})
    lr = ablations.lr_study(base, "mlp_plain", [3e-4, 1e-3, 3e-3], seeds=[0, 1])
    assert [a.name for a in lr.ablations] == ["baseline", "lr0.0003", "lr0.003"]  # base lr: the baseline
    epochs, steps = ablations.batch_studies(base, "mlp_plain", [64, 256, 1024], [0, 1], "plain")
    assert [a.name for a in epochs.ablations] == ["baseline", "batch64", "batch1024"]
    assert [a.train["epochs"] for a in steps.ablations[1:]] == [1, 16]  # 4 epochs x 64/256, x 1024/256
    shared = ablations.run_name(epochs, epochs.ablations[0], 1)
    assert shared == ablations.run_name(steps, steps.ablations[0], 1) == "mlp_plain@abl-plain-baseline-s1"
    grid = ablations.grid_study(base, "mlp_plain", [2, 4], [64, 128], [0, 1], "plain")
    assert [a.tags for a in grid.ablations] == [{"depth": 4, "width": 64}, {"depth": 2, "width": 64},
                                               {"depth": 2, "width": 128}, {"depth": 4, "width": 128}]
    assert ablations.recipe_for(grid, grid.ablations[3], 0).overrides == {"depth": 4, "width": 128}
    deep = ablations.depth_study(base, "mlp_plain", [0], {"depth": 100, "width": 16})
    assert ablations.recipe_for(deep, deep.get("skip-layernorm"), 0).overrides == {
        "depth": 100, "width": 16, "norm": "layer", "skip": True}
    inputs = ablations.inputs_study(base, "mlp_plain", [0, 1], "plain", {"fourier_features": 64,
                                    "fourier_scale": [0.1, 1.0]}, {"sine_freqs": [1.0]})
    assert [a.name for a in inputs.ablations] == ["baseline", "fourier-s0.1", "fourier-s1", "sine"]
    assert ablations.recipe_for(inputs, inputs.get("fourier-s0.1"), 0).overrides == {
        "depth": 4, "width": 64, "features": "fourier", "fourier_features": 64, "fourier_scale": 0.1}
    one = ablations.inputs_study(base, "mlp_plain", [0], "plain",
                                 {"fourier_features": 64, "fourier_scale": 0.5}, {"sine_freqs": [1.0]})
    assert [a.name for a in one.ablations] == ["baseline", "fourier", "sine"]  # one scale: the old run names
    bottleneck = replace(base, overrides={})
    tricks = ablations.tricks_study(bottleneck, "mlp_b4_wi256", FASHION, [0, 1], batches=[64, 1024])
    names = [a.name for a in tricks.ablations]
    # the base flips (Fashion-MNIST's default) with smoothing 0.1 and no mixup: each trick flipped against it
    assert names == ["baseline", "plain", "no-block-norm", "no-aug", "crop-flip", "no-smoothing",
                     "smoothing0.3", "mixup0.8", "batch64", "batch1024", "all"]
    ladder = ablations.ladder_study(bottleneck, "mlp_b4_wi256", FASHION, [0, 1])
    assert [a.tags["rung"] for a in ladder.ablations] == list(range(7))
    top, every = ladder.get("all"), tricks.get("all")  # the ladder's last rung is the tricks' `all`: one run
    assert ablations.recipe_for(ladder, top, 0) == ablations.recipe_for(tricks, every, 0)
    assert ablations.run_name(ladder, top, 0) == ablations.run_name(tricks, every, 0)
    first = ablations.recipe_for(ladder, ladder.ablations[0], 0).train
    assert (first.crop_pad, first.flip, first.label_smoothing, first.mixup_alpha) == (0, False, 0.0, 0.0)
    adv = ablations.adversarial_study(bottleneck, "cnn_small", [0], fgsm_eps=[2 / 255], pgd_eps=[4 / 255],
                                      pgd_steps=3)
    pgd = ablations.recipe_for(adv, adv.get("pgd3-4"), 0).train
    assert (pgd.adversarial, pgd.adv_eps, pgd.adv_steps) == ("pgd", 4 / 255, 3)
    assert ablations.run_name(adv, adv.ablations[0], 0) == "cnn_small@abl-adv-baseline-s0"
    short = ablations.shortened(replace(base, train_subset=None), epochs=1, train_subset=500)
    assert (short.train.epochs, short.train.warmup_epochs, short.train_subset) == (1, 0, 500)
    assert short.train.lr == base.train.lr and short.overrides == base.overrides


def test_the_ladder_ends_at_mixup_when_the_recipe_keeps_its_batch():
    base = Recipe(TrainConfig(epochs=3, batch_size=256, lr=1e-3, warmup_epochs=1, label_smoothing=0.1))
    ladder = ablations.ladder_study(base, "mlp_b4_wi256", FASHION, [0, 1], full_batch=256)
    assert [a.name for a in ladder.ablations] == ["ladder0-plain", "ladder1-bottleneck", "ladder2-layernorm",
                                                  "ladder3-augment", "ladder4-smoothing", "all"]
    top = ablations.recipe_for(ladder, ladder.get("all"), 0).train
    assert (top.batch_size, top.mixup_alpha, top.label_smoothing, top.crop_pad) == (256, 0.8, 0.3, 4)
    assert ladder.get("all").change == "+ mixup 0.8 (= all)"


def test_the_reading_names_the_best_and_worst_change_with_its_spread():
    from utils.findings import ablations as reading

    summary = ablations.aggregate(hand_table().replace({"study": {"s": "tricks"}}))
    best, worst, within = reading._deltas(summary, "2/255")[:3]
    assert best.startswith("Chosen on validation top-1, the change that helps most is tricks 'one' (+0.090")
    assert best.endswith("on the test set it raises top-1 by 0.090 (one seed, no spread).")
    assert worst.startswith("The one that helps least (none lowers it) on validation is tricks 'close'")
    assert worst.endswith("it leaves top-1 within the seed spread (+0.010, s.e. 0.014).")
    assert within == ("1 of 3 one-at-a-time changes are within the seed spread of their baseline on test "
                      "top-1 (|delta| <= 2 s.e.): close.")


def test_the_tag_columns_keep_the_tables_order_in_every_process():
    """The summary's extra columns (an ablation's tags) follow the table's order; they came from a set, whose
    order changes with Python's hash seed, so two runs wrote the same numbers in different column orders.
    Twenty tags: the order a set of them iterates in is the table's with odds of about 1 in 20! under any hash
    seed, so this process's seed shows it (three subprocesses with three seeds took 50 s of CI)."""
    tags = [f"tag{i:02d}{'xyz'[i % 3]}" for i in range(20)][::-1]
    assert list(set(tags)) != tags  # what the old code wrote
    table = hand_table().assign(**{t: i for i, t in enumerate(tags)})
    assert list(ablations.aggregate(table).columns)[-20:] == tags
