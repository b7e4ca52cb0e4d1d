"""utils.attacks: identities at eps = 0, the eps-ball and [0, 1], agreement with torchattacks, attack strength
on a trained tiny model, AutoAttack's cascade, and a transfer matrix checked by hand."""

import math

import pandas as pd
import pytest
import torch
import torch.nn as nn
import torchattacks

from utils import data, metrics, train
from utils.experiments import attacks
from utils.train import TrainConfig


@pytest.fixture(scope="module")
def trained(synth, build):
    """test_mlp trained for 3 epochs (a few seconds): > 90% clean accuracy on the synthetic test set."""
    cfg = TrainConfig(epochs=3, batch_size=64, lr=3e-3, warmup_epochs=1, progress=False)
    model = build("test_mlp", synth[0].info)
    train.fit(model, *train.make_loaders(*synth, cfg), cfg)
    return model.eval()


@pytest.fixture
def batch(synth, build):
    """An untrained test_cnn and 16 random images in [0, 1] (pixels at exactly 0 and 1 included)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(16, 3, 16, 16, generator=gen)
    x[:, :, 0, 0], x[:, :, 0, 1] = 0.0, 1.0
    return build("test_cnn", synth[0].info, seed=3).eval(), x, torch.randint(0, 10, (16,), generator=gen)


def test_eps_zero_is_identity_and_gives_clean_accuracy(trained, synth, batch):
    model, x, y = batch
    assert torch.equal(attacks.fgsm(model, x, y, 0.0), x)
    for norm in attacks.NORMS:
        assert torch.equal(attacks.pgd(model, x, y, 0.0, norm=norm, seed=0), x)
    loader = data.make_loader(synth[1], 100, train=False)  # batches of 100, 100, 56
    clean = metrics.evaluate(trained, loader)
    for attack in (attacks.fgsm, attacks.pgd):
        row = attacks.robust_accuracy(trained, loader, attack, [0.0], progress=False).iloc[0]
        assert (row["top1"], row["top5"], row["n"]) == (clean["top1"], clean["top5"], len(synth[1]))
    assert clean["top1"] > 0.9


@pytest.mark.parametrize("norm, eps", [("linf", 8 / 255), ("linf", 0.3), ("l2", 0.5), ("l2", 3.0)])
def test_perturbation_stays_in_the_ball_and_in_0_1(batch, norm, eps):
    model, x, y = batch
    x_adv = attacks.pgd(model, x, y, eps, norm=norm, steps=7, step_size=eps, seed=0)  # big steps: projects
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert size.max() <= eps * (1 + 1e-5) and size.max() > 0.5 * eps
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    start = attacks.random_start(x, eps, norm, seed=0)
    size0 = (start - x).flatten(1).abs().amax(1) if norm == "linf" else (start - x).flatten(1).norm(dim=1)
    assert size0.max() <= eps * (1 + 1e-5) and start.min() >= 0 and start.max() <= 1
    if norm == "linf":
        x_f = attacks.fgsm(model, x, y, eps)
        assert (x_f - x).abs().max() <= eps + 1e-6 and x_f.min() >= 0 and x_f.max() <= 1


@pytest.mark.parametrize(
    "norm, eps, steps", [("linf", 8 / 255, 5), ("linf", 0.1, 3), ("l2", 0.5, 5), ("l2", 2.0, 3)]
)
def test_pgd_without_random_start_equals_torchattacks(batch, norm, eps, steps):
    model, x, y = batch
    alpha = eps / 4
    ours = attacks.pgd(model, x, y, eps, norm=norm, steps=steps, step_size=alpha, random_start=False)
    ref_cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    ref = ref_cls(model, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    assert not torch.equal(ours, x)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("eps", [2 / 255, 0.1])
def test_fgsm_equals_torchattacks(batch, eps):
    model, x, y = batch
    torch.testing.assert_close(attacks.fgsm(model, x, y, eps), torchattacks.FGSM(model, eps=eps)(x, y),
                               rtol=0, atol=1e-6)


def test_default_step_is_madry_s_so_5_steps_step_eps_over_2(batch):
    model, x, y = batch  # the original study's PGD grid: 5 steps of eps / 2
    a = attacks.pgd(model, x, y, 0.02, steps=5, seed=0)
    assert torch.equal(a, attacks.pgd(model, x, y, 0.02, steps=5, step_size=0.01, seed=0))
    assert not torch.equal(a, attacks.pgd(model, x, y, 0.02, steps=5, step_size=0.005, seed=0))


def test_seed_fixes_the_random_start_and_spares_the_global_generator(batch):
    model, x, y = batch
    state = torch.get_rng_state()
    a, b = (attacks.pgd(model, x, y, 0.1, steps=2, seed=5) for _ in range(2))
    c = attacks.pgd(model, x, y, 0.1, steps=2, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)


class ModeSpy(nn.Module):
    """Wraps a model and records the training flag seen by every forward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x):
        self.seen.append(self.training)
        return self.model(x)


