"""Representation similarity by centred kernel alignment (CKA): how alike two layers represent the same
images, within one model or across models (notebook 04).

    linear_cka(x, y)                             # (N, D1), (N, D2) features of the same N images -> float
    linear_cka(x, y, debiased=True)              # unbiased HSIC: ~0 for independent features, even D >> N
    rbf_cka(x, y, sigma=0.8)                     # RBF kernel, bandwidth sigma x median distance
    cka_matrix(feats_a, feats_b, batch_size=256)  # layer x layer DataFrame from cached (N, D) features
    model_cka(net_a, net_b, loader, layers_a, layers_b)  # the same, streamed over a loader, nothing cached
    grams = centred_grams(net, ds, layers)       # layer -> centred (N, N) Gram, on the model's device
    gram_matrix(grams_a, grams_b)                # the layer x layer DataFrame from those (04)
    pairs_table(grams, models)                   # 04's tidy table: within, ceiling, cross, floor

CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) on Gram matrices K_ij = k(x_i, x_j) (Kornblith et al.
2019). Biased: HSIC = tr(K H L H) / (n-1)^2, H the centring matrix. Debiased: the unbiased estimator of Song
et al. 2012, as in Nguyen, Raghu & Kornblith 2021, computed as <U(K), U(L)> / (n(n-3)) with U the
U-centring of Kornblith's `center_gram(unbiased=True)`. Biased CKA of any two wide random representations
is high when D >> N; debiased CKA of independent ones is ~0.

Minibatch CKA (Nguyen et al.) sums each batch's unbiased HSIC terms and divides once at the end, never
averaging per-batch CKAs. There is no epsilon under the square root: for small-valued features (HSIC scales
as the 4th power of the features) it would swamp HSIC and pull CKA to 0. Constant features have HSIC 0 and
CKA NaN. All arithmetic is float64, on the features' device.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from typing import Literal

import pandas as pd
import torch
import torch.nn as nn

from ..hooks import hooked, recording
from ..models import eval_mode, model_device
from ..progress import bar as progress_bar

Method = Literal["auto", "features", "gram"]
# centred_grams: the float32 features held at once (one forward pass per group of layers that fits): at
# N = 5,000 a ViT-S/16 block's tokens are 1.5 GB, so its 13 layers take 3 passes on an H200, not 13
GRAM_FEATURE_BYTES = 8 << 30


def _centred(x) -> torch.Tensor:
    """(N, ...) -> (N, D) float64 with centred columns: HSIC ignores translations of the features, and
    centring first keeps the sums small (less cancellation)."""
    x = torch.as_tensor(x).flatten(1).double()
    return x - x.mean(0)


def _check_rows(n_x: int, n_y: int, debiased: bool) -> None:
    if n_x != n_y:
        raise ValueError(f"need features of the same images in the same order: {n_x} vs {n_y} rows")
    least = 4 if debiased else 2
    if n_x < least:
        raise ValueError(f"{'debiased' if debiased else 'biased'} HSIC needs >= {least} images; got {n_x}")


def _scale(n: int, debiased: bool) -> int:
    """The denominator that turns <centred K, centred L> into HSIC."""
    return n * (n - 3) if debiased else (n - 1) ** 2


def center_gram(gram: torch.Tensor, debiased: bool = False) -> torch.Tensor:
    """A centred float64 copy of an (n, n) Gram matrix: H K H (biased), or U-centred (debiased: diagonal
    zeroed, then row and column means removed so that <U(K), U(L)> / (n(n-3)) is Song et al.'s unbiased
    HSIC)."""
    g = gram.double().clone()
    if not debiased:
        g -= g.mean(0, keepdim=True)
        return g - g.mean(1, keepdim=True)
    n = g.shape[0]
    g.fill_diagonal_(0)
    means = g.sum(0) / (n - 2)
    means -= means.sum() / (2 * (n - 1))
    g -= means[:, None]
    g -= means[None, :]
    return g.fill_diagonal_(0)


def hsic_gram(feats: torch.Tensor, debiased: bool) -> torch.Tensor:
    """The centred (N, N) Gram of (N, ...) features, divided by sqrt(scale): the dot product of two is their
    HSIC (MinibatchCKA per batch, centred_grams per layer)."""
    x = _centred(feats)
    return center_gram(x @ x.T, debiased).div_(math.sqrt(_scale(len(x), debiased)))


def _cka(xy: torch.Tensor, xx: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
    # sqrt of each factor, not of the product: no underflow for tiny features; no epsilon (see module doc)
    return xy / (xx.sqrt() * yy.sqrt())


@torch.no_grad()
def gram_cka(gram_x: torch.Tensor, gram_y: torch.Tensor, debiased: bool = False) -> float:
    """CKA of two (n, n) Gram matrices (any kernel) over the same n images."""
    _check_rows(len(gram_x), len(gram_y), debiased)
    cx, cy = center_gram(gram_x, debiased), center_gram(gram_y, debiased)
    return _cka((cx * cy).sum(), (cx * cx).sum(), (cy * cy).sum()).item()


def _hsic_features(x: torch.Tensor, y: torch.Tensor, debiased: bool) -> torch.Tensor:
    """Linear-kernel HSIC of centred (N, D1), (N, D2) features without any (N, N) matrix: O(N D1 D2).
    With centred columns K 1 = 0, so Song et al.'s terms reduce to ||Y^T X||_F^2 and the Gram diagonals."""
    n = x.shape[0]
    cross = (y.T @ x).pow(2).sum()  # ||Y^T X||_F^2 = <X X^T, Y Y^T>
    if not debiased:
        return cross / (n - 1) ** 2
    kd, ld = x.pow(2).sum(1), y.pow(2).sum(1)  # (N,) the Gram diagonals
    kl = kd @ ld  # = sum_i K_ii L_ii = 1^T K~ L~ 1 with K~ = K - diag(K)
    trace = cross - kl  # tr(K~ L~)
    return (trace + kd.sum() * ld.sum() / ((n - 1) * (n - 2)) - 2 * kl / (n - 2)) / (n * (n - 3))


