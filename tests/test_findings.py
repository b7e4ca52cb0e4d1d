"""utils.findings: a change's verb follows its sign; winners are named on validation, reported on test."""

import json
import math

import pandas as pd

from utils import findings
from utils.experiments import ablations
from utils.findings import ablations as reading


def test_the_verb_of_a_change_follows_its_sign_and_spread():
    assert findings.change("PGD-10 top-1", 0.297 - 0.328, to=0.297) == "lowers PGD-10 top-1 by 0.031 to 0.297"
    assert findings.change("top-1", 0.05, 0.01) == "raises top-1 by 0.050 (s.e. 0.010)"
    assert findings.change("top-1", 0.05, math.nan) == "raises top-1 by 0.050 (one seed, no spread)"
    assert findings.change("top-1", -0.01, 0.02, to=0.5) == ("leaves top-1 within the seed spread (-0.010, "
                                                            "s.e. 0.020) at 0.500")
    assert findings.change("top-1", 0.0001) == "leaves top-1 unchanged"
    assert findings.SPREAD == ablations.WITHIN  # "within the seed spread": one meaning in 06's table and text


def adversarial_table() -> pd.DataFrame:
    """The case the review found: FGSM training at 8/255 below standard training under PGD-10."""
    rows = [("mlp", "baseline", "standard", 0.0, 0, 0.80, 0.328),
            ("mlp", "fgsm-8", "fgsm", 8 / 255, 0, 0.74, 0.297),
            ("mlp", "pgd7-8", "pgd", 8 / 255, 0, 0.70, 0.400)]
    return pd.DataFrame(rows, columns=["model", "ablation", "method", "train_eps", "seed", "test_top1",
                                       "robust_top1"])


def test_adversarial_training_that_lowers_robust_accuracy_says_lowers():
    (sentence,) = reading._adversarial(adversarial_table(), None, "8/255")
    assert sentence.startswith("mlp (one seed, no spread): standard training 0.800 clean, 0.328 under "
                               "PGD-10 at 8/255; against it,")
    assert ("FGSM training at 8/255 lowers PGD-10 top-1 by 0.031 to 0.297 and lowers clean top-1 by 0.060 to "
            "0.740;") in sentence
    assert "PGD training at 8/255 raises PGD-10 top-1 by 0.072 to 0.400 and lowers clean top-1 by 0.100" \
        in sentence
    assert "raises PGD-10 top-1 by -" not in sentence and "raises PGD-10 to 0.297" not in sentence


def test_adversarial_training_within_the_seed_spread_says_so():
    t = adversarial_table()
    two = pd.concat([t, t.assign(seed=1, robust_top1=t.robust_top1 + [0.04, 0.10, 0.0])], ignore_index=True)
    (sentence,) = reading._adversarial(two[two.method != "pgd"], None, "8/255")
    # FGSM 0.297, 0.397 against standard 0.328, 0.368: +0.0, s.e. sqrt(0.005 / 2 + 0.0008 / 2) = 0.054
    assert ("FGSM training at 8/255 leaves PGD-10 top-1 within the seed spread (-0.001, s.e. 0.054) at 0.347"
            in sentence)


def ablation_rows(rows) -> pd.DataFrame:
    """ablations.csv rows (study, ablation, seed, val_top1, test_top1, robust_top1) with the other columns."""
    df = pd.DataFrame(rows, columns=["study", "ablation", "seed", "val_top1", "test_top1", "robust_top1"])
    return df.assign(change=df.ablation, model="m", test_top5=1.0, train_min=1.0, params=100,
                     train_images=900, epochs=3, steps=30, lr=1e-3, batch_size=64,
                     run=df.ablation + df.seed.astype(str), diverged=False)