def test_attacks_use_eval_mode_restore_the_mode_and_leave_no_gradients(batch, synth, build):
    model, x, y = batch
    spy = ModeSpy(model).train()
    first = next(spy.parameters())
    first.requires_grad_(False)  # a frozen parameter stays frozen, the others stay trainable
    loader = [(x[:8], y[:8]), (x[8:], y[8:])]
    attacks.fgsm(spy, x, y, 0.1)
    attacks.pgd(spy, x, y, 0.1, norm="l2", steps=2)
    attacks.autoattack(spy, x[:4], y[:4], 0.1, steps=2, n_queries=5)
    attacks.robust_accuracy(spy, loader, attacks.pgd, [0.0, 0.1], steps=2, progress=False)
    attacks.transfer_matrix({"a": spy, "b": build("test_mlp", synth[0].info)}, loader, attacks.fgsm, 0.1,
                            progress=False)
    assert spy.seen and not any(spy.seen)  # every forward in eval mode
    assert spy.training and all(m.training for m in spy.modules())
    assert all(p.grad is None for p in spy.parameters())
    assert [p.requires_grad for p in spy.parameters()] == [False] + [True] * (len(list(spy.parameters())) - 1)


def test_pgd_is_stronger_than_fgsm_and_accuracy_falls_with_eps(trained, synth):
    loader = data.make_loader(synth[1], 128, train=False)
    eps = [0.0, 0.01, 0.02, 0.04, 0.08]
    f = attacks.robust_accuracy(trained, loader, attacks.fgsm, eps, progress=False)
    p = attacks.robust_accuracy(trained, loader, attacks.pgd, eps, steps=10, step_size=None, seed=0,
                                progress=False)
    assert (p["top1"] <= f["top1"]).all() and (p["top5"] <= f["top5"] + 1e-12).all()
    for acc in (f["top1"], p["top1"], p["top5"]):
        assert acc.is_monotonic_decreasing
    assert f["top1"].iloc[0] > 0.9 and p["top1"].iloc[-1] < 0.5 * f["top1"].iloc[0]
    assert p["top1"].iloc[2] < f["top1"].iloc[2]  # strictly stronger somewhere in the middle


def test_early_stop_keeps_the_first_breaking_iterate(trained, synth, batch):
    x, y = synth[1].images[:128].float() / 255, synth[1].labels[:128]
    plain = attacks.pgd(trained, x, y, 0.03, steps=10, seed=0)
    early = attacks.pgd(trained, x, y, 0.03, steps=10, seed=0, early_stop=True)
    right = lambda x_adv: trained(x_adv).argmax(1) == y
    assert (early - x).abs().max() <= 0.03 + 1e-6 and early.min() >= 0 and early.max() <= 1
    assert right(early).sum() <= right(plain).sum() and 0 < right(early).sum() < 0.9 * len(y)
    model, x, y = batch  # untrained, random labels: most images are wrong at the random start already
    start = attacks.random_start(x, 0.03, "linf", seed=0)
    early = attacks.pgd(model, x, y, 0.03, steps=3, seed=0, early_stop=True)
    wrong0 = model(start).argmax(1) != y  # never stepped
    assert wrong0.sum() >= 8 and torch.equal(early[wrong0], start[wrong0])
    assert not torch.equal(early[~wrong0], start[~wrong0])


def test_targeted_pgd_reaches_the_target(trained, synth):
    x, y = synth[1].images[:64].float() / 255, synth[1].labels[:64]
    target = (y + 1) % 10
    hit = lambda x_adv: (trained(x_adv).argmax(1) == target).float().mean().item()
    x_t = attacks.pgd(trained, x, target, 0.1, steps=10, targeted=True, seed=0)
    x_u = attacks.pgd(trained, x, y, 0.1, steps=10, seed=0)
    assert hit(x_t) > 0.8 and hit(x_t) > hit(x_u) + 0.3


