"""Typed experiment configs: each question owns a frozen dataclass whose defaults are `full`'s values, and the
smaller profiles change only what differs, in one block (the habit of big_vision's `get_config`).

    @dataclass(frozen=True)
    class Config:
        n_images: int | None = None  # test images attacked (the first n); None: the whole test set

    SMALLER = {"quick": dict(n_images=500), "smoke": dict(n_images=32), "rehearsal": dict(n_images=2)}

    def config(profile: str | None = None, **overrides) -> Config:
        return resolve(Config, profile, SMALLER, overrides)

    config("quick", n_images=100)   # Config(n_images=100): an override beats the profile's value

An override that names no knob, or whose value has the wrong type, is a one-line error that lists the knobs
(with their types). Notebooks keep only literals in their `parameters` cell (`overrides = {}` among them) and
call `config(profile, **overrides)`; `python -m utils.run_notebooks -p KEY=VALUE` fills `overrides`.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from typeguard import CollectionCheckStrategy, TypeCheckError, check_type

from .profiles import PROFILES, default_profile_name

C = TypeVar("C")

# notebook -> the experiment module holding its Config, SMALLER and config() (07 sizes nothing: it redraws)
CONFIGS = {
    "01_vit_finetuning": "utils.experiments.zoo",
    "02_adversarial_robustness": "utils.experiments.attacks",
    "03_texture_vs_shape_bias": "utils.experiments.texture_shape",
    "04_feature_generalizability": "utils.experiments.transfer",
    "05_inference_time": "utils.experiments.cost",
    "06_improving_mlp": "utils.experiments.ablations",
    "08_activation_maximization": "utils.experiments.feature_viz",
    "09_dictionary_learning": "utils.experiments.dictionary",
}


def config_class(notebook: str) -> type | None:
    """The typed Config of a notebook (its stem, e.g. "02_adversarial_robustness"), or None."""
    return importlib.import_module(CONFIGS[notebook]).Config if notebook in CONFIGS else None


def for_notebook(notebook: str, profile: str | None = None, **overrides) -> Any:
    """The notebook's resolved config under `profile` (what its `config(profile, **overrides)` returns)."""
    if notebook not in CONFIGS:
        raise KeyError(f"{notebook!r} has no typed config; typed: {', '.join(CONFIGS)}")
    return importlib.import_module(CONFIGS[notebook]).config(profile, **overrides)


def knobs(cls: type) -> dict[str, Any]:
    """{name: type annotation} of a config dataclass, in field order (string annotations resolved)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) if isinstance(annotation, type) else str(annotation)


def check(cls: type, values: Mapping[str, Any], what: str = "override") -> None:
    """Every key names a knob of `cls` and every value has the knob's type (all items of a collection are
    checked; an int is a float); else a one-line KeyError / TypeError listing the knobs."""
    types = knobs(cls)
    listing = ", ".join(f"{k}: {_type_name(t)}" for k, t in types.items())
    unknown = [k for k in values if k not in types]
    if unknown:
        raise KeyError(f"unknown {what} {', '.join(map(repr, unknown))} for {cls.__module__}.{cls.__name__}; "
                       f"knobs: {listing}")
    for key, value in values.items():
        try:
            check_type(value, types[key], collection_check_strategy=CollectionCheckStrategy.ALL_ITEMS)
        except TypeCheckError as err:
            why = " ".join(str(err).split())  # typeguard explains a union on several lines: one line here
            raise TypeError(f"{what} {key}={value!r} is not a {_type_name(types[key])} ({why}); "
                            f"knobs: {listing}") from None


def resolve(cls: type[C], profile: str | None, smaller: Mapping[str, Mapping[str, Any]],
            overrides: Mapping[str, Any] | None = None) -> C:
    """`cls()` (full's values), with the profile's changes from `smaller`, then `overrides` (checked)."""
    name = default_profile_name() if profile is None else profile  # full resolves without a GPU (the plan)
    if name not in PROFILES:
        raise KeyError(f"unknown profile {name!r}; profiles: {', '.join(PROFILES)}")
    changes = dict(smaller.get(name, {}))
    check(cls, changes, what=f"{name} value")  # a typo in the table itself fails at once, named
    check(cls, dict(overrides or {}))
    return dataclasses.replace(cls(), **{**changes, **dict(overrides or {})})


def as_dict(cfg: Any) -> dict[str, Any]:
    """The config's fields as a plain dict (config.json; tuples stay tuples until JSON)."""
    return dataclasses.asdict(cfg)


def describe(cfg: Any) -> str:
    """One line per knob, `name = value`, for the notebook's printout of the resolved config."""
    return "\n".join(f"{k} = {v!r}" for k, v in as_dict(cfg).items())
