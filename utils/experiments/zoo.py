"""The ViT zoo's two ablations of the week-8 study (notebook 01): TnT's patch / pixel-size sweep and the
Perceiver size ladder with its no-augmentation and no-dropout runs.

    points = tnt_points("tnt_mini_p4", [(4, 2), (4, 4)], "quick")   # run name -> recipe
    sweep = tnt_sweep_table(store.sweep(points, ...), img_size=28)  # + patch, pixel, patches, words
    ladder = ladder_table(store.summarize(runs, ...), shapes(runs, ...),
                          references.perceiver_ladder_reference(), dataset)

TnT (Han et al. 2021) cuts the image into patches ("visual sentences") and every patch into pixels ("visual
words"): patch p and pixel q give (img / p)^2 outer tokens of (p / q)^2 inner tokens each. The pixel size is
`pixel_size` of utils.models.vit's TNT builders (non-overlapping q x q squares, linearly projected; timm's
own embedding would be a 7x7 convolution with stride q). Every point trains with the profile's sweep recipe,
so the learning rate is the same for all of them (the study swept at a fixed rate too).

The Perceiver ladder: the registered perceiver_medium / large / xl (models.vit.perceiver_rung), or under the
CPU profiles the same rule at smaller latent widths (run "perceiver_medium@latent16"), under quick on images
resized to 14x14 ("...-14px", the `resolution` override); ablations are runs ending in "no-aug" (no crops,
flips, mixup) or "no-dropout" (recipes.LADDER_RECIPES).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..config import resolve
from ..models import vit
from ..profiles import Profile, get_profile
from ..recipes import Recipe, seed_twins, sweep_recipe, tnt_sweep_recipe
from ..store import model_card, model_of

ABLATIONS = {"no-aug": "no augmentation", "no-dropout": "no dropout"}  # run suffix -> setting
LADDER = "ladder"  # the setting of a rung trained as the study trained it


def tnt_run(model: str, patch: int, pixel: int) -> str:
    """The stored run of one sweep point: "tnt_mini_p4@patch4-pix2"."""
    return f"{model}@patch{patch}-pix{pixel}"


def tnt_points(model: str, grid: Sequence[Sequence[int]], profile: str) -> dict[str, Recipe]:
    """Run name -> recipe for every (patch, pixel) of `grid`, on the profile's sweep recipe."""
    return {tnt_run(model, p, q): tnt_sweep_recipe(profile, int(p), int(q)) for p, q in grid}


