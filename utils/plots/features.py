"""Figures of what units respond to (08) and of dictionaries (09)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import to_rgba
from matplotlib.ticker import NullFormatter

from .base import color, figure, image_grid, integer_axis, model_order, to_hwc

# ---------------------------------------------------------------- 08: activation maximisation


def objective_trace(trace: pd.DataFrame, models: list[str]) -> plt.Figure:
    """The class objective (mean over images) against the step: trained (solid), random weights (dashed)."""
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 3), squeeze=False)
    for ax, name in zip(axes[0], models, strict=True):
        for kind, ls in (("trained", "-"), ("random", "--")):
            t = trace[(trace.model == name) & (trace.kind == kind)].groupby("step").objective.mean()
            ax.plot(t.index, t.values, ls, color=color(name), label=kind)
        ax.set(title=name, xlabel="step", ylabel="class logit (mean over images)")
        integer_axis(ax)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def periodicity_bars(summary: pd.DataFrame, models: list[str], dataset: str) -> plt.Figure:
    """Mean periodicity (+- SE) of the class images per model, trained beside random weights, then the
    controls (noise, tiled noise)."""
    s = summary[summary.target.isin(["class", "control"])]
    rank = {name: i for i, name in enumerate(models)}
    s = s.sort_values("model", key=lambda m: m.map(rank).fillna(99), kind="stable")
    labels = [f"{m}\n({k})" if t != "control" else m
              for m, k, t in zip(s.model, s.kind, s.target, strict=True)]
    colors = [to_rgba(color(m), 1.0 if k == "trained" else 0.4) for m, k in zip(s.model, s.kind, strict=True)]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(labels, s.periodicity_mean, yerr=s.periodicity_sem.fillna(0), capsize=3, color=colors)
    ax.set_ylabel("periodicity (mean +- SE)")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"class images, {dataset}: strongest recurrence in the autocorrelation")
    ax.tick_params(axis="x", labelsize=7)
    return fig


def _class_rows(arrays: dict, models: list[str], prefix: str, n: int) -> dict:
    rows = {}
    for kind in ("trained", "random"):
        for m in models:
            key = f"{kind}_{prefix}_{m}"
            if key in arrays:
                rows[f"{m}{' (random)' * (kind == 'random')}"] = arrays[key][:n]
    return rows


@figure("08_activation_maximization", "class_images.png", "images.npz", "dataset.json")
def _class_images(t, cfg):
    arrays, classes = t["images.npz"], t["dataset.json"]["classes"]
    n = min(cfg["n_classes"], len(classes))
    rows = {**_class_rows(arrays, cfg["models"], "class", n), "noise": arrays["noise"][:n]}
    if "blurred" in arrays:
        rows["noise, blurred (zero objective)"] = arrays["blurred"][:n]
    return image_grid(rows, classes[:n])


@figure("08_activation_maximization", "class_images_fourier.png", "images.npz", "dataset.json")
def _fourier(t, cfg):
    arrays, classes = t["images.npz"], t["dataset.json"]["classes"]
    n = min(cfg["n_classes"], len(classes))
    rows = {f"{m} (Fourier)": arrays[f"fourier_class_{m}"][:n] for m in cfg["models"]
            if f"fourier_class_{m}" in arrays}
    return image_grid(rows, classes[:n])


@figure("08_activation_maximization", "unit_images.png", "images.npz", "units.csv")
def _units(t, cfg):
    arrays, units = t["images.npz"], t["units.csv"]
    k = int(units.groupby(["model", "layer"]).size().max())
    rows = {}
    for m in cfg["models"]:
        images = arrays[f"trained_unit_{m}"]
        for i, layer in enumerate(dict.fromkeys(units[units.model == m].layer)):
            rows[f"{m}\n{layer}"] = images[i * k:(i + 1) * k]
    return image_grid(rows, [f"unit {i}" for i in range(k)])


@figure("08_activation_maximization", "class_objective_trace.png", "class_objective_trace.csv")
def _trace(t, cfg):
    tr = t["class_objective_trace.csv"]
    return objective_trace(tr, model_order(cfg, tr.model))


@figure("08_activation_maximization", "periodicity.png", "periodicity.csv")
def _periodicity(t, cfg):
    return periodicity_bars(t["periodicity.csv"], cfg["models"], cfg["dataset"])


@figure("08_activation_maximization", "inversion.png", "inversion.npz", "inversion.csv")
def _inversion(t, cfg):
    arrays, table = t["inversion.npz"], t["inversion.csv"]
    rows = {"original": arrays["targets"]}
    for kind in ("trained", "random"):
        for m in model_order(cfg, table.model):
            g = table[(table.model == m) & (table.kind == kind)]
            if f"{kind}_{m}" in arrays and len(g):
                who = f"{m}{' (random)' * (kind == 'random')}"
                rows[f"{who}\n{g.layer.iloc[0]}, RMSE {g.pixel_error.mean():.3f}"] = arrays[f"{kind}_{m}"]
    first = table[table.model == table.model.iloc[0]].drop_duplicates("image").sort_values("image")
    return image_grid(rows, list(first["class"]), size=1.1,
                      title=f"feature inversion at relative depth {cfg.get('invert_depth', '?')} "
                            "(rows: the original, then each model; RMSE in [0, 1] pixels)")


# ---------------------------------------------------------------- 09: dictionaries


def sae_training(histories: pd.DataFrame) -> plt.Figure:
    """MSE, L0 and dead fraction per epoch of every main SAE (trained networks solid, untrained dotted); the
    sweep's SAEs (setting other than "main") are left to sae_sweep."""
    if "setting" in histories:
        histories = histories[histories.setting == "main"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    seeds = sorted(histories.seed.unique())
    for (name, kind, seed), h in histories.groupby(["model", "network", "seed"], sort=False):
        style = dict(color=color(name), ls="-" if kind == "trained" else ":",
                     alpha=1 if seed == seeds[0] else 0.5)
        for ax, col in zip(axes, ["mse", "l0", "dead_fraction"], strict=True):
            ax.plot(h.epoch, h[col], label=f"{name} {kind} s{seed}", **style)
    titles = ["training MSE (normalised units)", "L0 (training batches)", "dead fraction (epoch)"]
    for ax, title in zip(axes, titles, strict=True):
        ax.set(xlabel="epoch", title=title)
        integer_axis(ax)
    axes[0].set_yscale("log")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="center left", bbox_to_anchor=(1, 0.5), fontsize=7)
    fig.tight_layout()
    return fig


