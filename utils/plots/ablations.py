"""Figures of 06 (improving the MLP): the ablation deltas, the ladder from a plain MLP to the full recipe,
gradients through depth, the depth x width grid, optimisation, and the adversarial-training trade-off.

Every figure reads the tables 06 saves: ablations.csv (one row per ablation x seed), ablation_summary.csv
(experiments.ablations.aggregate), curves.csv (per-epoch histories), gradients.csv, adversarial.csv,
adversarial_pgd.csv and autoattack.csv.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .base import annotated_heatmap, color, figure, integer_axis, log_ticks

NB = "06_improving_mlp"
ONE_AT_A_TIME = ("tricks", "normalisation", "input representation")  # studies shown as deltas


def _where(cfg: dict) -> str:
    return f"{cfg['dataset']}, profile {cfg['profile']}"


def _eps(cfg: dict) -> str:
    return f"{cfg['eval_eps_255']:g}/255"


def _err(values: pd.Series) -> np.ndarray:
    return np.nan_to_num(values.to_numpy(dtype=float))  # one seed: no bar


def delta_bars(summary: pd.DataFrame, studies=ONE_AT_A_TIME, title: str = "") -> plt.Figure:
    """Delta clean top-1 (left) and delta robust top-1 (right) vs each study's baseline, one bar per change,
    error bars 2 x the standard error of the difference (seed spread)."""
    s = summary[summary.study.isin(studies)]
    s = s[s.ablation != s.groupby("study").ablation.transform("first")]  # baselines: delta 0 by definition
    labels = [f"{r.study}: {r.change}" for r in s.itertuples()]
    y = np.arange(len(s))
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.38 * len(s) + 1.6), sharey=True)
    for ax, (d, se, what) in zip(axes, (("delta_top1", "delta_top1_se", "clean test top-1"),
                                        ("delta_robust", "delta_robust_se", "robust top-1")), strict=True):
        vals = s[d].to_numpy(dtype=float)
        ax.barh(y, vals, xerr=2 * _err(s[se]), color=np.where(vals >= 0, "tab:blue", "tab:red"), capsize=2)
        ax.axvline(0, color="k", lw=0.8)
        ax.set(xlabel=f"delta {what} vs the study's baseline", title=what)
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(y, labels, fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def ladder_plot(summary: pd.DataFrame, title: str = "", eps: str = "") -> plt.Figure:
    """The cumulative ladder: mean test top-1 (bars, +- std over seeds) and robust top-1 (points) per rung."""
    s = summary[summary.study == "ladder"]
    x = np.arange(len(s))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(s) + 2), 4.2))
    ax.bar(x, s.top1_mean, yerr=_err(s.top1_std), color=[color(m) for m in s.model], alpha=0.8, capsize=3,
           label="clean test top-1")
    ax.errorbar(x, s.robust_mean, yerr=_err(s.robust_std), fmt="D", color="k", capsize=3,
                label=f"PGD-10 top-1 at {eps}")
    for xi, v in zip(x, s.top1_mean, strict=True):
        ax.text(xi, v + 0.01, f"{v:.3f}", ha="center", fontsize=7)
    ax.set_xticks(x, [c.replace(" (", "\n(") for c in s.change], rotation=30, ha="right", fontsize=7)
    low = np.nanmin(s.robust_mean.to_numpy(dtype=float).tolist() + s.top1_mean.tolist())
    ax.set(ylabel="top-1 accuracy", ylim=(max(0.0, low - 0.1), 1.0), title=title)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def gradient_plot(grads: pd.DataFrame, summary: pd.DataFrame, title: str = "") -> plt.Figure:
    """Left: per-layer weight-gradient norm over the first epoch (median over the recorded steps, band:
    min-max) against depth, log scale, one line per variant. Right: each variant's test top-1 (stored
    runs)."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [2, 1]})
    for change, g in grads.groupby("change", sort=False):
        per = g.groupby("depth").grad_norm
        line, = ax.plot(per.median().index, per.median().clip(lower=1e-30), label=change)
        ax.fill_between(per.min().index, per.min().clip(lower=1e-30), per.max().clip(lower=1e-30),
                        color=line.get_color(), alpha=0.15)
    steps = grads.step.nunique()
    ax.set(yscale="log", xlabel="layer (0: the first Linear; the last: the head)",
           ylabel="||dL/dW|| (Frobenius)", title=f"gradient norm by layer, {steps} steps of the first epoch")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    study = grads.study.iloc[0]
    s = summary[summary.study == study]
    bx.bar(range(len(s)), s.top1_mean, yerr=_err(s.top1_std), color="tab:blue", capsize=3)
    bx.set_xticks(range(len(s)), s.change, rotation=30, ha="right", fontsize=8)
    bx.set(ylabel="test top-1", ylim=(0, 1), title="accuracy (stored runs)")
    bx.grid(alpha=0.3, axis="y")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def depth_width_heatmap(summary: pd.DataFrame, title: str = "") -> plt.Figure:
    """Mean test top-1 (left) and validation top-1 (right, where the choice is made; the best cell boxed) over
    depth (rows) x width (columns)."""
    s = summary[summary.study == "depth x width"].astype({"depth": int, "width": int})
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 * s.depth.nunique() + 2.6), constrained_layout=True)
    panels = ((axes[0], "top1_mean", "test top-1"), (axes[1], "val_top1_mean", "validation top-1"))
    for ax, metric, what in panels:
        grid = s.pivot(index="depth", columns="width", values=metric).sort_index()
        lo, hi = np.nanmin(grid.to_numpy()), np.nanmax(grid.to_numpy())
        im = annotated_heatmap(ax, grid, vmin=lo, vmax=hi if hi > lo else lo + 1e-3, fmt="{:.3f}",
                               xlabel="width", ylabel="depth (hidden layers)", title=what, rotate=0)
        fig.colorbar(im, ax=ax, shrink=0.8)
    val = s.pivot(index="depth", columns="width", values="val_top1_mean").sort_index()
    i, j = np.unravel_index(np.nanargmax(val.to_numpy()), val.shape)
    axes[1].add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2))
    fig.suptitle(title, fontsize=9)
    return fig


