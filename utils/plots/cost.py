"""Figures of what models cost (05): throughput, accuracy against cost, reliability diagrams."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from .base import color, compact_number, figure, log_ticks, model_order

MODE_MARKERS = {"fp32": "o", "bf16": "s", "compile": "^", "channels_last": "D"}


def throughput_vs_batch(throughput: pd.DataFrame, models: list[str]) -> plt.Figure:
    """Images/s against batch size per mode (panels), one line per model; bars: the latency IQR."""
    modes = list(dict.fromkeys(throughput["mode"]))
    fig, axes = plt.subplots(1, len(modes), figsize=(4 * len(modes), 3.4), sharey=True, squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        for name in models:
            g = throughput[(throughput["mode"] == mode) & (throughput.model == name)]
            if g.empty:
                continue
            lo, hi = g.batch_size / g.latency_q75_ms * 1e3, g.batch_size / g.latency_q25_ms * 1e3
            ax.errorbar(g.batch_size, g.throughput, yerr=[g.throughput - lo, hi - g.throughput], marker="o",
                        capsize=3, color=color(name), label=name)
        ax.set(xscale="log", yscale="log", xlabel="batch size", title=mode)
        log_ticks(ax, throughput.batch_size, fmt=lambda v: f"{v:g}")
    axes[0, 0].set_ylabel("throughput (images/s)")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{throughput.device.iloc[0]}, median over calls, bars: IQR", fontsize=9)
    fig.tight_layout()
    return fig


def accuracy_vs_cost(cost: pd.DataFrame) -> plt.Figure:
    """Left: top-1 against best throughput per model x mode, the Pareto front (column on_front) outlined;
    right: top-1 against FLOPs per image."""
    on_front = cost.on_front.astype(bool).to_numpy()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for row, front_point in zip(cost.itertuples(), on_front, strict=True):
        ax1.scatter(row.best_throughput, row.top1, color=color(row.model),
                    marker=MODE_MARKERS.get(row.mode, "o"), s=60, edgecolor="k" if front_point else "none",
                    label=f"{row.model} {row.mode}")
    pts = cost[on_front].sort_values("best_throughput")
    ax1.step(pts.best_throughput, pts.top1, where="pre", color="k", lw=0.8, label="Pareto front")
    ax1.set(xscale="log", xlabel="best throughput (images/s)", ylabel="top-1", title="accuracy vs throughput")
    log_ticks(ax1, cost.best_throughput, fmt=compact_number)
    ax1.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax1.legend(fontsize=6)
    per_model = cost.drop_duplicates("model")
    for row in per_model.itertuples():
        ax2.scatter(row.flops_per_image, row.top1, color=color(row.model), s=60)
        ax2.annotate(row.model, (row.flops_per_image, row.top1), fontsize=8, xytext=(4, 4),
                     textcoords="offset points")
    ax2.set(xscale="log", xlabel="FLOPs per image (multiply-add = 2)", ylabel="top-1",
            title="accuracy vs FLOPs")
    log_ticks(ax2, per_model.flops_per_image, fmt=compact_number)
    ax2.margins(x=0.2)
    fig.tight_layout()
    return fig


def reliability(bins: pd.DataFrame, ece: dict[str, float], models: list[str]) -> plt.Figure:
    """Reliability diagram per model: accuracy per confidence bin against the diagonal, with its ECE."""
    fig, axes = plt.subplots(1, len(models), figsize=(3.3 * len(models), 3.3), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        b = bins[(bins.model == model) & (bins["count"] > 0)]
        width = float((bins.bin_hi - bins.bin_lo).iloc[0])
        ax.bar(b.bin_lo, b.accuracy, width=width, align="edge", color=color(model), alpha=0.7, edgecolor="k",
               label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="calibrated")
        ax.plot(b.confidence, b.accuracy, "k.", ms=4)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", title=f"{model}\nECE {ece[model]:.3f}")
    axes[0, 0].set_ylabel("accuracy in bin")
    axes[0, 0].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


@figure("05_inference_time", "throughput_vs_batch.png", "throughput.csv")
def _throughput(t, cfg):
    tp = t["throughput.csv"]
    return throughput_vs_batch(tp, model_order(cfg, tp.model))


@figure("05_inference_time", "accuracy_vs_cost.png", "cost.csv")
def _accuracy_vs_cost(t, cfg):
    return accuracy_vs_cost(t["cost.csv"])


@figure("05_inference_time", "reliability.png", "reliability.csv", "cost.csv")
def _reliability(t, cfg):
    bins, cost = t["reliability.csv"], t["cost.csv"]
    ece = cost.drop_duplicates("model").set_index("model")["ece"].to_dict()
    return reliability(bins, ece, model_order(cfg, bins.model))
