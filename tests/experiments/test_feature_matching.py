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


# ---------------------------------------------------------------- notebook 09's tables


def test_shown_features_are_the_most_selective_live_ones_by_hand():
    labels = torch.tensor([0, 0, 1, 1])
    # m: feature 0 is class 0's exactly (J 1), feature 1 fires on 3 of 4 (J 0.5), feature 2 is dead
    m = torch.tensor([[1.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    n = torch.tensor([[0.0], [0.0], [3.0], [0.0]])  # class 1 on one of its two images: J 0.5
    codes = {"m": m, "n": n}
    selectivity, shown, table = feature_matching.shown_features(codes, labels, ["cat", "dog"], 2, 2)
    assert selectivity.model.tolist() == ["m", "m", "m", "n"] and selectivity.feature.tolist() == [0, 1, 2, 0]
    assert selectivity["class"].tolist()[:2] == ["cat", "dog"] and selectivity["class"].tolist()[3] == "dog"
    assert shown["m"].feature.tolist() == [0, 1] and shown["n"].feature.tolist() == [0]  # the dead one never
    assert table.columns.tolist() == [*feature_matching.SHOWN_COLUMNS, "chosen_on"]
    assert table.youden.tolist() == [1.0, 0.5, 0.5] and (table.chosen_on == 4).all()
    per_class = feature_matching.features_per_class(selectivity, ["n", "m"])
    assert per_class.index.tolist() == ["n", "m"]
    assert per_class.to_dict("list") == {"cat": [0, 1], "dog": [1, 1]}


def test_top_images_stack_each_shown_features_best_images():
    images = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1) * 10  # image i is 10 i
    labels = torch.tensor([4, 3, 2, 1, 0])
    h = torch.tensor([[0.0, 5.0], [1.0, 4.0], [3.0, 3.0], [2.0, 2.0], [0.5, 1.0]])  # (5, 2)
    shown = {"m": pd.DataFrame({"feature": [1, 0]})}
    top = feature_matching.top_images({"m": h}, shown, images, labels, 2)
    assert list(top) == ["m", "m_labels"] and top["m"].shape == (2, 2, 1, 1, 1)
    assert top["m"].flatten().tolist() == [0, 10, 20, 30]  # feature 1: images 0, 1; feature 0: images 2, 3
    assert top["m_labels"].tolist() == [[4, 3], [2, 1]]


def test_pairs_are_named_by_family_unless_two_models_share_one():
    assert feature_matching.pair_names({"mlp_s": "mlp", "resnet": "cnn"}) == {"mlp_s": "mlp", "resnet": "cnn"}
    assert feature_matching.pair_names({"mlp_s": "mlp", "mlp_b": "mlp", "resnet": "cnn"}) == {
        "mlp_s": "mlp_s", "mlp_b": "mlp_b", "resnet": "resnet"}


def test_compare_seeds_picks_main_ceiling_and_floor_codes():
    g = torch.Generator().manual_seed(0)
    codes = {(n, k, s): torch.relu(torch.randn(300, 4, generator=g))
             for n in ("a_net", "b_net") for k, s in (("trained", 3), ("trained", 5), ("untrained", 3))}
    table, per_feature = feature_matching.compare_seeds(codes, {"a_net": "a", "b_net": "b"}, [3, 5])
    pick = lambda k, s: {"a": codes["a_net", k, s], "b": codes["b_net", k, s]}
    expected = feature_matching.compare_dictionaries(pick("trained", 3), pick("trained", 5),
                                                     pick("untrained", 3))
    pd.testing.assert_frame_equal(table, expected[0])
    pd.testing.assert_frame_equal(per_feature, expected[1])
    assert table.source.tolist() == ["a"] * 3 + ["b"] * 3


def test_prediction2_lines_state_each_pair_and_the_original_prediction():
    verdict = pd.DataFrame({"pair": ["cnn - mlp", "mlp - vit"], "cross": [0.5, 0.3], "ceiling": [0.9, 0.8],
                            "floor": [0.1, 0.2], "l0": [4.0, 6.25], "share_min": [0.0208, 0.02],
                            "share_max": [0.0209, 0.03], "gap_closed": [0.5, 1 / 6], "holds": [True, False]})
    lines = feature_matching.prediction2_lines(verdict, 0.5, "smoke", "fashion-mnist", 256)
    assert lines == [
        "Prediction 2 (threshold: cross-model matching closes >= 50% of the floor-ceiling gap)",
        "  cnn - mlp : cross 0.500, floor 0.100, ceiling 0.900, gap closed 0.50 at L0 4.0 (active share "
        "0.0208-0.0209) -> holds",
        "  mlp - vit : cross 0.300, floor 0.200, ceiling 0.800, gap closed 0.17 at L0 6.2 (active share "
        "0.0200-0.0300) -> does not hold",
        "The original study's Prediction 2 (MLP and CNN learn similar features) holds here: 0.50 of the gap "
        "closed (smoke, fashion-mnist, 256 test images)."]
    assert len(feature_matching.prediction2_lines(verdict.tail(1), 0.5, "smoke", "d", 8)) == 2  # no MLP-CNN