def tnt_sweep_table(summary: pd.DataFrame, grid: Sequence[Sequence[int]], img_size: int) -> pd.DataFrame:
    """store.summarize of the sweep's runs (in grid order) with the geometry of each point: patch, pixel,
    patches (outer tokens), words_per_patch (inner tokens per patch) and word_pixels (pixels per word)."""
    patch = np.array([int(p) for p, _ in grid])
    pixel = np.array([int(q) for _, q in grid])
    if len(summary) != len(patch):
        raise ValueError(f"{len(summary)} runs for {len(patch)} grid points")
    return summary.assign(patch=patch, pixel=pixel, patches=(img_size // patch) ** 2,
                          words_per_patch=(patch // pixel) ** 2, word_pixels=pixel**2)


# ---------------------------------------------------------------- the Perceiver ladder


def ablation_of(run: str) -> str:
    """The setting of a ladder run: LADDER, or the ablation its name ends in."""
    for suffix, setting in ABLATIONS.items():
        if run.endswith((f"-{suffix}", f"@{suffix}")):
            return setting
    return LADDER


def rung_of(run: str) -> str:
    """The ladder run an ablation changes ("perceiver_medium@latent16-no-aug" -> "perceiver_medium@latent16");
    a rung is its own."""
    for suffix in ABLATIONS:
        for sep in "-@":
            if run.endswith(sep + suffix):
                return run[: -len(sep + suffix)]
    return run


def latent_width(model: str, model_config: dict) -> int:
    """The latent width a run was built with: its override, else the registered model's."""
    return int(model_config.get("latent_dim", vit.ZOO[model][2]["latent_dim"]))


def input_side(model_config: dict) -> int:
    """The side of the images a run's network reads: its `resolution` override, else the data's."""
    return int(model_config.get("resolution") or model_config["img_size"])


def shapes(runs: Sequence[str], dataset: str, profile: str | Profile) -> dict[str, tuple[int, int]]:
    """Run -> (latent width, input side) it was built with, from the stored runs' model cards."""
    cards = {r: model_card(r, dataset, profile)["model_config"] for r in runs}
    return {r: (latent_width(model_of(r), c), input_side(c)) for r, c in cards.items()}


def rung_label(model: str, width: int) -> str:
    """"medium" / "large" / "xl" for a registered rung at its own width; "latent <d>" for a scaled one."""
    registered = vit.ZOO[model][2]["latent_dim"]
    return model.removeprefix("perceiver_") if width == registered else f"latent {width}"


def ladder_table(summary: pd.DataFrame, shapes: dict[str, tuple[int, int]], reference: pd.DataFrame,
                 dataset: str) -> pd.DataFrame:
    """One row per ladder run of this project (store.summarize rows; shapes: run -> (latent width, input
    side)) with its rung, setting, the data it read (data: "fashion-mnist, 14x14"), and for ablations the
    test top-1 change against their rung (change_vs_rung); then the study's rows (reference: model, params,
    test_top1, dataset, input_side, source), run named "study: <model>"."""
    ours = summary.assign(
        latent_dim=[shapes[r][0] for r in summary.run],
        input_side=[shapes[r][1] for r in summary.run],
        rung=[rung_label(m, shapes[r][0]) for r, m in zip(summary.run, summary.model, strict=True)],
        setting=[ablation_of(r) for r in summary.run],
        dataset=dataset, source="this run")
    base = ours.set_index("run").test_top1
    has_rung = lambda r, s: s != LADDER and rung_of(r) in base.index
    change = lambda r, s: base[r] - base[rung_of(r)] if has_rung(r, s) else np.nan
    ours["change_vs_rung"] = [change(r, s) for r, s in zip(ours.run, ours.setting, strict=True)]
    study = reference.assign(run=["study: " + m for m in reference.model], family="perceiver", setting=LADDER,
                             rung=[m.removeprefix("perceiver_") for m in reference.model])
    table = pd.concat([ours, study], ignore_index=True)
    data = [f"{d}, {int(s)}x{int(s)}" for d, s in zip(table.dataset, table.input_side, strict=True)]
    return table.assign(data=data)


# ---------------------------------------------------------------- notebook 01: its runs


def trio_runs(cfg: Config, models: Sequence[str], profile: str | Profile) -> list[str]:
    """The trio's run names: under full with vit_finetune="finetune", ViT-S/16's variant that trains every
    layer ("vit_small_patch16_224@finetune")."""
    finetune = get_profile(profile).code_path == "full" and cfg.vit_finetune == "finetune"
    return [m + "@finetune" * (finetune and m == "vit_small_patch16_224") for m in models]


def lr_points(cfg: Config, profile: str) -> dict[str, Recipe]:
    """The lr sweep: run name -> the profile's sweep recipe at each lr of the grid."""
    return {f"{cfg.sweep_model}@lr{lr:g}": sweep_recipe(profile, lr=lr) for lr in cfg.lr_grid}


def best_lr(cfg: Config, table: pd.DataFrame) -> float:
    """The lr of the sweep's best validation top-1 (`table`: one row per lr point, in grid order)."""
    return float(cfg.lr_grid[int(np.nanargmax(table["val_top1"].to_numpy(dtype=float)))])


def batch_points(cfg: Config, profile: str, lr: float) -> dict[str, Recipe]:
    """The batch-size sweep at the chosen lr: run name -> recipe."""
    return {f"{cfg.sweep_model}@lr{lr:g}-bs{bs}": sweep_recipe(profile, lr=lr, batch_size=bs)
            for bs in cfg.batch_grid}


def runs(cfg: Config, ctx) -> list:
    """Every run 01 asks the store for (utils.plan): the trio, the zoo, the pretrained zoo, the trio's seed
    twins, the lr sweep, the batch sweep (waiting for the lr chosen on the validation split), the TnT sweep,
    the Perceiver ladder and the aligned control (its seeds waiting for its lr)."""
    P = ctx.profile.name
    trio = trio_runs(cfg, ctx.models, ctx.profile)
    out = [ctx.run(r) for r in (*trio, *cfg.zoo, *cfg.pretrained_zoo)]
    out += [ctx.run(*twin) for twin in seed_twins(trio, P, cfg.ceiling_seed).values()]
    lrs = [ctx.run(name, recipe) for name, recipe in lr_points(cfg, P).items()]
    chosen = ctx.chosen(lrs, lambda t: best_lr(cfg, t))
    waits = "" if chosen is not None else f"the lr of {cfg.sweep_model}'s sweep (validation)"
    batches = [ctx.run(name if chosen is not None else name.replace(f"lr{cfg.lr_grid[0]:g}", "lr?"), recipe,
                       waits_for=waits)
               for name, recipe in batch_points(cfg, P, cfg.lr_grid[0] if chosen is None else chosen).items()]
    tnt = [ctx.run(name, recipe) for name, recipe in tnt_points(cfg.tnt_model, cfg.tnt_grid, P).items()]
    ladder = [ctx.run(r) for r in (*cfg.ladder, *cfg.ladder_ablations)]
    return [*out, *lrs, *batches, *tnt, *ladder, *(ctx.aligned() if cfg.aligned else [])]


# ---------------------------------------------------------------- notebook 01: its knobs


@dataclass(frozen=True)
class Config:
    """01's knobs (what trains beside the trio). Defaults are full's; SMALLER holds what the other profiles
    change. Every name is a run of utils/recipes.py."""

    vit_finetune: str = "head"  # full's ViT-S/16: "head" (frozen backbone, the original) | "finetune" (all)
    ceiling_seed: int | None = 1  # the trio trained again from this seed: each model's error consistency with
    # itself, the ceiling a pair of families is read against (02 and 03 use them too); None: no ceiling
    aligned: bool = True  # the trio again under one shared recipe, its lr chosen on validation, from every
    # seed of recipes.ALIGNED (02 and 03 score it too; utils/aligned.py)
    zoo: list[str] = field(default_factory=lambda: [  # the week-8 zoo from scratch
        "swin_tiny_p2", "tnt_small_p4", "mixer_small_p4", "perceiver_base", "perceiver_io_base"])
    # the paper MLP fine-tuned from its ImageNet-21k weights, timm's ImageNet models with a new head (224x224)
    pretrained_zoo: list[str] = field(default_factory=lambda: [
        "mlp_b12_wi1024@in21k", "vit_small_patch16_224", "swin_tiny_patch4_window7_224", "tnt_s_patch16_224",
        "mixer_b16_224"])
    sweep_model: str = "vit_small_p4"  # the model of the lr and batch-size sweeps (recipes.SWEEP_BASE)
    lr_grid: list[float] = field(default_factory=lambda: [1e-4, 3e-4, 1e-3, 3e-3])  # peak learning rates
    batch_grid: list[int] = field(default_factory=lambda: [128, 256, 512, 1024, 2048])  # at the best lr
    tnt_model: str = "tnt_small_p4"  # TnT's (patch, pixel) sweep; both must divide the image exactly
    tnt_grid: list[list[int]] = field(default_factory=lambda: [  # [patch, pixel] pairs (the study's)
        [2, 2], [4, 2], [4, 4], [8, 2], [8, 4], [16, 4]])
    ladder: list[str] = field(default_factory=lambda: [  # the Perceiver ladder's rungs
        "perceiver_medium", "perceiver_large", "perceiver_xl"])
    ladder_ablations: list[str] = field(default_factory=lambda: [  # without augmentation / dropout
        "perceiver_medium@no-aug", "perceiver_medium@no-dropout"])


SMALLER = {
    # quick: CPU-sized zoo (3 epochs on 10k images), the ladder's rungs only at 14x14 (3 min, not 7 at 28x28)
    # and no seed twins: the two-seed ceiling comes from the aligned control's three seeds (the twins were 24
    # min of training on two cores, the control's 12 runs took 8.1 on 2026-12-04: issue 27's 25 minutes)
    "quick": dict(ceiling_seed=None,
                  zoo=["swin_mini_p2", "tnt_mini_p4", "mixer_mini_p4", "perceiver_mini", "perceiver_io_mini"],
                  pretrained_zoo=[], sweep_model="vit_mini_p4", lr_grid=[5e-4, 2e-3, 8e-3],
                  batch_grid=[64, 256, 1024], tnt_model="tnt_mini_p4", tnt_grid=[[4, 2], [4, 4], [14, 2]],
                  ladder=["perceiver_medium@latent16-14px", "perceiver_medium@latent32-14px",
                          "perceiver_medium@14px"], ladder_ablations=[]),
    "smoke": dict(zoo=["test_swin", "test_tnt", "test_mixer", "test_perceiver", "test_perceiver_io"],
                  pretrained_zoo=[], sweep_model="test_vit", lr_grid=[1e-3, 3e-3], batch_grid=[32, 64],
                  tnt_model="test_tnt", tnt_grid=[[4, 2], [4, 4]],
                  ladder=["perceiver_medium@latent8", "perceiver_medium@latent16"],
                  ladder_ablations=["perceiver_medium@latent8-no-aug",
                                    "perceiver_medium@latent8-no-dropout"]),
    # rehearsal: full's names at one point each (the aligned control: recipes.ALIGNED's one lr, two seeds);
    # one member of the zoo (the loop and its table: every zoo
    # member's full recipe takes a bf16 step in tests/test_bf16.py; all five took 72 s of CI's rehearsal); the
    # pretrained zoo's paper MLP, ViT-S/16 and Swin-T (TNT-S's and Mixer-B/16's weights files are read by
    # tests/test_rehearsal.py; Mixer-B/16: 12.6 GFLOPs an image); no seed twins: their path is smoke's, and a
    # pretrained recipe the store builds itself (the ViT twin's case) is 04's sources' (three more full-size
    # runs cost CI about a minute; 02 and 03 follow)
    "rehearsal": dict(ceiling_seed=None, zoo=["swin_tiny_p2"],
                      pretrained_zoo=["mlp_b12_wi1024@in21k", "vit_small_patch16_224",
                                      "swin_tiny_patch4_window7_224"],
                      lr_grid=[1e-3], batch_grid=[16], tnt_grid=[[8, 4]], ladder=["perceiver_medium"],
                      ladder_ablations=["perceiver_medium@no-aug"]),
}


def config(profile: str | None = None, **overrides) -> Config:
    """01's config under `profile`, with `overrides` (checked: unknown knobs and wrong types are errors)."""
    return resolve(Config, profile, SMALLER, overrides)
