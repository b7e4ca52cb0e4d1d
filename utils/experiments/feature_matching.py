"""Comparing dictionaries: which features of one model's SAE reappear in another's, what each feature
signals, and the original study's Prediction 2 (MLP and CNN dictionaries alike).

    match_features(h_a, h_b).summary()      # best Pearson r of each A feature with any B feature
    class_selectivity(h, labels, 10)        # the class each feature signals best (Youden's J)
    table, per_feature = compare_dictionaries(codes, seed_codes, random_codes); prediction2(table)

Notebook 09's tables: shown_features (selectivity and the features shown), top_images, pair_names +
compare_seeds (the matching), prediction2_lines (the verdict, in words).

match_features: for each feature of A, the largest (signed) Pearson r of its per-image activations with any
feature of B, over the same images. Constant features (dead ones) have no correlation: NaN for A (left out
of the summary, counted), never a match in B.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class FeatureMatch:
    best: torch.Tensor  # (Fa,) best Pearson r of each A feature with any B feature; NaN: A feature constant
    index: torch.Tensor  # (Fa,) int64, the B feature that gives it; -1 for constant A features
    n_constant_b: int  # constant B features (never matched)

    def summary(self) -> dict[str, float]:
        """Over A's non-constant features: mean, median, share of best r above 0.5 and 0.8; counts."""
        r = self.best[~self.best.isnan()].double()
        stats = dict.fromkeys(("mean", "median", "share_above_0.5", "share_above_0.8"), math.nan)
        if len(r):
            stats = {"mean": r.mean().item(), "median": r.median().item(),
                     "share_above_0.5": (r > 0.5).double().mean().item(),
                     "share_above_0.8": (r > 0.8).double().mean().item()}
        counts = {"features": len(self.best), "constant_a": len(self.best) - len(r)}
        return {**stats, **counts, "constant_b": self.n_constant_b}


