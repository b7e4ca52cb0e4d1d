"""Family or recipe? The recipe-aligned control (issue 27) and the intervals its answer is read with.

Each family trains with its own recipe (optimizer, schedule, augmentation, epochs), so "the MLP is more
robust" may mean "the MLP's recipe is" (Bai et al. 2021 closed a CNN/Transformer robustness gap by aligning
the recipes). The control trains every model of the trio again under ONE shared recipe
(`recipes.ALIGNED[profile]`: one optimizer, schedule, augmentation, label smoothing and epoch budget), its lr
chosen on the validation split (the best mean validation top-1 over the three families at seed 0), then from
every seed of the control at that lr. 01 trains and scores it (clean), 02 attacks it (PGD-10), 03 shows it
the cue-conflict images (shape bias).

    trials, summary, nets = aligned.trained(models, profile, dataset)  # lr trials, chosen lr's seeds, nets
    table = aligned.metrics(predictions)               # per setting x run: top-1 (shape bias: cue conflict)
    diff = aligned.differences(predictions, "mlp")     # per setting x other family: both recipes, verdict

A family difference is then read twice: under the families' own recipes (one seed: a paired bootstrap over
the test images) and under the shared recipe (seed-matched differences: mean and a t interval over the
seeds). It *holds* when both intervals exclude 0 with the same sign.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import Tensor

from . import recipes, store
from .experiments.similarity import error_consistency, kappa
from .experiments.texture_shape import CUE_CONFLICT  # its metric is the shape bias
from .models import family
from .recipes import ALIGNED_TAG
from .store import model_of

LEVEL = 0.95


def trained(models: list[str], profile, dataset: str, device: str | None = None
            ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The control, trained or loaded from the store: (its lr trials' summary, every seed's summary at the lr
    chosen on the validation split, {run: network in eval mode}). 01 trains it; 02 and 03 load it."""
    name = getattr(profile, "name", profile)
    trials = store.sweep(recipes.aligned_trials(models, name), dataset, profile, device)
    runs = recipes.aligned_runs(models, name, recipes.aligned_lr(trials, name))
    nets = {r: store.get_or_train(r, dataset, profile, recipe=recipe, device=device)
            for r, recipe in runs.items()}
    return trials, store.summarize(list(runs), dataset, profile), nets


def comparison_nets(runs: list[str], profile, dataset: str, device: str | None, ceiling_seed: int | None,
                    control: bool) -> tuple[dict[str, str], dict, dict]:
    """What a family comparison scores beside `runs` (the trio): ({run: its seed twin}, {twin: network}: the
    two-seed ceiling a pair is read against, none when `ceiling_seed` is None; {control run: network}: the
    control, {} when `control` is off). 01 trains them; 02 and 03 load them."""
    name = getattr(profile, "name", profile)
    twins = recipes.seed_twins(runs, name, ceiling_seed)
    twin_nets = {t: store.get_or_train(t, dataset, profile, recipe=recipe, device=device)
                 for t, recipe in twins.values()}
    control_nets = trained(runs, profile, dataset, device)[2] if control else {}
    return {r: t for r, (t, _) in twins.items()}, twin_nets, control_nets


def tables(predictions: pd.DataFrame, twins: Mapping[str, str], seed: int = 0) -> dict[str, pd.DataFrame]:
    """The comparison tables of a predictions table (model, setting, image, correct, ...), by file name:
    error_consistency (the own-recipe runs: every two families, each run with its twin), and where the
    control was scored, aligned_consistency and aligned_differences."""
    out = {"error_consistency": error_consistency(own(predictions), seed=seed, twins=twins)}
    if predictions.model.str.contains(ALIGNED_TAG, regex=False).any():
        out |= {"aligned_consistency": consistency(predictions),
                "aligned_differences": differences(predictions, seed=seed)}
    return out


def describe(run: str) -> tuple[str, str, int]:
    """(model, recipe, seed) of a scored run's name: "cnn_small@aligned-lr0.003-s2" -> ("cnn_small",
    "aligned", 2); "cnn_small@seed1" -> ("cnn_small", "own", 1); any other name: its own recipe, seed 0."""
    model = model_of(run)
    if ALIGNED_TAG in run:
        return model, "aligned", int(run.rsplit("-s", 1)[1])
    tag = run.partition("@")[2]
    seed = int(tag.rsplit("seed", 1)[1]) if "seed" in tag else 0
    return model, "own", seed


def own(predictions: pd.DataFrame) -> pd.DataFrame:
    """The rows of runs under their own recipes (what the notebooks' error_consistency pairs)."""
    return predictions[~predictions.model.str.contains(ALIGNED_TAG, regex=False)]


def metric_name(setting: str) -> str:
    return "shape bias" if setting == CUE_CONFLICT else "top-1"


