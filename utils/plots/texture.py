"""Figures of shape vs texture (03) and of the tile shuffle (08)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from ..references import GEIRHOS_SHAPE_BIAS
from .base import color, figure, grouped_bars, model_order, to_hwc


def examples(arrays: dict) -> plt.Figure:
    """03's example grid: rows = test images, columns = modifications (then the cue-conflict image).
    arrays: <column name> -> (R, C, H, W) in [0, 1], plus "columns", "classes", "labels", "partner_labels"."""
    columns, classes = [str(c) for c in arrays["columns"]], [str(c) for c in arrays["classes"]]
    labels, partners = arrays["labels"], arrays["partner_labels"]
    n = len(labels)
    fig, axes = plt.subplots(n, len(columns), figsize=(1.3 * len(columns), 1.5 * n), squeeze=False)
    for r in range(n):
        for c, name in enumerate(columns):
            ax = axes[r, c]
            ax.imshow(to_hwc(arrays[name][r]), cmap="gray", vmin=0, vmax=1)
            ax.axis("off")
            ax.set_title(f"{name}\n" * (r == 0) + (classes[labels[r]] if c == 0 else ""), fontsize=8)
        axes[r, -1].set_title(f"{'cue conflict' * (r == 0)}\ntexture: {classes[partners[r]]}", fontsize=8)
    fig.tight_layout()
    return fig


def modification_bars(overall: pd.DataFrame, models: list[str], num_classes: int, title: str = ""
                      ) -> plt.Figure:
    """Top-1 per modification (groups) and model (bars), chance as a dotted line."""
    names = list(dict.fromkeys(overall.modification))
    table = overall.pivot(index="modification", columns="model", values="top1").loc[names, models]
    fig, ax = plt.subplots(figsize=(1 + 0.9 * len(names), 3.5))
    grouped_bars(ax, table, names, chance=1 / num_classes)
    ax.set_ylabel("top-1 (mean over test images)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def per_class_bars(per_class: pd.DataFrame, models: list[str], cols: int = 3) -> plt.Figure:
    """One panel per modification: top-1 per class (labels from the table's class column, in label order)."""
    names = list(dict.fromkeys(per_class.modification))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False, sharey=True)
    classes = per_class.drop_duplicates("class_index").sort_values("class_index")["class"].tolist()
    for ax, m in zip(axes.flat, names, strict=False):
        t = per_class[per_class.modification == m].pivot(index="class_index", columns="model", values="top1")
        grouped_bars(ax, t.sort_index()[models], classes, chance=1 / len(classes))
        ax.set_title(m, fontsize=10)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="upper center", ncol=len(models) + 1)
    fig.supylabel("top-1 per class")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def shape_bias_bars(bias: pd.DataFrame, num_classes: int, dataset: str) -> plt.Figure:
    """Shape bias per model beside the literature values, and shape / texture accuracy."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = [color(m) for m in bias.model]
    ax1.bar(bias.model, bias.shape_bias, color=colors)
    for (who, value), ls in zip(GEIRHOS_SHAPE_BIAS.items(), ["--", "-."], strict=True):
        ax1.axhline(value, color="k", ls=ls, lw=1, label=f"{who}: {value} (literature, Geirhos et al. 2019)")
    ax1.set_ylim(0, 1)
    ax1.set_ylabel("shape bias")
    ax1.set_title(f"shape decisions / cue decisions ({dataset}, Fourier cue conflict)", fontsize=9)
    ax1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    acc = bias.set_index("model")[["shape_acc", "texture_acc"]]
    width = 0.38
    for k, (col, hatch) in enumerate([("shape_acc", ""), ("texture_acc", "//")]):
        ax2.bar(np.arange(len(acc)) + (k - 0.5) * width, acc[col], width, color=colors, hatch=hatch,
                edgecolor="k")
    ax2.axhline(1 / num_classes, color="k", ls=":", lw=1, label="chance")
    ax2.set_xticks(np.arange(len(acc)), acc.index)
    ax2.set_ylim(0, 1)
    ax2.set_title("accuracy for the shape and the texture label", fontsize=9)
    ax2.legend(handles=[Patch(facecolor="white", edgecolor="k", label="shape label"),
                        Patch(facecolor="white", edgecolor="k", hatch="//", label="texture label"),
                        *ax2.get_legend_handles_labels()[0][:1]], fontsize=7)
    fig.tight_layout()
    return fig


def tile_shuffle_bars(tiles: pd.DataFrame, models: list[str], num_classes: int, title: str = ""
                      ) -> plt.Figure:
    """Top-1 per tile grid (groups; 1 = the original images) and model."""
    table = tiles.pivot(index="grid", columns="model", values="top1")[models]
    tile_px = tiles.drop_duplicates("grid").set_index("grid").tile_px
    names = [f"{g}x{g} ({tile_px[g]} px)" if g > 1 else "original" for g in table.index]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    grouped_bars(ax, table, names, chance=1 / num_classes)
    ax.set(ylabel="top-1", title=title)
    ax.legend(fontsize=8)
    return fig


@figure("03_texture_vs_shape_bias", "examples.png", "examples.npz")
def _examples(t, cfg):
    return examples(t["examples.npz"])


@figure("03_texture_vs_shape_bias", "modification_accuracy.png", "modification_accuracy.csv", "dataset.json")
def _modifications(t, cfg):
    overall = t["modification_accuracy.csv"]
    return modification_bars(overall, model_order(cfg, overall.model), t["dataset.json"]["num_classes"],
                             f"{cfg['dataset']}: accuracy per modification ({overall.n.iloc[0]} images)")


@figure("03_texture_vs_shape_bias", "modification_accuracy_per_class.png",
        "modification_accuracy_per_class.csv")
def _per_class(t, cfg):
    pc = t["modification_accuracy_per_class.csv"]
    return per_class_bars(pc, model_order(cfg, pc.model))


@figure("03_texture_vs_shape_bias", "shape_bias.png", "shape_bias.csv", "dataset.json")
def _shape_bias(t, cfg):
    return shape_bias_bars(t["shape_bias.csv"], t["dataset.json"]["num_classes"], cfg["dataset"])


@figure("08_activation_maximization", "tile_shuffle.png", "tile_shuffle.csv", "dataset.json")
def _tiles(t, cfg):
    tiles = t["tile_shuffle.csv"]
    n = cfg.get("n_test") or "all"
    return tile_shuffle_bars(tiles, model_order(cfg, tiles.model), t["dataset.json"]["num_classes"],
                             f"{cfg['dataset']}: accuracy with shuffled tiles ({n} test images)")


def per_class_mean(per_class: pd.DataFrame, models: list[str], classes: list[str]) -> plt.Figure:
    """The original study's figure: top-1 per class averaged over the modifications (the unmodified images
    left out), one bar per model; class labels from the table, checked against the dataset's class order."""
    names = per_class.drop_duplicates("class_index").sort_values("class_index")
    if list(names["class"]) != list(classes[: len(names)]):
        raise ValueError(f"class labels {list(names['class'])} do not follow the dataset's order {classes}")
    modified = per_class[per_class.modification != "original"]
    table = modified.groupby(["class_index", "model"]).top1.mean().unstack()[models]
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(table), 3.6))
    grouped_bars(ax, table, list(names["class"]), chance=1 / len(classes))
    ax.set(ylabel="top-1, mean over modifications",
           title="per-class accuracy averaged over the modifications")
    ax.legend(fontsize=8)
    return fig


def modification_means(overall: pd.DataFrame, models: list[str], num_classes: int) -> plt.Figure:
    """The original study's figure: the mean over classes of top-1 per modification, one bar per model."""
    names = list(dict.fromkeys(overall.modification))
    table = overall.pivot(index="modification", columns="model", values="mean_class_top1").loc[names, models]
    fig, ax = plt.subplots(figsize=(1 + 0.9 * len(names), 3.5))
    grouped_bars(ax, table, names, chance=1 / num_classes)
    ax.set(ylabel="top-1, mean over classes", title="mean accuracy per image modification")
    ax.legend(fontsize=8)
    return fig


@figure("03_texture_vs_shape_bias", "per_class_mean.png", "modification_accuracy_per_class.csv",
        "dataset.json")
def _per_class_mean(t, cfg):
    pc = t["modification_accuracy_per_class.csv"]
    return per_class_mean(pc, model_order(cfg, pc.model), t["dataset.json"]["classes"])


@figure("03_texture_vs_shape_bias", "modification_means.png", "modification_accuracy.csv", "dataset.json")
def _modification_means(t, cfg):
    o = t["modification_accuracy.csv"]
    return modification_means(o, model_order(cfg, o.model), t["dataset.json"]["num_classes"])
