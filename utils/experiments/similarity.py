"""Do two networks make the same mistakes, and are their representations alike by measures that agree?
(issue 27; notebooks 01-04). Everything here takes plain tensors; which models and layers is the notebook's.

    kappa(correct_a, correct_b)                     # error consistency (Geirhos et al. 2020): Cohen's kappa
    kappa_interval(correct_a, correct_b, n=1000)    # (low, high): a 95% bootstrap interval over the images
    predictions_table(nets, images, labels, "clean")  # one row per model x image: pred, correct
    error_consistency(table, twins)                 # kappa of every pair per setting (interval; seed ceiling)
    procrustes_distance(x, y)                       # angular shape distance (Williams et al. 2021), radians
    mutual_knn(x, y, k=10)                          # mutual k-nearest-neighbour alignment (Huh et al. 2024)
    rsa(x, y)                                       # Spearman correlation of the two dissimilarity matrices
    permutation_null(rsa, x, y, n=200)              # the measure with y's rows shuffled: what chance gives
    suite_table(features, models, measures)         # 04: every measure on cross, ceiling and floor pairs
    suite_summary(table, family)                    # ... gap closed per measure and pair, against the null
    measure_agreement(summary)                      # ... do the measures rank the pairs alike?

x, y: (N, D) and (N, E) features of the same N images in the same order (D and E may differ). Invariances,
each tested in tests/experiments/test_similarity.py: procrustes_distance and mutual_knn are unchanged by a
rotation, an isotropic scaling or a translation of either side; rsa (Euclidean dissimilarities) by the same.
Linear CKA is utils.experiments.cka's.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import Tensor

# ---------------------------------------------------------------- error consistency


def _kappa(p_a: Tensor, p_b: Tensor, c_obs: Tensor) -> Tensor:
    """Cohen's kappa from the two accuracies and the observed agreement (any shape; NaN where c_exp = 1)."""
    c_exp = p_a * p_b + (1 - p_a) * (1 - p_b)
    return torch.where(c_exp >= 1, torch.nan, (c_obs - c_exp) / (1 - c_exp).clamp_min(1e-300))


def kappa(correct_a: Tensor, correct_b: Tensor) -> float:
    """Cohen's kappa of two observers' trial-level correctness (Geirhos et al. 2020): (c_obs - c_exp) /
    (1 - c_exp), c_obs the share of images both get right or both get wrong, c_exp = p_a p_b + (1 - p_a)
    (1 - p_b) what two independent observers with those accuracies agree on. 1: the same mistakes; 0: as
    many shared mistakes as chance; NaN when c_exp is 1 (both always right, or always wrong)."""
    a, b = correct_a.bool().flatten(), correct_b.bool().flatten()
    if a.shape != b.shape or a.numel() == 0:
        raise ValueError(f"need two equal, non-empty sets of trials; got {tuple(a.shape)}, {tuple(b.shape)}")
    return float(_kappa(a.double().mean(), b.double().mean(), (a == b).double().mean()))


def kappa_interval(correct_a: Tensor, correct_b: Tensor, n: int = 1000, seed: int = 0, level: float = 0.95
                   ) -> tuple[float, float]:
    """A percentile bootstrap interval of kappa: `n` resamples of the images, with replacement. A resample's
    kappa depends only on how many of its images fall in each of four cells (both right, only a right, only
    b right, both wrong), so each resample is drawn as those four counts (one multinomial draw from numpy's
    generator seeded by `seed`): the same distribution as drawing N images, in microseconds at any N (drawing
    the images took 4 s per pair at N = 10,000)."""
    a, b = correct_a.bool().flatten(), correct_b.bool().flatten()
    cells = torch.stack([a & b, a & ~b, ~a & b, ~a & ~b]).double().mean(1).numpy()
    counts = np.random.default_rng(seed).multinomial(len(a), cells / cells.sum(), size=n)
    both, only_a, only_b, neither = torch.from_numpy(counts / len(a)).T
    draws = _kappa(both + only_a, both + only_b, both + neither)
    draws = draws[~draws.isnan()]
    if not len(draws):
        return float("nan"), float("nan")
    tail = (1 - level) / 2
    return float(draws.quantile(tail)), float(draws.quantile(1 - tail))


def predictions_table(nets: Mapping[str, torch.nn.Module], images: Tensor, labels: Tensor, setting: str,
                      index: Tensor | None = None, batch_size: int = 1000) -> pd.DataFrame:
    """Trial-level predictions, one row per model x image: model, setting, image (`index`, default 0..N-1:
    the image's index in its split), label, pred, correct. images (N, C, H, W) in [0, 1]."""
    from ..metrics import predict_classes

    index = torch.arange(len(images)) if index is None else index
    parts = [pd.DataFrame({"model": name, "setting": setting, "image": index.numpy(), "label": labels.numpy(),
                           "pred": (pred := predict_classes(net, images, batch_size)).numpy(),
                           "correct": (pred == labels).numpy()})
             for name, net in nets.items()]
    return pd.concat(parts, ignore_index=True)