def optimisation_plot(rows: pd.DataFrame, curves: pd.DataFrame, title: str = "") -> plt.Figure:
    """Learning-rate grid (validation and test top-1), validation top-1 against epochs per lr (stored
    histories), and batch size at a fixed number of epochs vs a fixed number of steps."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    lr = rows[rows.study == "learning rate"].groupby("lr")[["val_top1", "test_top1"]].mean().reset_index()
    for metric, style in (("val_top1", "o-"), ("test_top1", "s--")):
        axes[0].plot(lr.lr, lr[metric], style, label=metric.replace("_top1", " top-1"))
    axes[0].set(xscale="log", xlabel="peak learning rate", ylabel="top-1", title="learning rate")
    log_ticks(axes[0], lr.lr)
    lr_runs = rows[rows.study == "learning rate"].drop_duplicates("lr").set_index("run").lr
    for run, h in curves[curves.run.isin(lr_runs.index)].groupby("run", sort=False):
        axes[1].plot(h.epoch, h.val_top1, "o-", ms=3, label=f"lr {lr_runs[run]:g}")
    axes[1].set(xlabel="epoch", ylabel="validation top-1", title="accuracy against epochs")
    integer_axis(axes[1])
    for study, style in (("batch size (fixed epochs)", "o-"), ("batch size (fixed steps)", "s--")):
        b = rows[rows.study == study].groupby("batch_size")[["val_top1", "steps"]].mean().reset_index()
        axes[2].plot(b.batch_size, b.val_top1, style, label=study.removeprefix("batch size "))
    batches = rows[rows.study.str.startswith("batch size")].batch_size
    axes[2].set(xscale="log", xlabel="batch size", ylabel="validation top-1", title="batch size")
    if len(batches):
        log_ticks(axes[2], batches)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def adversarial_plot(adv: pd.DataFrame, pgd: pd.DataFrame, aa: pd.DataFrame, eps: str = "",
                     title: str = "") -> plt.Figure:
    """Left: clean (solid) and PGD-10 top-1 at the evaluation eps (dashed) against the training eps, per model
    and method (standard training at eps 0 starts each line). Middle: PGD-10 top-1 against the attack's eps
    for each trained point. Right: clean, PGD-10 and AutoAttack top-1 on the AutoAttack subset."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    mean = adv.groupby(["model", "method", "train_eps"], sort=False)[["test_top1", "robust_top1"]].mean()
    mean = mean.reset_index()
    marks = {"fgsm": "o", "pgd": "s"}
    for (model, method), g in mean[mean.method != "standard"].groupby(["model", "method"], sort=False):
        g = pd.concat([mean[(mean.model == model) & (mean.method == "standard")], g]).sort_values("train_eps")
        x = g.train_eps * 255
        axes[0].plot(x, g.test_top1, "-" + marks[method], color=color(model), label=f"{model} {method} clean")
        axes[0].plot(x, g.robust_top1, "--" + marks[method], color=color(model), mfc="none",
                     label=f"{model} {method} PGD-10 {eps}")
    axes[0].set(xlabel="training eps (x 1/255)", ylabel="top-1", ylim=(0, 1), title="the trade-off")
    for (_, model, method, train_eps), g in pgd.groupby(["run", "model", "method", "train_eps"], sort=False):
        strong = train_eps == pgd.train_eps.max() or train_eps == 0  # the others paler
        axes[1].plot(g.eps * 255, g.top1, ("-" if method == "standard" else ":") + marks.get(method, "^"),
                     color=color(model), alpha=1.0 if strong else 0.4,
                     label=f"{model} {method} {train_eps * 255:g}/255")
    axes[1].set(xlabel="attack eps (x 1/255)", ylabel="PGD-10 top-1", ylim=(0, 1), title="PGD-10 against eps")
    last = aa[aa.stage == aa.groupby("run").stage.transform("max")].set_index("run")
    clean = aa[aa.stage == 0].set_index("run").top1
    labels = list(last.index)
    x, w = np.arange(len(labels)), 0.27
    for k, (values, what) in enumerate(((clean[labels], "clean"), (last.pgd_top1, f"PGD-10 {eps}"),
                                        (last.top1, f"AutoAttack {eps}"))):
        axes[2].bar(x + (k - 1) * w, values, w, label=what)
    axes[2].set_xticks(x, [f"{last.model[r]}\n{last.method[r]} {last.train_eps[r] * 255:g}" for r in labels],
                       fontsize=7, rotation=20)
    axes[2].set(ylabel="top-1", ylim=(0, 1), title=f"AutoAttack subset (n={int(aa.n.iloc[0])})")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


