"""The trained-model store: one call gives any notebook the profile's trained model.

    model = get_or_train("cnn_small", "fashion-mnist", "quick")   # eval mode, on the profile's device
    history("cnn_small", "fashion-mnist", "quick")                # per-epoch DataFrame
    train_ds, test_ds = load_splits("quick")                      # the profile's dataset and subsets

`checkpoints/<profile>/<dataset>/<model>/` holds a run (see utils/train.py for its files) and `store.json`,
the key it was trained under (model, dataset, subset, recipe). A finished run with the same key is loaded;
a half-finished one resumes; one with another key is moved aside to `<model>.replaced-<time>/` (never
deleted) and the model is trained anew with the current recipe (utils/recipes.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn

from . import data, models, train
from .profiles import get_profile
from .recipes import Recipe, get_recipe
from .results import checkpoints_root, save_json


def load_splits(profile: str, dataset: str | None = None) -> tuple[data.ImageSet, data.ImageSet]:
    """(train, test) of `dataset` (default: the profile's), cut to the profile's subsets."""
    p = get_profile(profile)
    name = dataset or p.dataset
    return (
        data.load_dataset(name, "train", subset=p.train_subset),
        data.load_dataset(name, "test", subset=p.test_subset),
    )


def run_dir(model: str, dataset: str, profile: str) -> Path:
    return checkpoints_root() / profile / dataset / model


def store_key(model: str, dataset: str, profile: str, recipe: Recipe) -> dict:
    """What a stored model depends on; a run trained under another key is not reused."""
    return {
        "model": model,
        "dataset": dataset,
        "train_subset": get_profile(profile).train_subset,
        "overrides": recipe.overrides,
        "pretrained": recipe.pretrained,
        "trainable": recipe.trainable,
        "train": train.resume_config(recipe.train),
    }


def _same(a: dict, b: dict) -> bool:
    return json.loads(json.dumps(a, default=str)) == json.loads(json.dumps(b, default=str))  # tuples vs lists


def build(model: str, info: data.DatasetInfo, recipe: Recipe, **kw) -> nn.Module:
    """The recipe's model for a dataset, initialised from the recipe's seed."""
    torch.manual_seed(recipe.train.seed)
    return models.create_model(
        model,
        num_classes=info.num_classes,
        in_chans=info.channels,
        img_size=info.image_size,
        mean=info.mean,
        std=info.std,
        **recipe.overrides,
        **kw,
    )


def freeze_except(model: nn.Module, trainable: str | None) -> None:
    """Only parameters under the module `trainable` keep requires_grad (a frozen backbone); None: all."""
    if trainable is None:
        return
    model.get_submodule(trainable)  # a clear AttributeError for a wrong name
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(trainable + "."))


def get_or_train(
    model: str,
    dataset: str | None = None,
    profile: str | None = None,
    *,
    recipe: Recipe | None = None,
    device: str | None = None,
    progress: bool = True,
) -> nn.Module:
    """The trained `model` (eval mode, on `device`, default the profile's): loaded when a finished run with
    the same key is stored, else trained with `recipe` (default: utils.recipes.get_recipe), resuming a
    half-finished run."""
    return get_or_train_as(model, model, dataset, profile, recipe=recipe, device=device, progress=progress)


def get_or_train_as(
    run: str,
    model: str,
    dataset: str | None = None,
    profile: str | None = None,
    *,
    recipe: Recipe | None = None,
    device: str | None = None,
    progress: bool = True,
) -> nn.Module:
    """get_or_train stored under the run name `run`, so that variants of one model (sweep points, e.g.
    run="mixer_s-lr3e-4" with its own recipe) each keep their own folder."""
    p = get_profile(profile)
    dataset = dataset or p.dataset
    recipe = recipe or get_recipe(model, p.name)
    device = device or p.device
    folder, key = run_dir(run, dataset, p.name), store_key(model, dataset, p.name, recipe)
    if (folder / "store.json").exists() and not _same(json.loads((folder / "store.json").read_text()), key):
        moved = folder.with_name(f"{folder.name}.replaced-{datetime.now(UTC):%Y%m%dT%H%M%S}")
        folder.rename(moved)
        print(f"{run}: stored run was trained with another recipe; moved to {moved} and training anew")
    if (folder / "model.json").exists() and (folder / "model.safetensors").exists():
        card = json.loads((folder / "model.json").read_text())  # its model_config rebuilds the architecture
        net = models.create_model(model, **card["model_config"], checkpoint=folder / "model.safetensors")
        return net.to(device).eval()
    folder.mkdir(parents=True, exist_ok=True)
    save_json(key, folder / "store.json")
    train_ds, test_ds = load_splits(p.name, dataset)
    net = build(model, train_ds.info, recipe, pretrained=recipe.pretrained)
    freeze_except(net, recipe.trainable)
    cfg = train.TrainConfig(**{**asdict(recipe.train), "checkpoint_dir": str(folder), "progress": progress})
    train.fit(net, *train.make_loaders(train_ds, test_ds, cfg, device=device), cfg)
    return net.eval()


def history(run: str, dataset: str | None = None, profile: str | None = None) -> pd.DataFrame:
    """Per-epoch history of a finished stored run."""
    p = get_profile(profile)
    return pd.read_csv(run_dir(run, dataset or p.dataset, p.name) / "history.csv")


def model_card(run: str, dataset: str | None = None, profile: str | None = None) -> dict:
    p = get_profile(profile)
    return json.loads((run_dir(run, dataset or p.dataset, p.name) / "model.json").read_text())
