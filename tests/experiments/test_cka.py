"""utils.experiments.cka against numbers known in advance: CKA(X, X) = 1; invariance to orthogonal maps and
isotropic scaling but not to a general linear map; a numpy reference of both HSIC estimators; the feature
and Gram forms; biased vs debiased on wide independent noise; minibatch CKA converging to the full-batch
value; no epsilon collapse for tiny features; model_cka on two copies of one tiny model; the gap closed by
cross-model CKA with every term in both directions."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from utils import data, models
from utils.experiments import cka
from utils.hooks import collect_many


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: on a shared 2-core box, OpenMP hand-offs between threads cost more than the maths
    (~5 s of test calls with 2 threads under load, ~0.5 s with 1). Restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def related(n=200, d1=10, d2=30, seed=0):
    """x (n, d1) and y = x W + noise (n, d2): CKA clearly between 0 and 1."""
    g = gen(seed)
    x = torch.randn(n, d1, generator=g)
    return x, x @ torch.randn(d1, d2, generator=g) + torch.randn(n, d2, generator=g)


def ref_hsic(k, m, debiased):
    """HSIC written out from the definitions (numpy, float64): tr(KHLH)/(n-1)^2, or Song et al. 2012's
    unbiased estimator on the Grams with zeroed diagonals."""
    n = len(k)
    if not debiased:
        h = np.eye(n) - 1.0 / n
        return np.trace(k @ h @ m @ h) / (n - 1) ** 2
    kt, lt, one = k - np.diag(np.diag(k)), m - np.diag(np.diag(m)), np.ones(n)
    return (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ kt @ lt @ one) / (n * (n - 3))


def ref_cka(k, m, debiased):
    return ref_hsic(k, m, debiased) / math.sqrt(ref_hsic(k, k, debiased) * ref_hsic(m, m, debiased))


def ref_rbf(x, sigma):
    """Kornblith's gram_rbf: bandwidth^2 = sigma^2 x the median squared distance over all n^2 pairs."""
    dots = x @ x.T
    sq = np.diag(dots)
    d2 = sq[:, None] + sq[None, :] - 2 * dots
    return np.exp(-d2 / (2 * sigma**2 * np.median(d2)))