def sae_sweep(sweep: pd.DataFrame, models: list[str]) -> plt.Figure:
    """SAEBench's core metrics against the active share L0 / features (log), one line per model over its
    "topk_signed" SAEs (the main one ringed), Gao et al.'s ReLU'd "topk" as crosses at the share it reached;
    panels: FVE, alive fraction, CE increase when spliced in (nats), L0 reached / k."""
    panels = [("fve", "fraction of variance explained"), ("alive_fraction", "fraction of features alive"),
              ("ce_increase", "CE increase spliced in (nats)"), ("l0_of_k", "L0 reached / k")]
    sweep = sweep.assign(l0_of_k=sweep.l0 / sweep.k)
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.3))
    for name in models:
        m = sweep[sweep.model == name]
        signed, relu = m[m.activation == "topk_signed"].sort_values("active_share"), m[m.activation == "topk"]
        main = m[m.setting == "main"]
        for ax, (col, title) in zip(axes, panels, strict=True):
            ax.plot(signed.active_share, signed[col], "o-", color=color(name), label=name)
            ax.plot(relu.active_share, relu[col], "x", color=color(name), ms=8, mew=2)
            ax.plot(main.active_share, main[col], "o", mfc="none", mec="k", ms=10)
            ax.set(xscale="log", xlabel="L0 / features (log)", title=title)
            ax.xaxis.set_minor_formatter(NullFormatter())  # decades only: minor labels overlap
    axes[0].legend(fontsize=7, title="o topk_signed, x topk (ReLU)", title_fontsize=7)
    fig.tight_layout()
    return fig


