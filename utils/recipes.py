"""How each model is trained under each profile: the one place for training recipes.

    r = get_recipe("cnn_small", "quick")   # Recipe(train=TrainConfig(...), overrides={...}, ...)

A run without an entry is an error (never a silent default); runs that are not in the table (sweep points,
ablations) pass their recipe to `utils.store.get_or_train` explicitly, built from `default_recipe`,
`sweep_recipe` or `with_train`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .profiles import PROFILES
from .train import TrainConfig


@dataclass(frozen=True)
class Recipe:
    train: TrainConfig  # checkpoint_dir is set by the store
    overrides: dict = field(default_factory=dict)  # create_model(**overrides)
    pretrained: bool | str = False  # create_model(pretrained=...): start from published weights
    trainable: str | None = None  # only parameters under this module name train (e.g. "head"); None: all
    train_subset: int | None = None  # first n training images, at most the profile's; None: the profile's
    fallback: str | None = None  # the run to use instead when pretrained weights are unreachable (offline)
    init_from: str | None = None  # "<dataset>/<run>" stored under the same profile: start from its weights
    # (a head for another number of classes is left freshly initialised): fine-tuning a source model
    head_init: str | None = None  # None: the head as above; "new": freshly initialised from the seed, always
    # (fine-tuning to new classes of the same count); else a .safetensors file of the head's weights (LP-FT:
    # the linear probe fitted on the frozen features), its contents part of the store key
    note: str = ""  # where the recipe comes from; printed by the 01 notebook (not part of the store key)


def default_recipe(profile: str) -> Recipe:
    if profile not in PROFILES:
        raise KeyError(f"unknown profile {profile!r}; profiles: {', '.join(PROFILES)}")
    p = PROFILES[profile]
    cfg = TrainConfig(
        epochs=p.epochs,
        batch_size=p.batch_size,
        eval_batch_size=p.eval_batch_size,
        lr=1e-3,
        weight_decay=0.05,
        warmup_epochs=1 if p.epochs > 2 else 0,
        label_smoothing=0.1,
    )
    return Recipe(cfg, note=f"{profile} default")


_SMOKE = TrainConfig(epochs=2, batch_size=64, eval_batch_size=256, lr=3e-3, weight_decay=0.05)
# quick: Fashion-MNIST on 2 CPU cores. Flips only: pad-4 crops cost these small models more accuracy than
# they bring in a few epochs (mlp_b4_wi256: 0.872 after 13 epochs with crops; see the 01 notebook).
_QUICK = TrainConfig(
    epochs=5,
    batch_size=256,
    eval_batch_size=1000,
    lr=2e-3,
    weight_decay=0.05,
    warmup_epochs=1,
    label_smoothing=0.1,
    crop_pad=0,
)
# The ViT zoo under quick: 3 epochs on the first 10k images (the sweeps use the same).
_QUICK_ZOO = Recipe(replace(_QUICK, epochs=3), train_subset=10_000, note="quick zoo: 3 epochs on 10k images")
# 30 epochs, not the 100 a DeiT-style recipe usually takes: full's budget (issue 26: `full` within an hour on
# one H200 by count) cut the zoo and the Perceiver ladder first (100 -> 50 -> 30); they are compared with each
# other at one budget, and the trio's recipes are not cut.
_FULL_ZOO = Recipe(
    TrainConfig(
        epochs=30,
        batch_size=512,
        eval_batch_size=2048,
        lr=1e-3,
        weight_decay=0.05,
        warmup_epochs=5,
        label_smoothing=0.1,
        mixup_alpha=0.8,
    ),
    note="DeiT-style from scratch: AdamW, warmup + cosine, label smoothing, mixup",
)
# Pretrained 224x224 timm models under full: the original study's ViT-S/16 recipe (frozen backbone, new head).
_FULL_HEAD = Recipe(
    TrainConfig(epochs=7, batch_size=1024, eval_batch_size=1024, lr=1e-3, weight_decay=0.0, amp=True),
    pretrained=True,
    trainable="head",
    note="timm ImageNet weights, frozen backbone, new linear head: AdamW, 7 epochs, batch 1024, 224x224",
)

RECIPES: dict[tuple[str, str], Recipe] = {
    **{("smoke", m): Recipe(_SMOKE, note="smoke") for m in ("test_mlp", "test_cnn", "test_vit")},
    **{
        ("smoke", m): Recipe(_SMOKE, train_subset=256, note="smoke zoo")
        for m in ("test_swin", "test_tnt", "test_mixer", "test_perceiver", "test_perceiver_io")
    },
    ("quick", "mlp_b4_wi256"): Recipe(replace(_QUICK, epochs=20, lr=1e-3), note="quick MLP"),
    ("quick", "cnn_small"): Recipe(replace(_QUICK, epochs=4, lr=3e-3), note="quick CNN"),
    # batch 64: at a fixed epoch budget more updates win (the 01 batch-size sweep: 0.733 at 64, 0.618 at 256).
    # lr 2e-3 is best at batch 64 too (60k images, 4 epochs: 1e-3 0.857, 2e-3 0.868, 3e-3 0.867, 4e-3 0.862).
    # Batch 32 for 9 epochs (the most that fits the trio's 20 min) reached 0.884 in 14.6 min: worse.
    ("quick", "vit_mini_p4"): Recipe(replace(_QUICK, epochs=10, batch_size=64), note="quick ViT"),
    **{
        ("quick", m): _QUICK_ZOO
        for m in ("swin_mini_p2", "tnt_mini_p4", "mixer_mini_p4", "perceiver_mini", "perceiver_io_mini")
    },
    # full: CIFAR-10 on a GPU. Not yet run by this project (no GPU has been lent): values from the sources.
    ("full", "mlp_b12_wi1024"): Recipe(
        TrainConfig(
            epochs=200,
            batch_size=1024,
            eval_batch_size=2048,
            optimizer="lion",
            lr=5e-5,
            weight_decay=0.0,
            warmup_epochs=5,
            label_smoothing=0.3,
            mixup_alpha=0.8,
        ),
        note="Bachmann et al. 2023 training defaults (scaling_mlps train.py: Lion, lr 5e-5, label smoothing "
        "0.3, mixup 0.8, crop + flip); from scratch at 64x64",
    ),
    ("full", "mlp_b12_wi1024@in21k"): Recipe(
        TrainConfig(
            epochs=100,
            batch_size=2048,
            eval_batch_size=2048,
            optimizer="sgd",
            lr=0.01,
            weight_decay=1e-4,
            label_smoothing=0.3,
            grad_clip=1.0,
        ),
        pretrained=True,
        fallback="mlp_b12_wi1024",
        note="Bachmann et al. 2023 fine-tuning command (SGD, lr 0.01, wd 1e-4, batch 2048, 100 epochs, "
        "smoothing 0.3) from their ImageNet-21k checkpoint",
    ),
    ("full", "resnet18_cifar"): Recipe(
        TrainConfig(
            epochs=60,
            batch_size=512,
            eval_batch_size=2048,
            optimizer="nesterov",
            lr=0.2,
            weight_decay=5e-4,
            warmup_epochs=2,
            label_smoothing=0.0,
        ),
        note="standard CIFAR ResNet-18: SGD + Nesterov momentum 0.9, wd 5e-4, lr 0.1 per 256 images, cosine",
    ),
    ("full", "vit_small_patch16_224"): replace(
        _FULL_HEAD,
        fallback="vit_small_p4",
        note="the original study: timm ImageNet weights, frozen backbone, new linear head, AdamW, 7 epochs, "
        "batch 1024, 224x224",
    ),
    ("full", "vit_small_patch16_224@finetune"): Recipe(
        TrainConfig(epochs=7, batch_size=1024, eval_batch_size=1024, lr=1e-4, weight_decay=0.05, amp=True),
        pretrained=True, fallback="vit_small_p4",
        note="full fine-tuning variant of the above: every layer trains, lr 1e-4"),
    ("full", "vit_small_p4"): _FULL_ZOO,
    **{("full", m): _FULL_ZOO
       for m in ("swin_tiny_p2", "tnt_small_p4", "mixer_small_p4", "perceiver_base", "perceiver_io_base")},
    # The pretrained zoo: no fallback, the from-scratch counterparts are in the zoo above.
    **{("full", m): _FULL_HEAD
       for m in ("swin_tiny_patch4_window7_224", "tnt_s_patch16_224", "mixer_b16_224")},
}


def get_recipe(run: str, profile: str) -> Recipe:
    """The recipe of a run ("model" or "model@variant") under a profile. A run without an entry is a KeyError
    listing the profile's runs: pass `recipe=` to store.get_or_train for anything else (sweeps, ablations)."""
    if (profile, run) not in RECIPES:
        known = sorted(r for p, r in RECIPES if p == profile)
        raise KeyError(f"no recipe for {run!r} under profile {profile!r}; recipes: {', '.join(known)} "
                       "(or pass recipe=..., e.g. recipes.default_recipe(profile))")
    return RECIPES[profile, run]


