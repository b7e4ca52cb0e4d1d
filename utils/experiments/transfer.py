"""Transfer to a new task, the non-probe ways (04): fine-tuning the source network (with a new head, or from
the linear probe's head: LP-FT), training the same architecture from scratch, and XGBoost on raw pixels;
plus the data plumbing every method shares.

    pool, val = transfer_splits(target_train, n_val=500)          # a fixed validation set apart
    train_k = per_class(pool, 10, seed=0)                          # 10 images of each class
    budget = Budget(steps=100, max_epochs=40)                      # every run: exactly 100 optimizer steps
    transfer_recipe("LP-FT", base_cfg, len(train_k), budget, source="fashion-mnist[0-4]/cnn_small@source-s0",
                    head_file=save_head(probe, "heads/cnn_small-k10.safetensors"))
    xgboost_pixels(train_k, test)                                   # {"top1": ...}
    lr_trials(cfg, tasks, sources, profile)                        # 04's tables: the lr trials on validation,
    transfer_table(cfg, tasks, sources, trials, profile, probes=)  # every method at every k

Fine-tuning and scratch runs are trained through the store (stored, resumable) with the same number of
optimizer steps whatever the target size (step_plan picks the batch so that full epochs add up to exactly
`steps`) and the same lr at every step (cosine, no warmup). Fine-tuning starts from the stored source run and
trains every layer, the backbone at a lower lr than the head (TrainConfig.backbone_lr_scale), BatchNorm with
the source's running statistics (TrainConfig.frozen_bn_stats); its head is always new (fine-tune) or the
probe's (LP-FT), never the source task's classifier. The linear probes on frozen features are probes.py's.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import store
from ..config import resolve
from ..data import ImageSet, stratified_index, train_val_split
from ..files import atomic_write
from ..models import family
from ..recipes import Recipe, get_recipe, with_train
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
    et al. 2022), each `budget.steps` steps.

    The recipe's `trainable` is not carried over, on purpose (issue 26): ViT-S/16's full recipe trains only
    its head on CIFAR-10, but a fine-tune that never moves the backbone would be the linear probe again; all
    three methods train every weight (the backbone at budget.backbone_lr_scale), and "scratch" is what the
    pretrained weights are worth on the same steps. At 224 px this costs ViT-S/16 up to 1.4 min a run on
    one H200 (counted: `python -m utils.plan --profile full --only 04 --estimate`)."""
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
    val_top1): the row of the best validation top-1 (ties: the first tried; a trial that diverged has a
    NaN val_top1 and is never better than one that did not; all diverged: the first tried)."""
    keys = ["target", "model", "method"]
    scored = trials.assign(val_top1=trials.val_top1.fillna(-math.inf))
    return trials.loc[scored.groupby(keys, sort=False).val_top1.idxmax()].reset_index(drop=True)


def trained_metrics(name: str, dataset: str, profile, recipe: Recipe, splits, device: str | None = None
                    ) -> dict:
    """Train (or load) a transfer run through the store and return its model card's metrics with
    diverged=False; a run whose loss turns NaN/inf (too high an lr for this start) is a row of NaN scores
    with diverged=True instead of an error, as 06's ablations record it (no model is stored; the store marks
    the run as diverging, so a rerun does not train it again)."""
    try:
        store.get_or_train(name, dataset, profile, recipe=recipe, device=device, splits=splits)
    except FloatingPointError as err:
        print(f"{name}: diverged ({err})")
        return {"val_top1": math.nan, "test_top1": math.nan, "diverged": True}
    return {**store.model_card(name, dataset, profile)["metrics"], "diverged": False}


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


# ---------------------------------------------------------------- notebook 04: its runs


def budget(cfg: Config, seed: int = 0) -> Budget:
    return Budget(cfg.steps, cfg.max_epochs, cfg.backbone_lr_scale, cfg.frozen_bn_stats, seed)


def source_runs(cfg: Config, model: str, profile: str) -> dict[str, Recipe]:
    """A source model's two seeds: run name ("cnn_small@source-s0") -> its profile recipe with the config's
    changes and the seed."""
    base = with_train(get_recipe(model, profile), **cfg.source_changes.get(model, {}))
    return {f"{model}@source-s{s}": with_train(base, seed=s) for s in (0, 1)}


def source_of(cfg: Config, model: str) -> str:
    """The stored run every fine-tune of `model` starts from: "<source>/<model>@source-s0"."""
    return f"{cfg.source}/{model}@source-s0"


def target_splits(profile, target: str, source_info, n_val: int, seed: int = 0
                  ) -> tuple[ImageSet, ImageSet, ImageSet]:
    """(pool, validation, test) of a target task at the source's image size and channels."""
    train, test = (resize(store.load_data(profile, target, s), source_info.image_size, source_info.channels)
                   for s in ("train", "test"))
    return (*transfer_splits(train, n_val, seed), test)


