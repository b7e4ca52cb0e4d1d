"""How each model is trained under each profile: the one place for training recipes.

    r = get_recipe("cnn_small", "quick")   # Recipe(train=TrainConfig(...), overrides={...}, ...)

A (profile, model) pair without an entry gets the profile's default recipe. `utils.store.get_or_train`
builds, trains and caches models with these; notebooks never spell out a recipe themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .profiles import PROFILES
from .train import TrainConfig


@dataclass(frozen=True)
class Recipe:
    train: TrainConfig  # checkpoint_dir is set by the store
    overrides: dict = field(default_factory=dict)  # create_model(**overrides)
    pretrained: bool | str = False  # create_model(pretrained=...): start from published weights
    trainable: str | None = None  # only parameters under this module name train (e.g. "head"); None: all
    note: str = ""  # where the recipe comes from, for the model card and the notebook


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


RECIPES: dict[tuple[str, str], Recipe] = {}


def get_recipe(model: str, profile: str) -> Recipe:
    return RECIPES.get((profile, model)) or default_recipe(profile)


def with_train(recipe: Recipe, **changes) -> Recipe:
    """The recipe with some TrainConfig fields changed (sweeps): with_train(r, lr=3e-4)."""
    return replace(recipe, train=replace(recipe.train, **changes))
