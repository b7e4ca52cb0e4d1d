"""Recurring patterns in images (the original study's Prediction 1: the images that maximise an MLP's
classes recur like a CNN's): a periodicity score, its controls and the verdict.

    periodicity(vis.images)                     # (K,) height of the strongest recurrence, in [0, 1]
    spectral_peak_share(vis.images)             # (K,) share of the power in the strongest frequency
    noise_images(64, (1, 28, 28))               # the noise control: the visualisation's starting noise
    (the blurred control: that noise through visualize() with a zero objective: the blur schedule alone)
    score_table(images, model="mlp", kind="trained")   # one row per image: periodicity, spectral share
    recurrence_table(scores); prediction_1(table)
    periodicity_scores(...), periodicity_summary, recurrence_by_target, prediction_1_by_target   # 08's tables
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import Tensor


def autocorrelation(images: Tensor) -> Tensor:
    """(N, 2H-1, 2W-1) normalised autocorrelation of each image's channel mean, lag (0, 0) at [H-1, W-1]:
    per lag, the mean of g[p] * g[p + lag] over the pixel pairs inside the image (g: the image minus its
    mean), divided by its value at lag 0 (the variance). A constant image gives 0 everywhere."""
    g = images.double().mean(1)  # (N, H, W)
    g = g - g.mean((1, 2), keepdim=True)
    _, h, w = g.shape
    spectrum = torch.fft.rfft2(g, s=(2 * h, 2 * w))  # zero padding: linear, not circular, correlation
    sums = torch.fft.irfft2(spectrum.abs() ** 2, s=(2 * h, 2 * w))  # sums over pairs, lag k at index k mod 2H
    sums = torch.fft.fftshift(sums, dim=(-2, -1))[:, 1:, 1:]  # lag 0 at [H-1, W-1]
    pairs = torch.outer(h - torch.arange(1 - h, h).abs(), w - torch.arange(1 - w, w).abs())
    r = sums / pairs
    var = r[:, h - 1, w - 1, None, None]
    return torch.where(var > 1e-12, r / var.clamp_min(1e-12), torch.zeros_like(r))


def _segments(h: int, w: int) -> tuple[Tensor, Tensor]:
    """(Ly, Lx, M) row and column indices into autocorrelation()'s output of M points on the straight
    segment from lag 0 to each lag of the window |dy| <= H//2, |dx| <= W//2 (the last point is the lag)."""
    my, mx = h // 2, w // 2
    dy, dx = torch.meshgrid(torch.arange(-my, my + 1), torch.arange(-mx, mx + 1), indexing="ij")
    t = torch.linspace(0, 1, max(my, mx) + 1)
    return (dy[..., None] * t).round().long() + h - 1, (dx[..., None] * t).round().long() + w - 1


def periodicity(images: Tensor) -> Tensor:
    """(N,) in [0, 1]: the height of the strongest recurrence in each image (B, C, H, W).

    r = autocorrelation(images) over lags up to half the image per axis (so at least a quarter of the
    pixels overlap). A lag d counts by min(r(d), r(d) - v(d)), v(d) being the lowest r on the straight
    segment from lag 0 to d: a recurrence must rise again after the correlation fell on the way out, so a
    smooth image (r falling monotonically) scores 0 however slowly r falls, a pattern tiled with period p
    scores r(p) = 1, and white noise scores its largest chance correlation (about 0.15 at 28x28)."""
    r = autocorrelation(images)
    rows, cols = _segments(*images.shape[-2:])
    path = r[:, rows, cols]  # (N, Ly, Lx, M)
    peak, valley = path[..., -1], path.amin(-1)
    return torch.minimum(peak, peak - valley).amax((1, 2)).clamp(0, 1).float()


def spectral_peak_share(images: Tensor) -> Tensor:
    """(N,) in [0, 1]: share of an image's non-constant power (channel mean) in its strongest spatial
    frequency, f and -f together: 1 for a single grating, about 2 ln(HW) / (HW) for white noise. Smooth
    images score high too (their power sits at the lowest frequencies): read it with periodicity()."""
    g = images.double().mean(1)
    power = torch.fft.fft2(g - g.mean((1, 2), keepdim=True)).abs() ** 2  # (N, H, W); 0 at f = 0
    total = power.sum((1, 2))
    share = (2 * power.amax((1, 2)) / total.clamp_min(1e-12)).clamp(max=1)
    return torch.where(total > 1e-12, share, torch.zeros_like(share)).float()