def tricks_summary() -> pd.DataFrame:
    """'mixup' is best on test (+0.08) but 'smoothing' on validation (+0.05 against +0.01); every change
    lowers PGD-10 top-1 (0.30 at the baseline)."""
    return ablations.aggregate(ablation_rows([
        ("tricks", "baseline", 0, 0.70, 0.70, 0.30), ("tricks", "smoothing", 0, 0.75, 0.72, 0.25),
        ("tricks", "mixup", 0, 0.71, 0.78, 0.20), ("tricks", "crop", 0, 0.60, 0.68, 0.29)]))


def test_the_robustness_sentence_says_lowers_when_every_change_lowers_it():
    sentence = reading._deltas(tricks_summary(), "8/255")[-1]
    assert sentence == ("PGD-10 at 8/255 on the test images (no validation number behind it, so no winner): "
                        "the lowest of these changes, 'mixup', lowers robust top-1 by 0.100 (one seed, no "
                        "spread); the highest, 'crop', lowers robust top-1 by 0.010 (one seed, no spread).")


def test_the_best_change_is_named_on_validation_and_reported_on_test():
    best, worst = reading._deltas(tricks_summary(), "8/255")[:2]
    assert best == ("Chosen on validation top-1, the change that helps most is tricks 'smoothing' (+0.050 "
                    "val top-1 against its baseline); on the test set it raises top-1 by 0.020 (one seed, no "
                    "spread).")
    assert "mixup" not in best  # the test set's best (+0.080) is not the one named
    assert worst == ("The one that hurts most on validation is tricks 'crop' (-0.100); on the test set it "
                     "lowers top-1 by 0.020 (one seed, no spread).")


def test_the_ladder_names_the_rung_that_adds_most_validation_top1():
    summary = ablations.aggregate(ablation_rows([
        ("ladder", "plain", 0, 0.60, 0.60, 0.1), ("ladder", "norm", 0, 0.70, 0.62, 0.1),
        ("ladder", "augment", 0, 0.72, 0.72, 0.1)]))
    (sentence,) = reading._ladder(summary)
    # on test, 'augment' adds most (+0.10); on validation, 'norm' (+0.10 against +0.02)
    assert sentence.endswith("the rung that adds the most validation top-1 is 'norm' (+0.100 val); on the "
                             "test set it raises top-1 by 0.020.")


def test_the_best_depth_variant_is_named_on_validation():
    summary = ablations.aggregate(ablation_rows([
        ("depth", "plain", 0, 0.60, 0.60, 0.1), ("depth", "residual", 0, 0.70, 0.58, 0.1),
        ("depth", "norm", 0, 0.65, 0.75, 0.1)]))
    grads = pd.DataFrame({"study": "depth", "change": ["plain"] * 3, "depth": [0, 1, 2],
                          "grad_norm": [1e-3, 1e-2, 1e-1], "step": 0})
    sentence = reading._depth(summary, grads)[1]
    assert sentence == ("depth: 'residual' validates best (0.700 against plain's 0.600); on the test set, "
                        "where plain has 0.600, it lowers top-1 by 0.020 to 0.580 (one seed, no spread).")


def test_the_depth_reading_says_where_gradients_explode_or_vanish():
    summary = ablations.aggregate(ablation_rows([("depth", "plain", 0, 0.60, 0.60, 0.1),
                                                 ("depth", "batch norm", 0, 0.65, 0.62, 0.1),
                                                 ("depth", "skips", 0, 0.70, 0.70, 0.1)]))
    per_layer = {"plain": [1e-7, 1e-4, 1e-3, 1.0], "batch norm": [1e5, 10.0, 1.0, 1.0], "skips": [3, 2, 2, 1]}
    grads = pd.DataFrame([{"study": "depth", "change": c, "depth": i, "grad_norm": g, "step": 0}
                          for c, gs in per_layer.items() for i, g in enumerate(gs)])
    first = reading._depth(summary, grads)[0]  # first layer over the last hidden one (depth 2 of 0-3)
    assert first.startswith("depth: the first layer's gradient norm over the last hidden layer's (median "
                            "over the first epoch) is plain 1.0e-04, batch norm 1.0e+05, skips 1.5e+00; they "
                            "explode toward the input with batch norm (batch norm without skips")
    assert first.endswith("Mean Field Theory of Batch Normalization), and vanish with plain.")
    calm = grads[grads.change == "skips"]
    assert reading._depth(summary, calm)[0].endswith("is skips 1.5e+00.")


