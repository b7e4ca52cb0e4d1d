"""One row per model of the comparison trio: each notebook's headline number, from the saved tables alone
(issue 27). The report opens with it, and with where the MLP sits on each measure.

    board = leaderboard.table(results_root() / "quick" / "fashion-mnist")   # DataFrame; NaN: not run
    leaderboard.answer(board)                                               # sentences: MLP with whom?

Columns, each with `<column>_lo` / `_hi` (a 95% interval) where one exists:
- clean_top1 (01, the test split; Wilson interval over its images), clean_top1_seed1 (its seed twin's,
  from 01's error-consistency table);
- pgd10_top1 (02: PGD-10 at L-inf 8/255, RobustBench's setting) and autoattack_top1 (02: after every
  member), Wilson intervals over the attacked images;
- shape_bias (03: shape decisions / (shape + texture decisions) on cue conflict; Wilson over the decisions);
- ece (05, fp32), params and flops_per_image (05's size table, else 01's params);
- kappa_<family> (01: error consistency, clean test images, with the model of that family; its own
  family's column: the model with its seed twin, the ceiling) with the bootstrap interval 01 saved;
- cka_<family> (04: linear CKA gap closed between the two families' sources, both directions averaged);
- clean_top1_aligned, pgd10_top1_aligned, shape_bias_aligned: the family's model under the recipe-aligned
  control (utils/aligned.py: one shared recipe; 01, 02, 03), the mean over its seeds with a t interval.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import aligned
from .findings import FAMILY_NAMES as NAMES
from .recipes import ALIGNED_TAG

FAMILIES = ("mlp", "cnn", "vit")
# (notebook, setting, column) of the aligned control's headline numbers, read from the per-image predictions
ALIGNED_COLUMNS = (("01_vit_finetuning", "clean", "clean_top1_aligned"),
                   ("02_adversarial_robustness", "PGD-10", "pgd10_top1_aligned"),
                   ("03_texture_vs_shape_bias", "cue conflict", "shape_bias_aligned"))
Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval


def wilson(successes: float, n: float) -> tuple[float, float]:
    """The Wilson score 95% interval of a proportion (successes of n trials); (nan, nan) for n = 0."""
    if not n:
        return math.nan, math.nan
    p, z2 = successes / n, Z95**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return centre - half, centre + half


def _read(root: Path, name: str) -> pd.DataFrame | None:
    path = root / name
    return pd.read_csv(path) if path.exists() else None


def _proportion(rows: list[dict], column: str, values: dict[str, tuple[float, float]]) -> None:
    """Fill column, column_lo, column_hi of each row from model -> (proportion, trials)."""
    for row in rows:
        if row["model"] in values:
            p, n = values[row["model"]]
            row[column] = p
            row[f"{column}_lo"], row[f"{column}_hi"] = wilson(p * n, n)


def table(root: str | Path) -> pd.DataFrame:
    """The leaderboard of the results under root (= <results>/<profile>/<dataset>), one row per trio model."""
    root = Path(root)
    summary = _read(root, "01_vit_finetuning/summary.csv")
    if summary is None:
        return pd.DataFrame(columns=["model", "family"])
    trio = summary[summary.run == summary.model]
    trio = trio[trio.family.isin(FAMILIES)].drop_duplicates("family")
    rows = [{"model": r.model, "family": r.family, "params": r.params} for r in trio.itertuples()]
    family_of = {r["model"]: r["family"] for r in rows}
    model_of = {f: m for m, f in family_of.items()}

    predictions = _read(root, "01_vit_finetuning/predictions.csv")
    if predictions is not None:
        clean = predictions[predictions.setting == "clean"].groupby("model").correct
        _proportion(rows, "clean_top1", {m: (c.mean(), c.size) for m, c in clean})
    settings = _read(root, "02_adversarial_robustness/standard_settings.csv")
    if settings is not None:
        pgd = settings[settings.setting == "PGD-10"]
        _proportion(rows, "pgd10_top1", {r.model: (r.top1, r.n) for r in pgd.itertuples()})
    autoattack = _read(root, "02_adversarial_robustness/autoattack.csv")
    if autoattack is not None:
        last = autoattack.sort_values("stage").groupby("model").last()
        _proportion(rows, "autoattack_top1", {m: (r.top1, r.n) for m, r in last.iterrows()})
    shape = _read(root, "03_texture_vs_shape_bias/shape_bias.csv")
    if shape is not None:
        _proportion(rows, "shape_bias", {r.model: (r.shape_bias, r.shape_decisions + r.texture_decisions)
                                         for r in shape.itertuples()})
    cost = _read(root, "05_inference_time/cost.csv")
    if cost is not None:
        fp32 = cost[cost["mode"] == "fp32"].set_index("model")
        for row in rows:
            if row["model"] in fp32.index:
                row |= {"ece": fp32.ece[row["model"]], "flops_per_image": fp32.flops_per_image[row["model"]]}
    kappa = _read(root, "01_vit_finetuning/error_consistency.csv")
    if kappa is not None:
        clean = kappa[kappa.setting == "clean"]
        for row in rows:
            m = row["model"]
            for r in clean[(clean.model_a == m) | (clean.model_b == m)].itertuples():
                other = r.model_b if r.model_a == m else r.model_a
                family = family_of.get(other, family_of[m] if r.kind == "two seeds" else None)
                if family is not None:
                    row |= {f"kappa_{family}": r.kappa, f"kappa_{family}_lo": r.kappa_lo,
                            f"kappa_{family}_hi": r.kappa_hi}
                if r.kind == "two seeds":  # the seed twin's top-1 on the same images
                    row["clean_top1_seed1"] = r.top1_b
    cka = _read(root, "04_feature_generalizability/cka_summary.csv")
    if cka is not None:
        for r in cka.itertuples():
            a, b = r.pair.split(" - ")
            for mine, theirs in ((a, b), (b, a)):
                if mine in model_of:
                    next(x for x in rows if x["family"] == mine)[f"cka_{theirs}"] = r.gap_closed
    for notebook, setting, column in ALIGNED_COLUMNS:
        scored = _read(root, f"{notebook}/predictions.csv")
        if scored is None:
            continue
        control = aligned.metrics(scored[(scored.setting == setting)
                                         & scored.model.str.contains(ALIGNED_TAG, regex=False)])
        for row in rows if len(control) else []:
            values = control.value[control.family == row["family"]]
            mean, lo, hi = aligned.seed_interval(values, bounds=(0, 1))
            row |= {column: mean, f"{column}_lo": lo, f"{column}_hi": hi}
    return pd.DataFrame(rows)


MEASURES = {  # column -> (what it is, higher is: "better" / "more alike" / "" (neither))
    "clean_top1": "clean top-1", "pgd10_top1": "top-1 under PGD-10 (L-inf 8/255)",
    "autoattack_top1": "top-1 under AutoAttack", "shape_bias": "shape bias", "ece": "calibration error (ECE)"}


def _interval(b: pd.DataFrame, column: str) -> bool:
    return f"{column}_lo" in b and not b[f"{column}_lo"].isna().any()


def _value(b: pd.DataFrame, family: str, column: str) -> str:
    """"0.412 [0.380, 0.445]" (the interval where the leaderboard has one)."""
    lo = b[f"{column}_lo"][family] if f"{column}_lo" in b else math.nan
    hi = b[f"{column}_hi"][family] if f"{column}_hi" in b else math.nan
    return f"{b[column][family]:.3f}" + ("" if np.isnan(lo) else f" [{lo:.3f}, {hi:.3f}]")


def _overlap(b: pd.DataFrame, column: str, x: str, y: str, cx: str | None = None, cy: str | None = None
             ) -> bool:
    """Whether the intervals of b[cx][x] and b[cy][y] (both `column` by default) overlap."""
    cx, cy = cx or column, cy or column
    return bool(max(b[f"{cx}_lo"][x], b[f"{cy}_lo"][y]) <= min(b[f"{cx}_hi"][x], b[f"{cy}_hi"][y]))


def _where(b: pd.DataFrame, column: str) -> str:
    if not _interval(b, column):
        nearer = min(("cnn", "vit"), key=lambda f: abs(b[column]["mlp"] - b[column][f]))
        return f"nearer the {NAMES[nearer]} (no interval)"
    near = [f for f in ("cnn", "vit") if _overlap(b, column, "mlp", f)]
    if len(near) == 2:
        return "with both (its interval overlaps each)"
    if not near:
        return "apart from both (no interval overlaps)"
    other = ({"cnn", "vit"} - set(near)).pop()
    return f"with the {NAMES[near[0]]} (the intervals overlap), not the {NAMES[other]}"


def answer(board: pd.DataFrame) -> list[str]:
    """Per measure: does the MLP sit with the CNN, with the ViT, with both, or apart (by its 95% interval
    where the column has one, else by which is nearer), read from the leaderboard alone."""
    if not set(FAMILIES) <= set(board.get("family", [])):
        return ["The answer needs all three families' rows (01 has not run with the trio)."]
    b = board.set_index("family")
    out = []
    for column, what in MEASURES.items():
        if column in b and not b[column].isna().any():
            values = ", ".join(f"{NAMES[f]} {_value(b, f, column)}" for f in FAMILIES)
            out.append(f"{what[0].upper()}{what[1:]}: the MLP sits {_where(b, column)}: {values}.")
    if all(c in b and not np.isnan(b[c]["mlp"]) for c in ("kappa_cnn", "kappa_vit")):
        how = ("as much like the CNN as like the ViT (the intervals overlap)"
               if _overlap(b, "", "mlp", "mlp", "kappa_cnn", "kappa_vit") else
               f"more like the {'CNN' if b.kappa_cnn['mlp'] > b.kappa_vit['mlp'] else 'ViT'}")
        twin = "kappa_mlp" in b and not np.isnan(b.kappa_mlp["mlp"])  # quick: no seed twin (the control's)
        ceiling = f"; with its seed twin {_value(b, 'mlp', 'kappa_mlp')}" if twin else ""
        chance = "" if (b.kappa_cnn_lo["mlp"] > 0 or b.kappa_vit_lo["mlp"] > 0) else "; neither above chance"
        out.append(f"Which test images it gets wrong (error consistency): the MLP errs {how}: kappa with "
                   f"the CNN {_value(b, 'mlp', 'kappa_cnn')}, with the ViT {_value(b, 'mlp', 'kappa_vit')}"
                   f"{ceiling}{chance}.")
    if all(c in b and not np.isnan(b[c]["mlp"]) for c in ("cka_cnn", "cka_vit")):
        closer = "CNN" if b.cka_cnn["mlp"] > b.cka_vit["mlp"] else "ViT"
        out.append(f"Representations (CKA, gap closed between the floor and the seed ceiling): the MLP's are "
                   f"more like the {closer}'s: {b.cka_cnn['mlp']:.2f} of the gap with the CNN, "
                   f"{b.cka_vit['mlp']:.2f} with the ViT (no interval: one pair of seeds).")
    return out
