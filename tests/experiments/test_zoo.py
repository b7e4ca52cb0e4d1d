"""The ViT zoo's ablations: TnT sweep points and geometry, the Perceiver ladder's recipes, names and table on
constructed summaries with known answers, and the two figures drawn from saved tables."""

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from utils import models, plots, recipes, references
from utils.experiments import zoo
from utils.models.vit import perceiver_rung
from utils.plots.base import compact_number, log_ticks


def test_tnt_points_set_patch_and_pixel_on_the_sweep_recipe():
    points = zoo.tnt_points("tnt_mini_p4", [(4, 2), [14, 7]], "quick")
    assert list(points) == ["tnt_mini_p4@patch4-pix2", "tnt_mini_p4@patch14-pix7"]
    r = points["tnt_mini_p4@patch14-pix7"]
    assert r.overrides == {"patch_size": 14, "pixel_size": 7}
    assert r.train == recipes.SWEEP_BASE["quick"].train and r.train_subset == 10_000  # one fixed lr
    net = models.create_model("tnt_mini_p4", in_chans=1, img_size=28, **r.overrides)
    assert net.pixel_embed.num_patches == 4 and net.pixel_embed.new_patch_size == [2, 2]


def test_tnt_sweep_table_geometry():
    summary = pd.DataFrame({"run": ["a", "b", "c"], "val_top1": [0.5, 0.6, 0.7]})
    t = zoo.tnt_sweep_table(summary, [(2, 2), (4, 2), (16, 4)], img_size=32)
    assert t.patches.tolist() == [256, 64, 4] and t.words_per_patch.tolist() == [1, 4, 16]
    assert t.word_pixels.tolist() == [4, 4, 16]
    with pytest.raises(ValueError, match="2 runs for 3 grid points"):
        zoo.tnt_sweep_table(summary.head(2), [(2, 2), (4, 2), (16, 4)], 32)


def test_the_ladder_recipes_apply_the_rung_rule_at_other_widths():
    for d in (8, 16, 32, 64, 128, 256):
        rule = perceiver_rung(d)
        assert all(rule[k] == v for k, v in recipes.ladder_width(d).items()), d
    assert recipes.ladder_width(64) == {k: perceiver_rung(64)[k] for k in recipes.ladder_width(64)}
    base = recipes.get_recipe("perceiver_medium@latent8", "smoke")
    no_aug = recipes.get_recipe("perceiver_medium@latent8-no-aug", "smoke")
    no_drop = recipes.get_recipe("perceiver_medium@latent8-no-dropout", "smoke")
    assert no_aug.overrides == base.overrides and no_aug.train.flip is False and no_aug.train.crop_pad == 0
    assert no_drop.overrides == {**base.overrides, "attn_dropout": 0.0, "ff_dropout": 0.0}
    assert no_drop.train == base.train
    full = recipes.get_recipe("perceiver_medium@no-aug", "full")
    assert full.train.mixup_alpha == 0.0 < recipes.get_recipe("perceiver_medium", "full").train.mixup_alpha
    for p, run in [("full", "perceiver_large"), ("full", "perceiver_xl"), ("full", "perceiver_medium")]:
        assert recipes.get_recipe(run, p).overrides == {}  # the registered rung itself
    # quick: the rungs at 14x14, the same recipe for every rung
    quick = {r: recipes.get_recipe(r, "quick") for r in
             ("perceiver_medium@latent16-14px", "perceiver_medium@latent32-14px", "perceiver_medium@14px")}
    assert [q.overrides.get("latent_dim", 64) for q in quick.values()] == [16, 32, 64]
    assert {q.overrides["resolution"] for q in quick.values()} == {14}
    assert len({q.train for q in quick.values()}) == 1


def test_ablation_and_rung_names():
    assert zoo.ablation_of("perceiver_medium@latent16-no-aug") == "no augmentation"
    assert zoo.ablation_of("perceiver_large@no-dropout") == "no dropout"
    assert zoo.ablation_of("perceiver_medium@latent16") == zoo.LADDER
    assert zoo.rung_of("perceiver_medium@latent16-no-dropout") == "perceiver_medium@latent16"
    assert zoo.rung_of("perceiver_large@no-aug") == "perceiver_large"
    assert zoo.latent_width("perceiver_xl", {}) == 256
    assert zoo.latent_width("perceiver_xl", {"latent_dim": 8}) == 8
    assert zoo.rung_label("perceiver_xl", 256) == "xl"
    assert zoo.rung_label("perceiver_medium", 16) == "latent 16"
    assert zoo.input_side({"img_size": 28}) == 28 and zoo.input_side({"img_size": 28, "resolution": 14}) == 14
    assert zoo.input_side({"img_size": 28, "resolution": None}) == 28


