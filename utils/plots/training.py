"""Figures of training runs (01; 06's ladder and curves build on the same pieces)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from .base import color, compact_number, figure, integer_axis, label, log_ticks


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
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss (dashed: train, solid: held-out)")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy", title="accuracy (train includes smoothing/mixup)")
    for ax in (ax_loss, ax_acc):
        integer_axis(ax)
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def labelled_scatter(df: pd.DataFrame, x: str, y: str, name: str = "run", logx: bool = False,
                     title: str = "") -> plt.Figure:
    """y against x, one point per row, coloured by the family of `df.model`, labelled with `df[name]`."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for _, row in df.iterrows():
        ax.scatter(row[x], row[y], color=color(row["model"]), s=40)
        ax.annotate(str(row[name]), (row[x], row[y]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(xlabel=label(x), ylabel=label(y), title=title)
    if logx:
        ax.set_xscale("log")
        log_ticks(ax, df[x], fmt=compact_number)
        ax.tick_params(axis="x", labelrotation=30)
    ax.margins(x=0.15, y=0.15)
    ax.grid(alpha=0.3)
    return fig


def sweep_plot(lr_sweep: pd.DataFrame, bs_sweep: pd.DataFrame, metric: str = "val_top1",
               title: str = "") -> plt.Figure:
    """The learning-rate sweep and the batch-size sweep (log x, ticks at the points tried)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, df, x in ((axes[0], lr_sweep, "lr"), (axes[1], bs_sweep, "batch_size")):
        ax.plot(df[x], df[metric], "o-")
        ax.set(xscale="log", xlabel=label(x), ylabel=label(metric))
        log_ticks(ax, df[x])
        ax.grid(alpha=0.3)
    model = lr_sweep["model"].iloc[0] if len(lr_sweep) else ""
    axes[0].set_title(f"{model}: learning rate")
    lr = bs_sweep["lr"].iloc[0] if len(bs_sweep) else float("nan")
    axes[1].set_title(f"{model}: batch size (lr {lr:g}, same epochs)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _where(cfg: dict) -> str:
    return f"{cfg['dataset']}, profile {cfg['profile']}"


@figure("01_vit_finetuning", "trio_curves.png", "histories.csv")
def _trio_curves(t, cfg):
    return learning_curves(t["histories.csv"], f"{_where(cfg)}: the comparison trio")


@figure("01_vit_finetuning", "trio_acc_vs_params.png", "summary.csv")
def _trio_params(t, cfg):
    return labelled_scatter(t["summary.csv"], "params", "test_top1", logx=True,
                            title=f"test top-1 against parameters ({_where(cfg)})")


@figure("01_vit_finetuning", "zoo_curves.png", "zoo_histories.csv")
def _zoo_curves(t, cfg):
    return learning_curves(t["zoo_histories.csv"], f"{_where(cfg)}: ViT zoo")


@figure("01_vit_finetuning", "pretrained_zoo_curves.png", "pretrained_zoo_histories.csv")
def _pretrained_curves(t, cfg):
    return learning_curves(t["pretrained_zoo_histories.csv"], f"{_where(cfg)}: pretrained zoo (linear head)")


@figure("01_vit_finetuning", "sweeps.png", "lr_sweep.csv", "batch_sweep.csv")
def _sweeps(t, cfg):
    return sweep_plot(t["lr_sweep.csv"], t["batch_sweep.csv"], "val_top1", title=_where(cfg))