@figure(NB, "ablation_deltas.png", "ablation_summary.csv")
def _deltas(t, cfg):
    return delta_bars(t["ablation_summary.csv"], title=f"One change at a time ({_where(cfg)}); error bars: "
                      "2 s.e. over seeds; robust: PGD-10 at " + _eps(cfg))


@figure(NB, "ladder.png", "ablation_summary.csv")
def _ladder(t, cfg):
    return ladder_plot(t["ablation_summary.csv"], f"From a plain MLP to the full recipe ({_where(cfg)})",
                       _eps(cfg))


@figure(NB, "depth_gradients.png", "gradients.csv", "ablation_summary.csv")
def _gradients(t, cfg):
    return gradient_plot(t["gradients.csv"], t["ablation_summary.csv"],
                         f"A deep narrow plain MLP: vanishing gradients and what fixes them ({_where(cfg)})")


@figure(NB, "depth_width.png", "ablation_summary.csv")
def _depth_width(t, cfg):
    return depth_width_heatmap(t["ablation_summary.csv"], f"mlp_plain depth x width ({_where(cfg)})")


@figure(NB, "optimisation.png", "ablations.csv", "curves.csv")
def _optimisation(t, cfg):
    return optimisation_plot(t["ablations.csv"], t["curves.csv"],
                             f"Optimisation of mlp_plain ({_where(cfg)})")


@figure(NB, "adversarial_training.png", "adversarial.csv", "adversarial_pgd.csv", "autoattack.csv")
def _adversarial(t, cfg):
    return adversarial_plot(t["adversarial.csv"], t["adversarial_pgd.csv"], t["autoattack.csv"], _eps(cfg),
                            f"Adversarial training, MLP vs CNN under one recipe ({_where(cfg)})")
