"""What makes an MLP on images better (06): named changes to a baseline recipe or model, each trained
through the store, scored on clean and attacked test images, aggregated over seeds.

    study = tricks_study(base, "mlp_b4_wi256", info)              # a Study: a model, a base recipe, ablations
    rows = run_study(study, "fashion-mnist", "quick", evaluate=robust)   # one row per ablation x seed
    summary = aggregate(rows)             # mean, std over seeds, delta vs the study's baseline with its s.e.
    grads = gradient_norms(net, loader, cfg, every=2)   # per-layer weight-gradient norms, a short plain loop

An `Ablation` is a named change: TrainConfig fields, create_model overrides, or another model. Every point
(ablation x seed) is a stored run named `<model>@abl-<prefix>-<name>-s<seed>` (`run_name`), so a rerun trains
only what is missing; studies sharing a base recipe share a prefix and with it their baseline runs. Choices
(the best lr, the best epoch) are made on the validation split (`val_top1`); the test split is scored once per
run by the store. `evaluate(model)` is any callable the notebook passes (robust accuracy under PGD:
`functools.partial(attacks.robust_accuracy, loader=..., attack=attacks.pgd, eps_list=[eps], steps=10)`), so
this module needs no other experiment module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import models, store, train
from ..config import resolve
from ..data import default_augment
from ..models import model_device
from ..recipes import Recipe, get_recipe, with_train
from ..train import TrainConfig

BASELINE = "baseline"  # the name of a study's usual first ablation: the point the others are compared with
WITHIN = 2.0  # |delta| <= WITHIN x its standard error: within the seed spread
_RECIPE_COLUMNS = ("lr", "batch_size", "epochs", "label_smoothing", "mixup_alpha", "adversarial", "adv_eps")


@dataclass(frozen=True)
class Ablation:
    name: str  # a slug for the run name ("mixup"); BASELINE for the study's reference point
    change: str = ""  # what changed, for the table ("mixup 0.8")
    train: dict = field(default_factory=dict)  # TrainConfig fields changed
    overrides: dict = field(default_factory=dict)  # create_model overrides, on top of the base recipe's
    model: str | None = None  # another registered model (its overrides: only these); None: the study's
    seeds: tuple[int, ...] | None = None  # None: the study's seeds
    tags: dict = field(default_factory=dict)  # extra table columns saying what varies (depth, width, ...)


@dataclass(frozen=True)
class Study:
    name: str  # the `study` column
    model: str  # the registered model the ablations change
    base: Recipe  # the baseline recipe (its train_subset and epochs are stated in the table)
    ablations: tuple[Ablation, ...]  # the first is the baseline (what the deltas are against)
    seeds: tuple[int, ...] = (0, 1)
    prefix: str = ""  # run-name prefix; "" -> the name. Studies with one base share one (and its baseline)

    def get(self, name: str) -> Ablation:
        found = [a for a in self.ablations if a.name == name]
        if not found:
            names = [a.name for a in self.ablations]
            raise KeyError(f"{self.name}: no ablation {name!r}; ablations: {names}")
        return found[0]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "-" for c in str(text).lower()).strip("-")


def run_name(study: Study, ablation: Ablation, seed: int) -> str:
    """"mlp_b4_wi256@abl-tricks-mixup-s0": the stored run of one point."""
    return f"{ablation.model or study.model}@abl-{_slug(study.prefix or study.name)}-{ablation.name}-s{seed}"


def recipe_for(study: Study, ablation: Ablation, seed: int) -> Recipe:
    """The base recipe with the ablation's changes and seed (the seed also initialises the model)."""
    cfg = replace(study.base.train, **{**ablation.train, "seed": seed})
    overrides = dict(ablation.overrides) if ablation.model else {**study.base.overrides, **ablation.overrides}
    return replace(study.base, train=cfg, overrides=overrides)


def points(study: Study) -> list[tuple[Ablation, int]]:
    """(ablation, seed) for every point of the study, baseline first."""
    names = [a.name for a in study.ablations]
    if len(set(names)) != len(names):
        raise ValueError(f"{study.name}: ablation names repeat: {names}")
    return [(a, s) for a in study.ablations for s in (a.seeds or study.seeds)]


def load_point(study: Study, name: str, seed: int, dataset: str | None = None, profile=None,
               device: str | None = None, progress: bool = True) -> nn.Module:
    """The trained model of one point (trained first when it is not stored yet)."""
    a = study.get(name)
    return store.get_or_train(run_name(study, a, seed), dataset, profile, recipe=recipe_for(study, a, seed),
                              device=device, progress=progress)