def test_autoattack_cascade_and_report(trained, synth):
    x, y = synth[1].images[:32].float() / 255, synth[1].labels[:32]
    state, eps = torch.get_rng_state(), 0.03
    x_adv, log = attacks.autoattack(trained, x, y, eps, steps=5, n_queries=20, return_log=True)
    assert list(log) == ["clean", *attacks.AUTOATTACK_STANDARD]
    counts = list(log.values())
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    assert log["square"] == int((trained(x_adv).argmax(1) == y).sum())  # the log is the final accuracy
    assert (x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.equal(torch.get_rng_state(), state)  # torchattacks' seeding did not leak
    loader = [(x[:16], y[:16]), (x[16:], y[16:])]
    report = attacks.autoattack_report(trained, loader, eps, steps=5, n_queries=20, progress=False)
    assert list(report["attack"]) == list(log) and (report["n"] == 32).all()
    assert report["top1"].tolist() == pytest.approx([c / 32 for c in counts])  # per-batch = whole-batch
    table = attacks.autoattack_table({"a": trained, "b": trained}, loader, eps, 5, 20, family=str.upper,
                                     progress=False)
    assert table.model.tolist() == ["a"] * len(log) + ["b"] * len(log) and set(table.family) == {"A", "B"}
    assert table.top1.tolist() == pytest.approx(2 * [c / 32 for c in counts])  # seeded: the same twice
    assert (table.steps == 5).all() and (table.n_queries == 20).all()


def test_robustness_tables_score_every_point_and_autoattack_the_flagged_ones(trained, synth, batch):
    x, y = synth[1].images[:32].float() / 255, synth[1].labels[:32]
    loader, untrained = [(x[:16], y[:16]), (x[16:], y[16:])], batch[0]
    points = [({"run": "a", "seed": 0}, trained, True), ({"run": "b", "seed": 1}, untrained, False)]
    curves, aa = attacks.robustness_tables(iter(points), loader, loader, 0.03, [0, 0.03], 5, 20, seed=0)
    assert curves.run.tolist() == ["a", "a", "b", "b"] and curves.eps.tolist() == [0, 0.03, 0, 0.03]
    for name, net in (("a", trained), ("b", untrained)):
        alone = attacks.robust_accuracy(net, loader, attacks.pgd, [0, 0.03], steps=10, seed=0,
                                        early_stop=True, progress=False)
        assert curves[curves.run == name].top1.tolist() == alone.top1.tolist()
    report = attacks.autoattack_report(trained, loader, 0.03, steps=5, n_queries=20, seed=0, progress=False)
    assert set(aa.run) == {"a"} and aa.top1.tolist() == report.top1.tolist()
    assert (aa.pgd_top1 == attacks.robust_accuracy(trained, loader, attacks.pgd, [0.03], steps=10, seed=0,
                                                   progress=False).top1.iloc[0]).all()


class Threshold(nn.Module):
    """Two classes on 2-pixel images (B, 1, 1, 2): class 1 iff w . x > 0.5 (logits +-10 (w . x - 0.5))."""

    def __init__(self, w0: float, w1: float):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([float(w0), float(w1)]))

    def forward(self, x):
        s = 10 * (x.flatten(1) @ self.w - 0.5)
        return torch.stack([-s, s], 1)


