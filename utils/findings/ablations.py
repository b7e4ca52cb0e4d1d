"""Findings of 06 (see utils.findings): which change, rung and depth variant validates best and what it does
to test top-1, what each change does to robustness, whether a difference is within the seed spread, from
ablation_summary.csv, ablations.csv, gradients.csv, adversarial.csv and autoattack.csv."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from . import _classes, _config, _csv, _f, chance_warning, change, difference, finding

ONE_AT_A_TIME = ("tricks", "normalisation", "input representation")


def _pm(x: float, se: float) -> str:
    """+0.012 (s.e. 0.004), or +0.012 (one seed) when there is no spread."""
    spread = f"s.e. {_f(se)}" if math.isfinite(se) else "one seed, no spread"
    return f"{x:+.3f} ({spread})"


def _val_delta(s: pd.DataFrame) -> pd.Series:
    """Mean validation top-1 against the study's baseline (its first row): what a winner is chosen by."""
    return s.val_top1_mean - s.groupby("study", sort=False).val_top1_mean.transform("first")


def _deltas(s: pd.DataFrame, eps: str) -> list[str]:
    changes = s[s.study.isin(ONE_AT_A_TIME) & (s.ablation != s.groupby("study").ablation.transform("first"))]
    changes = changes.assign(delta_val=_val_delta(s)).dropna(subset=["delta_top1", "delta_val"])
    if changes.empty:
        return []
    best, worst = changes.loc[changes.delta_val.idxmax()], changes.loc[changes.delta_val.idxmin()]
    helps = "helps most" if best.delta_val > 0 else "hurts least (none raises it)"
    hurts = "hurts most" if worst.delta_val < 0 else "helps least (none lowers it)"
    out = [f"Chosen on validation top-1, the change that {helps} is {best.study} '{best.change}' "
           f"({best.delta_val:+.3f} val top-1 against its baseline); on the test set it "
           + change("top-1", best.delta_top1, best.delta_top1_se) + "."]
    out.append(f"The one that {hurts} on validation is {worst.study} '{worst.change}' "
               f"({worst.delta_val:+.3f}); on the test set it "
               + change("top-1", worst.delta_top1, worst.delta_top1_se) + ".")
    within = changes[changes.within_spread.astype(object) == True]  # noqa: E712  (NaN: one seed)
    if len(within):
        out.append(f"{len(within)} of {len(changes)} one-at-a-time changes are within the seed spread of "
                   f"their baseline on test top-1 (|delta| <= 2 s.e.): {', '.join(within.change)}.")
    rob = changes.dropna(subset=["delta_robust"])
    if len(rob):
        low, high = rob.loc[rob.delta_robust.idxmin()], rob.loc[rob.delta_robust.idxmax()]
        out.append(f"PGD-10 at {eps} on the test images (no validation number behind it, so no winner): the "
                   f"lowest of these changes, '{low.change}', "
                   + change("robust top-1", low.delta_robust, low.delta_robust_se)
                   + f"; the highest, '{high.change}', "
                   + change("robust top-1", high.delta_robust, high.delta_robust_se) + ".")
    return out


def _ladder(s: pd.DataFrame) -> list[str]:
    lad = s[s.study == "ladder"].reset_index(drop=True)
    if len(lad) < 2:
        return []
    val_gains = lad.val_top1_mean.diff().iloc[1:]
    i = val_gains.idxmax()
    adds = "adds the most" if val_gains[i] > 0 else "loses the least (no rung adds any)"
    total = _pm(lad.delta_top1.iloc[-1], lad.delta_top1_se.iloc[-1])
    return [f"The ladder goes from {_f(lad.top1_mean.iloc[0])} ('{lad.change.iloc[0]}') to "
            f"{_f(lad.top1_mean.iloc[-1])} with every trick ({total}); the rung that {adds} validation top-1 "
            f"is '{lad.change[i]}' ({val_gains[i]:+.3f} val); on the test set it "
            + change("top-1", lad.top1_mean[i] - lad.top1_mean[i - 1]) + "."]


GRADIENT_FACTOR = 1e3  # a first/last gradient-norm ratio beyond this factor either way: explode / vanish


def _gradient_regimes(ratio: dict[str, float]) -> str:
    """"; they explode toward the input with batch norm (...), vanish with plain": the variants whose ratio
    leaves [1/GRADIENT_FACTOR, GRADIENT_FACTOR], or "" when none does."""
    explode = [k for k, v in ratio.items() if v >= GRADIENT_FACTOR]
    vanish = [k for k, v in ratio.items() if v <= 1 / GRADIENT_FACTOR]
    parts = [f"explode toward the input with {' and '.join(explode)}"] if explode else []
    if any("batch" in k for k in explode):  # the known cause, not a measurement artefact
        parts[0] += (" (batch norm without skips makes gradients grow with depth: Yang et al. 2019, "
                     "A Mean Field Theory of Batch Normalization)")
    parts += [f"vanish with {' and '.join(vanish)}"] if vanish else []
    return f"; they {', and '.join(parts)}" if parts else ""


