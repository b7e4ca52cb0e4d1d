"""Findings of 02 (see utils.findings)."""

from __future__ import annotations

from pathlib import Path

from . import _classes, _csv, _order, aligned, chance_warning, consistency, family_list, finding

# ---------------------------------------------------------------- 02


@finding("02_adversarial_robustness")
def _robustness(folder: Path) -> list[str]:
    clean = _csv(folder, "clean.csv").set_index("model")
    std = _csv(folder, "standard_settings.csv")
    models = _order(folder, clean.index)
    out = chance_warning(clean.attacked_top1.to_dict(), _classes(folder))
    n = int(std.n.iloc[0])
    pick = lambda setting: std[std.setting == setting].set_index("model").top1.reindex(models).to_dict()
    out.append(f"Under PGD-10 at L-inf 8/255 (first {n} test images) top-1 falls to "
               + family_list(pick("PGD-10"))
               + " from clean " + family_list(clean.attacked_top1.reindex(models).to_dict()) + ".")
    out.append("Under FGSM at 8/255: " + family_list(pick("FGSM")) + "; under PGD-10 at L2 0.5: "
               + family_list(pick("PGD-10 L2")) + ".")
    aa = _csv(folder, "autoattack.csv")
    last = aa[aa.stage == aa.stage.max()].set_index("model").top1.reindex(models).to_dict()
    out.append(f"AutoAttack at 8/255 (n={int(aa.n.iloc[0])}) leaves " + family_list(last) + ".")
    most = max(pick("PGD-10").items(), key=lambda kv: kv[1])[0]
    out.append(f"The highest PGD-10 top-1 on these test images is {most}'s.")
    orig = _csv(folder, "original_vs_ours.csv")
    ours = [c for c in orig.columns if c.startswith("top1_")][0]
    for attack, g in orig.groupby("attack", sort=False):
        out.append(f"{attack.upper()} at eps {g.eps.iloc[0]:.4f}: this run "
                   + family_list(dict(zip(g.model, g[ours], strict=False)))
                   + "; the original study on CIFAR-10 "
                   + family_list(dict(zip(g.family, g.original_top1_cifar10, strict=False)), 4)
                   + ".")
    tr = _csv(folder, "transfer.csv")
    off = tr[(tr.setting == "PGD-10") & (tr.source != tr.target)]
    rates = off.groupby("source").transfer_rate.mean().reindex(models).to_dict()
    out.append("PGD-10 images crafted on each model fool the other two at mean transfer rates "
               + family_list(rates)
               + " (of the images the target gets right and the attack breaks on the source).")
    if (Path(folder) / "error_consistency.csv").exists():
        out += consistency(_csv(folder, "error_consistency.csv"),
                           {"clean": f"on the first {n} clean test images",
                            "PGD-10": "on their PGD-10 images"})
    out += aligned(folder, {"clean": f"on the first {n} clean test images", "PGD-10": "under PGD-10"})
    return out

