"""utils.dictionary: an SAE recovers a known sparse dictionary; unit-norm decoder columns; L0, FVE and dead
fraction against hand-computed cases; resampling revives a planted dead feature; splicing an exact
(identity) SAE keeps accuracy; activation caching; logit weights."""


import pytest
import torch
import torch.nn.functional as F

from utils.experiments import dictionary


def sparse_data(n: int = 4000, d: int = 32, m: int = 48, k: int = 3, seed: int = 0):
    """n vectors, each a sum of k of m random unit directions (D (d, m)) with coefficients in [0.5, 1.5]."""
    g = torch.Generator().manual_seed(seed)
    directions = F.normalize(torch.randn(d, m, generator=g), dim=0)
    idx = torch.rand(n, m, generator=g).argsort(1)[:, :k]
    coef = torch.zeros(n, m).scatter(1, idx, 0.5 + torch.rand(n, k, generator=g))
    return coef @ directions.T, directions


def best_cosine(true: torch.Tensor, sae: dictionary.SparseAutoencoder) -> float:
    """Mean over true directions of the best cosine with any learned decoder column."""
    return (true.T @ F.normalize(sae.W_dec.detach(), dim=0)).max(1).values.mean().item()


@pytest.fixture(scope="module")
def recovered():
    x, true = sparse_data()
    cfg = dictionary.SAEConfig(expansion=4, l1_coef=0.1, lr=3e-3, lr_step=100, epochs=25, batch_size=64,
                               resample_every=2, progress=False)
    sae, history = dictionary.fit_sae(x, cfg)
    return x, true, sae, history


def test_relu_sae_recovers_a_known_sparse_dictionary(recovered):
    x, true, sae, history = recovered
    assert best_cosine(true, sae) >= 0.9
    metrics = dictionary.sae_metrics(sae, x)
    assert metrics["features"] == 128 and metrics["l0"] <= 8  # 3 true features per vector; 128 learned
    assert metrics["fve"] > 0.5  # L1 shrinks coefficients, so not 1
    assert list(history.epoch) == list(range(1, 26)) and history.mse.iloc[-1] < history.mse.iloc[0]


def test_decoder_columns_stay_unit_norm(recovered):
    norms = recovered[2].W_dec.detach().norm(dim=0)
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-5, rtol=0)


def test_topk_sae_recovers_the_dictionary_with_exactly_k_active():
    x, true = sparse_data(seed=1)
    cfg = dictionary.SAEConfig(expansion=4, activation="topk", k=3, lr=3e-3, epochs=15, batch_size=64,
                               resample_every=2, progress=False)
    sae, _ = dictionary.fit_sae(x, cfg)
    h = dictionary.encode(sae, x)
    assert ((h > 0).sum(1) <= 3).all() and dictionary.l0(h) > 2.5
    assert best_cosine(true, sae) >= 0.9


def test_original_preset():
    p = dictionary.ORIGINAL
    assert (p.expansion, p.activation, p.l1_coef, p.lr, p.lr_step, p.lr_gamma, p.epochs, p.batch_size) == (
        3.0, "relu", 3e-4, 1e-3, 10, 0.5, 100, 32)
    with pytest.raises(ValueError, match="activation"):
        dictionary.SAEConfig(activation="sigmoid")


def test_l0_fve_and_dead_fraction_by_hand():
    x = torch.tensor([[0.0, 0.0], [2.0, 2.0]])  # mean (1, 1): total squared deviation 4
    x_hat = torch.tensor([[0.0, 1.0], [2.0, 2.0]])  # squared residual 1
    assert dictionary.fve(x, x_hat) == pytest.approx(0.75)
    assert dictionary.fve(x, x.mean(0).expand_as(x)) == pytest.approx(0.0)
    assert dictionary.fve(x, x_hat + 1) == pytest.approx(1 - 7 / 4)  # residuals -1,-2,-1,-1
    h = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.5]])
    assert dictionary.l0(h) == pytest.approx(4 / 3)
    assert dictionary.dead_fraction(h) == pytest.approx(1 / 3)


def test_resampling_revives_a_planted_dead_feature():
    x, _ = sparse_data(n=2000, d=16, m=24)
    sae = dictionary.init_sae(x, dictionary.SAEConfig(expansion=2))
    with torch.no_grad():
        sae.b_enc[5] = -1e4  # planted: never fires
    assert (dictionary.encode(sae, x)[:, 5] == 0).all()
    dead = torch.zeros(32, dtype=torch.bool)
    dead[5] = True
    w_other = sae.W_dec[:, 6].detach().clone()
    assert dictionary.resample_dead(sae, x, dead, generator=torch.Generator().manual_seed(0)) == 1
    fires = (dictionary.encode(sae, x)[:, 5] > 0).float().mean().item()
    assert fires > 0.05  # alive again: it points at a drawn (centred) input vector
    assert sae.W_dec[:, 5].norm().item() == pytest.approx(1.0, abs=1e-6) and sae.b_enc[5].item() == 0.0
    torch.testing.assert_close(sae.W_dec[:, 6].detach(), w_other)  # live features untouched