def _indicators(part: pd.DataFrame, setting: str) -> tuple[np.ndarray, np.ndarray]:
    """Per image, (numerator, denominator) of the setting's metric: top-1 = correct / 1; shape bias (cue
    conflict, Geirhos et al. 2019) = shape decision / (shape or texture decision), over the images whose
    shape and texture classes differ (texture_shape.shape_bias)."""
    if setting == CUE_CONFLICT:
        kept = (part.label != part.texture_label).to_numpy()
        shape = (part.pred == part.label).to_numpy() & kept
        texture = (part.pred == part.texture_label).to_numpy() & kept
        return shape.astype(float), (shape | texture).astype(float)
    return part.correct.to_numpy(dtype=float), np.ones(len(part))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray | float:
    with np.errstate(invalid="ignore", divide="ignore"):
        return num.sum(-1) / den.sum(-1)


def metrics(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per setting x scored run of a per-image predictions table (model, setting, image, label, pred,
    correct; texture_label for the cue conflict): setting, metric, run, model, family, recipe, seed, value,
    n (images)."""
    rows = []
    for (setting, run), part in predictions.groupby(["setting", "model"], sort=False):
        model, recipe, seed = describe(run)
        rows.append({"setting": setting, "metric": metric_name(setting), "run": run, "model": model,
                     "family": family(model), "recipe": recipe, "seed": seed,
                     "value": float(_ratio(*_indicators(part, setting))), "n": len(part)})
    return pd.DataFrame(rows)


def seed_interval(values: Sequence[float], level: float = LEVEL, bounds: tuple[float, float] = (-1.0, 1.0)
                  ) -> tuple[float, float, float]:
    """(mean, lo, hi): the t interval of the mean over seeds (n - 1 degrees of freedom), cut to `bounds` (a
    difference of proportions and a kappa lie in [-1, 1]); lo and hi are NaN for fewer than two values (one
    seed has no spread)."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    if len(v) < 2:
        return float(v[0]), math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), max(bounds[0], float(v.mean() - half)), min(bounds[1], float(v.mean() + half))


def paired_bootstrap(a: pd.DataFrame, b: pd.DataFrame, setting: str, n_boot: int = 1000, seed: int = 0,
                     level: float = LEVEL) -> tuple[float, float, float, int]:
    """(difference a - b of the setting's metric, lo, hi, images): on the images both were scored on, with a
    percentile interval over `n_boot` resamples of those images (the same images for both: paired)."""
    common = np.intersect1d(a.image.to_numpy(), b.image.to_numpy())
    a, b = (x.set_index("image").loc[common].reset_index() for x in (a, b))
    (na, da), (nb, db) = _indicators(a, setting), _indicators(b, setting)
    diff = float(_ratio(na, da) - _ratio(nb, db))
    idx = np.random.default_rng(seed).integers(0, len(common), size=(n_boot, len(common)))
    boots = _ratio(na[idx], da[idx]) - _ratio(nb[idx], db[idx])
    lo, hi = np.nanquantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return diff, float(lo), float(hi), len(common)


