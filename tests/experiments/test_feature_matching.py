"""utils.feature_matching: match_features on permuted copies, independent noise and constant features;
class selectivity against a hand-computed case; the Prediction 2 table."""

import math

import pandas as pd
import pytest
import torch

from utils.experiments import feature_matching


def test_match_features_permuted_copy_noise_and_constant_features():
    g = torch.Generator().manual_seed(0)
    a = torch.relu(torch.randn(5000, 20, generator=g))
    perm = torch.randperm(20, generator=g)
    m = feature_matching.match_features(a, a[:, perm] * 3 + 1)  # Pearson r ignores scale and offset
    torch.testing.assert_close(m.best, torch.ones(20), atol=1e-5, rtol=0)
    assert (perm[m.index] == torch.arange(20)).all()
    s = m.summary()
    assert s["mean"] == pytest.approx(1.0, abs=1e-5) and s["share_above_0.8"] == 1.0
    noise = feature_matching.match_features(a, torch.randn(5000, 30, generator=g)).summary()
    assert abs(noise["mean"]) < 0.06 and noise["share_above_0.5"] == 0.0
    a_dead, b_dead = a.clone(), a.clone()
    a_dead[:, 3] = 0.0  # a dead feature of A: no correlation, left out of the summary
    b_dead[:, 7] = 2.0  # a constant feature of B: never the best match
    m = feature_matching.match_features(a_dead, b_dead)
    assert math.isnan(m.best[3]) and m.index[3] == -1 and (m.index != 7).all()
    s = m.summary()
    assert s["constant_a"] == 1 and s["constant_b"] == 1 and not any(math.isnan(s[k]) for k in s)
    all_dead = feature_matching.match_features(torch.zeros(10, 4), a[:10]).summary()
    assert all_dead["constant_a"] == 4 and math.isnan(all_dead["mean"])
    with pytest.raises(ValueError, match="same images"):
        feature_matching.match_features(a, a[:10])


def test_class_selectivity_by_hand():
    labels = torch.tensor([0, 0, 1, 1])
    h = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    t = feature_matching.class_selectivity(h, labels, 2)
    # feature 0 fires on both class-0 images and no class-1 image: sensitivity 1, specificity 1
    assert t.loc[0, ["class_index", "sensitivity", "specificity", "youden"]].tolist() == [0, 1.0, 1.0, 1.0]
    # feature 1: class 1 (sens 1, spec 0.5) beats class 0 (sens 0.5, spec 0)
    assert t.loc[1, ["class_index", "sensitivity", "specificity"]].tolist() == [1, 1.0, 0.5]
    assert t.density.tolist() == [0.5, 0.75]
    signed = feature_matching.class_selectivity(h * torch.tensor([-1.0, 1.0]), labels, 2)  # signed codes
    pd.testing.assert_frame_equal(signed, t)  # a negative code is active too: it fires


def test_compare_dictionaries_and_prediction2():
    g = torch.Generator().manual_seed(0)
    base = torch.relu(torch.randn(800, 6, generator=g))
    codes = {"a": base, "b": base[:, [1, 0, 2, 3, 4, 5]]}  # identical features: cross = ceiling
    seeds = {"a": base.flip(1), "b": base}
    random = {k: torch.relu(torch.randn(800, 6, generator=g)) for k in codes}
    table, per_feature = feature_matching.compare_dictionaries(codes, seeds, random)
    assert len(table) == 6 and set(table.kind) == {"cross", "ceiling", "floor"}
    assert len(per_feature) == 6 * 6
    expected_l0 = (base > 0).sum(1).double().mean().item()  # ~3 of 6 (half of a ReLU'd Gaussian)
    assert table.l0_source.tolist() == pytest.approx([expected_l0] * 6)
    sparser = {"a": base * (base > 1), "b": codes["b"]}
    l0 = feature_matching.compare_dictionaries(sparser, seeds, random)[0].set_index(["source", "kind"])
    assert l0.loc[("a", "cross"), "l0_source"] == pytest.approx((base > 1).sum(1).double().mean().item())
    assert l0.loc[("b", "cross"), "l0_target"] == l0.loc[("a", "cross"), "l0_source"]
    assert table.share_source.tolist() == pytest.approx([expected_l0 / 6] * 6)  # L0 / features
    verdict = feature_matching.prediction2(table)
    assert verdict.pair.tolist() == ["a - b"] and verdict.l0[0] == pytest.approx(expected_l0)
    assert verdict.share_min[0] == verdict.share_max[0] == pytest.approx(expected_l0 / 6)
    wider = {"a": torch.cat([base, torch.zeros(800, 6)], 1), "b": codes["b"]}  # 12 features, 6 of them dead
    shares = feature_matching.prediction2(feature_matching.compare_dictionaries(wider, seeds, random)[0])
    assert shares.share_min[0] == pytest.approx(expected_l0 / 12) and shares.share_max[0] == pytest.approx(
        expected_l0 / 6)
    assert verdict.gap_closed[0] == pytest.approx(1.0, abs=1e-5) and bool(verdict.holds[0])
    toy = pd.DataFrame({"source": ["x", "y"] * 3, "target": ["y", "x"] * 3,
                        "kind": ["cross"] * 2 + ["ceiling"] * 2 + ["floor"] * 2,
                        "mean": [0.4, 0.5, 0.9, 0.8, 0.2, 0.3]})
    v = feature_matching.prediction2(toy, threshold=0.5)
    assert v.cross[0] == pytest.approx(0.45) and v.gap_closed[0] == pytest.approx(0.2 / 0.6)
    assert not v.holds[0]
