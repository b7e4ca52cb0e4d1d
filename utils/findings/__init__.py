"""What a run found, as sentences whose every number is read from the tables the notebook saved.

    findings.show(run.out)        # a notebook's "Reading" cell: one bullet per finding
    findings.sentences(folder)    # the same list (the report reads it too)

One function per notebook, registered by name (`@finding("02_adversarial_robustness")`, in the module of its
question: training, robustness, texture, similarity, cost, features, ablations); each takes the notebook's
results folder and returns sentences. Nothing here is typed in: change a table value and the sentence
changes. A model whose clean accuracy is within a few points of chance (the smoke profile's minutes-old
test models) gets a warning first, so that nobody reads noise as a finding.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ..registry import Registry

FINDINGS: Registry[Callable[[Path], list[str]]] = Registry("findings")
NEAR_CHANCE = 0.1  # top-1 within this of chance (1 / classes) counts as near chance


def finding(notebook: str):
    return FINDINGS.register(notebook)


def _csv(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(Path(folder) / name)


def _json(folder: Path, name: str) -> dict:
    return json.loads((Path(folder) / name).read_text())


def _config(folder: Path) -> dict:
    return _json(folder, "config.json")["config"]


def _order(folder: Path, present) -> list[str]:
    listed = [m for m in _config(folder).get("models", []) if m in set(present)]
    return listed + [m for m in dict.fromkeys(present) if m not in listed]


def _f(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def family_list(values: dict[str, float], digits: int = 3) -> str:
    """{"mlp_b4_wi256": 0.6, ...} -> "mlp_b4_wi256 0.600, cnn_small 0.420 and vit_mini_p4 0.410"."""
    parts = [f"{k} {_f(v, digits)}" for k, v in values.items()]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def chance_warning(accuracy: dict[str, float], num_classes: int) -> list[str]:
    """A sentence naming the models whose top-1 is within NEAR_CHANCE of chance (none: no sentence)."""
    chance = 1 / num_classes
    near = {m: a for m, a in accuracy.items() if a < chance + NEAR_CHANCE}
    if not near:
        return []
    return [f"Near chance ({_f(chance, 2)} for {num_classes} classes): {family_list(near)} top-1. These "
            "numbers exercise the code path; they say nothing about the question."]


def sentences(folder: str | Path) -> list[str]:
    folder = Path(folder)
    return FINDINGS[folder.name.removesuffix(".running")](folder)


def show(folder: str | Path) -> None:
    """Print the findings as a bulleted list (a notebook's Reading cell)."""
    for s in sentences(folder):
        print(f"- {s}")


def _classes(folder: Path) -> int:
    return _json(folder, "dataset.json")["num_classes"] if (Path(folder) / "dataset.json").exists() else 10


from . import ablations, cost, features, robustness, similarity, texture, training  # noqa: E402, F401
