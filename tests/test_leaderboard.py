"""The leaderboard (utils/leaderboard.py) from hand-written result tables: every column read from its
notebook's table, Wilson intervals by hand, and the answer's verdicts from the intervals."""

import pandas as pd
import pytest

from utils import leaderboard

TRIO = {"mlp": "m", "cnn": "c", "vit": "v"}


def test_wilson_intervals_by_hand():
    assert leaderboard.wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)  # Wilson (1927)
    assert leaderboard.wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    lo, hi = leaderboard.wilson(900, 1000)
    assert lo < 0.9 < hi and hi - lo == pytest.approx(2 * 1.96 * (0.9 * 0.1 / 1000) ** 0.5, rel=0.01)


def write(root, name, rows):
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / name, index=False)


@pytest.fixture
def results(tmp_path):
    """The MLP as accurate as the CNN and far above the ViT (1,000 images each); robust like the ViT."""
    write(tmp_path, "01_vit_finetuning/summary.csv",
          [{"run": m, "model": m, "family": f, "params": 10, "test_top1": 0.5} for f, m in TRIO.items()])
    correct = {"m": 800, "c": 810, "v": 600}
    write(tmp_path, "01_vit_finetuning/predictions.csv",
          [{"model": m, "setting": "clean", "image": i, "correct": i < k} for m, k in correct.items()
           for i in range(1000)])
    write(tmp_path, "01_vit_finetuning/error_consistency.csv", [
        {"setting": "clean", "model_a": "m", "model_b": "c", "kind": "families", "kappa": 0.30,
         "kappa_lo": 0.25, "kappa_hi": 0.35},
        {"setting": "clean", "model_a": "m", "model_b": "v", "kind": "families", "kappa": 0.10,
         "kappa_lo": 0.05, "kappa_hi": 0.15},
        {"setting": "clean", "model_a": "m", "model_b": "m@seed1", "kind": "two seeds", "kappa": 0.6,
         "kappa_lo": 0.55, "kappa_hi": 0.65, "top1_b": 0.81}])
    write(tmp_path, "02_adversarial_robustness/standard_settings.csv",
          [{"model": m, "setting": "PGD-10", "top1": t, "n": 1000} for m, t in (("m", 0.2), ("c", 0.0),
                                                                                ("v", 0.21))])
    write(tmp_path, "03_texture_vs_shape_bias/shape_bias.csv",
          [{"model": m, "shape_bias": b, "shape_decisions": round(b * 400),
            "texture_decisions": 400 - round(b * 400)} for m, b in (("m", 0.3), ("c", 0.5), ("v", 0.7))])
    write(tmp_path, "04_feature_generalizability/cka_summary.csv",
          [{"pair": "mlp - cnn", "gap_closed": 0.6}, {"pair": "mlp - vit", "gap_closed": 0.2},
           {"pair": "cnn - vit", "gap_closed": 0.4}])
    return tmp_path


def test_every_column_comes_from_its_notebooks_table(results):
    board = leaderboard.table(results).set_index("family")
    assert list(board.index) == ["mlp", "cnn", "vit"]
    assert board.clean_top1.to_dict() == {"mlp": 0.8, "cnn": 0.81, "vit": 0.6}
    assert board.clean_top1_lo["mlp"] == pytest.approx(leaderboard.wilson(800, 1000)[0])
    assert board.clean_top1_seed1["mlp"] == 0.81 and pd.isna(board.clean_top1_seed1["cnn"])
    assert board.pgd10_top1["vit"] == 0.21 and board.shape_bias["vit"] == 0.7
    # error consistency: the other family's column, and the model's own family for its seed twin
    assert (board.kappa_cnn["mlp"], board.kappa_vit["mlp"], board.kappa_mlp["mlp"]) == (0.3, 0.1, 0.6)
    assert board.kappa_mlp["cnn"] == 0.3 and pd.isna(board.kappa_cnn["cnn"])
    assert (board.cka_cnn["mlp"], board.cka_mlp["vit"], board.cka_vit["cnn"]) == (0.6, 0.2, 0.4)
    assert "autoattack_top1" not in board and "ece" not in board  # 02's AutoAttack and 05 did not run


def test_the_answer_reads_each_measure_from_the_intervals(results):
    lines = leaderboard.answer(leaderboard.table(results))
    by = {line.split(":")[0]: line for line in lines}
    assert "sits with the CNN (the intervals overlap), not the ViT" in by["Clean top-1"]
    assert "sits with the ViT (the intervals overlap), not the CNN" in by["Top-1 under PGD-10 (L-inf 8/255)"]
    assert "apart from both" in by["Shape bias"]
    errors = by["Which test images it gets wrong (error consistency)"]
    assert "errs more like the CNN" in errors and "with its seed twin 0.600 [0.550, 0.650]" in errors
    assert "more like the CNN's: 0.60 of the gap with the CNN, 0.20 with the ViT" in lines[-1]
    assert leaderboard.answer(leaderboard.table(results / "nothing")) == [
        "The answer needs all three families' rows (01 has not run with the trio)."]


def test_the_aligned_control_gives_a_seed_mean_and_its_t_interval(results, monkeypatch):
    """01's predictions with the control's runs (two seeds per family, 100 images): the clean top-1 column
    under the shared recipe is the mean over seeds with aligned.seed_interval's t interval."""
    from utils import aligned

    own = pd.read_csv(results / "01_vit_finetuning/predictions.csv")
    right = {("m", 0): 70, ("m", 1): 74, ("c", 0): 80, ("c", 1): 80, ("v", 0): 60, ("v", 1): 50}
    control = pd.DataFrame([{"model": f"{m}@aligned-lr0.001-s{s}", "setting": "clean", "image": i,
                             "label": 0, "pred": 0 if i < k else 1, "correct": i < k}
                            for (m, s), k in right.items() for i in range(100)])
    pd.concat([own, control]).to_csv(results / "01_vit_finetuning/predictions.csv", index=False)
    monkeypatch.setattr(aligned, "family", {"m": "mlp", "c": "cnn", "v": "vit"}.get)  # hand-written models
    board = leaderboard.table(results).set_index("family")
    assert board.clean_top1_aligned.to_dict() == pytest.approx({"mlp": 0.72, "cnn": 0.80, "vit": 0.55})
    assert (board.clean_top1_aligned_lo["mlp"], board.clean_top1_aligned_hi["mlp"]) == pytest.approx(
        aligned.seed_interval([0.70, 0.74])[1:])
    assert board.clean_top1_aligned_lo["cnn"] == board.clean_top1_aligned_hi["cnn"] == pytest.approx(0.8)
    assert board.clean_top1_aligned_lo["vit"] == 0.0  # 0.55 +- 12.7 x 0.05: cut at 0


def test_without_a_seed_twin_the_answer_names_no_ceiling(results):
    """quick trains no own-recipe seed twins (the aligned control's seeds are its ceiling): no "nan"."""
    kappa = pd.read_csv(results / "01_vit_finetuning/error_consistency.csv")
    kappa[kappa.kind != "two seeds"].to_csv(results / "01_vit_finetuning/error_consistency.csv", index=False)
    lines = leaderboard.answer(leaderboard.table(results))
    (errors,) = [s for s in lines if s.startswith("Which test images")]
    assert "seed twin" not in errors and "nan" not in errors
