"""Figures of training runs (01; 06's ladder and curves build on the same pieces)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .base import FAMILY_COLORS, color, compact_number, figure, integer_axis, label, log_ticks


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



# ---------------------------------------------------------------- 01: the ViT zoo's ablations


def tnt_sweep_plot(sweep: pd.DataFrame, title: str = "") -> plt.Figure:
    """Validation and test top-1 per (patch, pixel) point, and the training images/s, in grid order."""
    fig, (ax_acc, ax_speed) = plt.subplots(1, 2, figsize=(10, 3.6))
    x = np.arange(len(sweep))
    ticks = [f"patch {p}\npixel {q}\n{w} words" for p, q, w in zip(sweep.patch, sweep.pixel,
                                                                   sweep.words_per_patch, strict=True)]
    ax_acc.plot(x, sweep.val_top1, "o-", label="validation")
    ax_acc.plot(x, sweep.test_top1, "s--", label="test")
    ax_acc.set(ylabel="top-1", title=f"{sweep.model.iloc[0]}: patch and pixel size")
    ax_acc.legend(fontsize=8)
    ax_speed.bar(x, sweep.images_per_s, color=color(sweep.model.iloc[0]))
    ax_speed.set(ylabel=label("images_per_s"), title="training speed")
    for ax in (ax_acc, ax_speed):
        ax.set_xticks(x, ticks, fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def ladder_plot(ladder: pd.DataFrame, title: str = "") -> plt.Figure:
    """Test top-1 against parameters: this run's rungs (solid), its ablations (crosses, labelled) and the
    study's rungs (dashed), each labelled with its rung."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ours, study = ladder[ladder.source == "this run"], ladder[ladder.source != "this run"]
    rungs = ours[ours.setting == "ladder"].sort_values("params")
    where = "; ".join(dict.fromkeys(ours.data))
    ax.plot(rungs.params, rungs.test_top1, "o-", color=FAMILY_COLORS["perceiver"],
            label=f"this run ({where})")
    for marker, (setting, g) in zip("xP^", ours[ours.setting != "ladder"].groupby("setting"), strict=False):
        ax.scatter(g.params, g.test_top1, marker=marker, s=60, color="k", label=f"{setting} ({where})")
    if len(study):
        s = study.sort_values("params")
        ax.plot(s.params, s.test_top1, "s--", color="tab:gray", label=s.source.iloc[0])
    for r in ladder[ladder.setting == "ladder"].itertuples():
        ax.annotate(r.rung, (r.params, r.test_top1), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(xscale="log", xlabel=label("params"), ylabel=label("test_top1"), title=title)
    log_ticks(ax, ladder.params, fmt=compact_number)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


@figure("01_vit_finetuning", "tnt_sweep.png", "tnt_sweep.csv")
def _tnt_sweep(t, cfg):
    return tnt_sweep_plot(t["tnt_sweep.csv"], f"{_where(cfg)}: TnT (patch, pixel) sweep at a fixed lr")


@figure("01_vit_finetuning", "perceiver_ladder.png", "perceiver_ladder.csv")
def _perceiver_ladder(t, cfg):
    return ladder_plot(t["perceiver_ladder.csv"], f"Perceiver ladder ({_where(cfg)})")