def head_file(profile: str, target: str, model: str, k: int | None, source: str) -> Path:
    """Where the linear probe's head of `model` at k images per class of `target` is kept, in the store
    beside the target's runs and named by the source weights it was fitted on (a retrained source: another
    file), so the notebook and utils.plan start LP-FT from the same file."""
    dataset, _, run = source.partition("/")
    weights = store.run_dir(run, dataset, profile) / "model.safetensors"
    tag = store._file_hash(weights)[:12]
    return store.run_dir("heads", target, profile) / f"{model}-k{k or 'all'}-{tag}.safetensors"


def probe_head(path: Path, features: torch.Tensor, labels: torch.Tensor, num_classes: int, seed: int = 0
               ) -> Path:
    """`path` when it exists; else the linear probe fitted on the frozen features, saved there (LP-FT's
    head)."""
    if not Path(path).exists():
        from ..linear import fit_linear_probe

        save_head(fit_linear_probe(features, labels, num_classes=num_classes, seed=seed), path)
    return Path(path)


def head_input(net: nn.Module, ds: ImageSet) -> torch.Tensor:
    """The features the head sees (float32, CPU): what the probes are fitted on."""
    from ..hooks import collect_activations

    return collect_activations(net, ds, "head:input", dtype=torch.float32, progress=False)


# ---------------------------------------------------------------- notebook 04: its tables


def source_nets(cfg: Config, models: Sequence[str], info, profile, device: str | None = None
                ) -> dict[tuple[str, str], nn.Module]:
    """04's source networks, eval mode on `device`, keyed (model, tag): "s0" and "s1" the stored runs of
    source_runs (trained on first use), "init" the seed-0 recipe's network at initialisation (the CKA floor).
    info: the source task's DatasetInfo; profile: a Profile."""
    nets = {}
    for m in models:
        seeds = source_runs(cfg, m, profile.name)  # "<m>@source-s0", "<m>@source-s1" -> recipe
        for s, (name, recipe) in enumerate(seeds.items()):
            nets[m, f"s{s}"] = store.get_or_train(name, cfg.source, profile, recipe=recipe, device=device)
        nets[m, "init"] = store.build(m, info, seeds[f"{m}@source-s0"]).to(device).eval()
    return nets


def sources_table(cfg: Config, models: Sequence[str], profile) -> pd.DataFrame:
    """store.summarize of the source runs, a row per model and seed (seed 0 first)."""
    return store.summarize([name for m in models for name in source_runs(cfg, m, profile.name)], cfg.source,
                           profile)


def target_tasks(cfg: Config, profile, info, seed: int = 0) -> dict[str, tuple[ImageSet, ImageSet, ImageSet]]:
    """target -> (pool, validation, test) of each of cfg.targets (target_splits); a target whose files are
    missing (STL-10 offline) is left out with a printed line, and the others still run."""
    tasks = {}
    for target in cfg.targets:
        try:
            tasks[target] = target_splits(profile, target, info, cfg.n_val, seed)
        except FileNotFoundError as err:
            print(f"{target}: skipped ({err})")
    return tasks


def _train_run(cfg: Config, profile, device: str | None, seed: int, target: str, model: str, method: str,
               k: int | None, scale: float, splits: store.Splits, head: Path | None) -> tuple[Recipe, dict]:
    """One trained transfer run on splits.train (k per class) at `scale` times the recipe's lr: (recipe,
    trained_metrics)."""
    recipe = transfer_recipe(method, get_recipe(model, profile.name).train, len(splits.train),
                             budget(cfg, seed), source=source_of(cfg, model), head_file=head, lr_scale=scale)
    return recipe, trained_metrics(run_name(model, method, k, scale), target, profile, recipe, splits, device)


def _probe_head(cfg: Config, profile, seed: int, target: str, model: str, k: int | None,
                features: torch.Tensor, train_k: ImageSet, num_classes: int) -> Path:
    return probe_head(head_file(profile.name, target, model, k, source_of(cfg, model)), features,
                      train_k.labels, num_classes, seed)


def _row(target: str, model: str, method: str, per_class: int, **scores) -> dict:
    """A transfer table row: target, family ("-" for the pixels), model, method, per_class, then scores."""
    return {"target": target, "family": "-" if model == "pixels" else family(model), "model": model,
            "method": method, "per_class": per_class, **scores}


