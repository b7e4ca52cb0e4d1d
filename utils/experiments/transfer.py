"""Transfer to a new task, the non-probe ways (04): fine-tuning the source network (with a new head, or from
the linear probe's head: LP-FT), training the same architecture from scratch, and XGBoost on raw pixels;
plus the data plumbing every method shares.

    pool, val = transfer_splits(target_train, n_val=500)          # a fixed validation set apart
    train_k = per_class(pool, 10, seed=0)                          # 10 images of each class
    budget = Budget(steps=100, max_epochs=40)                      # every run: exactly 100 optimizer steps
    transfer_recipe("LP-FT", base_cfg, len(train_k), budget, source="fashion-mnist[0-4]/cnn_small@source-s0",
                    head_file=save_head(probe, "heads/cnn_small-k10.safetensors"))
    xgboost_pixels(train_k, test)                                   # {"top1": ...}

Fine-tuning and scratch runs are trained through the store (stored, resumable) with the same number of
optimizer steps whatever the target size (step_plan picks the batch so that full epochs add up to exactly
`steps`) and the same lr at every step (cosine, no warmup). Fine-tuning starts from the stored source run and
trains every layer, the backbone at a lower lr than the head (TrainConfig.backbone_lr_scale), BatchNorm with
the source's running statistics (TrainConfig.frozen_bn_stats); its head is always new (fine-tune) or the
probe's (LP-FT), never the source task's classifier. The linear probes on frozen features are probes.py's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import ImageSet, stratified_index, train_val_split
from ..files import atomic_write
from ..recipes import Recipe
from ..train import TrainConfig


def per_class(ds: ImageSet, k: int | None, seed: int = 0) -> ImageSet:
    """k images of each class (stratified, seeded; the split's order kept); None or too many: all of ds."""
    if k is None or k * ds.info.num_classes >= len(ds):
        return ds
    return ds.subset(stratified_index(ds.labels, k * ds.info.num_classes, seed))


def transfer_splits(train: ImageSet, n_val: int, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """(pool, val): a fixed stratified validation set of min(n_val, 10% of the split) images held out of the
    target's training split, and the pool every target-size subset is drawn from (so no method ever trains
    on the validation images)."""
    return train_val_split(train, min(n_val, round(0.1 * len(train))) / len(train), seed)


def resize(ds: ImageSet, size: int, channels: int | None = None) -> ImageSet:
    """The images at size x size (bilinear, antialiased), grey repeated to `channels` if given: a target set
    shaped for the source models (STL-10's 96 px for 32 px CIFAR models)."""
    x = ds.images.float()
    if channels is not None and x.shape[1] != channels:
        if channels != 1 and x.shape[1] != 1:
            raise ValueError(f"cannot map {x.shape[1]} channels to {channels}")
        x = x.mean(1, keepdim=True) if channels == 1 else x.expand(-1, channels, -1, -1)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    info = replace(ds.info, image_size=size, channels=x.shape[1])
    return ImageSet(x.round().clamp(0, 255).to(torch.uint8), ds.labels, info, ds.split, dict(ds.meta))


def step_plan(n_train: int, batch_size: int, steps: int, max_epochs: int) -> tuple[int, int]:
    """(batch, epochs) with epochs * (n_train // batch) == steps EXACTLY (full batches: the training loader
    drops the last partial one) and epochs <= max_epochs: of the batches that allow it, the one nearest
    `batch_size` (ratio-wise; ties: the smaller). Steps per epoch must divide `steps`, so a set of 50 images
    at base batch 256 and 40 steps trains 40 epochs of one batch of 50; 5,000 images, 20 epochs of 250."""
    plans = []
    for per_epoch in (d for d in range(1, min(steps, n_train) + 1) if steps % d == 0):
        lo, hi = n_train // (per_epoch + 1) + 1, n_train // per_epoch  # n_train // batch == per_epoch
        if lo <= hi and steps // per_epoch <= max_epochs:
            batch = min(max(batch_size, lo), hi)
            plans.append((abs(math.log(batch / batch_size)), batch, steps // per_epoch))
    if not plans:
        raise ValueError(f"no batch size gives exactly {steps} steps on {n_train} images in at most "
                         f"{max_epochs} epochs; raise max_epochs or choose another step count")
    _, batch, epochs = min(plans)
    return batch, epochs


def steps_of(recipe: Recipe, n_train: int) -> int:
    """Optimizer steps a recipe takes on n_train images (full batches only)."""
    return recipe.train.epochs * (n_train // recipe.train.batch_size)


def budget_recipe(base: TrainConfig, n_train: int, steps: int, *, max_epochs: int = 40,
                  init_from: str | None = None, lr: float | None = None, backbone_lr_scale: float = 1.0,
                  head_init: str | None = None, frozen_bn_stats: bool = False, seed: int = 0,
                  note: str = "") -> Recipe:
    """A recipe of exactly `steps` optimizer updates on n_train images (batch and epochs from step_plan),
    without warmup, so the lr at every step (cosine over the steps) is the same whatever n_train is."""
    batch, epochs = step_plan(n_train, base.batch_size, steps, max_epochs)
    cfg = replace(base, epochs=epochs, batch_size=batch, lr=base.lr if lr is None else lr, warmup_epochs=0,
                  backbone_lr_scale=backbone_lr_scale, frozen_bn_stats=frozen_bn_stats, seed=seed,
                  checkpoint_dir=None)
    return Recipe(cfg, init_from=init_from, head_init=head_init, note=note)


METHODS = ("fine-tune", "LP-FT", "scratch")  # the trained ways to a target task


@dataclass(frozen=True)
class Budget:
    """What every trained transfer run of notebook 04 shares."""

    steps: int  # optimizer steps per run, whatever the number of training images
    max_epochs: int  # passes over the training images at most (step_plan)
    backbone_lr_scale: float = 0.1  # fine-tune / LP-FT: the backbone learns at this times the head's lr
    frozen_bn_stats: bool = True  # fine-tune / LP-FT: BatchNorm keeps the source's running statistics
    seed: int = 0


def transfer_recipe(method: str, base: TrainConfig, n_train: int, budget: Budget, *,
                    source: str | None = None, head_file: str | Path | None = None,
                    lr_scale: float = 1.0) -> Recipe:
    """The recipe of one trained transfer run: "scratch" (the architecture from its seed, base lr x lr_scale),
    "fine-tune" (every layer from the stored `source` run "<dataset>/<run>", the head NEW whatever its
    shape) or "LP-FT" (the same, the head from `head_file`: the linear probe on the frozen features, Kumar
    et al. 2022), each `budget.steps` steps."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    lr = base.lr * lr_scale
    if method == "scratch":
        return budget_recipe(base, n_train, budget.steps, max_epochs=budget.max_epochs, lr=lr,
                             seed=budget.seed, note="scratch")
    if source is None or (method == "LP-FT" and head_file is None):
        needs = "the source run" + " and the probe's head file" * (method == "LP-FT")
        raise ValueError(f"{method} needs {needs}")
    return budget_recipe(base, n_train, budget.steps, max_epochs=budget.max_epochs, init_from=source, lr=lr,
                         backbone_lr_scale=budget.backbone_lr_scale, frozen_bn_stats=budget.frozen_bn_stats,
                         head_init="new" if method == "fine-tune" else str(head_file), seed=budget.seed,
                         note=method)


def run_name(model: str, method: str, k: int | None, lr_scale: float = 1.0) -> str:
    """The store's name of a transfer run: "cnn_small@lpft-k10-lr0.1" (lr_scale 1: no suffix)."""
    tag = {"fine-tune": "ft", "LP-FT": "lpft", "scratch": "scratch"}[method]
    return f"{model}@{tag}-k{k or 'all'}" + (f"-lr{lr_scale:g}" if lr_scale != 1 else "")


def save_head(head: nn.Linear, path: str | Path) -> Path:
    """A head's weights (weight (K, D), bias (K,)) to a .safetensors file, atomically: LP-FT's start."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    return atomic_write(path, lambda p: save_file(tensors, str(p)))


def chosen_lr(trials: pd.DataFrame) -> pd.DataFrame:
    """Per (target, model, method) of a table of lr trials (columns target, model, method, lr_scale,
    val_top1): the row of the best validation top-1 (ties: the first tried)."""
    keys = ["target", "model", "method"]
    return trials.loc[trials.groupby(keys, sort=False).val_top1.idxmax()].reset_index(drop=True)


def xgboost_pixels(train: ImageSet, test: ImageSet, *, n_estimators: int = 100, max_depth: int = 4,
                   learning_rate: float = 0.3, seed: int = 0, threads: int | None = None) -> dict[str, float]:
    """Gradient-boosted trees on the raw pixels (the non-neural baseline): test and train top-1."""
    import xgboost

    x = lambda ds: ds.images.flatten(1).numpy()
    model = xgboost.XGBClassifier(n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate,
                                  tree_method="hist", random_state=seed, n_jobs=threads,
                                  num_class=train.info.num_classes, objective="multi:softprob")
    model.fit(x(train), train.labels.numpy())
    top1 = lambda ds: float((model.predict(x(ds)) == ds.labels.numpy()).mean())
    return {"top1": top1(test), "train_top1": top1(train)}
