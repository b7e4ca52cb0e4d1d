"""Figures of feature transfer and similarity (04): CKA heatmaps, probe accuracy by depth, transfer curves;
of error consistency (02, 03): kappa per setting for every pair of models; and of the recipe-aligned control
(01, 02, 03): each family difference under the own recipes and under one shared recipe."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .base import FAMILY_COLORS, annotated_heatmap, color, figure, grouped_bars, log_ticks

METHOD_STYLE = {"linear probe": ("-", "o"), "logistic regression": ("--", "s"), "fine-tune": ("-", "^"),
                "LP-FT": ("--", ">"), "scratch": (":", "v"), "xgboost (pixels)": ("-.", "D")}


def cka_heatmaps(cka: pd.DataFrame, title: str = "") -> plt.Figure:
    """One heatmap per (model_a, model_b) pair of a tidy CKA table (kind, model_a, model_b, layer_a,
    layer_b, cka): layers of a down, of b across, in their forward order."""
    pairs = list(dict.fromkeys(zip(cka.model_a, cka.model_b, strict=True)))
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 4), squeeze=False,
                             constrained_layout=True)
    im = None
    for ax, (a, b) in zip(axes[0], pairs, strict=True):
        t = cka[(cka.model_a == a) & (cka.model_b == b)]
        grid = t.pivot(index="layer_a", columns="layer_b", values="cka")
        grid = grid.loc[list(dict.fromkeys(t.layer_a)), list(dict.fromkeys(t.layer_b))]
        im = annotated_heatmap(ax, grid, vmin=0, vmax=1, cmap="magma", fmt="{:.2f}", xlabel=b, ylabel=a,
                               rotate=60)
    fig.colorbar(im, ax=axes, shrink=0.7, label="CKA")
    fig.suptitle(title, fontsize=9)
    return fig


def probe_curves(probes: pd.DataFrame, num_classes: int, title: str = "") -> plt.Figure:
    """Linear-probe test top-1 against relative depth (0 = the pixels, 1 = the logits), one line per model."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for model, g in probes.groupby("model", sort=False):
        ax.plot(g.relative_depth, g.top1, "o-", color=color(model), label=model)
    ax.axhline(1 / num_classes, color="k", ls=":", lw=1, label="chance")
    ax.set(xlabel="relative depth (0: pixels, 1: logits)", ylabel="probe test top-1", ylim=(0, 1.02),
           title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def transfer_curves(transfer: pd.DataFrame, title: str = "") -> plt.Figure:
    """Rows = target tasks, columns = families: target test top-1 against training images per class (log x),
    one line per method; the pixel baseline (family "-") is drawn in every panel."""
    targets = list(dict.fromkeys(transfer.target))
    families = [f for f in FAMILY_COLORS if f in set(transfer.family)]
    fig, axes = plt.subplots(len(targets), len(families), figsize=(4 * len(families), 3.3 * len(targets)),
                             squeeze=False, sharey=True)
    for r, target in enumerate(targets):
        t = transfer[transfer.target == target]
        for c, fam in enumerate(families):
            ax = axes[r, c]
            for method, g in t[(t.family == fam) | (t.family == "-")].groupby("method", sort=False):
                ls, marker = METHOD_STYLE.get(method, ("-", "o"))
                g = g.sort_values("per_class")
                ax.plot(g.per_class, g.top1, ls=ls, marker=marker, ms=4, label=method,
                        color="k" if method.startswith("xgboost") else color(g.model.iloc[0]))
            ax.set(xscale="log", title=f"{target}: {fam}", xlabel="training images per class", ylim=(0, 1.02))
            log_ticks(ax, t.per_class, fmt=lambda v: f"{v:g}")
            ax.grid(alpha=0.3)
        axes[r, 0].set_ylabel("test top-1")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def error_consistency_plot(kappa: pd.DataFrame, title: str = "") -> plt.Figure:
    """Cohen's kappa of every pair of models (one marker per pair, its bootstrap interval as a bar) per
    setting (across, in the table's order); 0, the kappa of independent errors, as a line. kappa: one row per
    setting x pair (setting, model_a, model_b, kappa, kappa_lo, kappa_hi; kind "two seeds": a model against
    its seed twin, drawn hollow)."""
    settings = list(dict.fromkeys(kappa.setting))
    pairs = list(dict.fromkeys(zip(kappa.model_a, kappa.model_b, strict=True)))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(settings) + 2), 3.6), constrained_layout=True)
    width = 0.7 / max(len(pairs), 1)
    for j, (a, b) in enumerate(pairs):
        t = kappa[(kappa.model_a == a) & (kappa.model_b == b)].set_index("setting").reindex(settings)
        x = [i - 0.35 + (j + 0.5) * width for i in range(len(settings))]
        err = [(t.kappa - t.kappa_lo).clip(lower=0).fillna(0), (t.kappa_hi - t.kappa).clip(lower=0).fillna(0)]
        seeds = "kind" in t and (t.kind == "two seeds").any()  # the ceiling: hollow, in the model's colour
        ax.errorbar(x, t.kappa, yerr=err, fmt="o", ms=4, capsize=2, mfc="none" if seeds else None,
                    color=color(a) if seeds else None, label=f"{a}, two seeds" if seeds else f"{a} / {b}")
    ax.axhline(0, color="0.5", lw=0.8, ls="--")
    ax.set_xticks(range(len(settings)), settings, rotation=30, ha="right")
    ax.set(ylabel="error consistency (kappa)", ylim=(min(-0.2, kappa.kappa_lo.min() - 0.05), 1.0))
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize=9)
    return fig