def _hsic_gram(x: torch.Tensor, y: torch.Tensor, debiased: bool) -> torch.Tensor:
    """Linear-kernel HSIC of centred features through the (N, N) Grams: O(N^2 (D1 + D2))."""
    cx, cy = center_gram(x @ x.T, debiased), center_gram(y @ y.T, debiased)
    return (cx * cy).sum() / _scale(len(x), debiased)


def _linear_hsic(x: torch.Tensor, y: torch.Tensor, debiased: bool, method: Method) -> torch.Tensor:
    n, d1, d2 = x.shape[0], x.shape[1], y.shape[1]
    if method not in ("auto", "features", "gram"):
        raise ValueError(f"method must be 'auto', 'features' or 'gram'; got {method!r}")
    cheaper = d1 * d2 <= n * (d1 + d2)  # flops of Y^T X vs of the two Grams
    use_features = method == "features" or (method == "auto" and cheaper)
    return (_hsic_features if use_features else _hsic_gram)(x, y, debiased)


@torch.no_grad()
def linear_cka(x, y, debiased: bool = False, method: Method = "auto") -> float:
    """Linear CKA of features x (N, D1) and y (N, D2) of the same N images (extra dims are flattened).
    method: "features" (||Y^T X||_F^2 and friends: cheap when D is small), "gram" ((N, N) Gram matrices:
    cheap when D >> N), "auto" the cheaper per HSIC term. Both forms give the same number to ~1e-12."""
    x, y = _centred(x), _centred(y)
    _check_rows(len(x), len(y), debiased)
    terms = [_linear_hsic(a, b, debiased, method) for a, b in ((x, y), (x, x), (y, y))]
    return _cka(*terms).item()