def with_train(recipe: Recipe, **changes) -> Recipe:
    """The recipe with some TrainConfig fields changed (sweeps): with_train(r, lr=3e-4)."""
    return replace(recipe, train=replace(recipe.train, **changes))


def seed_twin(run: str, profile: str, seed: int) -> tuple[str, Recipe]:
    """The same run trained from another seed (initialisation, data order, augmentation): its name
    ("resnet18_cifar@seed1", "mlp_b12_wi1024@in21k-seed1") and recipe. Two seeds of one recipe are the
    ceiling that error consistency and representational similarity between families are read against."""
    recipe = get_recipe(run, profile)
    return f"{run}{'-' if '@' in run else '@'}seed{seed}", with_train(recipe, seed=seed)


def seed_twins(runs: list[str], profile: str, seed: int | None) -> dict[str, tuple[str, Recipe]]:
    """Each run's seed_twin: run -> (twin's name, recipe); None: no twins ({})."""
    return {} if seed is None else {r: seed_twin(r, profile, seed) for r in runs}


# ---------------------------------------------------------------- the recipe-aligned control (issue 27)


@dataclass(frozen=True)
class Control:
    """The trio trained again under one shared recipe (utils/aligned.py reads the answer): every model at
    each of `lrs` from seeds[0], the lr with the best mean validation top-1 over the models chosen, then every
    seed at that lr. A model the profile fine-tunes from published weights is trained from scratch as its
    recipe's fallback (full: ViT-S/16@224's CIFAR-form counterpart vit_small_p4), as every family here is."""

    recipe: Recipe  # the shared recipe: its lr and seed are set per run
    lrs: tuple[float, ...]  # the lr grid (seed seeds[0]); the choice is made on the validation split
    seeds: tuple[int, ...] = (0, 1, 2)