@figure("02_adversarial_robustness", "error_consistency.png", "error_consistency.csv")
def _consistency_02(t, cfg):
    k = t["error_consistency.csv"]
    return error_consistency_plot(k, f"{cfg['dataset']}: which images each pair gets wrong, clean and "
                                     f"attacked (first {int(k.n.max())} test images, 95% intervals)")


@figure("03_texture_vs_shape_bias", "error_consistency.png", "error_consistency.csv")
def _consistency_03(t, cfg):
    k = t["error_consistency.csv"]
    return error_consistency_plot(k, f"{cfg['dataset']}: which images each pair gets wrong, per modification "
                                     f"({int(k.n.max())} test images; 95% bootstrap intervals)")


@figure("04_feature_generalizability", "cka_cross.png", "cka.csv")
def _cross(t, cfg):
    cka = t["cka.csv"]
    return cka_heatmaps(cka[cka.kind == "cross"],
                        f"CKA across families ({cfg['dataset']}, debiased, test images)")


@figure("04_feature_generalizability", "cka_ceiling.png", "cka.csv")
def _ceiling(t, cfg):
    cka = t["cka.csv"]
    return cka_heatmaps(cka[cka.kind == "ceiling"],
                        "the ceiling: the same architecture trained from another seed")


@figure("04_feature_generalizability", "cka_within.png", "cka.csv")
def _within(t, cfg):
    cka = t["cka.csv"]
    return cka_heatmaps(cka[cka.kind == "within"], "within each model: layer against layer")


@figure("04_feature_generalizability", "probes.png", "probes.csv", "dataset.json")
def _probes(t, cfg):
    return probe_curves(t["probes.csv"], t["dataset.json"]["num_classes"],
                        f"where the classes become linearly separable ({cfg['dataset']})")


@figure("04_feature_generalizability", "transfer.png", "transfer.csv")
def _transfer(t, cfg):
    return transfer_curves(t["transfer.csv"], "transfer to new tasks from the source models")


@figure("04_feature_generalizability", "similarity_suite.png", "similarity_summary.csv")
def _suite(t, cfg):
    wide = t["similarity_summary.csv"].pivot(index="pair", columns="measure", values="gap_closed")
    values = wide.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(wide), 3.6))
    ylim = (min(-0.2, float(np.nanmin(values)) - 0.1), max(1.2, float(np.nanmax(values)) + 0.1))
    grouped_bars(ax, wide, list(wide.index), colors=[f"C{k}" for k in range(len(wide.columns))], ylim=ylim)
    for y, what in ((0, "floor: the other family at initialisation"), (1, "ceiling: the family, seed 1")):
        ax.axhline(y, color="k", lw=0.8, ls=":" if y else "-")
        ax.text(ax.get_xlim()[1], y, f" {what}", va="center", fontsize=7)
    ax.set_ylabel("gap closed: (cross - floor) / (ceiling - floor)")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(f"four measures of alike final features ({cfg['dataset']}, {cfg['n_similarity']} test "
                 "images)", fontsize=9)
    fig.tight_layout()
    return fig


def aligned_plot(diff: pd.DataFrame, title: str = "") -> plt.Figure:
    """The reference family's metric minus each other family's (utils.aligned.differences), one row per
    setting x other family: under the own recipes (filled, paired bootstrap interval over the images) and
    under the shared recipe (hollow, t interval over the seeds); 0, no difference, as a line."""
    rows = list(zip(diff.setting, diff.other, strict=True))
    fig, ax = plt.subplots(figsize=(6.0, 0.45 * len(rows) + 1.4), constrained_layout=True)
    for offset, (col, lo, hi, label, hollow) in enumerate(
            [("own", "own_lo", "own_hi", "own recipes (one seed; images resampled)", False),
             ("aligned", "aligned_lo", "aligned_hi", "one shared recipe (mean over seeds)", True)]):
        y = [i + (0.15 if offset else -0.15) for i in range(len(rows))]
        err = [(diff[col] - diff[lo]).clip(lower=0).fillna(0), (diff[hi] - diff[col]).clip(lower=0).fillna(0)]
        ax.errorbar(diff[col], y, xerr=err, fmt="o", ms=4, capsize=2, color="C1" if hollow else "C0",
                    mfc="none" if hollow else None, label=label)
    ax.axvline(0, color="0.5", lw=0.8, ls="--")
    ref = diff.reference.iloc[0] if len(diff) else "mlp"
    ax.set_yticks(range(len(rows)), [f"{s} ({m}): {ref} - {o}" for (s, o), m in zip(rows, diff.metric,
                                                                                       strict=True)])
    ax.invert_yaxis()
    ax.set(xlabel="difference (95% interval)")
    ax.legend(fontsize=7)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=9)
    return fig


def _aligned(t, cfg, what: str) -> plt.Figure:
    return aligned_plot(t["aligned_differences.csv"],
                        f"{cfg['dataset']}, {what}: does a family difference survive one shared recipe?")


@figure("01_vit_finetuning", "aligned_differences.png", "aligned_differences.csv")
def _aligned_01(t, cfg):
    return _aligned(t, cfg, "clean test set")


@figure("02_adversarial_robustness", "aligned_differences.png", "aligned_differences.csv")
def _aligned_02(t, cfg):
    return _aligned(t, cfg, "clean and PGD-10")


@figure("03_texture_vs_shape_bias", "aligned_differences.png", "aligned_differences.csv")
def _aligned_03(t, cfg):
    return _aligned(t, cfg, "cue-conflict images")
