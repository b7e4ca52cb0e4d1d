"""Findings of 03 (see utils.findings)."""

from __future__ import annotations

from pathlib import Path

from . import _classes, _csv, _order, aligned, chance_warning, change, consistency, family_list, finding

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
    moved = table - table.loc["original"]  # signed: a modification may raise a model's top-1
    for name in ("patch_shuffle_4", "edges", "low_pass", "high_pass"):
        if name in moved.index:
            out.append(f"{name} changes top-1 by "
                       + family_list(moved.loc[name].reindex(models).to_dict(), signed=True) + ".")
    low = moved.drop(index="original").stack().idxmin()  # (modification, model)
    lead = "The largest drop" if moved.loc[low] < 0 else "No modification lowers top-1; the smallest change"
    out.append(f"{lead}: {low[0]} " + change(f"{low[1]}'s top-1", moved.loc[low], to=table.loc[low]) + ".")
    if (Path(folder) / "error_consistency.csv").exists():
        out += consistency(_csv(folder, "error_consistency.csv"),
                           {"original": "on the unmodified images",
                            "patch_shuffle_4": "on 4x4 patch-shuffled images",
                            "cue conflict": "on cue-conflict images (right = the shape class)"})
    out += aligned(folder, {"cue conflict": "on the cue-conflict images"})
    return out