def _depth(s: pd.DataFrame, grads: pd.DataFrame) -> list[str]:
    study = grads.study.iloc[0]
    d = s[s.study == study].set_index("change")
    ratio = {}
    for variant, g in grads.groupby("change", sort=False):
        per = g.groupby("depth").grad_norm.median()
        ratio[variant] = per.iloc[0] / per.iloc[-2] if len(per) > 2 else math.nan  # first vs last hidden
    plain = d.index[0]
    best = d.val_top1_mean.idxmax()
    ratios = ", ".join(f"{k} {v:.1e}" for k, v in ratio.items())
    out = [f"{study}: the first layer's gradient norm over the last hidden layer's (median over the first "
           f"epoch) is {ratios}" + _gradient_regimes(ratio) + "."]
    if best == plain:
        return out + [f"{study}: no variant validates above {plain} ({_f(d.val_top1_mean[plain])} val, "
                      f"{_f(d.top1_mean[plain])} test top-1)."]
    test = change("top-1", d.delta_top1[best], d.delta_top1_se[best], to=d.top1_mean[best])
    return out + [f"{study}: '{best}' validates best ({_f(d.val_top1_mean[best])} against {plain}'s "
                  f"{_f(d.val_top1_mean[plain])}); on the test set, where {plain} has "
                  f"{_f(d.top1_mean[plain])}, it {test}."]


def _grid(s: pd.DataFrame) -> list[str]:
    g = s[s.study == "depth x width"]
    if g.empty:
        return []
    pick = g.loc[g.val_top1_mean.idxmax()]
    return [f"Of the depth x width grid, depth {int(pick.depth)} width {int(pick.width)} validates best "
            f"({_f(pick.val_top1_mean)}; test {_f(pick.top1_mean)}, {pick.params / 1e6:.2f}M parameters); "
            f"the test top-1 spans {_f(g.top1_mean.min())}-{_f(g.top1_mean.max())}."]


def _optimisation(rows: pd.DataFrame) -> list[str]:
    lr = rows[rows.study == "learning rate"]
    out = []
    if len(lr):
        by = lr.groupby("lr").val_top1.mean()
        out.append(f"mlp_plain's learning rate chosen on the validation split: {by.idxmax():g} (val top-1 "
                   f"{_f(by.max())}; tried {', '.join(f'{v:g}' for v in by.index)}).")
    for study in ("batch size (fixed epochs)", "batch size (fixed steps)"):
        b = rows[rows.study == study].groupby("batch_size").val_top1.mean()
        if len(b):
            out.append(f"{study.capitalize()}: batch {b.idxmax()} validates best ({_f(b.max())}), batch "
                       f"{b.idxmin()} worst ({_f(b.min())}).")
    return out


def _known(delta_se: tuple[float, float]) -> tuple[float, float | None]:
    """(delta, s.e.) with a NaN s.e. (one seed) as None: the sentence says "one seed" once, not per number."""
    d, se = delta_se
    return d, (se if math.isfinite(se) else None)


def _adversarial(adv: pd.DataFrame, aa: pd.DataFrame | None, eps: str) -> list[str]:
    """Per model: standard training's clean and PGD-10 top-1, then what each adversarial training changes
    (every one: robust top-1 is measured on test images only, so no winner is picked among them)."""
    out = []
    for model, g in adv.dropna(subset=["robust_top1"]).groupby("model", sort=False):
        std = g[g.method == "standard"]
        if std.empty or (g.method != "standard").sum() == 0:
            continue
        parts = []
        for (method, e), t in g[g.method != "standard"].groupby(["method", "train_eps"], sort=False):
            rob, clean = _known(difference(t.robust_top1, std.robust_top1)), _known(difference(t.test_top1,
                                                                                              std.test_top1))
            parts.append(f"{method.upper()} training at {e * 255:g}/255 "
                         + change("PGD-10 top-1", *rob, to=t.robust_top1.mean())
                         + " and " + change("clean top-1", *clean, to=t.test_top1.mean()))
        seeds = f"{len(std)} seeds" if len(std) > 1 else "one seed, no spread"
        out.append(f"{model} ({seeds}): standard training {_f(std.test_top1.mean())} clean, "
                   f"{_f(std.robust_top1.mean())} under PGD-10 at {eps}; against it, "
                   + "; ".join(parts) + ".")
    if aa is not None and len(aa):
        last = aa[aa.stage == aa.groupby("run").stage.transform("max")]
        gaps = ", ".join(f"{r.model} {r.method} {r.pgd_top1 - r.top1:+.3f}" for r in last.itertuples())
        out.append(f"AutoAttack (n={int(aa.n.iloc[0])}) finds what PGD-10 misses by: {gaps} top-1 "
                   "(PGD-10 minus AutoAttack on the same images).")
    return out


@finding("06_improving_mlp")
def _improving(folder: Path) -> list[str]:
    cfg, s = _config(folder), _csv(folder, "ablation_summary.csv")
    eps = f"{cfg['eval_eps_255']:g}/255"
    acc = s.groupby("model").top1_mean.max().to_dict()
    out = chance_warning(acc, _classes(folder))
    seeds = int(s[s.study.isin(ONE_AT_A_TIME)].seeds.max())
    out.append(f"Every point trains on {int(s.train_images.max())} images or fewer for "
               f"{int(s.epochs.min())}-{int(s.epochs.max())} epochs ({cfg['dataset']}, {cfg['profile']}); "
               f"seeds per headline row: {seeds}.")
    out += _deltas(s, eps) + _ladder(s)
    rows = _csv(folder, "ablations.csv")
    out += _optimisation(rows) + _grid(s)
    if (Path(folder) / "gradients.csv").exists():
        out += _depth(s, _csv(folder, "gradients.csv"))
    if (Path(folder) / "adversarial.csv").exists():
        aa = _csv(folder, "autoattack.csv") if (Path(folder) / "autoattack.csv").exists() else None
        out += _adversarial(_csv(folder, "adversarial.csv"), aa, eps)
    return out