def trained_points(studies: Sequence[Study], dataset: str | None = None, profile=None,
                   device: str | None = None) -> Iterator[tuple[dict, nn.Module, bool]]:
    """Every point of the studies, loaded (or trained) one at a time: (tags: run, model, seed and the
    ablation's tags; its network; whether it is its study's first or last ablation, the two ends an
    expensive evaluation scores)."""
    for study in studies:
        ends = (study.ablations[0].name, study.ablations[-1].name)
        for a, seed in points(study):
            net = load_point(study, a.name, seed, dataset, profile, device, progress=False)
            tags = dict(run=run_name(study, a, seed), model=a.model or study.model, seed=seed, **a.tags)
            yield tags, net, a.name in ends


def fresh_model(study: Study, name: str, seed: int, info) -> tuple[nn.Module, Recipe]:
    """The point's model as its stored run starts (same seed, same overrides), and its recipe."""
    a, recipe = study.get(name), recipe_for(study, study.get(name), seed)
    return store.build(a.model or study.model, info, recipe), recipe


def _score(result) -> float:
    """A number from what `evaluate` returned: a float, a dict or a table with `top1` (its first row)."""
    if isinstance(result, pd.DataFrame):
        return float(result["top1"].iloc[0])
    return float(result["top1"]) if isinstance(result, dict) else float(result)


