"""utils.experiments.similarity: error consistency by hand and at its limits; each representational measure
against a plain numpy/scipy implementation of its published formula, its claimed invariances, a planted
shared subspace, and the permutation null."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr
from sklearn.neighbors import NearestNeighbors

from utils.experiments import similarity as sim

# ---------------------------------------------------------------- error consistency


def test_kappa_by_hand_and_at_its_limits():
    a, b = torch.tensor([1, 1, 1, 0]), torch.tensor([1, 1, 0, 0])
    # p_a 0.75, p_b 0.5: c_exp = 0.375 + 0.125 = 0.5; both right on 2, both wrong on 1: c_obs 0.75
    assert sim.kappa(a, b) == pytest.approx((0.75 - 0.5) / (1 - 0.5))
    assert sim.kappa(torch.tensor([1, 1, 0, 0]), torch.tensor([1, 0, 1, 0])) == pytest.approx(0.0)
    assert sim.kappa(a, a) == 1.0
    assert sim.kappa(torch.tensor([1, 0, 1, 0]), torch.tensor([0, 1, 0, 1])) == -1.0  # opposite mistakes
    assert math.isnan(sim.kappa(torch.ones(5), torch.ones(5)))  # nothing to agree on beyond chance
    with pytest.raises(ValueError, match="equal"):
        sim.kappa(torch.ones(3), torch.ones(4))


@pytest.mark.parametrize("p_a, p_b", [(0.9, 0.6), (0.5, 0.5), (0.95, 0.2)])
def test_independent_errors_give_kappa_near_zero_at_any_accuracy(p_a, p_b):
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(200_000, generator=gen) < p_a, torch.rand(200_000, generator=gen) < p_b
    assert abs(sim.kappa(a, b)) < 0.01


def test_the_bootstrap_interval_holds_the_estimate_and_narrows_with_more_images():
    gen = torch.Generator().manual_seed(1)
    wide, narrow = [], []
    for n, out in ((200, wide), (5000, narrow)):
        z = torch.rand(n, generator=gen)
        a = z < 0.7
        own = torch.rand(n, generator=gen) < 0.7
        b = torch.where(torch.rand(n, generator=gen) < 0.5, a, own)  # half of b's answers are a's
        low, high = sim.kappa_interval(a, b, n=300, seed=0)
        assert low < sim.kappa(a, b) < high
        out.append(high - low)
    assert narrow[0] < wide[0] / 3
    assert sim.kappa_interval(a, b, n=50, seed=3) == sim.kappa_interval(a, b, n=50, seed=3)
    # the four-cell draw is the bootstrap of the images: the interval of 2,000 resamples drawn image by image
    idx = torch.randint(0, len(a), (2000, len(a)), generator=torch.Generator().manual_seed(0))
    by_image = torch.tensor([sim.kappa(a[i], b[i]) for i in idx])
    assert sim.kappa_interval(a, b, n=2000) == pytest.approx(
        (by_image.quantile(0.025).item(), by_image.quantile(0.975).item()), abs=0.01)


# ---------------------------------------------------------------- representational similarity


def features(n=120, d=6, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def rotation(d, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))[0]


def moved(x):
    """x rotated, scaled by 3 and translated: what every measure here claims not to see."""
    return 3 * x @ rotation(x.shape[1]) + 5


def test_procrustes_equals_scipys_orthogonal_procrustes_and_its_invariances():
    x, y = features(), features(seed=2)
    xn, yn = (v - v.mean(0) for v in (x.numpy(), y.numpy()))
    xn, yn = xn / np.linalg.norm(xn), yn / np.linalg.norm(yn)
    r, _ = orthogonal_procrustes(yn, xn)  # the rotation of y closest to x
    assert sim.procrustes_distance(x, y) == pytest.approx(math.acos(np.sum((yn @ r) * xn)), abs=1e-9)
    assert sim.procrustes_distance(x, moved(x)) == pytest.approx(0.0, abs=1e-6)
    padded = torch.cat([moved(x), torch.zeros(len(x), 3, dtype=x.dtype)], 1)  # wider, same shape
    assert sim.procrustes_distance(x, padded) == pytest.approx(0.0, abs=1e-6)
    assert sim.procrustes_distance(x, moved(y)) == pytest.approx(sim.procrustes_distance(x, y), abs=1e-9)


def test_mutual_knn_equals_sklearns_neighbours_and_its_invariances():
    x, y, k = features(), features(seed=2), 7
    def sk(v):
        v = v.numpy() - v.numpy().mean(0)
        idx = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(v).kneighbors(v)[1]
        return [set(row) - {i} for i, row in enumerate(idx)]
    ref = np.mean([len(a & b) / k for a, b in zip(sk(x), sk(y), strict=True)])
    assert sim.mutual_knn(x, y, k) == pytest.approx(ref)
    assert sim.mutual_knn(x, moved(x), k) == 1.0
    assert sim.mutual_knn(x, moved(y), k) == pytest.approx(sim.mutual_knn(x, y, k))
    with pytest.raises(ValueError, match="k must be"):
        sim.mutual_knn(x, y, len(x))


def test_rsa_equals_scipys_spearman_of_pdist_and_its_invariances():
    x, y = features(60), features(60, seed=2)
    ref = spearmanr(pdist(x.numpy()), pdist(y.numpy())).statistic
    assert sim.rsa(x, y) == pytest.approx(ref, abs=1e-12)
    assert sim.rsa(x, moved(x)) == pytest.approx(1.0)
    assert sim.rsa(x, moved(y)) == pytest.approx(sim.rsa(x, y), abs=1e-12)
    tied = torch.tensor([[0.0], [1.0], [2.0], [4.0]], dtype=torch.float64)  # distance 2 twice: a tie
    assert sim.rsa(tied, tied.pow(2)) == pytest.approx(spearmanr(pdist(tied), pdist(tied.pow(2))).statistic)


def test_a_planted_shared_subspace_is_found_by_every_measure_and_beats_the_null():
    """x and y share a 3-d signal (rotated in y) beside 3 dimensions of their own noise; z shares none."""
    signal, noise = features(200, 3, seed=5), 0.5
    x = torch.cat([signal, noise * features(200, 3, seed=6)], 1)
    y = torch.cat([signal @ rotation(3, seed=7), noise * features(200, 3, seed=8)], 1) @ rotation(6, seed=9)
    z = features(200, 6, seed=10)
    d_null = sim.permutation_null(sim.procrustes_distance, x, y, n=30, seed=0)
    assert sim.procrustes_distance(x, y) < 0.7 < 1.3 < min(sim.procrustes_distance(x, z), d_null.min())
    for measure in (sim.rsa, lambda a, b: sim.mutual_knn(a, b, 10)):
        shared, unrelated = measure(x, y), measure(x, z)
        null = sim.permutation_null(measure, x, y, n=30, seed=0)
        assert shared > unrelated + 0.2 and shared > null.max() and abs(null.mean() - unrelated) < 0.15


def test_error_consistency_tables_every_pair_per_setting_with_a_hand_checked_kappa():
    correct = {"a": [1, 1, 1, 0], "b": [1, 1, 0, 0], "c": [1, 1, 1, 0]}  # a-b by hand: (0.75 - 0.5) / 0.5
    table = pd.concat([pd.DataFrame({"model": m, "setting": s, "image": range(4),
                                     "correct": np.array(c, bool)})
                       for s in ("clean", "pgd") for m, c in correct.items()], ignore_index=True)
    table = table[~((table.setting == "pgd") & (table.model == "c") & (table.image == 3))]  # c lost an image
    out = sim.error_consistency(table, n_boot=200).set_index(["setting", "model_a", "model_b"])
    assert list(out.index.get_level_values(0).unique()) == ["clean", "pgd"] and len(out) == 6
    assert out.loc[("clean", "a", "b"), "kappa"] == pytest.approx(0.5)
    assert out.loc[("clean", "a", "c"), "kappa"] == 1.0 and out.loc[("clean", "a", "b"), "top1_b"] == 0.5
    assert out.loc[("pgd", "a", "c"), "n"] == 3 and math.isnan(out.loc[("pgd", "a", "c"), "kappa"])
    row = out.loc[("clean", "a", "b")]
    assert row.kappa_lo <= row.kappa <= row.kappa_hi


def test_predictions_table_is_one_row_per_model_and_image():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    images, labels = torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1])
    t = sim.predictions_table({"x": net, "y": net}, images, labels, "clean", index=torch.arange(10, 15))
    assert len(t) == 10 and list(t.image[:5]) == [10, 11, 12, 13, 14]
    pred = net(images).argmax(1)
    assert (t.pred[:5].to_numpy() == pred.numpy()).all()
    assert (t.correct[:5].to_numpy() == (pred == labels).numpy()).all()


def test_with_twins_the_pairs_are_the_families_and_each_model_with_its_second_seed():
    gen = torch.Generator().manual_seed(0)
    right = {m: torch.rand(400, generator=gen) < 0.7 for m in ("a", "b")}
    right |= {"a@seed1": right["a"].clone(), "b@seed1": torch.rand(400, generator=gen) < 0.7}
    table = pd.concat([pd.DataFrame({"model": m, "setting": "clean", "image": range(400),
                                     "correct": c.numpy()}) for m, c in right.items()], ignore_index=True)
    out = sim.error_consistency(table, n_boot=50, twins={"a": "a@seed1", "b": "b@seed1"})
    assert list(zip(out.model_a, out.model_b, out.kind, strict=True)) == [
        ("a", "b", "families"), ("a", "a@seed1", "two seeds"), ("b", "b@seed1", "two seeds")]
    assert out.kappa.iloc[1] == 1.0 and abs(out.kappa.iloc[0]) < 0.15 and abs(out.kappa.iloc[2]) < 0.15
    assert len(sim.error_consistency(table, n_boot=50)) == 6  # without twins: every pair


def test_a_seed_twin_is_the_recipe_with_another_seed():
    from utils import recipes

    name, recipe = recipes.seed_twin("test_mlp", "smoke", 1)
    base = recipes.get_recipe("test_mlp", "smoke")
    assert name == "test_mlp@seed1" and recipe == recipes.with_train(base, seed=1) and base.train.seed != 1
    assert recipes.seed_twin("mlp_b12_wi1024@in21k", "full", 1)[0] == "mlp_b12_wi1024@in21k-seed1"


def test_the_suite_finds_the_planted_pair_by_every_measure_and_they_agree():
    """Three "models": a and b share a 3-d signal (rotated), c shares nothing; each one's seed-1 twin is
    itself rotated with a little noise (the ceiling), its initialisation unrelated noise (the floor)."""
    n, signal = 150, features(150, 3, seed=20)
    s0 = {"a": torch.cat([signal, 0.5 * features(n, 3, seed=21)], 1),
          "b": torch.cat([signal @ rotation(3, seed=22), 0.5 * features(n, 3, seed=23)], 1),
          "c": features(n, 6, seed=24)}
    feats = {}
    for i, (m, x) in enumerate(s0.items()):
        feats[m, "s0"] = x
        feats[m, "s1"] = x @ rotation(6, seed=30 + i) + 0.1 * features(n, 6, seed=40 + i)
        feats[m, "init"] = features(n, 6, seed=50 + i)
    measures = {**sim.MEASURES, "mutual kNN": lambda x, y: sim.mutual_knn(x, y, 10)}
    table = sim.suite_table(feats, ["a", "b", "c"], measures, n_null=20, seed=0)
    assert len(table) == len(measures) * (3 + 3 * 3) and table.value.notna().all()
    cross = table.kind == "cross"
    assert table[cross].null_q95.notna().all() and table[~cross].null_q95.isna().all()
    summary = sim.suite_summary(table, {"a": "A", "b": "B", "c": "C"}).set_index(["measure", "pair"])
    for m in measures:
        assert summary.gap_closed[m, "A - B"] > 0.3 and summary.above_null[m, "A - B"]
        assert max(abs(summary.gap_closed[m, "A - C"]), abs(summary.gap_closed[m, "B - C"])) < 0.25
    agreement = sim.measure_agreement(summary.reset_index())
    assert len(agreement) == 3 and (agreement.most_alike_a == "A - B").all()
    assert (agreement.spearman > 0).all()


def test_the_suite_summary_reads_cross_against_ceiling_and_floor_by_hand():
    table = pd.DataFrame({"measure": "m", "kind": ["ceiling", "ceiling", "cross", "floor", "floor"],
                          "model_a": ["a", "b", "a", "a", "b"], "model_b": ["a", "b", "b", "b", "a"],
                          "value": [0.9, 0.7, 0.5, 0.2, 0.0],
                          "null_q95": [np.nan, np.nan, 0.3, np.nan, np.nan]})
    (row,) = sim.suite_summary(table, {"a": "A", "b": "B"}).itertuples()
    # ceiling (0.9 + 0.7) / 2 = 0.8, floor (0.2 + 0.0) / 2 = 0.1: (0.5 - 0.1) / (0.8 - 0.1)
    assert (row.ceiling, row.floor, row.gap_closed) == pytest.approx((0.8, 0.1, 0.4 / 0.7))
    assert row.above_null and row.pair == "A - B"
