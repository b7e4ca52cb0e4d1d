"""utils.dictionary: an SAE recovers a known sparse dictionary; unit-norm decoder columns; L0, FVE and dead
fraction against hand-computed cases; resampling revives a planted dead feature; splicing an exact
(identity) SAE keeps accuracy and cross-entropy; the notebook's TopK reaches L0 = k where the ReLU'd one
cannot; activation caching; logit weights."""


from dataclasses import replace

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


def fitted_linear(ds) -> torch.nn.Module:
    """flatten -> head, fitted to ds (100 Adam steps): clean cross-entropy well below the bias alone's."""
    torch.manual_seed(0)
    net = torch.nn.Sequential()
    net.add_module("flatten", torch.nn.Flatten())
    net.add_module("head", torch.nn.Linear(ds.images[0].numel(), ds.info.num_classes))
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(net(ds.as_float()), ds.labels).backward()
        opt.step()
    return net.eval()


def test_splice_cross_entropy_is_unchanged_by_an_exact_sae_and_rises_with_a_zero_splice(tiny):
    ds = tiny[1]
    net = fitted_linear(ds)
    d = net.head.in_features
    exact = dictionary.splice_accuracy(net, "head:input", identity_sae(d), ds)
    assert exact["ce_spliced"] == pytest.approx(exact["ce"], abs=1e-6)
    assert exact["ce_increase"] == pytest.approx(0.0, abs=1e-6)
    assert exact["ce_recovered"] == pytest.approx(1.0, abs=1e-5)  # all of the zero-ablation's increase
    zero = identity_sae(d)
    with torch.no_grad():
        zero.b_enc.fill_(-1e4)  # x_hat = b_dec = 0: the splice is the zero-ablation
    res = dictionary.splice_accuracy(net, "head:input", zero, ds)
    reference = dictionary.splice_reference(net, "head:input", ds)  # what every SAE of this net shares
    assert dictionary.splice_accuracy(net, "head:input", zero, ds, reference=reference) == res
    with torch.no_grad():  # by hand: the head sees zeros, so every image gets the logits = the head's bias
        expected = F.cross_entropy(net.head.bias.expand(len(ds), -1), ds.labels).item()
    assert res["ce_spliced"] == pytest.approx(expected, rel=1e-5)
    assert res["ce_zero"] == pytest.approx(expected, rel=1e-5)
    assert res["ce_increase"] == pytest.approx(expected - res["ce"]) and res["ce_increase"] > 0
    assert res["ce_recovered"] == pytest.approx(0.0, abs=1e-6)
    assert exact["ce"] == res["ce"]  # the clean network is the same in both


def negative_sae(activation: str, k: int = 4) -> tuple[dictionary.SparseAutoencoder, torch.Tensor]:
    """An SAE whose pre-activations are negative on average (encoder bias -3, unit directions, small data):
    most of each vector's top-k pre-activations are below 0."""
    g = torch.Generator().manual_seed(0)
    x = 0.3 * torch.randn(200, 8, generator=g)
    sae = dictionary.SparseAutoencoder(8, 24, activation, k, generator=g)
    with torch.no_grad():
        sae.b_enc.fill_(-3.0)
    return sae.eval(), x


def test_the_notebooks_topk_reaches_l0_k_where_the_relu_topk_falls_short():
    relu, x = negative_sae("topk")
    assert dictionary.l0(dictionary.encode(relu, x)) < 1  # most of the top-4 are cut by the ReLU
    for profile, settings in notebook_sae_settings().items():  # what 09 runs with, in every profile
        sae, x = negative_sae(settings["activation"])
        h = dictionary.encode(sae, x)
        assert ((h != 0).sum(1) == 4).all(), profile  # exactly k active on every vector: L0 reached = k
        m = dictionary.sae_metrics(sae, x)
        assert m["k"] == 4 and m["l0"] == 4 and m["active_share"] == pytest.approx(4 / 24)
        assert m["negative_share"] > 0.9  # what a ReLU would have cut
        pre = torch.nn.functional.linear(x - sae.b_dec, sae.W_enc, sae.b_enc)
        torch.testing.assert_close(h.sum(1), pre.topk(4, dim=1).values.sum(1))  # the 4 largest, as they are


def test_signed_codes_count_as_active_in_l0_dead_fraction_and_metrics():
    h = torch.tensor([[-1.0, 0.0, 2.0], [0.0, 0.0, -0.5], [3.0, 0.0, 0.0]])
    assert dictionary.l0(h) == pytest.approx(4 / 3) and dictionary.dead_fraction(h) == pytest.approx(1 / 3)
    assert dictionary.negative_share(h) == pytest.approx(2 / 4)
    assert dictionary.negative_share(torch.zeros(2, 3)) != dictionary.negative_share(torch.zeros(2, 3))  # NaN
    m = dictionary.sae_metrics(identity_sae(3), torch.randn(50, 3))
    assert m["alive_fraction"] == pytest.approx(1 - m["dead_fraction"]) and m["negative_share"] == 0.0
    assert m["k"] != m["k"]  # NaN: a ReLU SAE has no k


