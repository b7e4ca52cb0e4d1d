"""Linear probes: how linearly decodable the classes are from each layer's frozen, cached features
(notebook 04).

    x = pool(feats["layer2"], size=2, shape=(64, 16, 16))            # conv map (N, C*H*W) -> (N, C*2*2)
    linear_probe(train_x, train_y, test_x, test_y, num_classes=10)   # {"top1", "train_top1", ...}
    sklearn_probe(train_x, train_y, test_x, test_y, num_classes=10)  # the same problem, scikit-learn
    probe_layers(train_feats, train_y, test_feats, test_y, 10)       # a row per layer, input to head
    layer_table(nets, layers, train, test)                           # 04: probe_layers of every network

Both probes minimise mean cross-entropy + weight_decay / 2 * ||W||^2 (bias not penalised) on features
standardised with the training set's mean and std, so they solve the same convex problem and agree to
optimiser tolerance (for 2 classes sklearn fits one weight vector, not two: its penalty differs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..linear import Standardizer, fit_lbfgs, fit_linear_probe  # noqa: F401 (fit_linear_probe: public here too)
from ..progress import bar as progress_bar

SCORES = ("top1", "train_top1", "loss", "train_loss")  # test top-1 / loss, and on the training set


def _prepare(train_x: torch.Tensor, test_x: torch.Tensor, standardize: bool):
    if not standardize:
        return train_x.float(), test_x.float()
    s = Standardizer.fit(train_x)
    return s(train_x), s(test_x)


def _scores(train_logits: torch.Tensor, train_y: torch.Tensor, logits: torch.Tensor,
            y: torch.Tensor) -> dict[str, float]:
    """Top-1 (fraction in [0, 1]) and mean cross-entropy (nats) from logits or log-probabilities."""
    def top1(z, t):
        return (z.argmax(1) == t).double().mean().item()
    return {"top1": top1(logits, y), "train_top1": top1(train_logits, train_y),
            "loss": F.cross_entropy(logits.double(), y).item(),
            "train_loss": F.cross_entropy(train_logits.double(), train_y).item()}


@torch.no_grad()
def _logits(probe: nn.Linear, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([probe(xb) for xb in x.split(batch_size)])


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                 num_classes: int, epochs: int = 1000, lr: float = 1.0, weight_decay: float = 1e-4,
                 batch_size: int = 16384, seed: int = 0, standardize: bool = True) -> dict[str, float]:
    """A linear softmax classifier on frozen features (N, D) -> SCORES (top-1 in [0, 1], loss in nats).

    Solver: full-batch L-BFGS with a strong-Wolfe line search, float32, on the features' device. Why not a
    few epochs of Adam: the problem is convex, so L-BFGS reaches the regularised optimum in tens of passes
    with no learning rate or schedule to tune, and the number reflects the features rather than the
    optimiser's budget (a fixed Adam budget under-fits wide layers more than narrow ones, which would bias
    comparisons across depth and families). Measured: 20k x 2k features, 10 classes, 63 iterations (69
    passes) in 22 s on 2 shared CPU cores; 50k x 6k is 7.5x the work per pass (minutes on a CPU, seconds
    on a GPU). Some features need hundreds: a quick ViT's 96-d head input on 5k Fashion-MNIST images was
    still 1.1 points of top-1 short of sklearn's optimum at 100 iterations, and matched it (0.860 vs 0.861)
    by 300, hence the budget of 1000; a fit that uses it all is a RuntimeWarning.

    epochs: L-BFGS iterations at most (each one pass over the training set, plus line-search passes; it
    stops earlier once converged). lr: the L-BFGS step (1: the quasi-Newton step). weight_decay: the L2
    weight on W, per mean-loss. batch_size: rows per chunk of a pass (memory only). seed: the initial
    weights; the whole fit is deterministic for a given device and thread count. standardize: with train
    statistics only.
    """
    tx, vx = _prepare(train_x, test_x, standardize)
    probe = fit_lbfgs(tx, train_y, num_classes, epochs, lr, weight_decay, batch_size, seed)
    return _scores(_logits(probe, tx, batch_size), train_y, _logits(probe, vx, batch_size), test_y)


def sklearn_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                  num_classes: int, max_iter: int = 1000, weight_decay: float = 1e-4, seed: int = 0,
                  standardize: bool = True) -> dict[str, float]:
    """scikit-learn's multinomial LogisticRegression (lbfgs) on the same standardised features and the same
    objective as linear_probe: C = 1 / (weight_decay * N) turns sklearn's 0.5 ||W||^2 + C * sum CE into mean
    CE + weight_decay / 2 ||W||^2. A reference for linear_probe; float64, CPU only."""
    from sklearn.linear_model import LogisticRegression  # heavy import, only when asked for

    tx, vx = (t.double().cpu().numpy() for t in _prepare(train_x, test_x, standardize))
    ty = train_y.cpu().numpy()
    c = 1.0 / (weight_decay * len(tx)) if weight_decay > 0 else np.inf  # inf: no penalty
    clf = LogisticRegression(C=c, max_iter=max_iter, tol=1e-8, random_state=seed).fit(tx, ty)

    def log_proba(x: np.ndarray) -> torch.Tensor:  # (N, num_classes); classes absent from training: -inf
        out = torch.full((len(x), num_classes), -torch.inf, dtype=torch.float64)
        out[:, torch.as_tensor(clf.classes_)] = torch.as_tensor(clf.predict_log_proba(x))
        return out
    return _scores(log_proba(tx), train_y.cpu(), log_proba(vx), test_y.cpu())


METHODS = {"linear probe": linear_probe, "logistic regression": sklearn_probe}  # by their name in 04's tables


def compact(t: torch.Tensor, size: int = 2) -> torch.Tensor:
    """A layer's tensor made probe-sized, per image: a conv map (B, C, H, W) average-pooled to size x size,
    tokens (B, T, D) as the first token next to the mean over tokens (B, 2D), anything else flattened.
    Pass it as `reduce=` to hooks.collect_many."""
    if t.ndim == 4:
        return F.adaptive_avg_pool2d(t.float(), size).flatten(1)
    if t.ndim == 3:
        return torch.cat([t[:, 0], t.mean(1)], dim=1)
    return t.flatten(1)


def relative_depth(layers: Sequence[str]) -> list[float]:
    """Position of each layer in [0, 1]: 0 for the first (the input), 1 for the last (the head), evenly
    spaced by position in between (by index, not by parameter count or FLOPs)."""
    n = len(layers)
    return [i / (n - 1) if n > 1 else 0.0 for i in range(n)]


def pool(feats: torch.Tensor, size: int = 2, shape: Sequence[int] | None = None) -> torch.Tensor:
    """Average-pool conv feature maps to size x size cells per channel: (N, C, H, W) -> (N, C * size^2).

    Maps flattened per image, (N, C*H*W) as utils.hooks.collect_many returns them, need shape=(C, H, W).
    Why: a full map has C*H*W features (64 x 32 x 32 = 65k for a ResNet's first stage); pooled to 2 x 2 it
    keeps coarse layout at 4C features, so a probe costs about the same at every depth. Adaptive pooling:
    H not divisible by size gives overlapping cells, as torch.nn.AdaptiveAvgPool2d does.
    """
    x = feats if shape is None else feats.reshape(len(feats), *shape)
    if x.dim() != 4:
        raise ValueError(f"pool needs (N, C, H, W) maps, or shape=(C, H, W) for flattened ones; got "
                         f"{tuple(feats.shape)} with shape={shape}")
    return F.adaptive_avg_pool2d(x.float(), size).flatten(1)


def probe_layers(train_feats: Mapping[str, torch.Tensor], train_y: torch.Tensor,
                 test_feats: Mapping[str, torch.Tensor], test_y: torch.Tensor, num_classes: int, *,
                 progress: bool = True, **kw) -> pd.DataFrame:
    """linear_probe on every layer of train_feats (in its order: input first, head last), each layer's
    (N, D) features frozen. kw go to linear_probe. Columns: layer, relative_depth, dims, train_top1, top1,
    train_loss, loss."""
    missing = [k for k in train_feats if k not in test_feats]
    if missing:
        raise ValueError(f"test features lack layers {missing}; collect the same layers for both splits")
    depth = dict(zip(train_feats, relative_depth(list(train_feats)), strict=True))
    rows = []
    for layer in progress_bar(train_feats, desc="linear probes", disable=not progress, leave=False):
        s = linear_probe(train_feats[layer], train_y, test_feats[layer], test_y, num_classes=num_classes,
                         **kw)
        rows.append({"layer": layer, "relative_depth": depth[layer], "dims": train_feats[layer].shape[1],
                     "train_top1": s["train_top1"], "top1": s["top1"], "train_loss": s["train_loss"],
                     "loss": s["loss"]})
    return pd.DataFrame(rows)


def layer_table(nets: Mapping[str, nn.Module], layers: Mapping[str, Sequence[str]], train, test, *,
                seed: int = 0) -> pd.DataFrame:
    """probe_layers of every network (model name -> network) on the pixels it is fed ("input:input", layer
    "pixels", relative depth 0) and each of layers[model] in order (the last, the logits, at depth 1), the
    features compact-ed, collected over the ImageSets train and test; probe_layers' columns with model,
    family and layer, a block of rows per model in nets' order."""
    from ..hooks import collect_many
    from ..models import family

    rows = []
    for m, net in nets.items():
        points = ["input:input", *layers[m]]
        feats_tr = collect_many(net, train, points, reduce=compact, dtype=torch.float32)
        feats_te = collect_many(net, test, points, reduce=compact, dtype=torch.float32)
        table = probe_layers(feats_tr, train.labels, feats_te, test.labels, train.info.num_classes, seed=seed)
        rows.append(table.assign(model=m, family=family(m), layer=["pixels", *layers[m]]))
    return pd.concat(rows, ignore_index=True)