ALIGNED_TAG = "@aligned-"
# One recipe for every family: AdamW, linear warmup + cosine, label smoothing 0.1, weight decay 0.05, flips
# (and full's pad-4 crops), no mixup, one epoch budget: the quick trio's own recipes already share the
# optimizer and schedule, and differ in lr (1e-3 / 3e-3 / 2e-3), batch (256 / 256 / 64) and epochs (20 / 4 /
# 10); under full they differ in everything (Lion + mixup + smoothing 0.3, SGD-Nesterov, a frozen pretrained
# backbone). quick: 4 epochs on 20k images, 12 runs (2 lrs + 2 seeds, x 3 models) that fit issue 27's 25
# minutes on two cores; full: 15 epochs from scratch (2.8 counted minutes on one H200).
ALIGNED: dict[str, Control] = {
    "smoke": Control(Recipe(replace(_SMOKE, label_smoothing=0.1), train_subset=256, note="smoke aligned"),
                     lrs=(1e-3, 3e-3)),
    "quick": Control(Recipe(replace(_QUICK, epochs=4), train_subset=20_000,
                            note="aligned: AdamW, warmup + cosine, smoothing 0.1, flips, 4 epochs on 20k"),
                     lrs=(1e-3, 3e-3)),
    "full": Control(Recipe(TrainConfig(epochs=15, batch_size=512, eval_batch_size=2048, weight_decay=0.05,
                                       warmup_epochs=2, label_smoothing=0.1),
                           note="aligned: AdamW, warmup + cosine, smoothing 0.1, crops + flips, 15 epochs"),
                    lrs=(3e-4, 1e-3)),
}