def test_logit_weights_map_decoder_directions_through_the_head():
    sae = identity_sae(3)
    head = torch.nn.Linear(3, 2)
    w = dictionary.logit_weights(sae, head)
    torch.testing.assert_close(w, torch.cat([head.weight, -head.weight], 1).detach())


def notebook_sae_settings() -> dict:
    """09's SAE settings per profile (its typed config: the values the notebook runs with)."""
    return {p: dictionary.config(p).sae for p in ("smoke", "quick", "full", "rehearsal")}


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
    metrics = dictionary.sae_metrics(sae, x)
    assert sae.k == k and metrics["l0"] == pytest.approx(k) and metrics["alive_fraction"] > 0.5
    assert best_cosine(true, sae) > 0.9


def test_k_per_dim_matches_sparsity_across_widths():
    cfg = dictionary.SAEConfig(activation="topk", k_per_dim=1 / 16, expansion=3)
    for d in (96, 256, 2048):
        sae = dictionary.init_sae(torch.randn(40, d), cfg)
        assert sae.k == d // 16 and sae.W_dec.shape[1] == 3 * d  # the same 1/48 of the features active
    assert dictionary.k_for(dictionary.SAEConfig(k=7), 1000) == 7  # without k_per_dim: k as given


def test_the_sweep_findings_quote_the_l0_reached_against_k():
    import pandas as pd

    from utils import findings

    sweep = pd.DataFrame({"model": ["m", "m", "m"], "setting": ["main", "sweep1", "sweep2"],
                          "activation": ["topk_signed", "topk_signed", "topk"], "k": [8, 32, 8],
                          "l0": [8.0, 32.0, 2.5], "fve": [0.5, 0.8, 0.4], "ce_increase": [0.2, 0.05, 0.3]})
    said = findings.features.sweep_sentences(sweep, ["m"])
    assert said == ["With the ReLU after the top-k (Gao et al.'s TopK) at the same k, the SAEs reach L0 "
                    "m 2.5 of 8.",
                    "Over the sparsity sweep, from the sparsest to the densest SAE: m L0 8 -> 32, FVE "
                    "0.500 -> 0.800, CE increase 0.200 -> 0.050."]


# ---------------------------------------------------------------- notebook 09's tables


def test_untrained_copies_are_seeded_the_same_whatever_was_drawn_before(tiny):
    from utils import models

    net = tiny[0]
    networks = dictionary.with_untrained({"test_mlp": net}, seed=3, device="cpu")
    assert list(networks) == [("test_mlp", "trained"), ("test_mlp", "untrained")]
    assert networks["test_mlp", "trained"] is net and not networks["test_mlp", "untrained"].training
    torch.rand(100)  # another draw in between changes nothing: the seed is set right before each copy
    torch.manual_seed(3)
    expected = models.create_model("test_mlp", **net.model_config).state_dict()
    copy = networks["test_mlp", "untrained"].state_dict()
    assert all(torch.equal(copy[k], v) for k, v in expected.items())
    assert not torch.equal(copy["head.weight"], net.state_dict()["head.weight"])


def test_network_activations_cache_each_network_under_its_tag(tiny, tmp_path, monkeypatch):
    from utils import hooks

    monkeypatch.setenv("MLPZOOM_CHECKPOINTS", str(tmp_path))
    net, ds = tiny
    networks = {("m", "trained"): net, ("m", "untrained"): fitted_linear(ds)}
    layers = {"m": "head:input"}
    fit, evals = dictionary.network_activations(networks, layers, ds, ds.head(40), 24, 16, "smoke", "d", 7,
                                                batch_size=10)
    assert list(fit) == list(evals) == list(networks)
    d = net.head.in_features
    assert fit["m", "trained"].shape == (24, d) and evals["m", "trained"].shape == (16, d)
    assert fit["m", "untrained"].shape == (24, ds.images[0].numel())  # the flatten -> head network
    direct = hooks.collect_activations(net, ds, "head:input", n=24, batch_size=10)
    torch.testing.assert_close(fit["m", "trained"], direct.half().float(), atol=0, rtol=0)  # float16 cache
    cached = {p.name for p in (tmp_path / "smoke" / "d" / "activations").iterdir()}
    assert cached == {"m__head-input__test24.pt", "m__head-input__test16.pt",
                      "m@random7__head-input__test24.pt", "m@random7__head-input__test16.pt"}
    table = dictionary.activation_table(fit, evals, layers)
    assert table.to_dict("list") == {"model": ["m", "m"], "network": ["trained", "untrained"],
                                     "layer": ["head:input"] * 2, "fit_vectors": [24, 24],
                                     "eval_vectors": [16, 16], "dims": [d, ds.images[0].numel()]}


