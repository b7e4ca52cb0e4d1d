"""Findings of 01 (see utils.findings)."""

from __future__ import annotations

from pathlib import Path

from . import _classes, _config, _csv, _f, aligned, chance_warning, change, consistency, family_list, finding

# ---------------------------------------------------------------- 01


@finding("01_vit_finetuning")
def _training(folder: Path) -> list[str]:
    cfg, summary = _config(folder), _csv(folder, "summary.csv").set_index("model")
    where = f"{cfg['dataset']} ({cfg['profile']})"
    acc = summary.test_top1.to_dict()
    out = chance_warning(acc, _classes(folder))
    out.append(f"On {where} the trio reaches test top-1 " + family_list(acc)
               + " (scored once, after training).")
    cost = ", ".join(f"{m} {summary.loc[m, 'params'] / 1e6:.2f}M parameters in "
                     f"{summary.loc[m, 'train_min']:.1f} min" for m in summary.index)
    out.append(f"Cost: {cost} on {summary.device.iloc[0]}.")
    best = summary.test_top1.idxmax()
    mlp = summary.index[summary.family == "mlp"]
    if len(mlp) and mlp[0] != best:
        out.append(f"The highest test top-1 is {best}'s; the MLP {mlp[0]} is "
                   f"{summary.test_top1[best] - summary.test_top1[mlp[0]]:.3f} behind it.")
    if (Path(folder) / "error_consistency.csv").exists():
        out += consistency(_csv(folder, "error_consistency.csv"), {"clean": "on the clean test set"})
    out += aligned(folder, {"clean": "on the clean test set"})
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
    if (Path(folder) / "tnt_sweep.csv").exists():
        out += _tnt_sweep(_csv(folder, "tnt_sweep.csv"))
    if (Path(folder) / "perceiver_ladder.csv").exists():
        out += _ladder(_csv(folder, "perceiver_ladder.csv"))
    return out


def _tnt_sweep(sweep) -> list[str]:
    point = lambda r: f"({int(r.patch)}, {int(r.pixel)})"
    best, fast = sweep.loc[sweep.val_top1.idxmax()], sweep.loc[sweep.images_per_s.idxmax()]
    tried = ", ".join(f"{point(r)} {_f(r.val_top1)}" for r in sweep.itertuples())
    speed = (f" and trains fastest too ({fast.images_per_s:,.0f} images/s)" if fast.run == best.run else
             f"; {point(fast)} trains fastest ({fast.images_per_s:,.0f} images/s against "
             f"{best.images_per_s:,.0f} for the best)")
    return [f"TnT {sweep.model.iloc[0]}, (patch, pixel) at one learning rate: validation top-1 {tried}; "
            f"{point(best)} validates best (test {_f(best.test_top1)}, {best.params / 1e6:.2f}M parameters)"
            f"{speed}."]


def _ladder(ladder) -> list[str]:
    ours, study = ladder[ladder.source == "this run"], ladder[ladder.source != "this run"]
    rungs = ours[ours.setting == "ladder"].sort_values("params")
    where = "; ".join(dict.fromkeys(ours.data))
    each = lambda t: ", ".join(f"{r.rung} {r.params / 1e6:.2f}M {_f(r.test_top1)}" for r in t.itertuples())
    out = [f"Perceiver ladder on {where} (rung, parameters, test top-1): {each(rungs)}."]
    if len(rungs) > 1:
        gain = rungs.test_top1.iloc[-1] - rungs.test_top1.iloc[0]
        ratio = rungs.params.iloc[-1] / rungs.params.iloc[0]
        out[-1] += (f" Going from the smallest to the largest rung ({ratio:.1f}x the parameters) "
                    + change("test top-1", gain) + ".")
    if len(study):
        s = study.sort_values("params")
        span = s.test_top1.iloc[-1] - s.test_top1.iloc[0]
        out.append(f"The ViT-zoo study on CIFAR-10: {each(s)} ({span:+.3f} over its ladder).")
    for r in ours[ours.setting != "ladder"].itertuples():
        out.append(f"{r.setting.capitalize()} ({r.run}): test top-1 {_f(r.test_top1)}, "
                   f"{r.change_vs_rung:+.3f} against its rung.")
    return out

