"""Findings of 05 (see utils.findings)."""

from __future__ import annotations

from pathlib import Path

from . import _classes, _config, _csv, _f, _json, _order, chance_warning, family_list, finding  # noqa: F401

# ---------------------------------------------------------------- 05


@finding("05_inference_time")
def _cost(folder: Path) -> list[str]:
    cost = _csv(folder, "cost.csv")
    per = cost.drop_duplicates("model").set_index("model")
    models = _order(folder, per.index)
    out = chance_warning(per.top1.to_dict(), _classes(folder))
    out.append("Per image: " + ", ".join(f"{m} {per.loc[m, 'params'] / 1e6:.2f}M parameters and "
                                         f"{per.loc[m, 'flops_per_image'] / 1e6:.1f} MFLOPs"
                                         for m in models) + ".")
    fp32 = cost[cost["mode"] == "fp32"].set_index("model")
    out.append("fp32 latency at batch 1: " + family_list(fp32.latency_ms.reindex(models).to_dict(), 2)
               + " ms; best throughput " + family_list(fp32.best_throughput.reindex(models).to_dict(), 0)
               + f" images/s on {cost.device.iloc[0]}.")
    out.append("Expected calibration error: " + family_list(per.ece.reindex(models).to_dict())
               + f" on the test set; the lowest is {per.ece.idxmin()}'s.")
    front = cost[cost.on_front.astype(bool)]
    out.append("On the accuracy-throughput Pareto front: " + ", ".join(f"{r.model} ({r.mode})"
                                                                         for r in front.itertuples()) + ".")
    return out