def lr_trials(cfg: Config, tasks: Mapping[str, tuple], sources: Mapping[str, nn.Module], profile,
              device: str | None = None, seed: int = 0) -> pd.DataFrame:
    """The fine-tuning lr trials: fine-tune and LP-FT of every model on every target task at k =
    cfg.lr_per_class images per class, at each lr of cfg.lr_grid (times the recipe's). A row per (target,
    model, method, lr_scale) with per_class, lr, val_top1 (validation only: the test score is not read) and
    diverged. tasks: target_tasks'; sources: model -> its seed-0 source network (LP-FT's probe is fitted on
    its head's input, the probe's head file kept in the store); profile: a Profile."""
    k, rows = cfg.lr_per_class, []
    for (target, (pool, val, te)), m in itertools.product(tasks.items(), sources):
        train_k = per_class(pool, k, seed)
        head = _probe_head(cfg, profile, seed, target, m, k, head_input(sources[m], train_k), train_k,
                           te.info.num_classes)
        for method, scale in itertools.product(METHODS[:2], cfg.lr_grid):
            recipe, scores = _train_run(cfg, profile, device, seed, target, m, method, k, scale,
                                        store.Splits(train_k, val, te), head)
            rows.append({"target": target, "model": m, "method": method, "per_class": k, "lr_scale": scale,
                         "lr": recipe.train.lr, "val_top1": scores["val_top1"],
                         "diverged": scores["diverged"]})
    return pd.DataFrame(rows)


def transfer_table(cfg: Config, tasks: Mapping[str, tuple], sources: Mapping[str, nn.Module],
                   trials: pd.DataFrame, profile, device: str | None = None, seed: int = 0, *,
                   probes: Mapping[str, Callable[..., dict]]) -> pd.DataFrame:
    """Transfer to each target task at each k of cfg.per_class, every method on the same k images per class,
    top-1 on the target's test split: XGBoost on the pixels (model "pixels"), then per model each of `probes`
    (name -> fit(train_x, train_y, test_x, test_y, num_classes=, seed=) -> {"top1", "train_top1", ...}, on
    the frozen seed-0 source's head input) and, at the ks of cfg.trained_per_class, each of METHODS at the
    lr_scale chosen on validation in `trials` (chosen_lr; scratch: its recipe's lr) with val_top1, diverged,
    lr, batch_size and steps. per_class: the images per class actually available. Arguments as lr_trials'."""
    chosen = {(r.target, r.model, r.method): r.lr_scale for r in chosen_lr(trials).itertuples()}
    rows = []
    for target, (pool, val, te) in tasks.items():
        f_te = {m: head_input(net, te) for m, net in sources.items()}  # (N_test, D) per model
        for k in cfg.per_class:
            train_k = per_class(pool, k, seed)
            n_k = len(train_k) // train_k.info.num_classes  # images per class actually available
            rows.append(_row(target, "pixels", "xgboost (pixels)", n_k,
                             **xgboost_pixels(train_k, te, seed=seed, **cfg.xgboost)))
            for m, net in sources.items():
                f_tr = head_input(net, train_k)
                for method, fit in probes.items():
                    s = fit(f_tr, train_k.labels, f_te[m], te.labels, num_classes=te.info.num_classes,
                            seed=seed)
                    rows.append(_row(target, m, method, n_k, top1=s["top1"], train_top1=s["train_top1"]))
                if k not in cfg.trained_per_class:
                    continue
                head = _probe_head(cfg, profile, seed, target, m, k, f_tr, train_k, te.info.num_classes)
                for method in METHODS:
                    scale = chosen.get((target, m, method), 1.0)  # scratch: its recipe's lr
                    recipe, card = _train_run(cfg, profile, device, seed, target, m, method, k, scale,
                                              store.Splits(train_k, val, te), head)
                    rows.append(_row(target, m, method, n_k, top1=card["test_top1"],
                                     val_top1=card["val_top1"], diverged=card["diverged"], lr=recipe.train.lr,
                                     batch_size=recipe.train.batch_size,
                                     steps=steps_of(recipe, len(train_k))))
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class TransferTask:
    """One trained transfer run as utils.plan trains it ahead, exactly as 04 builds it: the target's splits,
    k images per class, the probe's head (LP-FT) and the recipe."""

    cfg: Config
    model: str
    target: str
    method: str
    k: int | None
    lr_scale: float
    seed: int

    @property
    def image_dataset(self) -> str:  # the models see the target resized to the source's images
        return self.cfg.source

    def n_val(self, profile) -> int:
        """Validation images held out of the target's training split (transfer_splits), counted."""
        from ..data.cache import info_of
        from ..plan import split_size

        n = split_size(profile, self.target, capped=False)
        return max(info_of(self.target).num_classes, min(self.cfg.n_val, round(0.1 * n)))

    def n_train(self, profile) -> int:
        """Images of the k-per-class subset, counted from the split sizes (nothing read)."""
        from ..data.cache import info_of
        from ..plan import split_size

        pool = split_size(profile, self.target, capped=False) - self.n_val(profile)
        return pool if self.k is None else min(pool, self.k * info_of(self.target).num_classes)

    def recipe(self, n_train: int, head: Path | None, profile: str) -> Recipe:
        return transfer_recipe(self.method, get_recipe(self.model, profile).train, n_train,
                               budget(self.cfg, self.seed), source=source_of(self.cfg, self.model),
                               head_file=head, lr_scale=self.lr_scale)

    def provisional(self, profile) -> Recipe:
        """The recipe at the counted size, the head file not yet known (the plan's cost)."""
        return self.recipe(self.n_train(profile), Path("probe-head") if self.method == "LP-FT" else None,
                           profile.name)

    def train(self, run, profile, device: str | None = None) -> None:
        """Build the splits (and the probe's head) and train the run through the store."""
        from ..data.cache import info_of

        pool, val, test = target_splits(profile, self.target, info_of(self.cfg.source), self.cfg.n_val,
                                        self.seed)
        train_k = per_class(pool, self.k, self.seed)
        head = None
        if self.method == "LP-FT":
            dataset, _, run_name_ = source_of(self.cfg, self.model).partition("/")
            net = store.get_or_train(run_name_, dataset, profile, device=device, progress=False,
                                     recipe=source_runs(self.cfg, self.model, profile.name)[run_name_])
            head = probe_head(head_file(profile.name, self.target, self.model, self.k,
                                        source_of(self.cfg, self.model)),
                              head_input(net, train_k), train_k.labels, test.info.num_classes, self.seed)
        recipe = self.recipe(len(train_k), head, profile.name)
        store.get_or_train(run.name, self.target, profile, recipe=recipe, device=device,
                           splits=store.Splits(train_k, val, test))