def _row(study: Study, a: Ablation, seed: int, run: str, dataset, profile) -> dict:
    recipe = recipe_for(study, a, seed)
    cfg, card = recipe.train, store.model_card(run, dataset, profile)
    n_train = card["data"]["train"]["n"]
    return {"study": study.name, "ablation": a.name, "change": a.change or a.name, "model": card["model"],
            "run": run, "seed": seed, "params": card["params"], "train_images": n_train,
            **{k: getattr(cfg, k) for k in _RECIPE_COLUMNS},
            "steps": card["epochs"] * (n_train // cfg.batch_size),
            "val_top1": card["metrics"]["val_top1"], "test_top1": card["metrics"]["test_top1"],
            "test_top5": card["metrics"]["test_top5"], "train_min": card["train_seconds"] / 60, **a.tags}


def run_study(study: Study, dataset: str | None = None, profile=None, *,
              evaluate: Callable[[nn.Module], object] | None = None, device: str | None = None,
              progress: bool = False) -> pd.DataFrame:
    """Train (or load) every point and score it: one row per ablation x seed with clean test top-1/top-5
    (the model card), val_top1, `robust_top1` = evaluate(model) (NaN without), params, training minutes,
    training images and steps, the recipe's lr/batch/epochs and the ablation's tags. A point whose loss
    diverges is a row with NaN scores and diverged=True (no model is stored; the store marks the run as
    diverging, so a rerun does not train it again)."""
    p = store.get_profile(profile)
    dataset, rows = dataset or p.dataset, []
    for a, seed in points(study):
        run = run_name(study, a, seed)
        try:
            net = load_point(study, a.name, seed, dataset, p, device, progress)
        except FloatingPointError as err:
            print(f"{run}: diverged ({err})")
            rows.append({"study": study.name, "ablation": a.name, "change": a.change or a.name, "run": run,
                         "seed": seed, "model": a.model or study.model, "diverged": True, **a.tags})
            continue
        row = {**_row(study, a, seed, run, dataset, p.name), "diverged": False}
        row["robust_top1"] = _score(evaluate(net)) if evaluate is not None else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- aggregation


def _delta(a: pd.Series, b: pd.Series) -> tuple[float, float]:
    """(mean(a) - mean(b), its standard error sqrt(s_a^2 / n_a + s_b^2 / n_b)); NaN s.e. with one seed."""
    a, b = a.dropna(), b.dropna()
    if len(a) == 0 or len(b) == 0:
        return math.nan, math.nan
    var = lambda s: s.var(ddof=1) / len(s) if len(s) > 1 else math.nan
    return float(a.mean() - b.mean()), float(math.sqrt(var(a) + var(b)))


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (study, ablation), in table order: seeds, mean and std over seeds (ddof 1) of test top-1
    and robust top-1, the deltas vs the study's baseline (its first ablation in the table) with their
    standard errors sqrt(s_a^2 / n_a + s_b^2 / n_b), `within_spread`
    (|delta top-1| <= WITHIN s.e.; NaN when a side has one seed), and what the point cost and used (params,
    minutes, training images, epochs, steps, lr, batch)."""
    rows = []
    baseline = table.groupby("study", sort=False).ablation.first()
    for (study, name), g in table.groupby(["study", "ablation"], sort=False):
        base = table[(table.study == study) & (table.ablation == baseline[study])]
        first = g.iloc[0]
        row = {"study": study, "ablation": name, "change": first.change, "model": first.model,
               "seeds": len(g)}
        for metric, short in (("test_top1", "top1"), ("robust_top1", "robust")):
            row[f"{short}_mean"], row[f"{short}_std"] = g[metric].mean(), g[metric].std(ddof=1)
            row[f"delta_{short}"], row[f"delta_{short}_se"] = _delta(g[metric], base[metric])
        d, se = row["delta_top1"], row["delta_top1_se"]
        row["within_spread"] = abs(d) <= WITHIN * se if math.isfinite(se) else math.nan
        row["val_top1_mean"] = g.val_top1.mean()
        row["test_top5_mean"] = g.test_top5.mean()
        row["train_min"] = g.train_min.mean()
        row.update({k: first[k] for k in ("params", "train_images", "epochs", "steps", "lr", "batch_size")})
        row.update({k: first[k] for k in table.columns  # in the table's order (a set's order varies by run)
                    if k not in row and k not in _RECIPE_COLUMNS and k not in _ROW_ONLY})
        rows.append(row)
    return pd.DataFrame(rows)


_ROW_ONLY = {"run", "seed", "val_top1", "test_top1", "test_top5", "robust_top1", "diverged"}


def best_by_val(table: pd.DataFrame, column: str) -> float:
    """The value of `column` whose points have the highest mean validation top-1 (never the test set)."""
    return table.groupby(column).val_top1.mean().idxmax()


def best_epochs(histories: pd.DataFrame) -> pd.DataFrame:
    """Per run: the epoch with the highest validation top-1, that top-1, and the last epoch's."""
    best = histories.loc[histories.groupby("run", sort=False).val_top1.idxmax(), ["run", "epoch", "val_top1"]]
    last = histories.groupby("run", sort=False).val_top1.last().rename("last_val_top1")
    return best.rename(columns={"epoch": "best_epoch"}).join(last, on="run").reset_index(drop=True)


# ---------------------------------------------------------------- gradients through depth


def linear_layers(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """Every nn.Linear of the model, input to output (the order of named_modules)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def gradient_norms(model: nn.Module, loader, cfg: TrainConfig, *, steps: int | None = None, every: int = 1,
                   loss_fn: Callable | None = None) -> pd.DataFrame:
    """Train `model` in place with cfg's optimiser and schedule for `steps` updates (None: one pass over the
    loader) and record the L2 (Frobenius) norm of every nn.Linear's weight gradient every `every` steps,
    before that step's update: one row per (step, layer) with depth = the layer's index (0: the first).
    loss_fn(logits, y): default cross-entropy with cfg's label smoothing."""
    layers = linear_layers(model)
    optimizer = train.make_optimizer(model, cfg)
    scheduler = train.make_scheduler(optimizer, cfg, len(loader))
    loss_fn = loss_fn or partial(F.cross_entropy, label_smoothing=cfg.label_smoothing)
    steps, device, rows, step, epoch = steps or len(loader), model_device(model), [], 0, 0
    torch.manual_seed(cfg.seed)
    model.train()
    while step < steps:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        for x, y in loader:
            if step >= steps:
                break
            if scheduler is not None:
                scheduler.step_update(num_updates=step)
            loss = loss_fn(model(x.to(device)), y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if step % every == 0:
                norms = torch.stack([m.weight.grad.norm() for _, m in layers]).tolist()  # one sync
                rows += [{"step": step, "layer": n, "depth": i, "grad_norm": g, "loss": loss.item()}
                         for i, ((n, _), g) in enumerate(zip(layers, norms, strict=True))]
            optimizer.step()
            step += 1
        epoch += 1
    model.eval()
    return pd.DataFrame(rows)


def gradient_study(study: Study, splits: store.Splits, seed: int = 0, *, every: int = 1,
                   steps: int | None = None, device: str = "cpu") -> pd.DataFrame:
    """gradient_norms of every ablation's freshly initialised model over its first `steps` updates (None:
    one epoch) on the study's training split, with its recipe: one table with `ablation` and `change`."""
    parts = []
    for a in study.ablations:
        net, recipe = fresh_model(study, a.name, seed, splits.train.info)
        loader, _ = train.make_loaders(splits.train, None, recipe.train, device=device)
        g = gradient_norms(net.to(device), loader, recipe.train, steps=steps, every=every)
        parts.append(g.assign(study=study.name, ablation=a.name, change=a.change or a.name, seed=seed))
    return pd.concat(parts, ignore_index=True)


# ---------------------------------------------------------------- equal parameter counts


def count_params(model: str, info, **overrides) -> int:
    """Parameters of `model` built for a dataset (on the meta device: nothing allocated)."""
    with torch.device("meta"):
        net = models.create_for(model, info, **overrides)
    return sum(p.numel() for p in net.parameters())


def plain_width_for(params: int, depth: int, d_in: int, num_classes: int, norm: str = "none") -> int:
    """The mlp_plain width whose parameter count is closest to `params` at `depth` hidden layers: d_in*w + w
    + (depth - 1)(w^2 + w) + (2w per layer with a norm) + w*classes + classes."""
    per_norm = 0 if norm == "none" else 2
    count = lambda w: (d_in * w + w + (depth - 1) * (w * w + w) + depth * per_norm * w + w * num_classes
                       + num_classes)
    a, b, c = depth - 1, d_in + 1 + (depth - 1) + depth * per_norm + num_classes, num_classes - params
    w = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a) if a else -c / b
    return min((max(1, math.floor(w)), max(1, math.ceil(w))), key=lambda v: abs(count(v) - params))


# ---------------------------------------------------------------- the studies of 06


def shortened(recipe: Recipe, epochs: int, train_subset: int | None) -> Recipe:
    """The recipe for `epochs` epochs (warmup capped below them) on the first `train_subset` training
    images (stratified; None: the profile's)."""
    cfg = replace(recipe.train, epochs=epochs, warmup_epochs=min(recipe.train.warmup_epochs, epochs - 1))
    return replace(recipe, train=cfg, train_subset=train_subset)


def _study(name: str, model: str, base: Recipe, ablations: list[Ablation], seeds: Sequence[int],
           prefix: str = "") -> Study:
    head = Ablation(BASELINE, "baseline")
    return Study(name, model, base, (head, *ablations), tuple(seeds), prefix)


def lr_study(base: Recipe, model: str, lrs: Sequence[float], seeds: Sequence[int]) -> Study:
    """The learning-rate grid (one seed per point; the baseline's lr with every seed)."""
    one = tuple(seeds[:1])
    grid = [Ablation(f"lr{v:g}", f"lr {v:g}", {"lr": v}, seeds=one) for v in lrs if v != base.train.lr]
    return _study("learning rate", model, base, grid, seeds, prefix="lr")


def batch_studies(base: Recipe, model: str, batches: Sequence[int], seeds: Sequence[int], prefix: str
                  ) -> list[Study]:
    """Batch size at the base's number of epochs, and at (about) its number of steps: epochs scaled by
    batch / base batch (rounded to whole epochs, at least 1; the table states the steps taken)."""
    b0, e0, one = base.train.batch_size, base.train.epochs, tuple(seeds[:1])
    fixed_epochs = [Ablation(f"batch{b}", f"batch {b}", {"batch_size": b}, seeds=one)
                    for b in batches if b != b0]
    fixed_steps = []
    for b in batches:
        epochs = max(1, round(e0 * b / b0))
        if b != b0:
            warm = min(base.train.warmup_epochs, epochs - 1)
            changes = {"batch_size": b, "epochs": epochs, "warmup_epochs": warm}
            fixed_steps.append(Ablation(f"batch{b}-steps", f"batch {b}, {epochs} epochs", changes, seeds=one))
    return [_study("batch size (fixed epochs)", model, base, fixed_epochs, seeds, prefix),
            _study("batch size (fixed steps)", model, base, fixed_steps, seeds, prefix)]


def norm_study(base: Recipe, model: str, seeds: Sequence[int], prefix: str, name: str = "normalisation"
               ) -> Study:
    """mlp_plain's norm: the base's against the other two, every seed."""
    base_norm = base.overrides.get("norm", "none")
    other = [Ablation(f"norm-{n}", f"{n} norm", overrides={"norm": n}, tags={"norm": n})
             for n in ("none", "batch", "layer") if n != base_norm]
    return _study(name, model, base, other, seeds, prefix)


def grid_study(base: Recipe, model: str, depths: Sequence[int], widths: Sequence[int], seeds: Sequence[int],
               prefix: str) -> Study:
    """depth x width of mlp_plain (one seed per cell; the base's cell is the baseline)."""
    d0, w0 = base.overrides.get("depth"), base.overrides.get("width")
    cells = [Ablation(f"d{d}-w{w}", f"depth {d}, width {w}", overrides={"depth": d, "width": w},
                      seeds=tuple(seeds[:1]), tags={"depth": d, "width": w})
             for d in depths for w in widths if (d, w) != (d0, w0)]
    study = _study("depth x width", model, base, cells, seeds, prefix)
    head = replace(study.ablations[0], tags={"depth": d0, "width": w0})
    return replace(study, ablations=(head, *study.ablations[1:]))


def inputs_study(base: Recipe, model: str, seeds: Sequence[int], prefix: str, fourier: dict, sine: dict
                 ) -> Study:
    """Raw pixels (the baseline) against random Fourier features and the per-pixel sin(a x) expansion.
    fourier["fourier_scale"] may be a list: one point per scale (`fourier-s<scale>`), the bandwidth that
    Tancik et al. tune per task, so that the validation split picks it like any other choice."""
    scales = fourier.get("fourier_scale", 1.0)
    scales = list(scales) if isinstance(scales, list | tuple) else [scales]
    changes = [Ablation(f"fourier-s{scale:g}" if len(scales) > 1 else "fourier",
                        f"random Fourier features ({fourier['fourier_features']} at scale {scale:g})",
                        overrides={"features": "fourier", **fourier, "fourier_scale": scale},
                        tags={"features": "fourier", "fourier_scale": scale}) for scale in scales]
    changes.append(Ablation("sine", f"[x, sin(a x)] per pixel ({sine})",
                            overrides={"features": "sine", **sine}, tags={"features": "sine"}))
    study = _study("input representation", model, base, changes, seeds, prefix)
    return replace(study, ablations=(replace(study.ablations[0], tags={"features": "pixels"}),
                                     *study.ablations[1:]))


def depth_study(base: Recipe, model: str, seeds: Sequence[int], deep: dict) -> Study:
    """A deep narrow plain MLP (`deep`: depth, width) without help, with skips, with each norm, with both."""
    variants = [Ablation("skip", "skip connections", overrides={"skip": True}),
                Ablation("batchnorm", "batch norm", overrides={"norm": "batch"}),
                Ablation("layernorm", "layer norm", overrides={"norm": "layer"}),
                Ablation("skip-layernorm", "skips + layer norm", overrides={"skip": True, "norm": "layer"})]
    deep_base = replace(base, overrides={**base.overrides, **deep, "norm": "none", "skip": False})
    study = _study(f"depth {deep['depth']}", model, deep_base, variants, seeds, prefix="deep")
    return replace(study, ablations=(replace(study.ablations[0], change="plain"), *study.ablations[1:]))


def equal_params_plain(model: str, info, overrides: dict | None = None) -> dict:
    """mlp_plain overrides (depth, width) with as many hidden Linear layers as `model` has (all but its
    head) and the parameter count closest to its."""
    with torch.device("meta"):
        net = models.create_for(model, info, **(overrides or {}))
    depth = len(linear_layers(net)) - 1
    target = sum(p.numel() for p in net.parameters())
    d_in = info.channels * info.image_size**2
    return {"depth": depth, "width": plain_width_for(target, depth, d_in, info.num_classes)}


def _augment(cfg: TrainConfig, info) -> tuple[int, bool]:
    """(crop pad, flip) a recipe trains with on this data (None fields: the dataset's defaults)."""
    aug = default_augment(info, train=True)
    return (aug.pad if cfg.crop_pad is None else cfg.crop_pad, aug.flip if cfg.flip is None else cfg.flip)


def full_recipe_changes(crop_pad: int, smoothing: float, mixup: float, batch: int) -> dict:
    """The TrainConfig changes of Bachmann et al.'s recipe (crop + flip, label smoothing, mixup, batch)."""
    return {"crop_pad": crop_pad, "flip": True, "label_smoothing": smoothing, "mixup_alpha": mixup,
            "batch_size": batch}


def tricks_study(base: Recipe, model: str, info, seeds: Sequence[int], *, batches: Sequence[int],
                 crop_pad: int = 4, smoothing: float = 0.3, mixup: float = 0.8, full_batch: int = 1024
                 ) -> Study:
    """Bachmann et al.'s tricks on the bottleneck MLP, one at a time (each flipped against the base) and all
    together: a plain MLP of equal parameters and depth, no LayerNorm in the blocks, augmentation off / crop
    + flip, label smoothing off / `smoothing`, mixup on / off, other batch sizes, and `all` (every trick
    on)."""
    cfg, plain = base.train, equal_params_plain(model, info, base.overrides)
    pad, flip = _augment(cfg, info)
    changes = [Ablation("plain", f"plain MLP, equal params (depth {plain['depth']}, width {plain['width']})",
                        model="mlp_plain", overrides=plain),
               Ablation("no-block-norm", "no LayerNorm in the blocks", overrides={"block_norm": False})]
    if pad or flip:
        changes.append(Ablation("no-aug", "no augmentation", {"crop_pad": 0, "flip": False}))
    if (pad, flip) != (crop_pad, True):
        changes.append(Ablation("crop-flip", f"crop (pad {crop_pad}) + flip",
                                {"crop_pad": crop_pad, "flip": True}))
    if cfg.label_smoothing:
        changes.append(Ablation("no-smoothing", "no label smoothing", {"label_smoothing": 0.0}))
    if cfg.label_smoothing != smoothing:
        changes.append(Ablation(f"smoothing{smoothing:g}", f"label smoothing {smoothing:g}",
                                {"label_smoothing": smoothing}))
    changes.append(Ablation("no-mixup", "no mixup", {"mixup_alpha": 0.0}) if cfg.mixup_alpha else
                   Ablation(f"mixup{mixup:g}", f"mixup {mixup:g}", {"mixup_alpha": mixup}))
    changes += [Ablation(f"batch{b}", f"batch {b}", {"batch_size": b})
                for b in batches if b != cfg.batch_size]
    changes.append(Ablation("all", "all together: " + _describe(crop_pad, smoothing, mixup, full_batch),
                            full_recipe_changes(crop_pad, smoothing, mixup, full_batch)))
    return _study("tricks", model, base, changes, seeds, prefix="tricks")


def _describe(crop_pad: int, smoothing: float, mixup: float, batch: int) -> str:
    return f"crop {crop_pad} + flip, smoothing {smoothing:g}, mixup {mixup:g}, batch {batch}"


def ladder_study(base: Recipe, model: str, info, seeds: Sequence[int], *, crop_pad: int = 4,
                 smoothing: float = 0.3, mixup: float = 0.8, full_batch: int = 1024) -> Study:
    """From a plain MLP (equal parameters, no augmentation, smoothing or mixup) to the full recipe, one trick
    added per rung; the last rung is tricks_study's `all` (the same runs: the same prefix and name)."""
    plain = equal_params_plain(model, info, base.overrides)
    bare = {"crop_pad": 0, "flip": False, "label_smoothing": 0.0, "mixup_alpha": 0.0}
    full = full_recipe_changes(crop_pad, smoothing, mixup, full_batch)
    rungs = [("ladder1-bottleneck", "+ inverted bottleneck (no norm)", bare, {"block_norm": False}),
             ("ladder2-layernorm", "+ LayerNorm in the blocks", bare, {}),
             ("ladder3-augment", f"+ crop {crop_pad} + flip",
              {**bare, "crop_pad": crop_pad, "flip": True}, {}),
             ("ladder4-smoothing", f"+ label smoothing {smoothing:g}",
              {**full, "mixup_alpha": 0.0, "batch_size": base.train.batch_size}, {}),
             ("ladder5-mixup", f"+ mixup {mixup:g}", {**full, "batch_size": base.train.batch_size}, {})]
    if full_batch == base.train.batch_size:  # then mixup is the last rung, `all`
        rungs = rungs[:-1]
    steps = [Ablation("ladder0-plain", f"plain MLP, equal params (depth {plain['depth']}, width "
                      f"{plain['width']}), no augmentation", bare, plain, model="mlp_plain",
                      tags={"rung": 0})]
    steps += [Ablation(n, c, t, o, tags={"rung": i}) for i, (n, c, t, o) in enumerate(rungs, 1)]
    big = full_batch != base.train.batch_size
    last = f"+ batch {full_batch} (= all)" if big else f"+ mixup {mixup:g} (= all)"
    steps.append(Ablation("all", last, full, tags={"rung": len(steps)}))
    return Study("ladder", model, base, tuple(steps), tuple(seeds), prefix="tricks")


def adversarial_study(base: Recipe, model: str, seeds: Sequence[int], *, fgsm_eps: Sequence[float],
                      pgd_eps: Sequence[float], pgd_steps: int, name: str = "", prefix: str = "adv") -> Study:
    """Standard training (the baseline) against FGSM with a random start
    (Wong et al. 2020) and PGD adversarial training (Madry et al. 2018) at each training eps (in [0, 1]
    pixels), crafted on the fly from the current batch by utils.train."""
    fgsm = [Ablation(f"fgsm-{e * 255:g}", f"FGSM-RS training, eps {e * 255:g}/255",
                     {"adversarial": "fgsm", "adv_eps": e}, tags={"method": "fgsm", "train_eps": e})
            for e in fgsm_eps]
    pgd = [Ablation(f"pgd{pgd_steps}-{e * 255:g}", f"PGD-{pgd_steps} training, eps {e * 255:g}/255",
                    {"adversarial": "pgd", "adv_eps": e, "adv_steps": pgd_steps},
                    tags={"method": "pgd", "train_eps": e}) for e in pgd_eps]
    study = _study(name or f"adversarial {model}", model, base, [*fgsm, *pgd], seeds, prefix=prefix)
    head = replace(study.ablations[0], change="standard training",
                   tags={"method": "standard", "train_eps": 0.0})
    return replace(study, ablations=(head, *study.ablations[1:]))


# ---------------------------------------------------------------- notebook 06: its studies and runs


def base_recipe(cfg: Config, models: Sequence[str], profile: str) -> Recipe:
    """The MLP's recipe (the trio's first) shortened to the config's epochs and training images."""
    return shortened(get_recipe(models[0], profile), cfg.epochs, cfg.train_subset)


def plain_recipe(cfg: Config, base: Recipe) -> Recipe:
    """The plain MLP's baseline: the base's training on mlp_plain at the config's depth and width."""
    return Recipe(base.train, overrides=cfg.plain, train_subset=base.train_subset, note="06 plain MLP")


def optimisation_studies(cfg: Config, tuned: Recipe) -> list[Study]:
    """Section 1 after the lr: batch size (fixed epochs, fixed steps), normalisation, depth x width."""
    return [*batch_studies(tuned, "mlp_plain", cfg.batches, cfg.seeds, "plain"),
            norm_study(tuned, "mlp_plain", cfg.seeds, "plain"),
            grid_study(tuned, "mlp_plain", cfg.depths, cfg.widths, cfg.seeds, "plain")]


def representation_studies(cfg: Config, base: Recipe, tuned: Recipe, info) -> list[Study]:
    """Sections 3-4: input features (plain MLP, tuned lr), the tricks and the ladder (bottleneck MLP)."""
    return [inputs_study(tuned, "mlp_plain", cfg.seeds, "plain", cfg.fourier, cfg.sine),
            tricks_study(base, cfg.bottleneck, info, cfg.seeds, batches=cfg.trick_batches,
                         full_batch=cfg.full_batch),
            ladder_study(base, cfg.bottleneck, info, cfg.seeds, full_batch=cfg.full_batch)]


def adversarial_studies(cfg: Config, base: Recipe, models: Sequence[str]) -> list[Study]:
    """Section 5: adversarial training of the bottleneck MLP and of the CNN (the trio's second)."""
    adv_base = shortened(base, cfg.adv_epochs, cfg.adv_subset)
    return [adversarial_study(adv_base, m, cfg.adv_seeds, fgsm_eps=[e / 255 for e in cfg.fgsm_eps_255],
                              pgd_eps=[e / 255 for e in cfg.pgd_eps_255], pgd_steps=cfg.pgd_train_steps)
            for m in (cfg.bottleneck, models[1])]


def runs(cfg: Config, ctx) -> list:
    """Every run 06 asks the store for (utils.plan): the lr study, then, at the lr chosen on the validation
    split (waiting until the lr study is stored), the other plain-MLP studies; the tricks, the ladder and
    adversarial training."""
    from ..data.cache import info_of

    base = base_recipe(cfg, ctx.models, ctx.profile.name)
    plain = plain_recipe(cfg, base)
    lr = lr_study(plain, "mlp_plain", cfg.lrs, cfg.seeds)
    point_runs = lambda study, waits="": [
        ctx.run(run_name(study, a, s), recipe_for(study, a, s), waits_for=waits) for a, s in points(study)]
    first = point_runs(lr)
    lrs = [recipe_for(lr, a, s).train.lr for a, s in points(lr)]
    best = ctx.chosen(first, lambda t: best_by_val(t.assign(lr=lrs), "lr"))
    tuned = with_train(plain, lr=best) if best is not None else plain  # provisional: the baseline's lr
    waits = "" if best is not None else "the plain MLP's lr (validation)"
    deep = depth_study(tuned, "mlp_plain", cfg.seeds, cfg.deep)
    inputs, *bottleneck = representation_studies(cfg, base, tuned, info_of(ctx.dataset))
    at_lr = (*optimisation_studies(cfg, tuned), deep, inputs)
    return [*first, *(r for s in at_lr for r in point_runs(s, waits)),
            *(r for s in (*bottleneck, *adversarial_studies(cfg, base, ctx.models)) for r in point_runs(s))]


# ---------------------------------------------------------------- notebook 06: its knobs


@dataclass(frozen=True)
class Config:
    """06's knobs. Defaults are full's; SMALLER holds what the other profiles change (the rehearsal: full's
    models and learning rates at smoke's tiny counts, batches within its 50 training images, one seed)."""

    bottleneck: str = "mlp_b6_wi512"  # the tricks' and the ladder's bottleneck MLP
    train_subset: int | None = None  # training images per point (stratified); None: all
    epochs: int = 40  # per point (the recipe's lr, warmup and schedule; 100, then 50, before issue 26's
    # budget made room for 01's aligned control)
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # headline rows; grid points: the first
    plain: dict[str, int] = field(default_factory=lambda: {"depth": 6, "width": 1024})  # mlp_plain baseline
    lrs: list[float] = field(default_factory=lambda: [2e-5, 5e-5, 1e-4, 2e-4])  # the plain MLP's lr grid
    batches: list[int] = field(default_factory=lambda: [256, 1024, 4096])  # its batch sizes
    depths: list[int] = field(default_factory=lambda: [2, 4, 8, 16])  # its depth x width grid
    widths: list[int] = field(default_factory=lambda: [256, 1024, 4096])
    deep: dict[str, int] = field(default_factory=lambda: {"depth": 100, "width": 256})  # the deep narrow MLP
    grad_every: int = 5  # record gradient norms every k steps
    # input features: random Fourier features (one point per scale) and sines
    fourier: dict[str, int | list[float]] = field(default_factory=lambda: {
        "fourier_features": 4096, "fourier_scale": [0.03, 0.1, 0.3, 1.0]})
    sine: dict[str, list[float]] = field(default_factory=lambda: {"sine_freqs": [1.0, 2.0, 4.0, 8.0]})
    trick_batches: list[int] = field(default_factory=lambda: [256, 4096])  # the tricks' batch points
    full_batch: int = 1024  # `all`s batch (quick: the base batch, so `all` takes as many steps as the others)
    adv_subset: int | None = None  # adversarial training: training images (the CNN's cost)
    adv_epochs: int = 10  # adversarial training: epochs (Wong et al. 2020 train FGSM in 15; 30, then 15,
    # before issue 26's budget)
    adv_seeds: list[int] = field(default_factory=lambda: [0, 1])
    fgsm_eps_255: list[int] = field(default_factory=lambda: [2, 4, 8])  # FGSM training eps, x 1/255
    pgd_eps_255: list[int] = field(default_factory=lambda: [4, 8])  # PGD training eps, x 1/255
    pgd_train_steps: int = 7  # PGD iterations per training batch
    curve_eps_255: list[int] = field(default_factory=lambda: [0, 2, 4, 8])  # PGD-10 accuracy against eps
    eval_eps_255: float = 2  # robust accuracy of every point: PGD-10 at this / 255
    n_robust: int = 2000  # test images attacked for every point's robust accuracy (the first n)
    n_curve: int = 1000  # ... for the adversarial points' PGD curve
    n_autoattack: int = 1000  # ... for AutoAttack
    autoattack_steps: int = 100  # APGD, APGD-T, FAB-T iterations
    autoattack_queries: int = 5000  # Square's queries


_SMALL = dict(plain={"depth": 2, "width": 32}, deep={"depth": 8, "width": 16}, grad_every=1,
              fourier={"fourier_features": 64, "fourier_scale": [0.1, 1.0]}, sine={"sine_freqs": [1.0, 2.0]},
              adv_epochs=1, adv_seeds=[0], fgsm_eps_255=[8], pgd_eps_255=[8], pgd_train_steps=2)
SMALLER = {
    "quick": dict(bottleneck="mlp_b4_wi256", train_subset=4000, epochs=3, plain={"depth": 4, "width": 256},
                  lrs=[3e-4, 1e-3, 3e-3, 1e-2], batches=[64, 256, 1024], depths=[1, 2, 4],
                  widths=[64, 256, 1024],
                  deep={"depth": 100, "width": 64}, grad_every=1,
                  fourier={"fourier_features": 1024, "fourier_scale": [0.03, 0.1, 0.3, 1.0]},
                  trick_batches=[64, 1024], full_batch=256, adv_subset=2000, adv_epochs=2, adv_seeds=[0],
                  fgsm_eps_255=[2, 8], pgd_eps_255=[8], pgd_train_steps=3, n_robust=200, n_curve=100,
                  n_autoattack=50, autoattack_steps=10, autoattack_queries=100),
    "smoke": dict(_SMALL, bottleneck="test_mlp", train_subset=256, epochs=1, lrs=[1e-3, 3e-3],
                  batches=[32, 64], depths=[1, 2], widths=[16, 32], trick_batches=[32], full_batch=128,
                  adv_subset=256, n_robust=64, n_curve=32, n_autoattack=16, autoattack_steps=2,
                  autoattack_queries=10),
    "rehearsal": dict(_SMALL, train_subset=60, epochs=1, seeds=[0], lrs=[2e-5, 5e-5], batches=[16],
                      depths=[2], widths=[16],
                      trick_batches=[16], full_batch=16, adv_subset=60, n_robust=8, n_curve=8, n_autoattack=4,
                      autoattack_steps=1, autoattack_queries=2),
}


def config(profile: str | None = None, **overrides) -> Config:
    """06's config under `profile`, with `overrides` (checked: unknown knobs and wrong types are errors)."""
    return resolve(Config, profile, SMALLER, overrides)