def error_consistency(table: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                      twins: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Per setting, kappa between pairs of models (a predictions_table: model, setting, image, correct), on
    the images both were scored on: setting, model_a, model_b, kind, n, top1_a, top1_b, kappa, and its
    bootstrap interval kappa_lo / kappa_hi (`n_boot` resamples of the images, seeded). 0 is what independent
    errors give. twins: {model: the same run from another seed}; then the pairs are every two models that are
    not twins ("families") and each model with its twin ("two seeds": the ceiling to read a pair against);
    without: every pair."""
    twins = dict(twins or {})
    rows = []
    for setting, part in table.groupby("setting", sort=False):
        wide = part.pivot(index="image", columns="model", values="correct")
        present = list(dict.fromkeys(part.model))
        models = [m for m in present if m not in twins.values()]
        pairs = [(a, b, "families") for a, b in itertools.combinations(models, 2)]
        pairs += [(m, twins[m], "two seeds") for m in models if twins.get(m) in present]
        for a, b, kind in pairs:
            both = wide[[a, b]].dropna().astype(bool)
            ca, cb = (torch.tensor(both[m].to_numpy()) for m in (a, b))
            lo, hi = kappa_interval(ca, cb, n=n_boot, seed=seed)
            rows.append({"setting": setting, "model_a": a, "model_b": b, "kind": kind, "n": len(both),
                         "top1_a": ca.double().mean().item(), "top1_b": cb.double().mean().item(),
                         "kappa": kappa(ca, cb), "kappa_lo": lo, "kappa_hi": hi})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- representational similarity


def _shape(x: Tensor) -> Tensor:
    """Rows centred, the whole matrix scaled to Frobenius norm 1 (float64): translation and scale removed."""
    x = x.double().flatten(1)
    x = x - x.mean(0)
    return x / x.norm().clamp_min(1e-300)


def procrustes_distance(x: Tensor, y: Tensor) -> float:
    """The angular Procrustes shape distance (Williams et al. 2021): arccos of max over orthogonal Q of
    <x, y Q> for centred, unit-Frobenius x and y, which is the nuclear norm of x^T y. 0: the same shape up to
    rotation, reflection, translation and isotropic scale; pi/2 at most. Features of unequal width are
    compared as if the narrower were padded with zeros (the nuclear norm needs no padding)."""
    x, y = _shape(x), _shape(y)
    nuclear = torch.linalg.svdvals(x.T @ y).sum().clamp(max=1.0)
    return float(torch.arccos(nuclear))


def _neighbours(x: Tensor, k: int) -> Tensor:
    """(N, k) indices of each row's k nearest other rows by cosine similarity of the centred features."""
    x = x.double().flatten(1)
    x = x - x.mean(0)
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-300)
    sim = x @ x.T
    sim.fill_diagonal_(-math.inf)  # never one's own neighbour
    return sim.topk(k, dim=1).indices


def mutual_knn(x: Tensor, y: Tensor, k: int = 10) -> float:
    """Mutual k-nearest-neighbour alignment (Huh et al. 2024): the mean over images of the share of its k
    nearest neighbours (cosine, features centred) that the two representations have in common. 1: the same
    neighbourhoods; k / (N - 1) expected by chance."""
    if not 0 < k < len(x):
        raise ValueError(f"k must be in 1 .. N - 1 = {len(x) - 1}; got {k}")
    a, b = _neighbours(x, k), _neighbours(y, k)
    shared = (a.unsqueeze(2) == b.unsqueeze(1)).any(2).double().sum(1)  # (N,) neighbours in both
    return float((shared / k).mean())


def _rank(v: Tensor) -> Tensor:
    """Average ranks (ties share the mean rank), as Spearman's correlation needs."""
    order = v.argsort()
    ranks = torch.empty_like(v, dtype=torch.float64)
    ranks[order] = torch.arange(len(v), dtype=torch.float64)
    uniq, inverse = torch.unique(v, return_inverse=True)
    if len(uniq) < len(v):  # ties: replace each rank by the mean rank of its value
        sums = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, ranks)
        counts = torch.bincount(inverse, minlength=len(uniq)).double()
        ranks = (sums / counts)[inverse]
    return ranks


def dissimilarities(x: Tensor) -> Tensor:
    """The upper triangle (without the diagonal) of the Euclidean distance matrix of the rows (float64)."""
    x = x.double().flatten(1)
    i, j = torch.triu_indices(len(x), len(x), offset=1)
    return torch.cdist(x, x)[i, j]


def rsa(x: Tensor, y: Tensor) -> float:
    """Representational similarity analysis: Spearman's correlation between the two representations'
    Euclidean dissimilarity matrices (their upper triangles). 1: the same ranking of image pairs by
    distance; about 0 for unrelated representations."""
    a, b = _rank(dissimilarities(x)), _rank(dissimilarities(y))
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-300))