def test_fit_saes_runs_the_main_seeds_the_untrained_copies_then_the_sweep(capsys):
    x, _ = sparse_data(n=64, d=8, m=12, k=2)
    y, _ = sparse_data(n=64, d=8, m=12, k=2, seed=1)
    cfg = dictionary.SAEConfig(expansion=2, activation="topk_signed", k_per_dim=0.25, epochs=2, batch_size=16,
                               progress=False)
    saes, sweep, history = dictionary.fit_saes({("a", "trained"): x, ("a", "untrained"): y}, cfg, ["a"],
                                               [4, 5], [{"k_per_dim": 0.5}])
    assert list(saes) == [("a", "trained", 4), ("a", "trained", 5), ("a", "untrained", 4)]
    assert list(sweep) == [("a", "sweep1")] and sweep["a", "sweep1"][0].k_per_dim == 0.5
    assert sweep["a", "sweep1"][1].k == 4 and saes["a", "trained", 4].k == 2  # k = k_per_dim * 8
    by_hand, _ = dictionary.fit_sae(y, replace(cfg, seed=4))
    torch.testing.assert_close(saes["a", "untrained", 4].W_dec, by_hand.W_dec)
    assert len(history) == 4 * 2 and history.setting.tolist() == ["main"] * 6 + ["sweep1"] * 2
    assert history.seed.tolist() == [4, 4, 5, 5, 4, 4, 4, 4]
    assert capsys.readouterr().out.splitlines() == [
        "SAE on a (trained), seed 4, main: topk_signed, k/D 0.25",
        "SAE on a (trained), seed 5, main: topk_signed, k/D 0.25",
        "SAE on a (untrained), seed 4, main: topk_signed, k/D 0.25",
        "SAE on a (trained), seed 4, sweep1: topk_signed, k/D 0.5"]


def test_metrics_table_has_a_row_per_sae_and_splits_into_main_and_sweep(tiny):
    from utils import hooks

    net, ds = tiny
    d = net.head.in_features
    acts = hooks.collect_activations(net, ds, "head:input")
    dead = identity_sae(d)
    with torch.no_grad():
        dead.b_enc.fill_(-1e4)  # x_hat = 0: the head predicts argmax(bias) on every image
    networks = {("test_mlp", "trained"): net, ("test_mlp", "untrained"): net}
    saes = {("test_mlp", "trained", 0): identity_sae(d), ("test_mlp", "untrained", 0): identity_sae(d)}
    sweep = {("test_mlp", "sweep1"): (dictionary.SAEConfig(k_per_dim=0.5), dead)}
    every = dictionary.metrics_table(networks, {"test_mlp": "head:input"}, saes, sweep, dictionary.ORIGINAL,
                                     {key: acts for key in networks}, ds, 0, batch_size=16)
    assert every[["network", "seed", "setting"]].values.tolist() == [
        ["trained", 0, "main"], ["untrained", 0, "main"], ["trained", 0, "sweep1"]]
    assert every.k_per_dim.isna().tolist() == [True, True, False]  # ORIGINAL's k_per_dim is None
    assert every.k_per_dim[2] == 0.5
    assert (every.family == "mlp").all() and (every.dims == d).all() and (every.features == 2 * d).all()
    assert every.fve[0] == pytest.approx(1.0) and every.accuracy_kept[0] == pytest.approx(1.0)
    expected = (ds.labels == net.head.bias.argmax()).float().mean().item()
    assert every.top1_spliced[2] == pytest.approx(expected) and every.alive_fraction[2] == 0.0
    metrics, sweep_table = dictionary.split_metrics(every, 0)
    assert metrics.setting.tolist() == ["main", "main"] and metrics.index.tolist() == [0, 1]
    assert sweep_table.setting.tolist() == ["main", "sweep1"] and sweep_table.index.tolist() == [0, 2]
    assert set(dictionary.SHOWN) <= set(every.columns)


def test_logit_weight_table_lists_each_shown_feature_per_class(capsys):
    import pandas as pd

    net = torch.nn.Sequential()
    net.add_module("head", torch.nn.Linear(3, 2))
    shown = {"a": pd.DataFrame({"feature": [4, 0]}), "b": pd.DataFrame({"feature": [1]})}
    table = dictionary.logit_weight_table({"a": net, "b": net}, {"a": "head:input", "b": "head"},
                                          {"a": identity_sae(3), "b": identity_sae(3)}, shown, ["x", "y"])
    w = net.head.weight.detach()  # feature 4 is -e_1 (identity_sae: +e_i, then -e_i)
    assert table.to_dict("list") == {"model": ["a"] * 4, "feature": [4, 4, 0, 0],
                                     "class": ["x", "y", "x", "y"],
                                     "weight": [-w[0, 1].item(), -w[1, 1].item(), w[0, 0].item(),
                                                w[1, 0].item()]}
    assert capsys.readouterr().out == "b: logit weights need the SAE at the head's input; layer is head\n"
