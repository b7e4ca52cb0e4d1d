"""Figures of adversarial robustness (02): accuracy against eps, transfer heatmaps."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from .base import annotated_heatmap, color, figure, model_order


def attack_curves(curves: pd.DataFrame, models: list[str], title: str = "") -> plt.Figure:
    """Top-1 (left) and top-5 (right) against eps for each attack (rows), one line per model in its family's
    colour. curves: one row per model x attack x eps (columns model, attack, eps, top1, top5)."""
    attacks = list(dict.fromkeys(curves.attack))
    fig, axes = plt.subplots(len(attacks), 2, figsize=(10, 3.5 * len(attacks)), sharey=True, squeeze=False)
    for row, attack in zip(axes, attacks, strict=True):
        for ax, metric in zip(row, ("top1", "top5"), strict=True):
            for m in models:
                c = curves[(curves.model == m) & (curves.attack == attack)]
                ax.plot(c.eps, c[metric], "o-", ms=3, color=color(m), label=m)
            ax.set(title=f"{attack.upper()} (L-inf)", xlabel="eps (pixels in [0, 1])",
                   ylabel=f"{metric.replace('top', 'top-')} accuracy", ylim=(0, 1.02))
            ax.grid(alpha=0.3)
    axes[0, 0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def transfer_heatmaps(transfer: pd.DataFrame, models: list[str], title: str = "") -> plt.Figure:
    """Per setting (rows): transfer rate and target accuracy on the source's adversarial images (source x
    target). transfer: one row per setting x source x target."""
    settings = list(dict.fromkeys(transfer.setting))
    fig, axes = plt.subplots(len(settings), 2, figsize=(11, 4.5 * len(settings)), squeeze=False,
                             constrained_layout=True)
    im = None
    for row, name in zip(axes, settings, strict=True):
        t = transfer[transfer.setting == name]
        for ax, metric in zip(row, ("transfer_rate", "target_adv_top1"), strict=True):
            grid = t.pivot(index="source", columns="target", values=metric).loc[models, models]
            what = "transfer rate" if metric == "transfer_rate" else "target top-1 on the source's images"
            im = annotated_heatmap(ax, grid, xlabel="target", ylabel="source", title=f"{name}: {what}")
    fig.colorbar(im, ax=axes, shrink=0.6)
    fig.suptitle(title)
    return fig


@figure("02_adversarial_robustness", "curves.png", "curves.csv")
def _curves(t, cfg):
    c = t["curves.csv"]
    return attack_curves(c, model_order(cfg, c.model), f"{cfg['dataset']}, first {c.n.iloc[0]} test images")


@figure("02_adversarial_robustness", "transfer.png", "transfer.csv")
def _transfer(t, cfg):
    tr = t["transfer.csv"]
    return transfer_heatmaps(tr, model_order(cfg, tr.source),
                             f"Transfer at L-inf 8/255, {cfg['dataset']}, first {tr.n.iloc[0]} test images")


def original_style_curves(curves: pd.DataFrame, models: list[str], title: str = "") -> plt.Figure:
    """The original study's figure: accuracy against eps per attack, top-1 dark (solid) and top-5 light
    (dashed) in each family's colour, one panel per attack."""
    attacks = list(dict.fromkeys(curves.attack))
    fig, axes = plt.subplots(1, len(attacks), figsize=(5.5 * len(attacks), 3.8), squeeze=False, sharey=True)
    for ax, attack in zip(axes[0], attacks, strict=True):
        for m in models:
            c = curves[(curves.model == m) & (curves.attack == attack)]
            ax.plot(c.eps, c.top1, "-", color=color(m), lw=2, label=f"{m} top-1")
            ax.plot(c.eps, c.top5, "--", color=color(m), lw=1.2, alpha=0.45, label=f"{m} top-5")
        ax.set(title=f"{attack.upper()} (L-inf)", xlabel="eps (pixels in [0, 1])", ylabel="accuracy",
               ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


@figure("02_adversarial_robustness", "original_attack_curves.png", "curves.csv")
def _original_curves(t, cfg):
    c = t["curves.csv"]
    return original_style_curves(c, model_order(cfg, c.model), f"as in the original study ({cfg['dataset']})")