def write_folder(folder, models, tables: dict, **jsons):
    """A notebook's results folder: config.json (the models in order), CSV tables and JSON files."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"config": {"models": models}}))
    for name, table in tables.items():
        pd.DataFrame(table).to_csv(folder / name, index=False)
    for name, value in jsons.items():
        (folder / f"{name}.json").write_text(json.dumps(value))
    return folder


def test_texture_changes_carry_their_sign(tmp_path):
    mods = {"modification": ["original", "edges", "original", "edges"], "model": ["mlp", "mlp", "cnn", "cnn"],
            "top1": [0.80, 0.85, 0.90, 0.60], "n": 100}
    folder = write_folder(tmp_path / "03_texture_vs_shape_bias", ["mlp", "cnn"], {
        "modification_accuracy.csv": mods,
        "shape_bias.csv": {"model": ["mlp", "cnn"], "shape_bias": [0.3, 0.4], "shape_acc": 0.5,
                           "texture_acc": 0.5}})
    said = findings.sentences(folder)
    assert "edges changes top-1 by mlp +0.050 and cnn -0.300." in said  # edges helps the MLP here
    assert said[-1] == "The largest drop: edges lowers cnn's top-1 by 0.300 to 0.600."
    mods["top1"] = [0.80, 0.85, 0.60, 0.90]
    pd.DataFrame(mods).to_csv(folder / "modification_accuracy.csv", index=False)
    assert findings.sentences(folder)[-1] == ("No modification lowers top-1; the smallest change: edges "
                                              "raises mlp's top-1 by 0.050 to 0.850.")


def test_tile_shuffling_that_raises_top1_says_so(tmp_path):
    verdict = {"class_images": {"verdict": "a"}, "unit_images": {"verdict": "b"}}
    folder = write_folder(tmp_path / "08_activation_maximization", ["mlp", "cnn"], {
        "tile_shuffle.csv": {"model": ["mlp", "cnn", "mlp", "cnn"], "grid": [1, 1, 4, 4],
                             "tile_px": [28, 28, 7, 7], "top1": [0.80, 0.90, 0.82, 0.50],
                             "drop": [0.0, 0.0, -0.02, 0.40]}},
        prediction_1=verdict)
    assert findings.sentences(folder)[-1].startswith("Shuffling 4x4 tiles (7 px) changes top-1 by mlp +0.020 "
                                                     "and cnn -0.400 (")


def test_a_perceiver_ladder_that_falls_says_lowers():
    from utils.findings import training

    ladder = pd.DataFrame({"source": "this run", "setting": "ladder", "rung": ["s", "m"],
                           "params": [1e5, 4e5], "test_top1": [0.60, 0.55], "data": "fashion-mnist",
                           "run": ["a", "b"], "change_vs_rung": 0.0})
    (said,) = training._ladder(ladder)
    assert said.endswith("Going from the smallest to the largest rung (4.0x the parameters) lowers test "
                         "top-1 by 0.050.")


def test_error_consistency_is_stated_per_pair_with_its_interval_and_the_most_shared():
    from utils.findings import consistency

    table = pd.DataFrame({"setting": ["clean", "clean", "clean", "pgd"],
                          "model_a": ["mlp", "mlp", "cnn", "mlp"],
                          "model_b": ["cnn", "vit", "vit", "cnn"], "kappa": [0.31, 0.42, 0.2, 0.9],
                          "kappa_lo": [0.25, 0.36, 0.15, 0.8], "kappa_hi": [0.37, 0.48, 0.26, 1.0]})
    (sentence,) = consistency(table, {"clean": "on the clean test set"})
    assert "mlp and cnn 0.310 [0.250, 0.370]" in sentence and "cnn and vit 0.200" in sentence
    assert sentence.endswith("mlp and vit share the most mistakes (no two-seed ceiling under the own recipes "
                             "in this run; the aligned control's, where it ran, is below).")
    assert sentence.startswith("Error consistency on the clean test set (Cohen's kappa")
    assert consistency(table[table.setting == "pgd"], {"clean": "on the clean test set"}) == []
    (both, pgd) = consistency(table, {"clean": "clean", "pgd": "under PGD"})
    assert both == sentence.replace("on the clean test set", "clean")
    assert pgd.startswith("Error consistency under PGD: mlp and cnn 0.900 [0.800, 1.000]")  # kappa said once
    seeds = pd.DataFrame({"setting": "clean", "model_a": ["mlp", "cnn"],
                          "model_b": ["mlp@seed1", "cnn@seed1"], "kind": "two seeds", "kappa": [0.7, 0.6],
                          "kappa_lo": [0.65, 0.5], "kappa_hi": [0.75, 0.7]})
    (ceiling,) = consistency(pd.concat([table.assign(kind="families"), seeds]), {"clean": "clean"})
    assert ceiling.startswith(sentence.replace("on the clean test set", "clean").split(". mlp and vit")[0])
    assert ceiling.endswith("mlp and vit share the most mistakes; the ceiling, each model against itself "
                            "from another seed: mlp 0.700 [0.650, 0.750]; cnn 0.600 [0.500, 0.700].")


def test_the_aligned_control_sentence_reads_each_verdict_from_its_table(tmp_path):
    """findings.aligned: both intervals and the verdict per family pair, then the control's kappa."""
    from utils.findings import aligned

    pd.DataFrame([{"setting": "clean", "metric": "top-1", "reference": "mlp", "other": "cnn", "own": -0.02,
                   "own_lo": -0.03, "own_hi": -0.01, "aligned": -0.015, "aligned_lo": -0.02,
                   "aligned_hi": -0.01, "n_seeds": 3, "verdict": "holds"},
                  {"setting": "clean", "metric": "top-1", "reference": "mlp", "other": "vit", "own": 0.02,
                   "own_lo": 0.01, "own_hi": 0.03, "aligned": 0.0, "aligned_lo": -0.02, "aligned_hi": 0.02,
                   "n_seeds": 3, "verdict": "own recipes only"}]).to_csv(tmp_path / "aligned_differences.csv")
    pd.DataFrame([{"setting": "clean", "model_a": "m", "model_b": "c", "kind": "families", "kappa": 0.3,
                   "kappa_lo": 0.2, "kappa_hi": 0.4, "n_pairs": 3},
                  {"setting": "clean", "model_a": "m", "model_b": "m", "kind": "two seeds", "kappa": 0.6,
                   "kappa_lo": 0.5, "kappa_hi": 0.7, "n_pairs": 3}]
                 ).to_csv(tmp_path / "aligned_consistency.csv")
    (diff, kappa) = aligned(tmp_path, {"clean": "on the clean test set"})
    assert ("MLP minus CNN -0.020 [-0.030, -0.010] under the own recipes, -0.015 [-0.020, -0.010] under the "
            "shared one: the difference holds under the shared recipe") in diff
    assert "MLP minus ViT +0.020 [+0.010, +0.030]" in diff and "is the recipes', not the family's" in diff
    assert "3 seeds" in diff and diff.startswith("Family or recipe")
    assert "m and c +0.300 [+0.200, +0.400]" in kappa and kappa.endswith("from another seed: m +0.600 "
                                                                         "[+0.500, +0.700].")
    assert aligned(tmp_path / "nothing", {"clean": "x"}) == []