def feature_density(selectivity: pd.DataFrame, models: list[str]) -> plt.Figure:
    """Histogram of log10 feature density (share of images a feature fires on) per model."""
    fig, axes = plt.subplots(1, len(models), figsize=(4.3 * len(models), 3.2), squeeze=False)
    for ax, name in zip(axes[0], models, strict=True):
        density = selectivity.loc[selectivity.model == name, "density"].to_numpy()
        alive = density[density > 0]
        ax.hist(np.log10(alive), bins=30, color=color(name))
        ax.set(xlabel="log10 feature density", ylabel="features",
               title=f"{name}: {len(alive)} live, {int((density == 0).sum())} dead of {len(density)}")
    fig.tight_layout()
    return fig


def top_images(arrays: dict, shown: pd.DataFrame, classes: list[str], models: list[str]) -> plt.Figure:
    """Per model, per shown feature (rows): its top-activating test images, titled by their class.
    arrays: "<model>" (F, T, C, H, W) images and "<model>_labels" (F, T)."""
    n_top = max(arrays[m].shape[1] for m in models)
    n_rows = sum(len(shown[shown.model == m]) for m in models)
    fig, axes = plt.subplots(n_rows, n_top, figsize=(1.1 * n_top, 1.25 * n_rows + 0.5), squeeze=False)
    r = 0
    for m in models:
        for f, (_, feat) in enumerate(shown[shown.model == m].iterrows()):
            for c, ax in enumerate(axes[r]):
                ax.axis("off")
                if c < arrays[m].shape[1]:
                    ax.imshow(to_hwc(arrays[m][f, c]), cmap="gray", vmin=0, vmax=1)
                    ax.set_title(classes[int(arrays[f"{m}_labels"][f, c])], fontsize=6)
            what = f"{m}\n#{int(feat.feature)}\n{feat['class']}\nJ={feat.youden:.2f}"
            axes[r, 0].text(-0.15, 0.5, what, fontsize=6, transform=axes[r, 0].transAxes, ha="right",
                            va="center")
            r += 1
    fig.suptitle("top-activating test images of each model's most class-selective features", fontsize=9)
    return fig


def logit_weight_maps(weights: pd.DataFrame, classes: list[str], models: list[str]) -> plt.Figure:
    """Per model: the logit change per unit of each shown feature (features x classes), diverging colours."""
    models = [m for m in models if m in set(weights.model)]
    n_features = weights.groupby("model").feature.nunique().max()
    size = (4.6 * len(models), 0.5 * n_features + 1.5)
    fig, axes = plt.subplots(1, len(models), figsize=size, squeeze=False)
    for ax, name in zip(axes[0], models, strict=True):
        t = weights[weights.model == name]
        grid = t.pivot(index="feature", columns="class", values="weight").loc[list(dict.fromkeys(t.feature)),
                                                                            classes]
        lim = np.abs(grid.to_numpy()).max()
        im = ax.imshow(grid.to_numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(grid)), [f"#{f}" for f in grid.index], fontsize=7)
        ax.set_title(f"{name}: logit per unit feature", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig


def matching_histograms(per_feature: pd.DataFrame, pairs: list[str]) -> plt.Figure:
    """Per pair: the best Pearson r of each feature (both directions) for floor, cross and ceiling."""
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.6 * len(pairs), 3.3), squeeze=False, sharey=True)
    bins = np.linspace(-0.2, 1, 49)
    for ax, pair in zip(axes[0], pairs, strict=True):
        a, b = pair.split(" - ")
        both = per_feature[((per_feature.source == a) & (per_feature.target == b))
                           | ((per_feature.source == b) & (per_feature.target == a))].dropna()
        for kind, c in [("floor", "tab:gray"), ("cross", "tab:purple"), ("ceiling", "k")]:
            r = both[both.kind == kind].best_r
            ax.hist(r, bins=bins, density=True, histtype="step", lw=1.5, color=c,
                    label=f"{kind} (mean {r.mean():.2f})")
        ax.set(title=pair, xlabel="best Pearson r per feature (both directions)")
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("density")
    fig.tight_layout()
    return fig


@figure("09_dictionary_learning", "sae_training.png", "sae_training.csv")
def _sae_training(t, cfg):
    return sae_training(t["sae_training.csv"])