@pytest.mark.parametrize("debiased", [False, True])
def test_self_similarity_is_one(debiased):
    x, _ = related()
    assert cka.linear_cka(x, x, debiased) == pytest.approx(1.0, abs=1e-12)
    assert cka.linear_cka(x, x, debiased, method="gram") == pytest.approx(1.0, abs=1e-12)
    assert cka.rbf_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)
    assert cka.rbf_cka(x, x.numpy() + 5.0, sigma=0.5, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_matches_the_numpy_reference_and_both_linear_forms_agree(debiased):
    x, y = related(n=60)
    xn, yn = x.double().numpy(), y.double().numpy()
    want = ref_cka(xn @ xn.T, yn @ yn.T, debiased)  # uncentred features: HSIC's centring must do it
    assert 0.5 < want < 0.95
    for method in ("features", "gram", "auto"):
        assert cka.linear_cka(x, y, debiased, method=method) == pytest.approx(want, abs=1e-12)
    assert cka.gram_cka(torch.as_tensor(xn @ xn.T), torch.as_tensor(yn @ yn.T), debiased) == pytest.approx(
        want, abs=1e-12)
    for sigma in (0.5, 0.8, 2.0):
        want_rbf = ref_cka(ref_rbf(xn, sigma), ref_rbf(yn, sigma), debiased)
        assert cka.rbf_cka(x, y, sigma=sigma, debiased=debiased) == pytest.approx(want_rbf, abs=1e-10)
    with pytest.raises(ValueError, match="method"):
        cka.linear_cka(x, y, method="svd")
    with pytest.raises(ValueError, match="same images"):
        cka.linear_cka(x, y[:-1])


@pytest.mark.parametrize("debiased", [False, True])
def test_invariant_to_orthogonal_maps_and_isotropic_scaling_not_to_general_linear_maps(debiased):
    x, y = (t.double() for t in related())  # float64 maps: float32 products alone move CKA by ~1e-8
    base = cka.linear_cka(x, y, debiased)
    q_x = torch.linalg.qr(torch.randn(10, 10, generator=gen(1), dtype=torch.float64))[0]
    q_y = torch.linalg.qr(torch.randn(30, 30, generator=gen(2), dtype=torch.float64))[0]
    assert cka.linear_cka(x @ q_x, y, debiased) == pytest.approx(base, abs=1e-10)
    assert cka.linear_cka(x, 7.5 * y @ q_y, debiased) == pytest.approx(base, abs=1e-10)
    assert cka.linear_cka(0.01 * x @ q_x, 3 * y, debiased) == pytest.approx(base, abs=1e-10)
    rbf = cka.rbf_cka(x, y, debiased=debiased)  # the bandwidth follows the median distance: scale-free too
    assert cka.rbf_cka(4 * x @ q_x, y @ q_y, debiased=debiased) == pytest.approx(rbf, abs=1e-10)
    # an invertible but ill-conditioned map (a random matrix, columns scaled 1..100) reweights directions
    scales = torch.logspace(0, 2, 10, dtype=torch.float64)
    a = torch.randn(10, 10, generator=gen(3), dtype=torch.float64) * scales
    assert torch.linalg.matrix_rank(a) == 10
    assert cka.linear_cka(x, x @ a, debiased) < 0.6


def test_biased_cka_of_wide_independent_noise_is_high_debiased_near_zero():
    g = gen(4)
    a, b = torch.randn(64, 2048, generator=g), torch.randn(64, 2048, generator=g)
    assert cka.linear_cka(a, b) > 0.9  # D >> N: both Grams ~ D * identity, so they align
    assert abs(cka.linear_cka(a, b, debiased=True)) < 0.1
    assert cka.cka_matrix({"a": a}, {"b": b}, debiased=True).iloc[0, 0] == pytest.approx(
        cka.linear_cka(a, b, debiased=True), abs=1e-12)


def test_minibatch_cka_converges_to_the_full_batch_value():
    g = gen(5)
    x = torch.randn(512, 16, generator=g)
    y = torch.tanh(x @ torch.randn(16, 24, generator=g)) + 0.5 * torch.randn(512, 24, generator=g)
    full = cka.linear_cka(x, y, debiased=True)
    assert 0.5 < full < 0.6

    def worst_error(batch_size):  # over 3 random partitions of the rows
        return max(abs(cka.cka_matrix({"x": x}, {"y": y}, batch_size=batch_size, seed=s).iloc[0, 0] - full)
                   for s in range(3))
    errors = [worst_error(b) for b in (8, 64, 256)]  # measured: 0.025, 0.0033, 0.0008
    assert errors[0] > errors[1] > errors[2] and errors[2] < 2e-3 and errors[0] < 0.05
    assert worst_error(512) < 1e-12  # the whole set as one batch: the full-batch estimator itself
    assert cka.cka_matrix({"x": x}, {"y": y}).iloc[0, 0] == pytest.approx(full, abs=1e-12)
    # sums of HSIC terms, divided once: not the mean of per-batch CKAs (0.0046 off here)
    acc = cka.MinibatchCKA(["x"], ["y"])
    per_batch = []
    for rows in torch.arange(512).split(16):
        acc.update({"x": x[rows]}, {"y": y[rows]})
        per_batch.append(cka.linear_cka(x[rows], y[rows], debiased=True))
    sums = acc.xy[0, 0] / (acc.xx[0].sqrt() * acc.yy[0].sqrt())
    assert acc.compute().iloc[0, 0] == pytest.approx(sums.item(), abs=1e-15)
    assert abs(np.mean(per_batch) - acc.compute().iloc[0, 0]) > 2e-3


def test_no_epsilon_collapse_for_tiny_features():
    x, y = related()
    for debiased in (False, True):
        want = cka.linear_cka(x, y, debiased)
        assert cka.linear_cka(1e-6 * x, 1e-6 * y, debiased) == pytest.approx(want, rel=1e-9)
        small = cka.cka_matrix({"x": 1e-6 * x}, {"y": 1e-6 * y}, debiased, batch_size=50).iloc[0, 0]
        plain = cka.cka_matrix({"x": x}, {"y": y}, debiased, batch_size=50).iloc[0, 0]
        assert small == pytest.approx(plain, rel=1e-9) and plain > 0.7


def test_cka_matrix_layout_skipped_batches_and_constant_features():
    x, y = related(n=102)
    feats_a = {"z": y, "a": x, "m": x[:, :3]}
    feats_b = {"q": x, "b": y}
    table = cka.cka_matrix(feats_a, feats_b)
    assert table.index.tolist() == ["z", "a", "m"] and table.columns.tolist() == ["q", "b"]
    assert table.loc["a", "q"] == pytest.approx(1.0, abs=1e-12)
    assert table.loc["z", "q"] == pytest.approx(cka.linear_cka(y, x, debiased=True), abs=1e-12)
    assert table.attrs == {"images": 102, "skipped": 0}
    # 102 rows in batches of at most 25: 5 batches of 20-21 rows, none too small to use
    assert cka.cka_matrix(feats_a, feats_b, batch_size=25).attrs == {"images": 102, "skipped": 0}
    acc = cka.MinibatchCKA(["a"], ["b"])
    acc.update({"a": x[:3]}, {"b": y[:3]})  # < 4 images: no unbiased estimate
    assert acc.compute().attrs == {"images": 0, "skipped": 3}
    constant = cka.cka_matrix({"c": torch.ones(102, 4)}, feats_b)
    assert constant.isna().all().all()  # no epsilon: 0 / 0 stays NaN, never a fake 0
    with pytest.raises(ValueError, match="same images"):
        cka.cka_matrix({"a": x}, {"b": y[:50]})


def test_model_cka_on_two_copies_of_one_model():
    ds = data.load_dataset("synthetic", "train", n=128, size=8, channels=1, cache=False)
    net, twin = (models.create_for("test_mlp", ds.info, seed=0) for _ in range(2))
    other = models.create_for("test_mlp", ds.info, seed=1)
    layers = ["stem", "blocks.0", "blocks.1", "head"]
    loader = data.make_loader(ds, 32, train=False)
    table = cka.model_cka(net, twin, loader, layers, layers, progress=False)
    assert table.index.tolist() == layers and table.columns.tolist() == layers
    np.testing.assert_allclose(np.diag(table.to_numpy()), 1.0, atol=1e-10)
    assert table.attrs["images"] == 128
    assert table.loc["stem", "head"] < 0.99
    same_object = cka.model_cka(net, net, loader, layers, ["head"], progress=False)
    np.testing.assert_allclose(same_object.to_numpy(), table[["head"]].to_numpy(), atol=1e-12)
    assert not net._forward_hooks and all(not m._forward_hooks for m in net.modules())
    # streamed in one batch == cka_matrix on cached features (full batch); another seed is less alike
    feats = collect_many(net, ds, layers, progress=False)
    other_feats = collect_many(other, ds, layers, progress=False)
    one_batch = data.make_loader(ds, 128, train=False)
    streamed = cka.model_cka(net, other, one_batch, layers, layers, progress=False)
    np.testing.assert_allclose(streamed.to_numpy(), cka.cka_matrix(feats, other_feats).to_numpy(), atol=1e-6)
    assert streamed.loc["blocks.1", "blocks.1"] < 0.999


@pytest.mark.parametrize("debiased", [True, False])
def test_grams_on_the_device_equal_cka_on_cached_features(debiased):
    """04's CKA from each layer's centred Gram (no (N, D) features kept) equals cka_matrix on cached
    features (issue 26), for two models of another seed and for a model with itself."""
    ds = data.load_dataset("synthetic", "train", n=96, size=8, channels=1, cache=False)
    net, other = (models.create_for("test_mlp", ds.info, seed=s) for s in (0, 1))
    layers = ["stem", "blocks.0", "blocks.1", "head"]
    grams, other_grams = (cka.centred_grams(n, ds, layers, debiased=debiased, batch_size=40)
                          for n in (net, other))
    assert all(g.shape == (96, 96) and g.dtype == torch.float64 for g in grams.values())
    feats, other_feats = (collect_many(n, ds, layers, progress=False) for n in (net, other))
    np.testing.assert_allclose(cka.gram_matrix(grams, other_grams).to_numpy(),
                               cka.cka_matrix(feats, other_feats, debiased=debiased).to_numpy(), atol=1e-9)
    mine = cka.gram_matrix(grams, grams)
    np.testing.assert_allclose(np.diag(mine.to_numpy()), 1.0, atol=1e-12)
    assert mine.index.tolist() == layers and mine.attrs["images"] == 96
    assert not any(m._forward_hooks for m in net.modules())


def test_grams_take_one_pass_per_group_of_layers_that_fits_and_equal_a_layer_at_a_time():
    """Layers whose features fit in max_bytes share a forward pass; the Grams do not depend on grouping."""
    ds = data.load_dataset("synthetic", "train", n=50, size=8, channels=1, cache=False)
    net = models.create_for("test_mlp", ds.info, seed=0)
    layers = ["stem", "blocks.0", "blocks.1", "head"]
    per_layer = {layer: np.prod(collect_many(net, ds.head(1), [layer], progress=False)[layer].shape) * 4 * 50
                 for layer in layers}
    passes = []
    net.register_forward_pre_hook(lambda *_: passes.append(1))
    budget = per_layer["stem"] + per_layer["blocks.0"]
    assert cka.feature_groups(net, ds, layers, budget) == [["stem", "blocks.0"], ["blocks.1", "head"]]
    assert cka.feature_groups(net, ds, layers, 0) == [[layer] for layer in layers]
    passes.clear()
    together = cka.centred_grams(net, ds, layers, batch_size=20)  # one image to size the layers, 3 batches
    assert len(passes) == 1 + 3
    passes.clear()
    apart = cka.centred_grams(net, ds, layers, batch_size=20, max_bytes=0)
    assert len(passes) == 1 + 4 * 3  # a pass over the 3 batches per layer
    for layer in layers:
        torch.testing.assert_close(together[layer], apart[layer], rtol=0, atol=0)


def _best(rows: list[tuple]) -> pd.DataFrame:
    cols = ["kind", "model_a", "model_b", "mean_best", "mean_best_b", "peak", "peak_layer_a", "peak_layer_b"]
    return pd.DataFrame([(*r, 0.9, "x", "y") for r in rows], columns=cols)


def test_gap_closed_compares_cross_floor_and_ceiling_over_the_same_layers():
    """a is seed-stable (its twin: 0.9), b is not (0.5); a's layers are found in b (0.8), b's less in a (0.4);
    the floor is 0.2 both ways. The old formula (cross and floor from a's layers, the ceiling from both)
    gave (0.8 - 0.2) / (0.7 - 0.2) = 1.2: more than the seed twins. Both directions: cross 0.6, ceiling
    0.7, floor 0.2 -> 0.8; from a alone (0.8 - 0.2) / (0.9 - 0.2), from b alone (0.4 - 0.2) / (0.5 - 0.2)."""
    best = _best([("ceiling", "a", "a", 0.9, 0.9), ("ceiling", "b", "b", 0.5, 0.5),
                  ("cross", "a", "b", 0.8, 0.4), ("floor", "a", "b", 0.2, 0.1),
                  ("floor", "b", "a", 0.2, 0.1)])
    s = cka.pair_summary(best, {"a": "mlp", "b": "cnn"}).iloc[0]
    assert (s.cross, s.ceiling, s.floor) == pytest.approx((0.6, 0.7, 0.2))
    assert s.gap_closed == pytest.approx(0.8) and s.gap_closed <= 1
    assert s.gap_closed_a == pytest.approx(0.6 / 0.7) and s.gap_closed_b == pytest.approx(0.2 / 0.3)
    assert s.pair == "mlp - cnn"
    with pytest.raises(KeyError, match="floor"):
        cka.pair_summary(best[best.model_a != "b"], {"a": "mlp", "b": "cnn"})  # b's floor is needed


def test_best_match_in_both_directions():
    """mean_best: each layer of a's best match in b, averaged; mean_best_b: each layer of b's best in a."""
    m = pd.DataFrame([[0.9, 0.1, 0.2], [0.3, 0.4, 0.1]], index=["a1", "a2"], columns=["b1", "b2", "b3"])
    r = cka.best_match(cka.tidy(m, "cross", "a", "b")).iloc[0]
    assert r.mean_best == pytest.approx((0.9 + 0.4) / 2)
    assert r.mean_best_b == pytest.approx((0.9 + 0.4 + 0.2) / 3)
    assert (r.peak, r.peak_layer_a, r.peak_layer_b) == (0.9, "a1", "b1")


def test_pairs_table_has_every_kind_in_order_with_known_values():
    """Two models of 2 and 3 layers: each seed twin (s1) is its s0 rotated and scaled (CKA 1 on the diagonal),
    b at initialisation is b rotated (so each floor of a against b equals the cross value), and every entry is
    linear_cka of the two features."""
    g = gen(3)
    feats = {"a": {f"a{i}": torch.randn(40, 6, generator=g) for i in range(2)},
             "b": {f"b{i}": torch.randn(40, 5, generator=g) for i in range(3)}}
    q6, q5 = (torch.linalg.qr(torch.randn(d, d, generator=g)).Q for d in (6, 5))
    rot = {"a": q6, "b": q5}
    tagged = {(m, "s0"): f for m, f in feats.items()}
    tagged |= {(m, "s1"): {k: 2 * v @ rot[m] for k, v in f.items()} for m, f in feats.items()}
    tagged |= {(m, "init"): {k: v @ rot[m] for k, v in f.items()} for m, f in feats.items()}
    grams = {key: {k: cka.hsic_gram(v, debiased=True) for k, v in f.items()} for key, f in tagged.items()}
    table = cka.pairs_table(grams, ["a", "b"])
    assert table.columns.tolist() == ["kind", "model_a", "model_b", "layer_a", "layer_b", "cka"]
    blocks = table.groupby(["kind", "model_a", "model_b"], sort=False).size()
    assert list(blocks.items()) == [(("within", "a", "a"), 4), (("within", "b", "b"), 9),
                                    (("ceiling", "a", "a"), 4), (("ceiling", "b", "b"), 9),
                                    (("cross", "a", "b"), 6), (("floor", "a", "b"), 6),
                                    (("floor", "b", "a"), 6)]
    by = table.set_index(["kind", "model_a", "model_b", "layer_a", "layer_b"]).cka
    for m, layers in (("a", ["a0", "a1"]), ("b", ["b0", "b1", "b2"])):
        for layer in layers:
            assert by["within", m, m, layer, layer] == pytest.approx(1.0)
            assert by["ceiling", m, m, layer, layer] == pytest.approx(1.0)
    want = cka.linear_cka(feats["a"]["a1"], feats["b"]["b2"], debiased=True)
    assert by["cross", "a", "b", "a1", "b2"] == pytest.approx(want, abs=1e-12)
    assert by["floor", "a", "b", "a1", "b2"] == pytest.approx(want, abs=1e-6)  # b at init: b rotated
    assert by["floor", "b", "a", "b2", "a1"] == pytest.approx(want, abs=1e-6)
    assert cka.pair_summary(cka.best_match(table), {"a": "mlp", "b": "cnn"}).pair.tolist() == ["mlp - cnn"]
