"""Causal steering of one dictionary feature: pin its component in a layer's activation and watch what the
network predicts (notebook 09).

    u = sae.W_dec[:, f].detach()                                # (D,) the feature's decoder direction
    classes = steer(net, "head:input", u, [-2, -1, 0, 1, 2], images, relative=True)   # (V, N) int64
    table = steering_table(net, "head:input", u, values, images, num_classes=10, relative=True)
    majority_value(table, target_class=3)                       # smallest |v| at which class 3 wins
    choose, held_out = disjoint_halves(len(eval_images), seed=0)  # choose features on one, steer on the other

The edit, per image (the layer's tensor flattened to x (D,), in the layer's own units):

    x' = x - (x . u) u + v u        u = direction / ||direction||

so the image's own component along u is removed and replaced by v, the same v for every image. The edited
tensor (reshaped back) feeds the rest of the network through a forward hook (`utils.hooks.hooked`). The
original study steered its MLP's head input over v in +-130 and VGG13-bn's over +-30, in raw activation
units; `relative=True` reads `values` as multiples of `activation_scale` (the mean L2 norm of the layer's
activation vectors over the images given), so one range means the same for every family.

An SAE's decoder column is a unit vector in its normalised units; `sae.scale` is one positive scalar, so the
column times the scale, renormalised, is the same direction in the layer's units: pass the column as is.

Majority (majority_value): a class is the majority at v when its share of the images predicted as it is
strictly above 0.5 (at most one class can be). Searched outward from v = 0 by |v|; at equal |v| the positive
value comes first; `sign` restricts the search to one side.

Held-out steering (disjoint_halves): the features to steer are chosen (by class selectivity) on one half of
the evaluation images and steered on the other, so a feature's steering effect is not measured on the images
that made it look class-selective.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..hooks import hooked
from ..models import eval_mode, model_device

SIGNS = ("both", "positive", "negative")


def disjoint_halves(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Two disjoint halves of range(n) from a seeded permutation (int64, each sorted): the first n // 2 to
    choose the features, the other n - n // 2 to steer them. Not the first and second half of the data: an
    image folder can be sorted by class."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: n // 2].sort().values, perm[n // 2 :].sort().values


def unit_direction(direction: Tensor) -> Tensor:
    """(D,) float32 unit vector along `direction` (any shape, flattened); a zero vector is refused."""
    d = direction.detach().flatten().float()
    norm = d.norm()
    if norm <= 0 or not torch.isfinite(norm):
        raise ValueError(f"the steering direction needs a finite, non-zero norm; got {norm.item()}")
    return d / norm


def edit(t: Tensor, u: Tensor, v: float) -> Tensor:
    """t (B, ...) flattened per image to x (B, D): x - (x.u) u + v u, reshaped back to t's shape and dtype."""
    x = t.flatten(1).float()
    if x.shape[1] != u.numel():
        raise ValueError(f"the direction has {u.numel()} dims but the layer's vectors have {x.shape[1]} "
                         f"(shape {tuple(t.shape)}): take the direction from an SAE on this layer")
    u = u.to(x.device)
    x = x - (x @ u)[:, None] * u + v * u  # (B, D)
    return x.reshape(t.shape).to(t.dtype)


def activation_scale(acts: Tensor) -> float:
    """Mean L2 norm of the activation vectors: acts (N, ...) flattened per image to (N, D)."""
    return acts.flatten(1).float().norm(dim=1).mean().item()


@torch.no_grad()
def layer_scale(model: nn.Module, layer: str, images: Tensor, batch_size: int = 500) -> float:
    """activation_scale of the layer's tensors on images (N, C, H, W) in [0, 1], in eval mode."""
    norms: list[Tensor] = []
    keep = lambda t: norms.append(t.flatten(1).float().norm(dim=1).cpu())  # (B,) per batch
    device = model_device(model)
    with eval_mode(model), hooked(model, layer, keep):
        for i in range(0, len(images), batch_size):
            model(images[i : i + batch_size].to(device))
    return torch.cat(norms).mean().item()