def contrast(images: Tensor) -> Tensor:
    """(N,): the standard deviation of each image's pixels (its channel mean): a flat image scores 0."""
    return images.double().mean(1).flatten(1).std(1).float()


def score_table(images: Tensor, **labels) -> pd.DataFrame:
    """One row per image of (N, C, H, W): the `labels` columns (scalars or length-N lists), periodicity,
    spectral_peak_share and contrast (read the score beside it: smoothing lowers contrast too)."""
    return pd.DataFrame({**labels, "periodicity": periodicity(images).numpy(),
                         "spectral_peak_share": spectral_peak_share(images).numpy(),
                         "contrast": contrast(images).numpy()})


def noise_images(n: int, shape: tuple[int, int, int], seed: int = 0) -> Tensor:
    """(n, C, H, W): the original's starting noise N(0.5, (1/6)^2), clipped to [0, 1] (the noise control)."""
    gen = torch.Generator().manual_seed(seed)
    return (0.5 + torch.randn(n, *shape, generator=gen) / 6).clamp(0, 1)


def _z(a: np.ndarray, b: np.ndarray) -> float:
    """(mean a - mean b) / its standard error (Welch); +-inf when both samples are constant."""
    se = math.sqrt(sum(v.var(ddof=1) / len(v) if len(v) > 1 else 0.0 for v in (a, b)))
    diff = a.mean() - b.mean()
    return diff / se if se > 0 else math.copysign(math.inf, diff) if diff else 0.0


GLOBAL_CONTROLS = ("noise", "blurred")  # the same for every model: the starting noise, and that noise
# after the visualisation's own optimiser and blur schedule with a zero objective (smoothness alone)


def recurrence_table(scores: pd.DataFrame, score: str = "periodicity", z: float = 2.0) -> pd.DataFrame:
    """One row per family from per-image scores (columns family, model, kind, `score`; kinds "trained",
    "random" and GLOBAL_CONTROLS count, others are ignored): the trained images' mean, each control's mean,
    z of the differences, and `recurs`: the trained mean exceeds every control present (the same
    architecture with random weights; noise; blurred noise) by more than z standard errors."""
    controls = {k: scores.loc[scores.kind == k, score].to_numpy() for k in GLOBAL_CONTROLS
                if (scores.kind == k).any()}
    rows = []
    for family, g in scores[scores.kind.isin(["trained", "random"])].groupby("family", sort=False):
        trained = g.loc[g.kind == "trained", score].to_numpy()
        random = g.loc[g.kind == "random", score].to_numpy()
        row = {"family": family, "model": g.model.iloc[0], "trained": trained.mean(),
               "random_weights": random.mean(), "z_vs_random": _z(trained, random)}
        for kind, values in controls.items():
            row |= {kind: values.mean(), f"z_vs_{kind}": _z(trained, values)}
        row["recurs"] = bool(all(row[k] > z for k in row if k.startswith("z_vs_")))
        rows.append(row)
    return pd.DataFrame(rows)


def prediction_1(table: pd.DataFrame) -> tuple[bool, str]:
    """The original study's Prediction 1 ("images that maximise an MLP show recurring, tiled patterns like
    a CNN's"), judged from recurrence_table: it holds when both the MLP and the CNN recur."""
    fam = table.set_index("family")
    mlp, cnn = bool(fam.loc["mlp", "recurs"]), bool(fam.loc["cnn", "recurs"])
    names = {"random_weights": "random weights", "noise": "noise", "blurred": "blurred noise"}
    said = lambda f: f"{f.upper()}: {fam.loc[f, 'trained']:.3f} vs " + ", ".join(
        f"{name} {fam.loc[f, k]:.3f}" for k, name in names.items() if k in fam.columns)
    if mlp and cnn:
        return True, (f"Prediction 1 holds: the MLP's images recur, as the CNN's do ({said('mlp')}; "
                      f"{said('cnn')}).")
    if mlp:
        return False, (f"Prediction 1 is not borne out: the MLP's images recur ({said('mlp')}) but the CNN's "
                       f"do not ({said('cnn')}), so there is no CNN pattern for the MLP to be like.")
    return False, (f"Prediction 1 does not hold: the MLP's images are not more periodic than its controls "
                   f"({said('mlp')}); the CNN's {'do' if cnn else 'do not'} recur ({said('cnn')}).")


