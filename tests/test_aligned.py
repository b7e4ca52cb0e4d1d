"""The recipe-aligned control (utils/aligned.py, recipes.ALIGNED): known answers for its intervals, its
verdicts, its metrics and its lr choice."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from utils import aligned, recipes

TRIO = ["mlp_b4_wi256", "cnn_small", "vit_mini_p4"]


def _rows(model: str, setting: str, correct, pred=None, label=None, texture=None) -> pd.DataFrame:
    correct = np.asarray(correct, dtype=bool)
    n = len(correct)
    label = np.zeros(n, int) if label is None else np.asarray(label)
    pred = np.where(correct, label, label + 1) if pred is None else np.asarray(pred)
    out = pd.DataFrame({"model": model, "setting": setting, "image": np.arange(n), "label": label,
                        "pred": pred, "correct": pred == label})
    return out if texture is None else out.assign(texture_label=np.asarray(texture))


def test_seed_interval_is_the_t_interval_of_the_mean():
    mean, lo, hi = aligned.seed_interval([0.1, 0.2, 0.3])
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2 degrees of freedom) x s.d. 0.1 / sqrt(3)
    assert (mean, lo, hi) == pytest.approx((0.2, 0.2 - half, 0.2 + half))
    assert aligned.seed_interval([0.5])[0] == 0.5 and math.isnan(aligned.seed_interval([0.5])[1])
    assert aligned.seed_interval([0.4, 0.4, 0.4]) == pytest.approx((0.4, 0.4, 0.4))


@pytest.mark.parametrize("own, al, verdict", [((0.01, 0.03), (0.02, 0.05), "holds"),
                                              ((-0.03, -0.01), (0.01, 0.02), "reverses"),
                                              ((0.01, 0.03), (-0.01, 0.05), "own recipes only"),
                                              ((-0.01, 0.03), (0.01, 0.05), "aligned recipe only"),
                                              ((-0.01, 0.03), (-0.02, 0.05), "neither"),
                                              ((0.01, 0.03), (math.nan, math.nan), "no seed spread")])
def test_a_difference_reads_from_its_two_intervals(own, al, verdict):
    assert aligned.verdict(*own, *al) == verdict


def test_names_say_model_recipe_and_seed():
    assert aligned.describe("cnn_small@aligned-lr0.003-s2") == ("cnn_small", "aligned", 2)
    assert aligned.describe("cnn_small@seed1") == ("cnn_small", "own", 1)
    assert aligned.describe("mlp_b12_wi1024@in21k-seed1") == ("mlp_b12_wi1024", "own", 1)
    assert aligned.describe("resnet18_cifar") == ("resnet18_cifar", "own", 0)


def test_metrics_count_top1_and_shape_bias_by_hand():
    """Top-1 is the share right; on cue conflict the shape bias counts only images whose shape and texture
    classes differ: here 4 kept, 2 shape and 1 texture decisions -> 2 / 3."""
    clean = _rows("cnn_small", "clean", [1, 1, 0, 1])
    cue = _rows("cnn_small", "cue conflict", [1, 1, 0, 0, 0], pred=[0, 0, 1, 2, 0], label=[0, 0, 0, 0, 0],
                texture=[1, 1, 1, 1, 0])
    table = aligned.metrics(pd.concat([clean, cue])).set_index("setting")
    assert table.value["clean"] == 0.75 and table.metric["clean"] == "top-1"
    assert table.value["cue conflict"] == pytest.approx(2 / 3)
    assert table.metric["cue conflict"] == "shape bias"
    assert table.family["clean"] == "cnn" and table.recipe["clean"] == "own"


def test_the_paired_bootstrap_of_identical_and_opposite_models():
    a = _rows("m", "clean", [1, 0, 1, 1, 0, 1])
    assert aligned.paired_bootstrap(a, a, "clean", n_boot=200) == (0.0, 0.0, 0.0, 6)
    right, wrong = _rows("m", "clean", [1] * 50), _rows("n", "clean", [0] * 50)
    assert aligned.paired_bootstrap(right, wrong, "clean", n_boot=200) == (1.0, 1.0, 1.0, 50)


def test_differences_pair_families_under_both_recipes():
    """The MLP is 0.2 above the CNN under its own recipe (200 images), and 0.10, 0.12, 0.14 above it under the
    shared one: the seed-matched mean 0.12 with its t interval, and the difference holds."""
    rng = np.random.default_rng(0)
    own_mlp = rng.random(200) < 0.9
    own_cnn = own_mlp & (rng.random(200) < 0.78)  # about 0.2 below, never right where the MLP is wrong
    parts = [_rows("mlp_b4_wi256", "clean", own_mlp), _rows("cnn_small", "clean", own_cnn)]
    for s, gap in enumerate([0.10, 0.12, 0.14]):
        parts += [_rows(f"mlp_b4_wi256@aligned-lr0.001-s{s}", "clean", np.arange(100) < 80),
                  _rows(f"cnn_small@aligned-lr0.001-s{s}", "clean",
                        np.arange(100) < round(100 * (0.8 - gap)))]
    parts += [_rows("mlp_b4_wi256", "FGSM", own_mlp), _rows("cnn_small", "FGSM", own_cnn)]  # no control there
    diff = aligned.differences(pd.concat(parts), n_boot=300).set_index("other")
    assert list(diff.setting) == ["clean"]
    r = diff.loc["cnn"]
    assert r.own == pytest.approx(own_mlp.mean() - own_cnn.mean()) and r.own_lo > 0 and r.n_images == 200
    assert (r.aligned, r.n_seeds) == (pytest.approx(0.12), 3)
    assert (r.aligned_lo, r.aligned_hi) == pytest.approx(aligned.seed_interval([0.10, 0.12, 0.14])[1:])
    assert r.verdict == "holds" and r.reference == "mlp" and r.metric == "top-1"


def test_consistency_of_the_control_pairs_seeds_and_families():
    """Three seeds that make identical mistakes have a ceiling of kappa 1; a second model right exactly where
    the first is wrong (top-1 0.25 against 0.75) shares no outcome: c_obs 0, c_exp 0.75 x 0.25 + 0.25 x 0.75
    = 0.375, kappa (0 - 0.375) / (1 - 0.375) = -0.6 at every seed."""
    base = np.arange(40) % 4 != 0  # 30 right, 10 wrong
    parts = []
    for s in range(3):
        parts += [_rows(f"mlp_b4_wi256@aligned-lr0.001-s{s}", "clean", base),
                  _rows(f"cnn_small@aligned-lr0.001-s{s}", "clean", ~base)]
    parts.append(_rows("mlp_b4_wi256", "clean", base))  # an own-recipe run: not the control's
    k = aligned.consistency(pd.concat(parts)).set_index(["model_a", "model_b"])
    assert k.kappa["mlp_b4_wi256", "mlp_b4_wi256"] == pytest.approx(1.0)
    assert k.n_pairs["mlp_b4_wi256", "mlp_b4_wi256"] == 3  # seed pairs (0, 1), (0, 2), (1, 2)
    assert k.kappa["mlp_b4_wi256", "cnn_small"] == pytest.approx(-0.6)
    assert k.kind["mlp_b4_wi256", "cnn_small"] == "families" and len(k) == 3


def test_the_control_lr_is_the_best_mean_validation_top1_and_never_a_diverged_one():
    trials = recipes.aligned_trials(TRIO, "quick")
    assert list(trials) == [f"{m}@aligned-lr{lr:g}-s0" for lr in (1e-3, 3e-3) for m in TRIO]
    table = pd.DataFrame({"run": list(trials), "val_top1": [0.80, 0.90, 0.70, 0.85, 0.86, 0.75]})
    assert recipes.aligned_lr(table, "quick") == 3e-3  # mean 0.820 against 0.800
    table.loc[4, "val_top1"] = math.nan  # the CNN diverged at 3e-3
    assert recipes.aligned_lr(table, "quick") == 1e-3
    recipes_ = set(map(repr, (r.train for r in recipes.aligned_runs(TRIO, "quick", 3e-3).values())))
    assert len(recipes_) == 3  # one recipe: only the seed differs between the three models' runs
    assert all(r.train.lr == 3e-3 for r in recipes.aligned_runs(TRIO, "quick", 3e-3).values())


def test_full_trains_the_pretrained_vit_from_scratch_as_its_fallback():
    runs = recipes.aligned_runs(["mlp_b12_wi1024", "resnet18_cifar", "vit_small_patch16_224"], "full", 1e-3)
    assert {n.split("@")[0] for n in runs} == {"mlp_b12_wi1024", "resnet18_cifar", "vit_small_p4"}
    assert not any(r.pretrained for r in runs.values())


def test_a_seed_interval_stays_within_the_bounds_of_a_kappa():
    mean, lo, hi = aligned.seed_interval([0.2, 0.9, 0.95])
    assert hi == 1.0 and lo > -1.0 and mean == pytest.approx(0.6833333)


def test_similarity_of_the_control_pairs_seeds_and_says_which_family_is_nearer():
    """A measure given by hand per pair of runs: the MLP's features are 0.2 closer to the CNN's than to the
    ViT's at every seed, so the difference is 0.2 with a zero-width interval; each model's ceiling is 0.9."""
    runs = [f"{m}@aligned-lr0.001-s{s}" for m in TRIO for s in range(3)]
    features = {r: torch.tensor([float(i)]) for i, r in enumerate(runs)}
    value = {("mlp", "cnn"): 0.7, ("mlp", "vit"): 0.5, ("cnn", "vit"): 0.4}

    def measure(x, y):
        a, b = (aligned.family(aligned.describe(runs[int(t)])[0]) for t in (x, y))
        return 0.9 if a == b else value[a, b]

    table = aligned.similarity(features, measure).set_index(["model_a", "model_b"])
    assert table.value["mlp_b4_wi256", "cnn_small"] == pytest.approx(0.7)
    assert table.n_pairs["mlp_b4_wi256", "cnn_small"] == 3
    assert table.kind["vit_mini_p4", "vit_mini_p4"] == "two seeds"
    assert table.value["vit_mini_p4", "vit_mini_p4"] == pytest.approx(0.9)
    diff = table.loc["mlp_b4_wi256", "cnn_small - vit_mini_p4"]
    assert (diff.kind, diff.value, diff.lo, diff.hi) == ("difference", pytest.approx(0.2), pytest.approx(0.2),
                                                         pytest.approx(0.2))


def test_tables_read_own_recipes_apart_from_the_control_and_add_its_tables_only_when_it_was_scored():
    """Own recipes: the MLP right where the CNN is wrong (kappa -0.6, as above), its twin identical to it
    (kappa 1, "two seeds"); the control's runs never enter error_consistency."""
    base = np.arange(40) % 4 != 0
    own = [_rows("mlp_b4_wi256", "clean", base), _rows("cnn_small", "clean", ~base),
           _rows("mlp_b4_wi256@seed1", "clean", base)]
    twins = {"mlp_b4_wi256": "mlp_b4_wi256@seed1"}
    alone = aligned.tables(pd.concat(own), twins)
    assert list(alone) == ["error_consistency"]
    k = alone["error_consistency"].set_index(["model_a", "model_b"]).kappa
    assert k["mlp_b4_wi256", "cnn_small"] == pytest.approx(-0.6) and len(k) == 2
    assert k["mlp_b4_wi256", "mlp_b4_wi256@seed1"] == pytest.approx(1.0)
    control = [_rows(f"{m}@aligned-lr0.001-s{s}", "clean", base) for m in TRIO[:2] for s in range(2)]
    both = aligned.tables(pd.concat(own + control), twins)
    assert list(both) == ["error_consistency", "aligned_consistency", "aligned_differences"]
    assert both["error_consistency"].equals(alone["error_consistency"])
    control_kappa = both["aligned_consistency"].set_index(["model_a", "model_b"]).kappa
    assert control_kappa["mlp_b4_wi256", "cnn_small"] == 1
