"""The trained-model store: one call gives any notebook the profile's trained model.

    model = get_or_train("cnn_small", "fashion-mnist", "quick")   # eval mode, on the profile's device
    history("cnn_small", "fashion-mnist", "quick")                # per-epoch DataFrame
    train_ds, test_ds = load_splits("quick")                      # the profile's dataset and subsets

A run is named by its model, optionally with a variant after `@` ("mlp_b12_wi1024@in21k", a sweep point
"vit_mini_p4@lr3e-4"); its recipe comes from utils/recipes.py unless given. `checkpoints/<profile>/<dataset>/
<run>/` holds the run (see utils/train.py for its files) and `store.json`, the key it was trained under
(model, dataset, subset, recipe). A finished run with the same key is loaded; a half-finished one resumes;
one with another key is moved aside to `<run>.replaced-<time>/` (never deleted) and trained anew.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import torch.nn as nn

from . import data, models, train
from .files import checkpoints_root, save_json
from .profiles import Profile, get_profile
from .recipes import Recipe, get_recipe


def model_of(run: str) -> str:
    """The registered model of a run name: "mlp_b12_wi1024@in21k" -> "mlp_b12_wi1024"."""
    return run.split("@", 1)[0]


def train_subset(profile: str | Profile, recipe: Recipe | None = None) -> int | None:
    """The first n training images a run uses: the recipe's subset, capped by the profile's."""
    sizes = [n for n in (get_profile(profile).train_subset, recipe and recipe.train_subset) if n]
    return min(sizes) if sizes else None


def load_splits(profile: str | Profile, dataset: str | None = None, recipe: Recipe | None = None):
    """(train, test) ImageSets of `dataset` (default: the profile's), cut to the profile's subsets."""
    p = get_profile(profile)
    name = dataset or p.dataset
    return (
        data.load_dataset(name, "train", subset=train_subset(profile, recipe)),
        data.load_dataset(name, "test", subset=p.test_subset),
    )


def run_dir(run: str, dataset: str, profile: str) -> Path:
    return checkpoints_root() / profile / dataset / run


def store_key(run: str, dataset: str, profile: str, recipe: Recipe) -> dict:
    """What a stored model depends on; a run trained under another key is not reused."""
    return {
        "model": model_of(run),
        "dataset": dataset,
        "train_subset": train_subset(profile, recipe),
        "overrides": recipe.overrides,
        "pretrained": recipe.pretrained,
        "trainable": recipe.trainable,
        "train": train.resume_config(recipe.train),
    }


def _same(a: dict, b: dict) -> bool:
    return json.loads(json.dumps(a, default=str)) == json.loads(json.dumps(b, default=str))  # tuples vs lists


def build(model: str, info: data.DatasetInfo, recipe: Recipe, **kw) -> nn.Module:
    """The recipe's model for a dataset, initialised from the recipe's seed."""
    return models.create_for(model, info, seed=recipe.train.seed, **recipe.overrides, **kw)


def freeze_except(model: nn.Module, trainable: str | None) -> None:
    """Only parameters under the module `trainable` keep requires_grad (a frozen backbone); None: all."""
    if trainable is None:
        return
    model.get_submodule(trainable)  # a clear AttributeError for a wrong name
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(trainable + "."))


def is_stored(run: str, dataset: str, profile: str) -> bool:
    folder = run_dir(run, dataset, profile)
    return (folder / "model.json").exists() and (folder / "model.safetensors").exists()


def _set_aside_if_changed(folder: Path, key: dict) -> None:
    if (folder / "store.json").exists() and not _same(json.loads((folder / "store.json").read_text()), key):
        moved = folder.with_name(f"{folder.name}.replaced-{datetime.now(UTC):%Y%m%dT%H%M%S}")
        folder.rename(moved)
        print(
            f"{folder.name}: the stored run was trained with another recipe; moved to {moved}, training anew"
        )


def get_or_train(
    run: str,
    dataset: str | None = None,
    profile: str | Profile | None = None,
    *,
    recipe: Recipe | None = None,
    device: str | None = None,
    progress: bool = True,
    net: nn.Module | None = None,
) -> nn.Module:
    """The trained model of `run` (eval mode, on `device`, default the profile's): loaded when a finished
    run with the same key is stored, else trained with `recipe` (default: recipes.get_recipe(run, profile)),
    resuming a half-finished run. `net`: the freshly built model to train (from `resolve`), so pretrained
    weights are fetched once."""
    p = get_profile(profile)
    dataset, recipe, device = dataset or p.dataset, recipe or get_recipe(run, p.name), device or p.device
    folder, key = run_dir(run, dataset, p.name), store_key(run, dataset, p.name, recipe)
    _set_aside_if_changed(folder, key)
    if is_stored(run, dataset, p.name):
        card = json.loads((folder / "model.json").read_text())  # its model_config rebuilds the architecture
        net = models.create_model(
            model_of(run), **card["model_config"], checkpoint=folder / "model.safetensors"
        )
        return net.to(device).eval()
    train_ds, test_ds = load_splits(p, dataset, recipe)
    if net is None:
        net = build(model_of(run), train_ds.info, recipe, pretrained=recipe.pretrained)  # may say: offline
    freeze_except(net, recipe.trainable)
    folder.mkdir(parents=True, exist_ok=True)
    save_json(key, folder / "store.json")
    cfg = replace(recipe.train, checkpoint_dir=str(folder), progress=progress)
    train.fit(net, *train.make_loaders(train_ds, test_ds, cfg, device=device), cfg)
    return net.eval()


def resolve(run: str, dataset: str | None = None, profile: str | Profile | None = None
            ) -> tuple[str, nn.Module | None]:
    """(`run`, None) when `run` is stored or starts from nothing to download; (`run`, its freshly built model)
    when its pretrained weights were fetched (pass it to get_or_train as `net=`: fetched once); its
    recipe's (fallback, None) when those weights are unreachable (offline), saying why."""
    p = get_profile(profile)
    dataset, recipe = dataset or p.dataset, get_recipe(run, p.name)
    if not recipe.pretrained or is_stored(run, dataset, p.name):
        return run, None
    try:
        info = data.load_dataset(dataset, "test", subset=1).info
        return run, build(model_of(run), info, recipe, pretrained=recipe.pretrained)
    except models.WeightsUnreachable as err:
        if not recipe.fallback:
            raise
        print(f"{run}: pretrained weights unavailable, using {recipe.fallback} instead.\n  {err}")
        return recipe.fallback, None


def history(run: str, dataset: str | None = None, profile: str | Profile | None = None) -> pd.DataFrame:
    """Per-epoch history of a finished stored run."""
    p = get_profile(profile)
    return pd.read_csv(run_dir(run, dataset or p.dataset, p.name) / "history.csv")


def model_card(run: str, dataset: str | None = None, profile: str | Profile | None = None) -> dict:
    p = get_profile(profile)
    return json.loads((run_dir(run, dataset or p.dataset, p.name) / "model.json").read_text())


def summarize(runs: list[str], dataset: str | None = None, profile: str | Profile | None = None
              ) -> pd.DataFrame:
    """One row per finished stored run: family, params, epochs, final val top-1/top-5, training minutes and
    images/s (the mean over epochs, evaluation excluded)."""
    rows = []
    for run in runs:
        card, hist = model_card(run, dataset, profile), history(run, dataset, profile)
        rows.append({"run": run, "model": card["model"], "family": models.family(card["model"]),
                     "params": card["params"], "epochs": card["epochs"],
                     "top1": card["metrics"].get("val_top1"), "top5": card["metrics"].get("val_top5"),
                     "train_min": card["train_seconds"] / 60, "images_per_s": hist["images_per_s"].mean(),
                     "device": card["environment"]["device"]})
    return pd.DataFrame(rows)


def histories(runs: list[str], dataset: str | None = None, profile: str | Profile | None = None
              ) -> pd.DataFrame:
    """The per-epoch histories of `runs` in one tidy table with a `run` column."""
    return pd.concat([history(r, dataset, profile).assign(run=r) for r in runs], ignore_index=True)


def sweep(points: dict[str, Recipe], dataset: str | None = None, profile: str | Profile | None = None,
          device: str | None = None) -> pd.DataFrame:
    """Train (or load) every run of `points` (run name -> recipe) and summarize them, in that order."""
    for name, recipe in points.items():
        get_or_train(name, dataset, profile, recipe=recipe, device=device)
    return summarize(list(points), dataset, profile)