def verdict(own_lo: float, own_hi: float, lo: float, hi: float) -> str:
    """How a difference reads under the two recipes, from its two intervals: "holds" (both exclude 0, same
    sign), "reverses" (both exclude 0, opposite signs), "own recipes only" (the aligned interval includes
    0), "aligned recipe only", or "neither" (both include 0); "no seed spread" where the aligned one is
    unknown."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "no seed spread"
    sign = lambda low, high: 0 if low <= 0 <= high else (1 if low > 0 else -1)
    s_own, s_al = sign(own_lo, own_hi), sign(lo, hi)
    if s_own and s_al:
        return "holds" if s_own == s_al else "reverses"
    return "own recipes only" if s_own else ("aligned recipe only" if s_al else "neither")


def differences(predictions: pd.DataFrame, reference: str = "mlp", n_boot: int = 1000, seed: int = 0
                ) -> pd.DataFrame:
    """The reference family's metric minus each other family's, per setting, under both recipes: own (the
    families' own-recipe seed-0 runs: paired bootstrap over the images) and aligned (seed-matched differences
    of the control's runs: mean and t interval over the seeds), and the verdict. Families, not models: under
    full the control's ViT is ViT-S/16's from-scratch counterpart (recipes.control_model). One row per
    setting x other family: setting, metric, reference, other, own, own_lo, own_hi, n_images, aligned,
    aligned_lo, aligned_hi, n_seeds, verdict; only the settings the control was scored in."""
    table = metrics(predictions)
    rows = []
    for setting, part in table.groupby("setting", sort=False):
        mine = part[(part.recipe == "own") & (part.seed == 0)].drop_duplicates("family")
        mine = mine.set_index("family").run
        al = part[part.recipe == "aligned"].pivot_table(index="seed", columns="family", values="value")
        if reference not in mine or al.empty:  # a setting the control was not scored in: nothing to read
            continue
        here = predictions[predictions.setting == setting]
        for other in (f for f in mine.index if f != reference):
            a, b = (here[here.model == mine[f]] for f in (reference, other))
            d, lo, hi, n = paired_bootstrap(a, b, setting, n_boot, seed)
            per_seed = (al[reference] - al[other]).dropna().tolist() if {reference, other} <= set(al) else []
            mean, a_lo, a_hi = seed_interval(per_seed)
            rows.append({"setting": setting, "metric": metric_name(setting), "reference": reference,
                         "other": other, "own": d, "own_lo": lo, "own_hi": hi, "n_images": n, "aligned": mean,
                         "aligned_lo": a_lo, "aligned_hi": a_hi, "n_seeds": len(per_seed),
                         "verdict": verdict(lo, hi, a_lo, a_hi)})
    return pd.DataFrame(rows)


def _pairs(runs: Sequence[str]) -> dict[tuple[str, str, str], list[tuple[str, str]]]:
    """The control's runs paired: (model_a, model_b, "families") -> the two models' runs at each seed both
    have; (model, model, "two seeds") -> the model's runs at every two seeds (the ceiling); models in
    order."""
    by = {describe(r)[::2]: r for r in dict.fromkeys(runs) if ALIGNED_TAG in r}  # (model, seed) -> run
    models = list(dict.fromkeys(m for m, _ in by))
    seeds = sorted({s for _, s in by})
    pairs = {(a, b, "families"): [(by[a, s], by[b, s]) for s in seeds if (a, s) in by and (b, s) in by]
             for a, b in itertools.combinations(models, 2)}
    return pairs | {(m, m, "two seeds"): [(by[m, s], by[m, t]) for s, t in itertools.combinations(seeds, 2)
                                          if (m, s) in by and (m, t) in by] for m in models}


def consistency(predictions: pd.DataFrame) -> pd.DataFrame:
    """Error consistency among the control's runs, per setting: every pair of models at the same seed
    ("families") and every model against itself from another seed ("two seeds": the ceiling under the shared
    recipe), Cohen's kappa per pair, then per (model_a, model_b, kind): the mean with its t interval over the
    pairs (seeds for families; seed pairs, which share runs, for the ceiling). Columns: setting, model_a,
    model_b, kind, kappa, kappa_lo, kappa_hi, n_pairs."""
    rows = []
    for setting, part in predictions[predictions.model.str.contains(ALIGNED_TAG, regex=False)].groupby(
            "setting", sort=False):
        wide = part.pivot(index="image", columns="model", values="correct")
        for (a, b, kind), among in _pairs(part.model).items():
            values = [kappa(*(torch.tensor(wide[[x, y]].dropna().astype(bool)[c].to_numpy()) for c in (x, y)))
                      for x, y in among]
            mean, lo, hi = seed_interval(values)
            rows.append({"setting": setting, "model_a": a, "model_b": b, "kind": kind, "kappa": mean,
                         "kappa_lo": lo, "kappa_hi": hi, "n_pairs": len(values)})
    return pd.DataFrame(rows)


def similarity(features: Mapping[str, Tensor], measure: Callable[[Tensor, Tensor], float]) -> pd.DataFrame:
    """A similarity measure among the control's runs (features: run -> (N, D) features of the same images):
    each pair of models at the same seed ("families"), each model against itself from another seed ("two
    seeds", the ceiling), the mean and t interval over the pairs; and for the first model, which of the other
    two its features are closer to: per seed measure(first, second) - measure(first, third) ("difference",
    model_b "<second> - <third>"). Columns: model_a, model_b, kind, value, lo, hi, n_pairs."""
    rows, per_seed = [], {}
    for (a, b, kind), among in _pairs(list(features)).items():
        values = [measure(features[x], features[y]) for x, y in among]
        if kind == "families":
            per_seed[a, b] = dict(zip((describe(x)[2] for x, _ in among), values, strict=True))
        mean, lo, hi = seed_interval(values)
        rows.append({"model_a": a, "model_b": b, "kind": kind, "value": mean, "lo": lo, "hi": hi,
                     "n_pairs": len(values)})
    models = list(dict.fromkeys(describe(r)[0] for r in features if ALIGNED_TAG in r))
    if len(models) == 3:
        first, second, third = models
        ab, ac = per_seed[first, second], per_seed[first, third]
        mean, lo, hi = seed_interval([ab[s] - ac[s] for s in ab if s in ac], bounds=(-math.inf, math.inf))
        rows.append({"model_a": first, "model_b": f"{second} - {third}", "kind": "difference", "value": mean,
                     "lo": lo, "hi": hi, "n_pairs": len(set(ab) & set(ac))})
    return pd.DataFrame(rows)
