"""How figures look and where they go: one colour per family, PNGs saved beside the tables.

fig, ax = plt.subplots(); ax.plot(..., color=color("cnn_small")); save(fig, out / "curves.png")
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from . import models
from .results import atomic_write

FAMILY_COLORS = {"mlp": "tab:blue", "cnn": "tab:orange", "vit": "tab:green"}


def color(model: str) -> str:
    """The family's colour for a registered model name (grey for anything else, e.g. a control)."""
    try:
        return FAMILY_COLORS[models.family(model)]
    except KeyError:
        return "tab:gray"


def save(fig: plt.Figure, path: str | Path, dpi: int = 150) -> Path:
    """Write `fig` as PNG (atomically) and leave it open for inline display."""
    return atomic_write(Path(path), lambda p: fig.savefig(p, dpi=dpi, bbox_inches="tight", format="png"))


def learning_curves(hist: pd.DataFrame, title: str = "") -> plt.Figure:
    """Loss and accuracy per epoch, train (dashed) and validation (solid), one colour per run.

    hist: the tidy table of store.histories (columns run, epoch, train_loss, train_acc, val_loss, val_top1).
    """
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 3.8))
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (run, h) in enumerate(hist.groupby("run", sort=False)):
        c = cycle[i % len(cycle)]
        ax_loss.plot(h["epoch"], h["train_loss"], "--", color=c)
        ax_loss.plot(h["epoch"], h["val_loss"], "-", color=c, label=run)
        ax_acc.plot(h["epoch"], h["train_acc"], "--", color=c)
        ax_acc.plot(h["epoch"], h["val_top1"], "-o", ms=3, color=c, label=run)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss (dashed: train, solid: validation)")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy", title="accuracy (train includes smoothing/mixup)")
    ax_acc.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def labelled_scatter(df: pd.DataFrame, x: str, y: str, label: str = "run", logx: bool = False,
                     title: str = "") -> plt.Figure:
    """y against x, one point per row, coloured by family of `df.model` and labelled with `df[label]`."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for _, row in df.iterrows():
        ax.scatter(row[x], row[y], color=color(row["model"]), s=40)
        ax.annotate(str(row[label]), (row[x], row[y]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(xlabel=x, ylabel=y, title=title, xscale="log" if logx else "linear")
    ax.grid(alpha=0.3)
    return fig