def standardize(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(h - mean) / std per column (population std), zero for constant columns; and the constant mask."""
    h = h.double()
    centred = h - h.mean(0)
    std = centred.pow(2).mean(0).sqrt()
    constant = std <= 1e-12 * h.abs().amax(0).clamp_min(1.0)
    return torch.where(constant, 0.0, centred / std.clamp_min(1e-300)), constant


@torch.no_grad()
def match_features(acts_a: torch.Tensor, acts_b: torch.Tensor, chunk: int = 1024) -> FeatureMatch:
    """For each feature (column) of acts_a (N, Fa), the largest Pearson r with any column of acts_b (N, Fb),
    over the same N images in the same order. Standardised in float64, correlated in float32 (r to ~1e-6),
    `chunk` A columns at a time."""
    if acts_a.shape[0] != acts_b.shape[0]:
        raise ValueError(f"need the same images: {acts_a.shape[0]} vs {acts_b.shape[0]} rows")
    (za, const_a), (zb, const_b) = standardize(acts_a), standardize(acts_b)
    za, zb = za.float(), zb.float()
    best, index = [], []
    for block in za.T.split(chunk):  # (c, N)
        r = block @ zb / za.shape[0]  # (c, Fb) Pearson r; 0 against constant B columns
        r[:, const_b] = -math.inf
        value, arg = r.max(1)
        best.append(value)
        index.append(arg)
    best, index = torch.cat(best).float(), torch.cat(index)
    best[const_a | ~torch.isfinite(best)] = math.nan
    index[best.isnan()] = -1
    return FeatureMatch(best, index, int(const_b.sum()))


def class_selectivity(h: torch.Tensor, labels: torch.Tensor, num_classes: int) -> pd.DataFrame:
    """Per feature (h (N, F)), the class it signals best, by Youden's J = sensitivity + specificity - 1 with
    "fires" = active (h != 0; h > 0 for ReLU codes): sensitivity = P(fires | class), specificity = P(silent |
    any other class). Columns: feature, density (share of images it fires on), class_index, sensitivity,
    specificity, youden."""
    fires = (h != 0).double()  # (N, F)
    onehot = F.one_hot(labels, num_classes).double()  # (N, K)
    per_class = onehot.sum(0).clamp_min(1)[:, None]  # (K, 1) images per class
    sens = onehot.T @ fires / per_class  # (K, F) P(fires | class k)
    fp = (fires.sum(0) - onehot.T @ fires) / (len(labels) - per_class).clamp_min(1)  # P(fires | not k)
    j = sens - fp  # sensitivity + specificity - 1
    best = j.argmax(0)
    cols = torch.arange(h.shape[1])
    return pd.DataFrame({"feature": cols.numpy(), "density": fires.mean(0).numpy(),
                         "class_index": best.numpy(), "sensitivity": sens[best, cols].numpy(),
                         "specificity": (1 - fp[best, cols]).numpy(), "youden": j[best, cols].numpy()})


def top_examples(h: torch.Tensor, features, images: torch.Tensor, labels: torch.Tensor, k: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The k images (and labels) on which each of `features` is most active: (F, k, C, H, W) uint8 as given,
    (F, k) labels; h (N, all features) codes over the same N images."""
    top = torch.stack([h[:, int(f)].topk(min(k, len(h))).indices for f in features])  # (F, k)
    return images[top], labels[top]


def compare_dictionaries(codes: dict[str, torch.Tensor], seed_codes: dict[str, torch.Tensor],
                         random_codes: dict[str, torch.Tensor]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prediction 2's matchings on the same images. codes / seed_codes: model -> (N, F) codes of two SAEs
    (different seeds) on the trained model; random_codes: of an SAE on the untrained model. Every model pair
    (a, b), both directions: cross (a -> b), ceiling (a -> a's second seed), floor (a -> untrained b).
    Returns (a row per comparison with match summary, the L0 of both dictionaries compared and their active
    shares L0 / features, i.e. mean feature density; a row per A feature with its best r)."""
    ceilings = {a: match_features(codes[a], seed_codes[a]) for a in codes}
    l0 = lambda h: (h != 0).sum(1).double().mean().item()  # active features per image
    rows, features = [], []
    for a, b in ((a, b) for a in codes for b in codes if a != b):
        for kind, m, target in (("cross", match_features(codes[a], codes[b]), codes[b]),
                                ("ceiling", ceilings[a], seed_codes[a]),
                                ("floor", match_features(codes[a], random_codes[b]), random_codes[b])):
            rows.append({"source": a, "target": b, "kind": kind, **m.summary(), "l0_source": l0(codes[a]),
                         "l0_target": l0(target), "share_source": l0(codes[a]) / codes[a].shape[1],
                         "share_target": l0(target) / target.shape[1]})
            features.append(pd.DataFrame({"source": a, "target": b, "kind": kind, "best_r": m.best.numpy()}))
    return pd.DataFrame(rows), pd.concat(features, ignore_index=True)


def prediction2(table: pd.DataFrame, threshold: float = 0.5, stat: str = "mean") -> pd.DataFrame:
    """Per unordered pair, from compare_dictionaries' table: cross, ceiling and floor `stat` averaged over
    both directions, the sparsity compared at (mean L0 of the two dictionaries; each one's active share
    L0 / features), the share of the floor-to-ceiling gap the cross-model value closes, and whether it
    reaches `threshold` (Prediction 2: both families learn similar features)."""
    t = table.assign(pair=[" - ".join(sorted(p)) for p in zip(table.source, table.target, strict=True)])
    wide = t.pivot_table(index="pair", columns="kind", values=stat, aggfunc="mean")
    out = wide[["cross", "ceiling", "floor"]].reset_index().rename_axis(columns=None)
    if "l0_source" in t:  # the sparsity the pair was compared at: mean L0 of its two dictionaries
        out = out.merge(t[t.kind == "cross"].groupby("pair").l0_source.mean().rename("l0").reset_index(),
                        on="pair")
    if "share_source" in t:  # and each dictionary's active share, smaller and larger of the two
        share = t[t.kind == "cross"].groupby("pair").share_source
        out = out.merge(pd.DataFrame({"share_min": share.min(), "share_max": share.max()}).reset_index(),
                        on="pair")
    gap = out.ceiling - out.floor
    out["gap_closed"] = np.where(gap > 0, (out.cross - out.floor) / gap.where(gap > 0, 1), np.nan)
    out["holds"] = out.gap_closed >= threshold
    return out


# ---------------------------------------------------------------- notebook 09: its tables

SHOWN_COLUMNS = ["model", "feature", "class", "sensitivity", "specificity", "youden", "density"]


def shown_features(codes: dict[str, torch.Tensor], labels: torch.Tensor, classes: Sequence[str],
                   num_classes: int, n_shown: int
                   ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], pd.DataFrame]:
    """codes: model -> (N, F) codes over the same N images (labels (N,)). Returns (selectivity:
    class_selectivity of every model with model and class (name) columns; shown: model -> its n_shown live
    (density > 0) features of largest Youden's J, selectivity's rows; the shown table: those rows'
    SHOWN_COLUMNS and chosen_on = N)."""
    selectivity = pd.concat([class_selectivity(h, labels, num_classes).assign(model=n)
                             for n, h in codes.items()], ignore_index=True)
    selectivity["class"] = [classes[i] for i in selectivity.class_index]
    shown = {n: selectivity[(selectivity.model == n) & (selectivity.density > 0)].nlargest(n_shown, "youden")
             for n in codes}
    return selectivity, shown, pd.concat(shown.values())[SHOWN_COLUMNS].assign(chosen_on=len(labels))


def features_per_class(selectivity: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """Live features (density > 0) per model (rows, in the order of `models`) and best class (columns)."""
    live = selectivity[selectivity.density > 0]
    return live.groupby(["model", "class"]).size().unstack(fill_value=0).loc[list(models)]


def top_images(codes: dict[str, torch.Tensor], shown: dict[str, pd.DataFrame], images: torch.Tensor,
               labels: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """top_examples of each model's shown features (shown[model].feature): "<model>" -> (F, k, C, H, W)
    images, "<model>_labels" -> (F, k) labels; codes: model -> (N, all features) over images (N, C, H, W)."""
    top = {}
    for name, h in codes.items():
        chosen, chosen_labels = top_examples(h, shown[name].feature, images, labels, k)
        top |= {name: chosen, f"{name}_labels": chosen_labels}
    return top


def pair_names(families: dict[str, str]) -> dict[str, str]:
    """model -> its name in a pair ("cnn - mlp"): its family (`families`: model -> family), or the model's
    own name for every model when two models share a family."""
    if len(set(families.values())) < len(families):
        return {name: name for name in families}
    return dict(families)


def compare_seeds(codes: dict[tuple[str, str, int], torch.Tensor], names: dict[str, str], seeds: Sequence[int]
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """compare_dictionaries on 09's SAEs: codes (model, "trained" | "untrained", seed) -> (N, F). Per model
    (named names[model]): the trained model's seeds[0] SAE, its seeds[1] SAE (ceiling) and the untrained
    copy's seeds[0] SAE (floor)."""
    pick = lambda kind, seed: {names[n]: codes[n, kind, seed] for n in names}
    main, ceiling, floor = pick("trained", seeds[0]), pick("trained", seeds[1]), pick("untrained", seeds[0])
    return compare_dictionaries(main, ceiling, floor)


def prediction2_lines(verdict: pd.DataFrame, threshold: float, profile: str, dataset: str, n_images: int
                      ) -> list[str]:
    """prediction2's verdict in words: a header, one line per pair, and the original study's MLP-CNN
    prediction when the pair "cnn - mlp" is there (on `n_images` test images of `dataset` under `profile`)."""
    lines = [f"Prediction 2 (threshold: cross-model matching closes >= {threshold:.0%} of the floor-ceiling "
             "gap)"]
    for _, v in verdict.iterrows():
        status = "holds" if v.holds else "does not hold"
        lines.append(f"  {v.pair:10s}: cross {v.cross:.3f}, floor {v.floor:.3f}, ceiling {v.ceiling:.3f}, "
                     f"gap closed {v.gap_closed:.2f} at L0 {v.l0:.1f} (active share {v.share_min:.4f}-"
                     f"{v.share_max:.4f}) -> {status}")
    if "cnn - mlp" in set(verdict.pair):
        mlp_cnn = verdict.set_index("pair").loc["cnn - mlp"]
        lines.append(f"The original study's Prediction 2 (MLP and CNN learn similar features) "
                     f"{'holds' if mlp_cnn.holds else 'does not hold'} here: {mlp_cnn.gap_closed:.2f} of the "
                     f"gap closed ({profile}, {dataset}, {n_images} test images).")
    return lines