def test_fit_resamples_dead_features_and_resets_adam():
    x, _ = sparse_data(n=1000, d=16, m=24)
    sae = dictionary.init_sae(x, dictionary.SAEConfig(expansion=2))
    with torch.no_grad():
        sae.b_enc[:4] = -1e4
    cfg = dictionary.SAEConfig(expansion=2, l1_coef=0.01, epochs=2, batch_size=100, resample_every=1,
                               progress=False)
    sae, history = dictionary.fit_sae(x, cfg, sae=sae)
    assert history.resampled.iloc[0] >= 4  # the four planted ones (and any others dead in epoch 1)
    assert (dictionary.encode(sae, x)[:, :4] > 0).any(0).all()


def identity_sae(d: int) -> dictionary.SparseAutoencoder:
    """x_hat = relu(x) - relu(-x) = x exactly: 2d features (+e_i and -e_i), no biases, scale 1."""
    sae = dictionary.SparseAutoencoder(d, 2 * d)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye]))
        sae.W_dec.copy_(torch.cat([eye, -eye], 1))
    return sae.eval()


def test_splice_keeps_accuracy_with_an_exact_sae_and_loses_it_with_a_dead_one(tiny):
    net, ds = tiny
    d = net.head.in_features
    exact = dictionary.splice_accuracy(net, "head:input", identity_sae(d), ds)
    assert exact["top1_spliced"] == exact["top1"] and exact["accuracy_kept"] == pytest.approx(1.0)
    dead = identity_sae(d)
    with torch.no_grad():
        dead.b_enc.fill_(-1e4)  # x_hat = b_dec = 0: the head sees zeros and predicts argmax(bias) always
    res = dictionary.splice_accuracy(net, "head:input", dead, ds)
    expected = (ds.labels == net.head.bias.argmax()).float().mean().item()
    assert res["top1_spliced"] == pytest.approx(expected)
    assert dictionary.sae_metrics(identity_sae(3), torch.randn(50, 3))["fve"] == pytest.approx(1.0)


def test_logit_weights_map_decoder_directions_through_the_head():
    sae = identity_sae(3)
    head = torch.nn.Linear(3, 2)
    w = dictionary.logit_weights(sae, head)
    torch.testing.assert_close(w, torch.cat([head.weight, -head.weight], 1).detach())


def notebook_sae_settings() -> dict:
    """09's per-profile SAE settings, read from its parameters cell (the values the notebook runs with)."""
    import ast
    import json
    from pathlib import Path

    cells = json.loads((Path(__file__).parents[2] / "09_dictionary_learning.ipynb").read_text())["cells"]
    source = "".join(next(c for c in cells if "parameters" in c["metadata"].get("tags", []))["source"])
    assign = next(n for n in ast.parse(source).body if isinstance(n, ast.Assign) and n.targets[0].id == "sae")
    return ast.literal_eval(assign.value)


# planted data per profile: the profile's number of fitted vectors, a width its SAEs see (smoke's test
# models are 16-32 wide; quick's are 96-2048 wide: 128 keeps the test fast), and sparsity = the rule's k
PLANTED = {"smoke": (512, 32), "quick": (5000, 128), "full": (2000, 32)}


@pytest.mark.parametrize("profile", list(PLANTED))
def test_each_profiles_sae_recovers_a_planted_overcomplete_dictionary(profile):
    from dataclasses import replace

    settings = notebook_sae_settings()[profile]
    cfg = replace(dictionary.ORIGINAL, **settings, progress=False)
    n, d = PLANTED[profile]
    k = dictionary.k_for(cfg, d)
    x, true = sparse_data(n=n, d=d, m=2 * d, k=k)  # twice as many true directions as dimensions
    sae, _ = dictionary.fit_sae(x, cfg)
    assert sae.k == k and dictionary.sae_metrics(sae, x)["l0"] == pytest.approx(k)
    assert best_cosine(true, sae) > 0.9


def test_k_per_dim_matches_sparsity_across_widths():
    cfg = dictionary.SAEConfig(activation="topk", k_per_dim=1 / 16, expansion=3)
    for d in (96, 256, 2048):
        sae = dictionary.init_sae(torch.randn(40, d), cfg)
        assert sae.k == d // 16 and sae.W_dec.shape[1] == 3 * d  # the same 1/48 of the features active
    assert dictionary.k_for(dictionary.SAEConfig(k=7), 1000) == 7  # without k_per_dim: k as given
