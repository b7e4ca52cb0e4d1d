"""Findings of 01 (see utils.findings)."""

from __future__ import annotations

from pathlib import Path

from . import _classes, _config, _csv, _f, _json, _order, chance_warning, family_list, finding  # noqa: F401

# ---------------------------------------------------------------- 01


@finding("01_vit_finetuning")
def _training(folder: Path) -> list[str]:
    cfg, summary = _config(folder), _csv(folder, "summary.csv").set_index("model")
    where = f"{cfg['dataset']} ({cfg['profile']})"
    acc = summary.test_top1.to_dict()
    out = chance_warning(acc, _classes(folder))
    out.append(f"On {where} the trio reaches test top-1 " + family_list(acc) + " (scored once, after training).")
    cost = ", ".join(f"{m} {summary.loc[m, 'params'] / 1e6:.2f}M parameters in {summary.loc[m, 'train_min']:.1f} min"
                     for m in summary.index)
    out.append(f"Cost: {cost} on {summary.device.iloc[0]}.")
    best = summary.test_top1.idxmax()
    mlp = summary.index[summary.family == "mlp"]
    if len(mlp) and mlp[0] != best:
        out.append(f"The most accurate is {best}; the MLP {mlp[0]} is "
                   f"{summary.test_top1[best] - summary.test_top1[mlp[0]]:.3f} behind it.")
    lr, bs = _csv(folder, "lr_sweep.csv"), _csv(folder, "batch_sweep.csv")
    pick = lr.loc[lr.val_top1.idxmax()]
    out.append(f"The learning-rate sweep of {pick.model} picks lr {pick.lr:g} on the validation split "
               f"(val top-1 {_f(pick.val_top1)}; tried {', '.join(f'{v:g}' for v in lr.lr)}).")
    b = bs.loc[bs.val_top1.idxmax()]
    out.append(f"At that lr and a fixed number of epochs, batch {int(b.batch_size)} validates best "
               f"({_f(b.val_top1)}; batches {', '.join(str(int(v)) for v in bs.batch_size)}).")
    if (Path(folder) / "zoo_summary.csv").exists():
        zoo = _csv(folder, "zoo_summary.csv")
        z = zoo.loc[zoo.val_top1.idxmax()]
        out.append(f"Of the ViT zoo ({', '.join(zoo.model)}), {z.model} ({z.family}) validates best: "
                   f"{_f(z.val_top1)}, test {_f(z.test_top1)}.")
    return out

