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

import numpy as np
import pandas as pd

from ..models import vit
from ..profiles import Profile
from ..recipes import Recipe, tnt_sweep_recipe
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