# ---------------------------------------------------------------- notebook 08's tables


def tiled_noise(n: int, shape: tuple[int, int, int], reps: int, seed: int = 0) -> Tensor:
    """(n, C, H, W): noise_images of (C, H // reps, W // reps) tiled reps x reps (the perfectly recurring
    control; H and W divisible by reps)."""
    c, h, w = shape
    return noise_images(n, (c, h // reps, w // reps), seed).repeat(1, 1, reps, reps)


def _index(objectives) -> list:
    return [o.terms[0].index for o in objectives]


def periodicity_scores(class_vis: dict, class_objectives: list, unit_vis: dict, unit_objectives: dict,
                       controls: dict[str, Tensor | np.ndarray], *, family=str,
                       fourier: dict | None = None) -> pd.DataFrame:
    """score_table of every image set, concatenated: the class images (target "class", layer "logits"), the
    unit images (target "unit"), the controls (target "control", model and kind the control's name), and
    Lucent's class images (target "class (Fourier)", kind "trained") when given.

    class_vis, unit_vis, fourier: (kind, model) -> a result with .images (N, C, H, W) in [0, 1]
    (feature_viz.visualize_groups); class_objectives: the class images' objectives (each .terms[0].index the
    class; the Fourier images take the first N); unit_objectives: model -> its unit images' objectives
    (.terms[0].layer, .index); controls: name -> (N, C, H, W) (tensors or arrays); family: model name ->
    family."""
    parts = [score_table(v.images, model=name, family=family(name), kind=kind, target="class", layer="logits",
                         index=_index(class_objectives)) for (kind, name), v in class_vis.items()]
    parts += [score_table(v.images, model=name, family=family(name), kind=kind, target="unit",
                          layer=[o.terms[0].layer for o in unit_objectives[name]],
                          index=_index(unit_objectives[name])) for (kind, name), v in unit_vis.items()]
    parts += [score_table(torch.as_tensor(x), model=kind, family="-", kind=kind, target="control", layer="-",
                          index=-1) for kind, x in controls.items()]
    parts += [score_table(v.images, model=name, family=family(name), kind="trained", target="class (Fourier)",
                          layer="logits", index=_index(class_objectives[:len(v.images)]))
              for (_, name), v in (fourier or {}).items()]
    return pd.concat(parts, ignore_index=True)


def periodicity_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per (target, model, kind) of periodicity_scores, in first-seen order: mean, sem and count of
    periodicity, spectral_peak_share and contrast (columns "<score>_<statistic>")."""
    columns = ["periodicity", "spectral_peak_share", "contrast"]
    summary = scores.groupby(["target", "model", "kind"], sort=False)[columns].agg(["mean", "sem", "count"])
    summary.columns = ["_".join(c) for c in summary.columns]
    return summary.reset_index()


def recurrence_by_target(scores: pd.DataFrame, targets: tuple[str, ...] = ("class", "unit")) -> pd.DataFrame:
    """recurrence_table of each target's images of periodicity_scores against the controls (target
    "control"), stacked, with a column `target`."""
    controls = scores[scores.target == "control"]
    return pd.concat([recurrence_table(pd.concat([scores[scores.target == t], controls])).assign(target=t)
                      for t in targets], ignore_index=True)


def prediction_1_by_target(recurs: pd.DataFrame, targets: tuple[str, ...] = ("class", "unit")) -> dict:
    """{"<target>_images": {"holds": bool, "verdict": str}}: prediction_1 on each target's rows of
    recurrence_by_target (the class images decide; the unit images are stated beside them)."""
    verdicts = {}
    for t in targets:
        holds, verdict = prediction_1(recurs[recurs.target == t])
        verdicts[f"{t}_images"] = {"holds": holds, "verdict": verdict}
    return verdicts