def raw_values(model: nn.Module, layer: str, values: Sequence[float], images: Tensor, relative: bool,
               batch_size: int = 500, scale: float | None = None) -> list[float]:
    """`values` in the layer's units: as given, or times the layer's scale when `relative` (`scale` when
    given, else layer_scale on the images)."""
    if relative and scale is None:
        scale = layer_scale(model, layer, images, batch_size)
    scale = scale if relative else 1.0
    return [float(v) * scale for v in values]


@torch.no_grad()
def steer(model: nn.Module, layer: str, direction: Tensor, values: Sequence[float], images: Tensor, *,
          relative: bool = False, return_logits: bool = False, batch_size: int = 500) -> Tensor:
    """Predictions with the layer's component along `direction` pinned to each of `values` (the edit in
    the module docstring): (V, N) int64 top-1 classes, or (V, N, K) float32 logits with return_logits, on
    the CPU. images (N, C, H, W) in [0, 1]; eval mode inside, the model's mode and hooks restored after.

    The network runs up to the layer once per image: the hook turns the layer's (B, ...) tensor into its V
    edits (V * B, ...), value-major, and only the rest of the network runs V times (issue 26: for the head's
    input, one forward instead of V). A layer whose tensor the rest of the network does not take alone (one
    inside a residual branch) gets a shape error from the first forward, not a wrong number."""
    u, device = unit_direction(direction), model_device(model)
    raw = raw_values(model, layer, values, images, relative, batch_size)
    per = max(1, batch_size // max(1, len(raw)))  # images per forward: V * per tensors after the layer
    every_value = lambda t: torch.cat([edit(t, u, v) for v in raw])  # (B, ...) -> (V * B, ...)
    out = []
    with eval_mode(model), hooked(model, layer, every_value):
        for i in range(0, len(images), per):
            out.append(model(images[i : i + per].to(device)).float().cpu().unflatten(0, (len(raw), -1)))
    logits = torch.cat(out, dim=1) if out else torch.empty(len(raw), 0, 0)  # (V, N, K)
    return logits if return_logits else logits.argmax(2)


def steering_table(model: nn.Module, layer: str, direction: Tensor, values: Sequence[float], images: Tensor,
                   num_classes: int, *, relative: bool = False, scale: float | None = None,
                   batch_size: int = 500) -> pd.DataFrame:
    """One row per value x class, values in the order given: value (as given), raw_value (layer units),
    class_index, count and share of the images predicted as that class. `scale`: the layer's, when known."""
    raw = raw_values(model, layer, values, images, relative, batch_size, scale)  # one scale for the table
    classes = steer(model, layer, direction, raw, images, batch_size=batch_size)  # (V, N)
    if classes.numel() and classes.max() >= num_classes:
        top = classes.max().item()
        raise ValueError(f"the model predicts class {top}; num_classes={num_classes} is too few")
    counts = F.one_hot(classes, num_classes).sum(1)  # (V, K)
    per_row = lambda vs: np.repeat(np.asarray(vs, dtype=np.float64), num_classes)  # (V * K,) float64
    return pd.DataFrame({
        "value": per_row(values),
        "raw_value": per_row(raw),
        "class_index": torch.arange(num_classes).repeat(len(values)).numpy(),
        "count": counts.flatten().numpy(),
        "share": (counts.double() / classes.shape[1]).flatten().numpy(),
    })


def majority_value(table: pd.DataFrame, target_class: int, sign: str = "both") -> float | None:
    """The `value` of smallest |value| at which target_class holds a strict majority (share > 0.5) in a
    steering_table; at equal |value| the positive one; `sign` "positive" / "negative" searches one side
    only (0 belongs to both). None: never, within the values tried."""
    if sign not in SIGNS:
        raise ValueError(f"sign must be one of {SIGNS}; got {sign!r}")
    rows = table[(table.class_index == target_class) & (table.share > 0.5)]
    if sign != "both":
        rows = rows[rows.value >= 0] if sign == "positive" else rows[rows.value <= 0]
    if rows.empty:
        return None
    order = sorted(rows.value, key=lambda v: (abs(v), -v))  # outward from 0, positive first at a tie
    return float(order[0])


def steer_features(model: nn.Module, layer: str, directions: Tensor, features: pd.DataFrame,
                   values: Sequence[float], images: Tensor, classes: Sequence[str], *, n_control: int = 0,
                   generator: torch.Generator | None = None, relative: bool = True, batch_size: int = 500
                   ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """09's section 4 for one model: every feature of `features` (columns feature, class_index, youden)
    steered along its column of `directions` (D, F), and `n_control` random directions (normal (D,) vectors)
    as the control. Returns (steered: steering_table per feature with feature and feature_class, control:
    steering_table per random direction with `control`, majority: one row per feature: the majority value
    of its class (both signs, positive only; "never" when it never wins), its class's share at 0 and at
    most, and the control's mean best share of that class and how many random directions made it win).
    `generator`: where the random directions are drawn from (default: seed 0)."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    randoms = torch.randn(n_control, len(directions), generator=gen)  # (n_control, D)
    scale = layer_scale(model, layer, images, batch_size) if relative else None  # one for every direction
    table = lambda d: steering_table(model, layer, d, values, images, len(classes), relative=relative,
                                     scale=scale, batch_size=batch_size)
    control = pd.concat([table(r).assign(control=j) for j, r in enumerate(randoms)] or [pd.DataFrame()],
                        ignore_index=True)
    steered, rows = [], []
    for feat in features.itertuples():
        f, c = int(feat.feature), int(feat.class_index)
        t = table(directions[:, f])
        steered.append(t.assign(feature=f, feature_class=c))
        own = t[t.class_index == c].set_index("value").share  # the feature's class's share per value
        both, positive = majority_value(t, c), majority_value(t, c, sign="positive")
        mine = control[control.class_index == c] if n_control else control
        rows.append({"layer": layer, "feature": f, "feature_class": c, "class": classes[c],
                     "youden": feat.youden, "majority_value": both,
                     "majority": "never" if both is None else f"{both:g}",
                     "majority_positive": "never" if positive is None else f"{positive:g}",
                     "share_at_0": own.get(0.0), "max_share": own.max(), "max_share_value": own.idxmax(),
                     "n_images": len(images),
                     "control_max_share": mine.groupby("control").share.max().mean() if n_control else np.nan,
                     "control_majorities": sum(majority_value(g, c) is not None
                                               for _, g in control.groupby("control")) if n_control else 0,
                     "n_control": n_control})
    steered = pd.concat(steered, ignore_index=True) if steered else pd.DataFrame()
    if len(steered):
        steered["class"] = [classes[i] for i in steered.class_index]
    return steered, control, pd.DataFrame(rows)


def steer_models(nets: dict[str, nn.Module], layers: dict[str, str], directions: dict[str, Tensor],
                 features: dict[str, pd.DataFrame], values: Sequence[float], images: Tensor,
                 classes: Sequence[str], family: dict[str, str], *, n_control: int = 0, seed: int = 0,
                 relative: bool = True, batch_size: int = 500, chosen_on: int | None = None
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """steer_features for every model (dicts keyed by model name), the random directions of all models
    drawn in turn from one generator seeded `seed`: (steered, control, majority) with a `model` column
    (majority: and `family`, and `chosen_on` after n_images when given: how many images chose the
    features)."""
    gen, parts = torch.Generator().manual_seed(seed), {}
    for name, net in nets.items():
        parts[name] = steer_features(net, layers[name], directions[name], features[name], values, images,
                                     classes, n_control=n_control, generator=gen, relative=relative,
                                     batch_size=batch_size)
        print(f"{name}: {len(features[name])} features and {n_control} random directions steered at "
              f"{len(values)} values on {len(images)} images")
    join = lambda i, extra: pd.concat([p[i].assign(model=n, **extra(n)) for n, p in parts.items()],
                                      ignore_index=True)
    steered = join(0, lambda n: {})
    tail = ["model", "feature", "feature_class", "class"]
    steered = steered[[*steered.columns.drop(tail), *tail]]
    majority = join(2, lambda n: {"family": family[n]})
    majority = majority[["model", "family", *majority.columns.drop(["model", "family"])]]
    if chosen_on is not None:
        majority.insert(majority.columns.get_loc("n_images") + 1, "chosen_on", chosen_on)
    return steered, join(1, lambda n: {}), majority