def test_transfer_matrix_by_hand():
    """FGSM (eps 0.2) moves a pixel by -0.2 for label 1, +0.2 for label 0, only where the model looks:
    A looks at pixel 0, B at pixel 1, C at their mean."""
    x = torch.tensor([[0.6, 0.9], [0.9, 0.6], [0.4, 0.35], [0.55, 0.55], [0.45, 0.8]]).view(5, 1, 1, 2)
    y = torch.tensor([1, 1, 0, 1, 1])
    nets = {"A": Threshold(1, 0), "B": Threshold(0, 1), "C": Threshold(0.5, 0.5)}
    loader = [(x[:2], y[:2]), (x[2:4], y[2:4]), (x[4:], y[4:])]
    df = attacks.transfer_matrix(nets, loader, attacks.fgsm, 0.2, progress=False)
    df = df.set_index(["source", "target"])
    # right when clean: A on images 1-4, B and C on all 5. Broken (right when clean, wrong after the
    # attack on the source): by A {1, 3, 4}, by B {2, 3, 4}, by C {3, 4, 5}.
    clean = {"A": 4 / 5, "B": 1.0, "C": 1.0}
    adv = {("A", "A"): 1, ("A", "B"): 5, ("A", "C"): 4, ("B", "A"): 4, ("B", "B"): 2, ("B", "C"): 4,
           ("C", "A"): 1, ("C", "B"): 2, ("C", "C"): 2}  # images each target gets right, of 5
    eligible = {("A", "A"): 3, ("A", "B"): 3, ("A", "C"): 3, ("B", "A"): 3, ("B", "B"): 3, ("B", "C"): 3,
                ("C", "A"): 2, ("C", "B"): 3, ("C", "C"): 3}
    rate = {("A", "A"): 1, ("A", "B"): 0, ("A", "C"): 1 / 3, ("B", "A"): 0, ("B", "B"): 1, ("B", "C"): 1 / 3,
            ("C", "A"): 1, ("C", "B"): 2 / 3, ("C", "C"): 1}
    assert len(df) == 9 and (df["n"] == 5).all()
    for (s, t), row in df.iterrows():
        assert row["target_clean_top1"] == pytest.approx(clean[t])
        assert row["target_adv_top1"] == pytest.approx(adv[s, t] / 5), (s, t)
        assert row["n_eligible"] == eligible[s, t], (s, t)
        assert row["transfer_rate"] == pytest.approx(rate[s, t]), (s, t)


def test_transfer_rate_is_nan_without_eligible_images():
    x, y = torch.tensor([[0.9, 0.9]]).view(1, 1, 1, 2), torch.tensor([1])
    nets = {"A": Threshold(1, 0), "B": Threshold(0, 1)}
    df = attacks.transfer_matrix(nets, [(x, y)], attacks.fgsm, 0.1, progress=False)
    assert df["n_eligible"].eq(0).all() and df["transfer_rate"].map(math.isnan).all()


def test_bad_arguments_are_refused(batch):
    model, x, y = batch
    with pytest.raises(ValueError, match="norm"):
        attacks.pgd(model, x, y, 0.1, norm="l1")
    with pytest.raises(ValueError, match="eps"):
        attacks.fgsm(model, x, y, -0.1)
    with pytest.raises(ValueError, match="member"):
        attacks.autoattack(model, x, y, 0.1, attacks=("apgd-dlr",), steps=1)


# ------------------------------------------------------------------ notebook 02: its config and its tables


def test_02s_config_is_fulls_with_the_smaller_profiles_changes():
    full, quick = attacks.config("full"), attacks.config("quick")
    assert (full.n_images, full.autoattack_steps, full.max_pgd_steps) == (5000, 100, 50)  # issue 26's budget
    assert (quick.n_images, quick.n_autoattack, quick.batch_size) == (500, 128, 128)
    assert attacks.config("quick", n_images=64).n_images == 64
    with pytest.raises(KeyError, match="knobs: n_images"):
        attacks.config("quick", n_imgs=64)


def test_settings_are_data_with_a_readable_repr_and_capped_steps():
    std = attacks.standard_settings()
    assert [s.name for s in std] == ["FGSM", "PGD-10", "PGD-50", "PGD-10 L2", "PGD-50 L2"]
    assert repr(std[0]) == "FGSM: FGSM, linf eps 0.03137"
    assert repr(std[3]) == "PGD-10 L2: PGD, l2 eps 0.5, 10 steps of 0.125, random start, early stop"
    assert [s.steps for s in attacks.standard_settings(max_steps=2)] == [1, 2, 2, 2, 2]  # names kept
    pgd10 = attacks.transfer_settings()[1]
    assert pgd10.kwargs(seed=3) == dict(norm="linf", steps=10, step_size=2 / 255, random_start=True, seed=3,
                                        early_stop=False)
    assert attacks.grid_eps(attacks.config("full"))["pgd"][-1] == 0.025 and len(
        attacks.grid_eps(attacks.config("full"))["fgsm"]) == 21


class Constant(nn.Module):
    """Predicts class 0 whatever the image (its input gradient is 0): no attack changes its answer."""

    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0]))

    def forward(self, x):
        return self.logits.expand(len(x), 6) + 0 * x.flatten(1).sum(1, keepdim=True)