def control_model(run: str, profile: str) -> str:
    """The model the control trains for a trio run: itself, or its from-scratch fallback where the profile
    starts it from published weights."""
    recipe = RECIPES.get((profile, run))
    return (recipe.fallback if recipe is not None and recipe.pretrained and recipe.fallback else run
            ).split("@", 1)[0]


def aligned_runs(models: list[str], profile: str, lr: float, seeds: tuple[int, ...] | None = None
                 ) -> dict[str, Recipe]:
    """The control's runs at one lr: name ("<model>@aligned-lr<lr>-s<seed>") -> recipe, model-major, every
    seed of the control (or `seeds`)."""
    control = ALIGNED[profile]
    return {f"{control_model(m, profile)}{ALIGNED_TAG}lr{lr:g}-s{s}":
            with_train(control.recipe, lr=lr, seed=s) for m in models
            for s in (control.seeds if seeds is None else seeds)}


def aligned_trials(models: list[str], profile: str) -> dict[str, Recipe]:
    """The lr trials: every model at every lr of the grid, from the control's first seed."""
    control = ALIGNED[profile]
    return {k: v for lr in control.lrs
            for k, v in aligned_runs(models, profile, lr, control.seeds[:1]).items()}


def aligned_lr(trials, profile: str) -> float:
    """The control's lr: the one whose trials (a table: run, val_top1, in aligned_trials' order) have the best
    mean validation top-1 over the models (an lr where a model diverged, val_top1 NaN, is never chosen)."""
    lrs = ALIGNED[profile].lrs
    val = trials["val_top1"].to_numpy(dtype=float).reshape(len(lrs), -1)
    means = [v.mean() if np.isfinite(v).all() else -np.inf for v in val]
    return float(lrs[int(np.argmax(means))])


# The learning-rate and batch-size sweeps of the 01 notebook start from these and change lr or batch_size.
SWEEP_BASE = {
    "smoke": Recipe(_SMOKE, train_subset=256, note="smoke sweep"),
    "quick": _QUICK_ZOO,
    # 15 epochs (30 before issue 26's budget): the sweeps rank lrs, batch sizes and TnT's patch sizes on the
    # validation split at a shortened schedule; the winner's absolute top-1 is not the zoo's
    "full": replace(_FULL_ZOO, train=replace(_FULL_ZOO.train, epochs=15), note="full sweep: 15 epochs"),
}


def sweep_recipe(profile: str, **changes) -> Recipe:
    """The profile's sweep recipe with TrainConfig fields changed: sweep_recipe("quick", lr=3e-4)."""
    return with_train(SWEEP_BASE[profile], **changes)


def tnt_sweep_recipe(profile: str, patch: int, pixel: int) -> Recipe:
    """The profile's sweep recipe (its fixed learning rate) with TnT's patch and pixel size set: the ViT-zoo
    study's (patch, pixel) ablation. Run names: "<tnt model>@patch<p>-pix<q>"."""
    base = SWEEP_BASE[profile]
    return replace(base, overrides={**base.overrides, "patch_size": patch, "pixel_size": pixel},
                   note=f"{base.note}; TnT patch {patch}, pixel {pixel}")


# The ViT-zoo study's Perceiver ladder (notebook 01): medium / large / XL (models.vit.perceiver_rung), and its
# ablations without augmentation and without dropout. Under full the rungs and ablations train as the rest of
# the zoo. Under quick the ladder is CPU-sized, rungs only: the same rule at latent widths 16, 32 and the
# medium rung's 64, on images resized to 14x14 (a quarter of the cross-attention's work; at 28x28 the three
# rungs took 7 min, over the notebook's budget), with the quick zoo recipe (3 epochs, 10k images); under
# smoke at widths 8 and 16 with the ablations at 8. Variants: "@latent<d>" (width d), "<side>px" (the side the
# images are resized to), "-no-aug" (no crops, flips or mixup), "-no-dropout" (attention and feed-forward
# dropout 0).


