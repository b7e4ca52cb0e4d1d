"""What a run found, as sentences whose every number is read from the tables the notebook saved.

    findings.show(run.out)        # a notebook's "Reading" cell: one bullet per finding
    findings.sentences(folder)    # the same list (the report reads it too)

One function per notebook, registered by name (`@finding("02_adversarial_robustness")`, in the module of its
question: training, robustness, texture, similarity, cost, features, ablations); each takes the notebook's
results folder and returns sentences. Nothing here is typed in: change a table value and the sentence
changes. A model whose clean accuracy is within a few points of chance (the smoke profile's minutes-old
test models) gets a warning first, so that nobody reads noise as a finding.

Two rules every module keeps. A sentence about a change takes its verb from the change's sign (`change`:
raises, lowers, or leaves within the seed spread), never a verb typed beside the number. A winner (the best
change, rung, variant) is named by validation top-1 and reported with its test top-1; a ranking with no
validation number behind it (robust accuracy, transfer) says "highest on the test images", not "best".
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ..registry import Registry

FINDINGS: Registry[Callable[[Path], list[str]]] = Registry("findings")
NEAR_CHANCE = 0.1  # top-1 within this of chance (1 / classes) counts as near chance
SPREAD = 2.0  # |delta| <= SPREAD x its s.e.: within the seed spread (= experiments.ablations.WITHIN)


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


def family_list(values: dict[str, float], digits: int = 3, signed: bool = False) -> str:
    """{"mlp_b4_wi256": 0.6, ...} -> "mlp_b4_wi256 0.600, cnn_small 0.420 and vit_mini_p4 0.410" (signed:
    "+0.600", for changes whose sign differs between models)."""
    parts = [f"{k} {v:+.{digits}f}" if signed else f"{k} {_f(v, digits)}" for k, v in values.items()]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def spread(se: float | None, digits: int = 3) -> str:
    """" (s.e. 0.004)"; " (one seed, no spread)" for a NaN s.e.; "" where no s.e. is known (None)."""
    if se is None:
        return ""
    return f" (s.e. {_f(se, digits)})" if math.isfinite(se) else " (one seed, no spread)"


def change(what: str, delta: float, se: float | None = None, *, to: float | None = None,
           digits: int = 3) -> str:
    """A change of `what` by `delta`, its verb read from the sign (a typed "raises" once read "raises PGD-10
    to 0.297" from 0.328): "raises PGD-10 top-1 by 0.032 to 0.360 (s.e. 0.010)", "lowers ... by 0.031 to
    0.297", "leaves PGD-10 top-1 within the seed spread (+0.004, s.e. 0.010) at 0.332" when |delta| <= SPREAD
    s.e., "leaves ... unchanged" when it rounds to 0. se: None when no spread is known, NaN for one seed."""
    at = "" if to is None else f" at {_f(to, digits)}"
    if not math.isfinite(delta):
        return f"gives no number for {what}"
    if se is not None and math.isfinite(se) and abs(delta) <= SPREAD * se:
        return f"leaves {what} within the seed spread ({delta:+.{digits}f}, s.e. {_f(se, digits)}){at}"
    if round(delta, digits) == 0:
        return f"leaves {what} unchanged{at}{spread(se, digits)}"
    verb, end = ("raises" if delta > 0 else "lowers"), ("" if to is None else f" to {_f(to, digits)}")
    return f"{verb} {what} by {abs(delta):.{digits}f}{end}{spread(se, digits)}"


def difference(a: pd.Series, b: pd.Series) -> tuple[float, float]:
    """(mean(a) - mean(b), its s.e. sqrt(s_a^2 / n_a + s_b^2 / n_b)); NaN s.e. when a side has one value (the
    formula of experiments.ablations.aggregate, for tables saved per seed)."""
    a, b = a.dropna(), b.dropna()
    if len(a) == 0 or len(b) == 0:
        return math.nan, math.nan
    var = lambda s: s.var(ddof=1) / len(s) if len(s) > 1 else math.nan
    return float(a.mean() - b.mean()), float(math.sqrt(var(a) + var(b)))


def chance_warning(accuracy: dict[str, float], num_classes: int) -> list[str]:
    """A sentence naming the models whose top-1 is within NEAR_CHANCE of chance (none: no sentence)."""
    chance = 1 / num_classes
    near = {m: a for m, a in accuracy.items() if a < chance + NEAR_CHANCE}
    if not near:
        return []
    return [f"Near chance ({_f(chance, 2)} for {num_classes} classes): {family_list(near)} top-1. These "
            "numbers exercise the code path; they say nothing about the question."]


def consistency(table: pd.DataFrame, settings: dict[str, str]) -> list[str]:
    """Error consistency (an error_consistency table: setting, model_a, model_b, kappa, kappa_lo, kappa_hi,
    and `kind`, "families" or "two seeds"), one sentence per setting of `settings` ({setting: how a sentence
    names it}) present in the table: each pair of families' kappa with its bootstrap interval, the pair that
    shares the most mistakes, and each model's two-seed kappa (the ceiling) where the table has it; what kappa
    means is said in the first."""
    out = []
    kind = table["kind"] if "kind" in table else pd.Series("families", index=table.index)
    for setting, name in settings.items():
        here = table.setting == setting
        part, seeds = table[here & (kind != "two seeds")], table[here & (kind == "two seeds")]
        if part.empty or part.kappa.isna().all():
            continue
        interval = lambda r: f"{_f(r.kappa)} [{_f(r.kappa_lo)}, {_f(r.kappa_hi)}]"
        pairs = "; ".join(f"{r.model_a} and {r.model_b} {interval(r)}" for r in part.itertuples())
        top = part.loc[part.kappa.idxmax()]
        what = ("" if out else " (Cohen's kappa of which images each gets right; 0: independent errors, 1: "
                "the same mistakes; 95% bootstrap interval)")  # said once
        ceiling = ("; the ceiling, each model against itself from another seed: "
                   + "; ".join(f"{r.model_a} {interval(r)}" for r in seeds.itertuples())
                   if len(seeds) else " (no two-seed ceiling under the own recipes in this run; the aligned "
                   "control's, where it ran, is below)")
        out.append(f"Error consistency {name}{what}: {pairs}. {top.model_a} and {top.model_b} share the most "
                   f"mistakes{ceiling}.")
    return out


VERDICTS = {"holds": "holds under the shared recipe",
            "reverses": "reverses under the shared recipe",
            "own recipes only": "is the recipes', not the family's (the shared recipe's interval includes 0)",
            "aligned recipe only": "appears only under the shared recipe",
            "neither": "is not resolved under either recipe (both intervals include 0)",
            "no seed spread": "has no interval under the shared recipe (one seed)"}
FAMILY_NAMES = {"mlp": "MLP", "cnn": "CNN", "vit": "ViT"}


def aligned(folder: Path, settings: dict[str, str]) -> list[str]:
    """The recipe-aligned control (utils/aligned.py; aligned_differences.csv and aligned_consistency.csv
    where the notebook saved them), one sentence per setting of `settings` ({setting: how a sentence names
    it}): the MLP's metric minus each other family's under the own recipes and under the shared one, each
    with its 95% interval, and the verdict; then the control's error consistency with its ceiling."""
    folder, out = Path(folder), []
    if not (folder / "aligned_differences.csv").exists():
        return out
    diff = _csv(folder, "aligned_differences.csv")
    kappa = _csv(folder, "aligned_consistency.csv") if (folder / "aligned_consistency.csv").exists() else None
    for setting, name in settings.items():
        part = diff[diff.setting == setting]
        if part.empty:
            continue
        what = ("" if out else " (the trio again under one shared recipe, its lr chosen on validation, "
                f"{int(part.n_seeds.max())} seeds: utils/aligned.py)")
        name_of = lambda f: FAMILY_NAMES.get(f, f)
        pairs = "; ".join(f"{name_of(r.reference)} minus {name_of(r.other)} {_ci(r.own, r.own_lo, r.own_hi)} "
                          f"under the own recipes, {_ci(r.aligned, r.aligned_lo, r.aligned_hi)} under the "
                          f"shared one: the difference {VERDICTS[r.verdict]}" for r in part.itertuples())
        out.append(f"Family or recipe{what}, {part.metric.iloc[0]} {name}: {pairs}.")
        if kappa is not None and not (k := kappa[kappa.setting == setting]).empty:
            pairs = "; ".join(f"{r.model_a} and {r.model_b} {_ci(r.kappa, r.kappa_lo, r.kappa_hi)}"
                              for r in k[k.kind == "families"].itertuples())
            ceiling = "; ".join(f"{r.model_a} {_ci(r.kappa, r.kappa_lo, r.kappa_hi)}"
                                for r in k[k.kind == "two seeds"].itertuples())
            out.append(f"Under the shared recipe, error consistency {name} (mean over seeds, 95% t "
                       f"interval): {pairs}; the ceiling, each model against itself from another seed: "
                       f"{ceiling}.")
    return out


def _ci(v: float, lo: float, hi: float) -> str:
    return f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]" if math.isfinite(lo) else f"{v:+.3f} (no interval)"


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