def runs(cfg: Config, ctx) -> list:
    """Every run 04 asks the store for (utils.plan): two seeds of each source model; per target and model
    the fine-tune and LP-FT lr trials at lr_per_class; then every trained method at each k, fine-tune and
    LP-FT at the lr chosen on the target's validation split (waiting until the trials are stored); and 01's
    aligned control, whose final features the similarity suite compares."""
    P, out = ctx.profile.name, []
    for m in ctx.models:
        out += [ctx.run(name, recipe, cfg.source) for name, recipe in source_runs(cfg, m, P).items()]
    task = lambda m, t, method, k, scale: TransferTask(cfg, m, t, method, k, scale, ctx.seed)
    for target in cfg.targets:
        for m in ctx.models:
            chosen = {}
            for method in METHODS[:2]:
                trials = [ctx.run(run_name(m, method, cfg.lr_per_class, scale),
                                  task(m, target, method, cfg.lr_per_class, scale).provisional(ctx.profile),
                                  target, task=task(m, target, method, cfg.lr_per_class, scale))
                          for scale in cfg.lr_grid]
                out += trials
                chosen[method] = ctx.chosen(trials, lambda t: cfg.lr_grid[
                    int(t.val_top1.fillna(-math.inf).to_numpy().argmax())])
            for k in cfg.trained_per_class:
                for method in METHODS:
                    scale = 1.0 if method == "scratch" else chosen[method]
                    known = scale is not None
                    if not known and k == cfg.lr_per_class:
                        continue  # the chosen lr's run at this k is one of the trials above
                    t = task(m, target, method, k, scale if known else cfg.lr_grid[0])
                    name = run_name(m, method, k, scale) if known else f"{run_name(m, method, k)}-lr?"
                    waits = "" if known else f"the {method} lr of {m} on {target} (validation)"
                    out.append(ctx.run(name, t.provisional(ctx.profile), target, task=t, waits_for=waits))
    return out + (ctx.aligned() if cfg.aligned else [])


# ---------------------------------------------------------------- notebook 04: its knobs