def ladder_summary() -> pd.DataFrame:
    runs = ["perceiver_medium@latent16", "perceiver_medium", "perceiver_medium@latent16-no-aug",
            "perceiver_medium@latent16-no-dropout"]
    return pd.DataFrame({"run": runs, "model": "perceiver_medium", "family": "perceiver",
                         "params": [30_000, 290_000, 30_000, 30_000], "val_top1": [0.5, 0.6, 0.4, 0.55],
                         "test_top1": [0.50, 0.62, 0.45, 0.53], "images_per_s": 100.0})


def test_ladder_table_labels_rungs_and_ablations_and_appends_the_study():
    s = ladder_summary()
    shapes = dict(zip(s.run, [(16, 14), (64, 28), (16, 14), (16, 14)], strict=True))
    t = zoo.ladder_table(s, shapes, references.perceiver_ladder_reference(), "fashion-mnist")
    ours, study = t[t.source == "this run"], t[t.source != "this run"]
    assert ours.rung.tolist() == ["latent 16", "medium", "latent 16", "latent 16"]
    assert ours.setting.tolist() == ["ladder", "ladder", "no augmentation", "no dropout"]
    assert np.isnan(ours.change_vs_rung.iloc[0]) and np.isnan(ours.change_vs_rung.iloc[1])
    assert ours.change_vs_rung.iloc[2:].tolist() == pytest.approx([-0.05, 0.03])
    assert study.run.tolist() == ["study: perceiver_medium", "study: perceiver_large", "study: perceiver_xl"]
    assert study.test_top1.tolist() == [0.662, 0.671, 0.677] and set(study.dataset) == {"cifar10"}
    assert study.rung.tolist() == ["medium", "large", "xl"] and not t.duplicated("run").any()
    assert ours.latent_dim.tolist() == [16, 64, 16, 16] and ours.input_side.tolist() == [14, 28, 14, 14]
    small, native = "fashion-mnist, 14x14", "fashion-mnist, 28x28"
    assert ours.data.tolist() == [small, native, small, small]
    assert set(study.data) == {"cifar10, 32x32"}


def test_the_figures_draw_from_saved_tables(tmp_path):
    folder = tmp_path / "01_vit_finetuning"
    folder.mkdir()
    config = {"config": {"dataset": "fashion-mnist", "profile": "smoke"}}
    (folder / "config.json").write_text(json.dumps(config))
    s = ladder_summary()
    shapes = dict(zip(s.run, [(16, 28)] + [(64, 28)] + [(16, 28)] * 2, strict=True))
    ladder = zoo.ladder_table(s, shapes, references.perceiver_ladder_reference(), "fashion-mnist")
    ladder.to_csv(folder / "perceiver_ladder.csv", index=False)
    sweep = pd.DataFrame({"run": ["a", "b"], "model": "tnt_mini_p4", "val_top1": [0.5, 0.6],
                          "test_top1": [0.52, 0.58], "images_per_s": [300.0, 500.0]})
    zoo.tnt_sweep_table(sweep, [(4, 2), (4, 4)], 28).to_csv(folder / "tnt_sweep.csv", index=False)
    for file in ("perceiver_ladder.png", "tnt_sweep.png"):
        assert plots.draw(folder, file)[0].stat().st_size > 1000


def test_the_tnt_reading_names_the_fastest_point_only_when_it_is_another():
    from utils.findings import training

    sweep = pd.DataFrame({"run": ["a", "b"], "model": "tnt_mini_p4", "val_top1": [0.5, 0.6],
                          "test_top1": [0.52, 0.58], "images_per_s": [300.0, 500.0], "params": [1e5, 2e5]})
    table = zoo.tnt_sweep_table(sweep, [(4, 2), (4, 4)], 28)
    (said,) = training._tnt_sweep(table)
    assert said.endswith("(4, 4) validates best (test 0.580, 0.20M parameters) and trains fastest too (500 "
                         "images/s).")
    (said,) = training._tnt_sweep(table.assign(images_per_s=[700.0, 500.0]))
    assert "(4, 2) trains fastest (700 images/s against 500 for the best)" in said


def test_log_ticks_merge_values_whose_labels_would_overlap():
    fig, ax = plt.subplots()
    ax.set_xscale("log")
    log_ticks(ax, [296_086, 21_910, 78_486, 290_000, 1.15e6, 4.43e6], fmt=compact_number)
    assert ax.get_xticks().tolist() == [21_910, 78_486, 290_000, 1.15e6, 4.43e6]  # 296k shares 290k's tick
    assert [t.get_text() for t in ax.get_xticklabels()] == ["21.9k", "78.5k", "290k", "1.15M", "4.43M"]
    plt.close(fig)