def _median(v: torch.Tensor) -> torch.Tensor:
    """np.median (mean of the two middle values for an even count); torch.median takes the lower one."""
    v = v.flatten()
    k = v.numel()
    return (v.kthvalue((k + 1) // 2).values + v.kthvalue(k // 2 + 1).values) / 2


def rbf_gram(x, sigma: float = 0.8) -> torch.Tensor:
    """(N, N) float64 RBF Gram exp(-d_ij^2 / (2 (sigma m)^2)), m^2 the median squared distance over all N^2
    pairs, diagonal included (Kornblith's `gram_rbf(x, threshold=sigma)`)."""
    x = _centred(x)
    sq = x.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(0).fill_diagonal_(0)
    return torch.exp(-d2 / (2 * sigma**2 * _median(d2)))


@torch.no_grad()
def rbf_cka(x, y, sigma: float = 0.8, debiased: bool = False) -> float:
    """CKA with RBF kernels whose bandwidth is sigma times the median pairwise distance of each side."""
    return gram_cka(rbf_gram(x, sigma), rbf_gram(y, sigma), debiased)


class MinibatchCKA:
    """Sums of per-batch HSIC terms for every (layer_a, layer_b) pair; CKA once at the end (Nguyen et al.).

        acc = MinibatchCKA(["stem", "blocks.0"], ["layer1", "layer2"])
        for batch in batches:
            acc.update(feats_a, feats_b)    # dicts layer -> (B, ...) features of the same B images
        acc.compute()                       # DataFrame: index layers_a, columns layers_b

    Each batch adds its own HSIC estimate (centred Gram dot products / scale), so batches of unequal size
    are each an unbiased estimate of the same population HSIC (Nguyen et al.'s code skips the scale and so
    needs equal batches). Batches too small for the estimator (< 4 images; < 2 biased) are skipped and
    counted in `skipped`. Batches should be random samples: a batch of one class estimates within-class HSIC.
    """

    def __init__(self, layers_a: Sequence[str], layers_b: Sequence[str], debiased: bool = True):
        self.layers_a, self.layers_b, self.debiased = list(layers_a), list(layers_b), debiased
        if not (self.layers_a and self.layers_b):
            raise ValueError(f"need at least one layer on each side; got {self.layers_a} and {self.layers_b}")
        self.xy = torch.zeros(len(self.layers_a), len(self.layers_b), dtype=torch.float64)  # sum HSIC(a, b)
        self.xx = torch.zeros(len(self.layers_a), dtype=torch.float64)  # sum HSIC(a, a)
        self.yy = torch.zeros(len(self.layers_b), dtype=torch.float64)  # sum HSIC(b, b)
        self.images, self.skipped = 0, 0

    def _gram(self, feats: torch.Tensor, n: int) -> torch.Tensor:
        if len(feats) != n:
            raise ValueError(f"every layer needs the same images: {len(feats)} vs {n} rows")
        return hsic_gram(feats, self.debiased).flatten()

    @torch.no_grad()
    def update(self, feats_a: Mapping[str, torch.Tensor], feats_b: Mapping[str, torch.Tensor]) -> None:
        n = len(feats_a[self.layers_a[0]])
        if n < (4 if self.debiased else 2):
            self.skipped += n
            return
        grams_b = torch.stack([self._gram(feats_b[k], n) for k in self.layers_b])  # (Lb, n*n)
        self.yy += (grams_b * grams_b).sum(1).cpu()
        for i, layer in enumerate(self.layers_a):
            g = self._gram(feats_a[layer], n).to(grams_b.device)  # (n*n,)
            self.xx[i] += (g @ g).cpu()
            self.xy[i] += (grams_b @ g).cpu()
        self.images += n

    def compute(self) -> pd.DataFrame:
        """CKA per pair (NaN where a layer had constant features); attrs: images used, images skipped."""
        cka = _cka(self.xy, self.xx[:, None], self.yy[None, :])
        table = pd.DataFrame(cka.numpy(), index=pd.Index(self.layers_a, name="layer_a"),
                             columns=pd.Index(self.layers_b, name="layer_b"))
        table.attrs.update(images=self.images, skipped=self.skipped)
        return table


def _rows(feats: Mapping[str, torch.Tensor]) -> int:
    sizes = {len(t) for t in feats.values()}
    if len(sizes) != 1:
        raise ValueError(f"every layer needs features of the same images; got row counts {sorted(sizes)}")
    return sizes.pop()


def _batches(n: int, batch_size: int | None, seed: int) -> Iterable[torch.Tensor]:
    """Row indices: all rows in order (None), else a seeded random partition into batches of at most
    batch_size that differ in size by at most one (cached features are often in class order)."""
    if batch_size is None:
        return [torch.arange(n)]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return torch.tensor_split(perm, math.ceil(n / batch_size))


@torch.no_grad()
def cka_matrix(feats_a: Mapping[str, torch.Tensor], feats_b: Mapping[str, torch.Tensor],
               debiased: bool = True, batch_size: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Linear CKA of every layer of a (index, in the given order) with every layer of b (columns) from cached
    (N, D) features of the same N images. batch_size None: full batch (keeps len(feats_b) + 1 (N, N) float64
    Grams, 0.8 GB each at N = 10,000); else minibatch CKA over a seeded random partition of the rows."""
    n = _rows({**{f"a.{k}": v for k, v in feats_a.items()}, **{f"b.{k}": v for k, v in feats_b.items()}})
    acc = MinibatchCKA(list(feats_a), list(feats_b), debiased)
    for rows in _batches(n, batch_size, seed):
        acc.update({k: v[rows] for k, v in feats_a.items()}, {k: v[rows] for k, v in feats_b.items()})
    return acc.compute()


@torch.no_grad()
def model_cka(model_a: nn.Module, model_b: nn.Module, loader: Iterable, layers_a: Sequence[str],
              layers_b: Sequence[str], *, debiased: bool = True, progress: bool = True) -> pd.DataFrame:
    """Minibatch CKA of layers_a of model_a against layers_b of model_b, streamed over the (x, y) batches of
    loader: each layer's output is flattened per image and reduced to Gram terms batch by batch, so no
    features are kept. Both models in eval mode. Batches should be random samples of the data (an eval
    loader goes in dataset order: fine for a test set stored shuffled, not for a class-sorted one).
    The same model object twice: one forward pass per batch."""
    acc = MinibatchCKA(layers_a, layers_b, debiased)
    same = model_a is model_b
    with ExitStack() as stack:
        stack.enter_context(eval_mode(model_a))
        stack.enter_context(eval_mode(model_b))
        hooked_a = list(dict.fromkeys([*layers_a, *layers_b])) if same else list(layers_a)
        acts_a = stack.enter_context(recording(model_a, hooked_a))
        acts_b = acts_a if same else stack.enter_context(recording(model_b, layers_b))
        for x, _ in progress_bar(loader, desc="minibatch CKA", disable=not progress, leave=False):
            model_a(x.to(model_device(model_a)))
            if not same:
                model_b(x.to(model_device(model_b)))
            acc.update({k: acts_a[k].flatten(1) for k in layers_a},
                       {k: acts_b[k].flatten(1) for k in layers_b})
    return acc.compute()


@torch.no_grad()
def centred_grams(model: nn.Module, ds, layers: Sequence[str], *, debiased: bool = True,
                  batch_size: int = 256, max_bytes: int = GRAM_FEATURE_BYTES) -> dict[str, torch.Tensor]:
    """Each layer's centred linear Gram (N, N) float64 over the images of ds (an ImageSet), computed on the
    model's device, scaled as hsic_gram's. The layers are taken in groups whose float32 (N, D) features fit in
    `max_bytes` together, one forward pass per group (`feature_groups`): a group's features exist only while
    its Grams are formed, so nothing of size N x D is cached (issue 26: 04's full CKA held ~71 GB of features
    of 9 networks in host RAM and on disk; its Grams are 0.2 GB each at N = 5,000), and a network whose
    features fit passes over the images once, not once per layer."""
    from ..data import make_loader

    device, out = model_device(model), {}
    loader = make_loader(ds, batch_size, train=False, device=device)
    with eval_mode(model):
        for group in feature_groups(model, ds, layers, max_bytes):
            chunks: dict[str, list[torch.Tensor]] = {layer: [] for layer in group}
            with ExitStack() as stack:
                for layer in group:
                    stack.enter_context(hooked(model, layer, lambda t, c=chunks[layer]: c.append(
                        t.detach().flatten(1).float())))
                for x, _ in loader:
                    model(x)
            for layer in group:
                out[layer] = hsic_gram(torch.cat(chunks.pop(layer)), debiased)
    return out


@torch.no_grad()
def feature_groups(model: nn.Module, ds, layers: Sequence[str], max_bytes: int) -> list[list[str]]:
    """`layers` in order, cut into runs whose float32 features of all len(ds) images add up to at most
    max_bytes (a layer larger than that alone), each layer's size read from one image's forward pass."""
    from ..data import make_loader

    with eval_mode(model), recording(model, layers) as acts:
        x, _ = next(iter(make_loader(ds.head(1), 1, train=False, device=model_device(model))))
        model(x)
        sizes = {layer: acts[layer][0].numel() * 4 * len(ds) for layer in layers}
    groups: list[list[str]] = []
    for layer in layers:
        if groups and sum(sizes[g] for g in groups[-1]) + sizes[layer] <= max_bytes:
            groups[-1].append(layer)
        else:
            groups.append([layer])
    return groups


@torch.no_grad()
def gram_matrix(grams_a: Mapping[str, torch.Tensor], grams_b: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """CKA of every layer of a (index) with every layer of b (columns) from centred_grams of the same images
    and estimator: the DataFrame cka_matrix gives with batch_size None."""
    a, b = list(grams_a), list(grams_b)
    hsic = lambda g, h: float((g * h.to(g.device)).sum())
    xy = torch.tensor([[hsic(grams_a[i], grams_b[j]) for j in b] for i in a], dtype=torch.float64)
    xx = torch.tensor([hsic(grams_a[i], grams_a[i]) for i in a], dtype=torch.float64)
    yy = torch.tensor([hsic(grams_b[j], grams_b[j]) for j in b], dtype=torch.float64)
    table = pd.DataFrame(_cka(xy, xx[:, None], yy[None, :]).numpy(), index=pd.Index(a, name="layer_a"),
                         columns=pd.Index(b, name="layer_b"))
    table.attrs.update(images=len(next(iter(grams_a.values()))), skipped=0)
    return table


# ---------------------------------------------------------------- tables for notebook 04


def tidy(matrix: pd.DataFrame, kind: str, model_a: str, model_b: str) -> pd.DataFrame:
    """A layer x layer CKA matrix as rows (kind, model_a, model_b, layer_a, layer_b, cka), layers in order."""
    long = matrix.rename_axis(index="layer_a", columns="layer_b").stack().rename("cka").reset_index()
    return long.assign(kind=kind, model_a=model_a, model_b=model_b)[
        ["kind", "model_a", "model_b", "layer_a", "layer_b", "cka"]]


def pairs_table(grams: Mapping[tuple[str, str], Mapping[str, torch.Tensor]], models: Sequence[str]
                ) -> pd.DataFrame:
    """04's tidy CKA table (tidy's columns) from centred_grams of the same images, keyed (model, tag): "s0"
    the model, "s1" its seed twin, "init" its architecture at initialisation. Kinds, in this order: "within"
    (each model's layers against its own), "ceiling" (against its twin), then per pair (a, b) of `models`
    "cross" (a against b), "floor" (a against b at initialisation) and "floor" (b against a at
    initialisation): the rows pair_summary needs."""
    g = grams
    parts = [tidy(gram_matrix(g[m, "s0"], g[m, "s0"]), "within", m, m) for m in models]
    parts += [tidy(gram_matrix(g[m, "s0"], g[m, "s1"]), "ceiling", m, m) for m in models]
    for a, b in itertools.combinations(models, 2):
        parts += [tidy(gram_matrix(g[a, "s0"], g[b, "s0"]), "cross", a, b),
                  tidy(gram_matrix(g[a, "s0"], g[b, "init"]), "floor", a, b),
                  tidy(gram_matrix(g[b, "s0"], g[a, "init"]), "floor", b, a)]
    return pd.concat(parts, ignore_index=True)


def best_match(cka: pd.DataFrame) -> pd.DataFrame:
    """Per (kind, model_a, model_b): mean_best, the mean over a's layers of the best CKA with any layer of b
    (how much of a's representation b has somewhere); mean_best_b, the same the other way (over b's layers,
    the best with any layer of a); and the peak with the two layers that reach it."""
    rows = []
    for (kind, a, b), g in cka.groupby(["kind", "model_a", "model_b"], sort=False):
        peak = g.loc[g.cka.idxmax()]
        rows.append({"kind": kind, "model_a": a, "model_b": b,
                     "mean_best": g.groupby("layer_a", sort=False).cka.max().mean(),
                     "mean_best_b": g.groupby("layer_b", sort=False).cka.max().mean(), "peak": peak.cka,
                     "peak_layer_a": peak.layer_a, "peak_layer_b": peak.layer_b})
    return pd.DataFrame(rows)


def pair_summary(best: pd.DataFrame, family: Mapping[str, str]) -> pd.DataFrame:
    """Per cross-family pair (a, b): cross (a vs b) against its two reference points, the ceiling (each model
    against its seed twin) and the floor (each against the other architecture at initialisation), every one
    of the three measured in BOTH directions and averaged over them, as feature_matching.prediction2 does:
    from a (the mean over a's layers of the best match in b, in a's twin, in b at initialisation) and from b
    (the same over b's layers, b's twin, a at initialisation). So cross, ceiling and floor average over the
    same layers, and gap_closed = (cross - floor) / (ceiling - floor) stays below 1 unless the other family
    matches a model better than its own twin does. gap_closed_a / _b: the same from one side only. Needs the
    floor both ways (kind "floor" rows for (a, b) and (b, a)). peak and peak layers: of the cross matrix.
    `family`: model -> family."""
    by = best.set_index(["kind", "model_a", "model_b"])
    rows = []
    for (kind, a, b), r in by.iterrows():
        if kind != "cross":
            continue
        missing = [k for k in (("ceiling", a, a), ("ceiling", b, b), ("floor", a, b), ("floor", b, a))
                   if k not in by.index]
        if missing:
            raise KeyError(f"pair_summary({a}, {b}) needs best_match rows for {missing}")
        m = by.mean_best  # (cross, ceiling, floor) seen from a's layers, then from b's
        side = {"a": (r.mean_best, m["ceiling", a, a], m["floor", a, b]),
                "b": (r.mean_best_b, m["ceiling", b, b], m["floor", b, a])}
        cross, ceiling, floor = ((x + y) / 2 for x, y in zip(side["a"], side["b"], strict=True))
        rows.append({"pair": f"{family[a]} - {family[b]}", "model_a": a, "model_b": b, "cross": cross,
                     "ceiling": ceiling, "floor": floor, "gap_closed": _closed(cross, ceiling, floor),
                     **{f"gap_closed_{k}": _closed(*v) for k, v in side.items()},
                     "peak": r.peak, "peak_layer_a": r.peak_layer_a, "peak_layer_b": r.peak_layer_b})
    return pd.DataFrame(rows)


def _closed(cross: float, ceiling: float, floor: float) -> float:
    """The share of the floor-to-ceiling gap that cross closes (NaN without a gap)."""
    gap = ceiling - floor
    return (cross - floor) / gap if gap > 0 else float("nan")