def test_robust_predictions_are_what_robust_accuracy_counts(trained, synth):
    """Per image, the same attacked predictions: their means are robust_accuracy's top-1 and top-5 at every
    eps, and at eps 0 the prediction is the model's clean argmax."""
    test = synth[1].head(64)
    loader = data.make_loader(test, 16, train=False)
    eps = [0.0, 0.05]
    acc = attacks.robust_accuracy(trained, loader, attacks.fgsm, eps, progress=False)
    per_image = attacks.robust_predictions(trained, loader, attacks.fgsm, eps, progress=False)
    assert len(per_image) == 2 * 64 and per_image.label.tolist()[:64] == test.labels.tolist()
    means = per_image.groupby("eps")[["correct", "top5"]].mean()
    assert means.correct.tolist() == pytest.approx(acc.top1.tolist())
    assert means.top5.tolist() == pytest.approx(acc.top5.tolist())
    clean = per_image[per_image.eps == 0]
    assert clean.pred.tolist() == metrics.predict_classes(trained, test.as_float()).tolist()
    assert 0.5 < clean.correct.mean() and per_image[per_image.eps > 0].correct.mean() < clean.correct.mean()


def test_the_tables_of_02_by_hand():
    """A model that always says 0 keeps its clean accuracy (3 of 8 labels are 0) under every setting."""
    x = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 0, 2, 3, 0, 4, 5])
    nets, loader = {"m": Constant(), "n": Constant()}, [(x[:5], y[:5]), (x[5:], y[5:])]
    cfg = attacks.config("rehearsal")
    clean = attacks.clean_table(nets, loader, {"m": 0.9, "n": 0.8}, family=str.upper)
    assert clean.attacked_top1.tolist() == [3 / 8] * 2 and clean.test_set_top1.tolist() == [0.9, 0.8]
    grids = attacks.grid_table(nets, loader, cfg, family=str.upper)
    assert len(grids) == 2 * (cfg.fgsm_points + cfg.pgd_points) and (grids.top1 == 3 / 8).all()
    assert grids[grids.attack == "pgd"].steps.unique().tolist() == [cfg.max_pgd_steps]
    per_image = attacks.settings_predictions(nets, loader, [attacks.CLEAN, *attacks.standard_settings(2)],
                                             family=str.upper)
    assert len(per_image) == 2 * 6 * 8 and per_image.image.tolist()[:8] == list(range(8))
    assert (per_image.pred == 0).all() and per_image.correct.tolist() == (y == 0).tolist() * 12
    assert per_image.groupby(["model", "setting"]).top5.mean().eq(7 / 8).all()  # label 5 is the 6th logit
    std = attacks.settings_table(per_image, attacks.standard_settings(2))
    assert std.setting.tolist() == ["FGSM", "PGD-10", "PGD-50", "PGD-10 L2", "PGD-50 L2"] * 2  # no "clean"
    assert std.model.tolist() == ["m"] * 5 + ["n"] * 5 and std.family.tolist() == ["M"] * 5 + ["N"] * 5
    assert (std.top1 == 3 / 8).all() and (std.n == 8).all() and std[std.setting == "FGSM"].top5.notna().all()
    assert std[std.setting != "FGSM"].top5.isna().all()  # early stop: no top-5
    transfer = attacks.transfer_table(nets, loader, attacks.transfer_settings(2))
    assert len(transfer) == 2 * 4 and set(transfer.setting) == {"FGSM", "PGD-10"}
    assert (transfer.n_eligible == 0).all()  # nothing is ever broken
    aa = pd.DataFrame({"model": ["m", "m", "n", "n"], "family": ["M", "M", "N", "N"],
                       "attack": ["clean", "square"] * 2, "norm": "linf", "eps": 8 / 255,
                       "top1": [0.5, 0.25, 0.5, 0.125], "n": 8, "steps": 1})
    summary = attacks.summary_table(grids, std, aa)
    assert summary[summary.setting == "AutoAttack"].top1.tolist() == [0.25, 0.125]
    compact = attacks.compact_table(clean, std, aa, transfer, ["n", "m"])
    assert compact.index.tolist() == ["n", "m"] and compact["AutoAttack (n=8)"].tolist() == [0.125, 0.25]
    assert compact.columns[1:6].tolist() == ["FGSM", "PGD-10", "PGD-50", "PGD-10 L2", "PGD-50 L2"]