@dataclass(frozen=True)
class Config:
    """04's knobs (CKA, layer probes, transfer). Defaults are full's; SMALLER holds what the other profiles
    change."""

    source: str = "cifar10"  # the task the source models train on (a dataset, optionally a class subset)
    targets: list[str] = field(default_factory=lambda: ["cifar100[0-9]", "stl10"])  # tasks none of them saw
    # the source recipe: each model's profile recipe with these TrainConfig changes (two seeds of each train)
    source_changes: dict[str, dict[str, int]] = field(default_factory=lambda: {
        "mlp_b12_wi1024": {"epochs": 50}, "resnet18_cifar": {"epochs": 20}})
    n_cka: int = 5000  # test images for CKA
    n_similarity: int = 2000  # test images for the similarity suite (four measures of the final features)
    n_null: int = 20  # the suite's permutation null: shuffles per cross pair and measure
    aligned: bool = True  # the suite's debiased CKA among 01's aligned control (the trio under one shared
    # recipe, every seed; utils/aligned.py), beside the own-recipe sources'
    n_probe_train: int = 20000  # training images for the layer probes
    n_probe_test: int = 10000  # test images for the layer probes
    # k images per class (None: all). Both targets hold 450 per class once validation is held out (5,000
    # training images, 10% held out), so a k of 1000 would be "all" trained twice (issue 26):
    # full stops at 100.
    per_class: list[int | None] = field(default_factory=lambda: [10, 100, None])
    trained_per_class: list[int | None] = field(default_factory=lambda: [10, 100, None])  # fine-tune, LP-FT,
    # scratch
    n_val: int = 2000  # target validation images (never trained on; scored every epoch of every trained run)
    steps: int = 600  # optimizer steps of every fine-tune / LP-FT / scratch run, exactly, at every k (1,000
    # before issue 26's budget)
    max_epochs: int = 60  # ... in at most this many passes over the k images (step_plan; 200, then 100,
    # before issue 26's budget: at k = all, 4,500 images, the batch is 450)
    backbone_lr_scale: float = 0.1  # fine-tune / LP-FT: the backbone learns at this times the head's lr
    frozen_bn_stats: bool = True  # fine-tune / LP-FT: BatchNorm keeps the source's running statistics
    lr_grid: list[float] = field(default_factory=lambda: [1.0, 0.1])  # fine-tune / LP-FT lr: these times the
    # recipe's, chosen on the target's validation split
    lr_per_class: int = 100  # ... at this k per model; reused at every k
    xgboost: dict[str, int] = field(default_factory=lambda: {"n_estimators": 300, "max_depth": 6})


_SMALL_TARGETS = ["fashion-mnist[5-9]", "sklearn-digits"]
SMALLER = {
    # quick, 2 idle CPU cores: 5.5 min for the six source runs, 4 of them the ViT's; k=1000 is all of
    # sklearn-digits (all of Fashion-MNIST 5-9 took 6 min more); 500 validation images took a third of it
    "quick": dict(source="fashion-mnist[0-4]", targets=_SMALL_TARGETS,
                  source_changes={"mlp_b4_wi256": {"epochs": 5}, "vit_mini_p4": {"epochs": 2},
                                  "cnn_small": {"epochs": 1, "warmup_epochs": 0}},
                  n_cka=1000, n_similarity=500, n_probe_train=5000, n_probe_test=2000,
                  per_class=[10, 100, 1000],
                  trained_per_class=[10, 100, 1000], n_val=200, steps=100, max_epochs=40,
                  xgboost={"n_estimators": 100, "max_depth": 4}),
    "smoke": dict(source="fashion-mnist[0-4]", targets=_SMALL_TARGETS, source_changes={}, n_cka=128,
                  n_similarity=64, n_null=5,
                  n_probe_train=256, n_probe_test=128, per_class=[2, 10], trained_per_class=[2, 10], n_val=50,
                  steps=4, max_epochs=2, lr_per_class=2, xgboost={"n_estimators": 5, "max_depth": 2}),
    # rehearsal: stl10's 96x96 images resized into the full models (a class subset is what smoke and quick
    # take); the six full-size source runs one epoch each; one fine-tune lr (the choice among several is
    # chosen_lr's, tested on its own: two more full-size fine-tunes per model cost CI a minute)
    "rehearsal": dict(targets=["stl10"],
                      source_changes={m: {"epochs": 1, "warmup_epochs": 0}
                                      for m in ("mlp_b12_wi1024", "resnet18_cifar", "vit_small_patch16_224")},
                      n_cka=16, n_similarity=16, n_null=2, n_probe_train=40, n_probe_test=16, per_class=[2],
                      trained_per_class=[2],
                      n_val=10, steps=2, max_epochs=1, lr_per_class=2, lr_grid=[1.0],
                      xgboost={"n_estimators": 2, "max_depth": 2}),
}


def config(profile: str | None = None, **overrides) -> Config:
    """04's config under `profile`, with `overrides` (checked: unknown knobs and wrong types are errors)."""
    return resolve(Config, profile, SMALLER, overrides)