def ladder_width(d: int) -> dict:
    """create_model overrides for a Perceiver ladder model at latent width d (vit.perceiver_rung)."""
    return {"latent_dim": d, "cross_dim_head": d, "latent_heads": max(1, d // 16)}


NO_DROPOUT = {"attn_dropout": 0.0, "ff_dropout": 0.0}


def no_augmentation(recipe: Recipe, note: str = "") -> Recipe:
    """The recipe without crops, flips and mixup (label smoothing stays: it is not augmentation)."""
    plain = with_train(recipe, crop_pad=0, flip=False, mixup_alpha=0.0)
    return replace(plain, note=note or recipe.note + "; no augmentation")


def _ladder_runs(profile: str, model: str, base: Recipe, width: int | None = None, side: int | None = None,
                 ablate: bool = False) -> dict:
    """A rung (width None: the registered width; side None: the images' own) and, with `ablate`, its two
    ablations, keyed by (profile, run name)."""
    over = {**(ladder_width(width) if width else {}), **({"resolution": side} if side else {})}
    tags = [f"latent{width}"] * bool(width) + [f"{side}px"] * bool(side)
    name, sep = (f"{model}@{'-'.join(tags)}", "-") if tags else (model, "@")
    what = ", ".join([f"latent width {width}"] * bool(width) + [f"{side}x{side} images"] * bool(side))
    rung = replace(base, overrides=over,
                   note=f"{base.note}; Perceiver ladder " + (f"CPU-sized rung, {what}" if tags else "rung"))
    runs = {name: rung}
    if ablate:
        runs[f"{name}{sep}no-aug"] = no_augmentation(rung, f"{rung.note}, no augmentation")
        runs[f"{name}{sep}no-dropout"] = replace(rung, overrides={**over, **NO_DROPOUT},
                                                 note=f"{rung.note}, no dropout")
    return {(profile, r): recipe for r, recipe in runs.items()}


_SMOKE_LADDER = Recipe(_SMOKE, train_subset=256, note="smoke")
LADDER_RECIPES: dict[tuple[str, str], Recipe] = {
    **_ladder_runs("smoke", "perceiver_medium", _SMOKE_LADDER, 8, ablate=True),
    **_ladder_runs("smoke", "perceiver_medium", _SMOKE_LADDER, 16),
    **_ladder_runs("quick", "perceiver_medium", _QUICK_ZOO, 16, side=14),
    **_ladder_runs("quick", "perceiver_medium", _QUICK_ZOO, 32, side=14),
    **_ladder_runs("quick", "perceiver_medium", _QUICK_ZOO, side=14),
    **_ladder_runs("full", "perceiver_medium", _FULL_ZOO, ablate=True),
    **_ladder_runs("full", "perceiver_large", _FULL_ZOO),
    **_ladder_runs("full", "perceiver_xl", _FULL_ZOO),
}
RECIPES.update(LADDER_RECIPES)


# ---------------------------------------------------------------- the rehearsal: full's recipes at toy counts


def rehearsed(recipe: Recipe) -> Recipe:
    """A full recipe with only its counts cut to the rehearsal profile's epochs (1 of warmup where the recipe
    warms up) and batch sizes; every other field (optimizer, lr, mixup, label smoothing, grad clipping,
    autocast, frozen backbone, pretrained weights and fallbacks) as in full."""
    p = PROFILES["rehearsal"]
    cfg = replace(recipe.train, epochs=p.epochs, warmup_epochs=min(recipe.train.warmup_epochs, p.epochs - 1),
                  batch_size=p.batch_size, eval_batch_size=p.eval_batch_size)
    return replace(recipe, train=cfg, train_subset=None, note=f"rehearsal of: {recipe.note}")


RECIPES.update({("rehearsal", run): rehearsed(r) for (p, run), r in list(RECIPES.items()) if p == "full"})
SWEEP_BASE["rehearsal"] = rehearsed(SWEEP_BASE["full"])
# the aligned control's full path (full's models, recipe and fallbacks) at one lr and two seeds: 6 runs
ALIGNED["rehearsal"] = Control(rehearsed(ALIGNED["full"].recipe), lrs=ALIGNED["full"].lrs[:1], seeds=(0, 1))
