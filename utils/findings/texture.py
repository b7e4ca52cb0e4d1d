"""Findings of 03 (see utils.findings)."""

from __future__ import annotations

from pathlib import Path

from . import _classes, _config, _csv, _f, _json, _order, chance_warning, family_list, finding  # noqa: F401

# ---------------------------------------------------------------- 03


@finding("03_texture_vs_shape_bias")
def _texture(folder: Path) -> list[str]:
    bias = _csv(folder, "shape_bias.csv").set_index("model")
    overall = _csv(folder, "modification_accuracy.csv")
    models = _order(folder, bias.index)
    table = overall.pivot(index="modification", columns="model", values="top1")
    out = chance_warning(table.loc["original"].to_dict(), _classes(folder))
    out.append("Shape bias (Fourier cue conflict): " + family_list(bias.shape_bias.reindex(models).to_dict())
               + " (Geirhos et al. 2019 on stylised ImageNet: humans 0.96, ResNet-50 0.21; "
               "another stimulus).")
    drops = table.loc["original"] - table
    for name in ("patch_shuffle_4", "edges", "low_pass", "high_pass"):
        if name in drops.index:
            out.append(f"{name} costs top-1 " + family_list(drops.loc[name].reindex(models).to_dict()) + ".")
    worst = drops.drop(index="original").stack().idxmax()
    out.append(f"The largest drop is {worst[1]} under {worst[0]} ({_f(drops.loc[worst])}).")
    return out

