"""Transfer to a new task, the non-probe ways (04): fine-tuning the source network, training the same
architecture from scratch, and XGBoost on raw pixels; plus the data plumbing every method shares.

    pool, val = transfer_splits(target_train, n_val=500)          # a fixed validation set apart
    train_k = per_class(pool, 10, seed=0)                          # 10 images of each class
    budget_recipe(base_cfg, len(train_k), steps=150, init_from="fashion-mnist[0-4]/cnn_small")
    xgboost_pixels(train_k, test)                                   # {"top1": ...}

Fine-tuning and scratch runs are trained through the store (stored, resumable) with a fixed budget of
optimizer steps, so every target size gets the same number of updates (capped at `max_epochs` passes);
fine-tuning starts from the stored source run and trains every layer, the backbone at a lower lr than the
new head (TrainConfig.backbone_lr_scale). The linear probes on frozen features are probes.py's.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from ..data import ImageSet, stratified_index, train_val_split
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


def budget_recipe(base: TrainConfig, n_train: int, steps: int, *, max_epochs: int = 40,
                  init_from: str | None = None, lr: float | None = None, backbone_lr_scale: float = 1.0,
                  seed: int = 0, note: str = "") -> Recipe:
    """A recipe of about `steps` optimizer updates on n_train images: batch min(base batch, n_train), as
    many epochs as that takes (at least 1, at most max_epochs), warmup dropped when there is one epoch."""
    batch = min(base.batch_size, n_train)
    epochs = max(1, min(max_epochs, math.ceil(steps / max(n_train // batch, 1))))
    cfg = replace(base, epochs=epochs, batch_size=batch, lr=base.lr if lr is None else lr,
                  warmup_epochs=min(base.warmup_epochs, epochs - 1), backbone_lr_scale=backbone_lr_scale,
                  seed=seed, checkpoint_dir=None)
    return Recipe(cfg, init_from=init_from, note=note)


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