@figure("09_dictionary_learning", "sae_sweep.png", "sae_sweep.csv")
def _sae_sweep(t, cfg):
    sweep = t["sae_sweep.csv"]
    return sae_sweep(sweep, model_order(cfg, sweep.model))


@figure("09_dictionary_learning", "feature_density.png", "feature_selectivity.csv")
def _density(t, cfg):
    sel = t["feature_selectivity.csv"]
    return feature_density(sel, model_order(cfg, sel.model))


@figure("09_dictionary_learning", "top_images.png", "top_images.npz", "shown_features.csv", "dataset.json")
def _top_images(t, cfg):
    shown = t["shown_features.csv"]
    return top_images(t["top_images.npz"], shown, t["dataset.json"]["classes"], model_order(cfg, shown.model))


@figure("09_dictionary_learning", "logit_weights.png", "logit_weights.csv", "dataset.json")
def _logit_weights(t, cfg):
    w = t["logit_weights.csv"]
    return logit_weight_maps(w, t["dataset.json"]["classes"], model_order(cfg, w.model))


@figure("09_dictionary_learning", "matching_histograms.png", "matching_per_feature.csv", "prediction2.csv")
def _matching(t, cfg):
    return matching_histograms(t["matching_per_feature.csv"], list(t["prediction2.csv"].pair))


def steering_curves(steered: pd.DataFrame, majority: pd.DataFrame, models: list[str],
                    control: pd.DataFrame | None = None) -> plt.Figure:
    """One panel per model (rows) and shown feature (columns): the share of the images predicted as each class
    against the steering value v (the feature's class bold in the family colour, the others grey), the 0.5
    majority line, the v where the feature's class first holds the majority (dotted), and (control: rows of
    model, control, value, class_index, share) that class's mean share along random directions (dashed)."""
    n_cols = int(steered.groupby("model").feature.nunique().max())
    fig, axes = plt.subplots(len(models), n_cols, figsize=(2.3 * n_cols, 2.0 * len(models) + 0.4),
                             squeeze=False, sharex=True, sharey=True)
    for r, name in enumerate(models):
        features = list(dict.fromkeys(steered[steered.model == name].feature))
        for c, ax in enumerate(axes[r]):
            if c >= len(features):
                ax.axis("off")
                continue
            t = steered[(steered.model == name) & (steered.feature == features[c])]
            own = int(t.feature_class.iloc[0])
            for k, g in t.groupby("class_index"):
                style = dict(color=color(name), lw=2, zorder=3) if k == own else dict(color="0.75", lw=0.8)
                ax.plot(g.value, g.share, **style)
            ax.axhline(0.5, color="k", ls=":", lw=0.8)
            if control is not None:
                ctrl = control[(control.model == name) & (control.class_index == own)]
                mean = ctrl.groupby("value").share.mean()
                ax.plot(mean.index, mean.values, color=color(name), ls="--", lw=1)
            m = majority[(majority.model == name) & (majority.feature == features[c])]
            if len(m) and pd.notna(m.majority_value.iloc[0]):
                ax.axvline(m.majority_value.iloc[0], color=color(name), ls=":", lw=1)
            verdict = m.majority.iloc[0] if len(m) else "?"
            name_of_class = t.loc[t.class_index == own, "class"].iloc[0]
            ax.set_title(f"#{features[c]} {name_of_class}\nmajority at v={verdict}", fontsize=7)
            ax.tick_params(labelsize=7)
        axes[r, 0].set_ylabel(f"{name}\nshare of images", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("v (x mean activation norm)", fontsize=7)
    fig.suptitle("steering each shown feature: predicted class shares against v"
                 + " (dashed: the class along random directions)" * (control is not None), fontsize=9)
    fig.tight_layout()
    return fig


@figure("09_dictionary_learning", "steering.png", "steering.csv", "steering_majority.csv",
        "steering_control.csv")
def _steering(t, cfg):
    steered = t["steering.csv"]
    return steering_curves(steered, t["steering_majority.csv"], model_order(cfg, steered.model),
                           t["steering_control.csv"])