def permutation_null(measure: Callable[[Tensor, Tensor], float], x: Tensor, y: Tensor, n: int = 100,
                     seed: int = 0) -> Tensor:
    """measure(x, y[perm]) for `n` seeded random permutations of y's rows: the values the measure takes when
    the two representations are paired at random (its floor for this N, D and E)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.tensor([measure(x, y[torch.randperm(len(y), generator=gen)]) for _ in range(n)],
                        dtype=torch.float64)


def procrustes_similarity(x: Tensor, y: Tensor) -> float:
    """1 - procrustes_distance / (pi / 2): 1 for the same shape, 0 at the largest angle (a similarity, so
    that every measure of the suite ranks pairs the same way round)."""
    return 1.0 - procrustes_distance(x, y) / (math.pi / 2)


# The suite's measures beside linear CKA (utils.experiments.cka.linear_cka, which the notebook passes in):
# each a similarity of (N, D) and (N, E) features of the same images, larger for more alike.
MEASURES: dict[str, Callable[[Tensor, Tensor], float]] = {
    "Procrustes": procrustes_similarity, "mutual kNN": mutual_knn, "RSA": rsa}


def suite_table(features: Mapping[tuple[str, str], Tensor], models: list[str],
                measures: Mapping[str, Callable[[Tensor, Tensor], float]], n_null: int = 20, seed: int = 0
                ) -> pd.DataFrame:
    """Every measure on every comparison of the models' features ((model, tag) -> (N, D), tags "s0", "s1"
    (the seed twin) and "init"): one row per measure x kind x (a, b), kind "cross" (a and b at seed 0),
    "ceiling" (a against its seed-1 twin: b = a) or "floor" (a against b at initialisation, both ways), with
    the permutation null of each cross pair (`n_null` shuffles of b's rows: null_mean, null_q95)."""
    rows = []
    for name, measure in measures.items():
        comparisons = [("ceiling", a, a, features[a, "s0"], features[a, "s1"]) for a in models]
        for a, b in itertools.combinations(models, 2):
            comparisons += [("cross", a, b, features[a, "s0"], features[b, "s0"]),
                            ("floor", a, b, features[a, "s0"], features[b, "init"]),
                            ("floor", b, a, features[b, "s0"], features[a, "init"])]
        for kind, a, b, x, y in comparisons:
            row = {"measure": name, "kind": kind, "model_a": a, "model_b": b, "value": measure(x, y)}
            if kind == "cross" and n_null:
                null = permutation_null(measure, x, y, n_null, seed)
                row |= {"null_mean": float(null.mean()), "null_q95": float(null.quantile(0.95))}
            rows.append(row)
    return pd.DataFrame(rows)


def suite_summary(table: pd.DataFrame, family: Mapping[str, str]) -> pd.DataFrame:
    """Per measure and cross pair (a, b), as cka.pair_summary reads CKA: cross, the ceiling (the mean of a's
    and b's seed twins), the floor (the mean of a against b at initialisation and b against a), gap_closed
    = (cross - floor) / (ceiling - floor), and whether cross clears its permutation null's 95th percentile."""
    by = table.set_index(["measure", "kind", "model_a", "model_b"]).value
    rows = []
    for r in table[table.kind == "cross"].itertuples():
        m, a, b = r.measure, r.model_a, r.model_b
        ceiling = (by[m, "ceiling", a, a] + by[m, "ceiling", b, b]) / 2
        floor = (by[m, "floor", a, b] + by[m, "floor", b, a]) / 2
        gap = ceiling - floor
        rows.append({"measure": m, "pair": f"{family[a]} - {family[b]}", "model_a": a, "model_b": b,
                     "cross": r.value, "ceiling": ceiling, "floor": floor,
                     "gap_closed": (r.value - floor) / gap if gap > 0 else math.nan,
                     "null_q95": getattr(r, "null_q95", math.nan),
                     "above_null": bool(r.value > getattr(r, "null_q95", -math.inf))})
    return pd.DataFrame(rows)


def measure_agreement(summary: pd.DataFrame) -> pd.DataFrame:
    """Do the measures rank the cross pairs alike? Per pair of measures: Spearman's correlation of their
    gap_closed over the cross pairs, and whether they put the pairs in the same order (the question a single
    measure would answer: which two families are most alike)."""
    wide = summary.pivot(index="pair", columns="measure", values="gap_closed")
    rows = []
    for m1, m2 in itertools.combinations(wide.columns, 2):
        a, b = torch.tensor(wide[m1].to_numpy()), torch.tensor(wide[m2].to_numpy())
        ra, rb = _rank(a) - (len(a) - 1) / 2, _rank(b) - (len(b) - 1) / 2
        rho = float((ra @ rb) / (ra.norm() * rb.norm()).clamp_min(1e-300)) if len(a) > 1 else math.nan
        rows.append({"measure_a": m1, "measure_b": m2, "pairs": len(a), "spearman": rho,
                     "same_order": list(wide[m1].sort_values().index) == list(wide[m2].sort_values().index),
                     "most_alike_a": wide[m1].idxmax(), "most_alike_b": wide[m2].idxmax()})
    return pd.DataFrame(rows)
