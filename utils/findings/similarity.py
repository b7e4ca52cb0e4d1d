"""Findings of 04 (see utils.findings)."""

from __future__ import annotations

from pathlib import Path

from . import _classes, _config, _csv, _f, _json, _order, chance_warning, family_list, finding  # noqa: F401

# ---------------------------------------------------------------- 04


@finding("04_feature_generalizability")
def _transfer(folder: Path) -> list[str]:
    sources = _csv(folder, "sources.csv")
    s0 = sources[sources.run.str.endswith("@source-s0")].set_index("model")
    out = chance_warning(s0.test_top1.to_dict(), _classes(folder))
    for r in _csv(folder, "cka_summary.csv").itertuples():
        out.append(f"CKA {r.pair}: the best-matching layers average {_f(r.cross)}, against a floor of "
                   f"{_f(r.floor)} (the other architecture at initialisation) and a seed-to-seed ceiling of "
                   f"{_f(r.ceiling)}: {r.gap_closed:.2f} of the gap closed; it peaks at {_f(r.peak)} "
                   f"({r.model_a} {r.peak_layer_a} with {r.model_b} {r.peak_layer_b}).")
    out += _suite(_csv(folder, "similarity_summary.csv"), _csv(folder, "similarity_agreement.csv"))
    if (Path(folder) / "aligned_similarity.csv").exists():
        out += _aligned(_csv(folder, "similarity_summary.csv"), _csv(folder, "aligned_similarity.csv"))
    probes = _csv(folder, "probes.csv")
    for model, g in probes.groupby("model", sort=False):
        inner = g[(g.relative_depth > 0) & (g.relative_depth < 1)]
        reach = inner[inner.top1 >= 0.95 * g.top1.max()]
        first = reach.iloc[0] if len(reach) else g.iloc[-1]
        out.append(f"Linear probes on {model}: pixels {_f(g.top1.iloc[0])}, logits {_f(g.top1.iloc[-1])}; "
                   f"95% of the best probe accuracy is first reached at {first.layer} (relative depth "
                   f"{first.relative_depth:.2f}).")
    tr = _csv(folder, "transfer.csv")
    for target, t in tr.groupby("target", sort=False):
        smallest = t[t.per_class == t.per_class.min()]
        best = smallest.loc[smallest.top1.idxmax()]
        out.append(f"{target}, {int(best.per_class)} images per class: the highest test top-1 (no validation "
                   f"number behind it) is {best.model} by {best.method} ({_f(best.top1)}); "
                   f"XGBoost on pixels {_f(smallest[smallest.family == '-'].top1.iloc[0])}.")
        probe = smallest[smallest.method == "linear probe"].set_index("model").top1
        if len(probe):
            out.append(f"{target}, {int(best.per_class)} per class, linear probe on frozen features: "
                       + family_list(probe.to_dict()) + f" test top-1; the highest is {probe.idxmax()}'s.")
        out += _fine_tunes(t)
    return out


def _fine_tunes(t) -> list[str]:
    """Fine-tune (new head), LP-FT and the linear probe per model at the smallest k fine-tuned."""
    ft = t[t.method.isin(["fine-tune", "LP-FT", "linear probe"])]
    if not (ft.method == "fine-tune").any():
        return []
    k = ft[ft.method == "fine-tune"].per_class.min()
    w = ft[ft.per_class == k].pivot_table(index="model", columns="method", values="top1", sort=False)
    w = w.reindex(columns=["fine-tune", "LP-FT", "linear probe"])
    scores = "; ".join(f"{m} " + " / ".join("-" if v != v else _f(v) for v in r) for m, r in w.iterrows())
    return [f"{t.target.iloc[0]}, {int(k)} per class, test top-1 of fine-tuning with a new head / LP-FT / "
            f"the linear probe LP-FT starts from (fine-tuning lr chosen on validation): {scores}."]


def _suite(summary, agreement) -> list[str]:
    """The four measures on the final features: each pair's gap closed by each, then whether they agree."""
    out = []
    for pair, g in summary.groupby("pair", sort=False):
        below = g[~g.above_null.astype(bool)].measure.tolist()
        null = f"not above its permutation null by {', '.join(below)}" if below else "above the null by all"
        out.append(f"Final features, {pair}: gap closed " + ", ".join(
            f"{r.measure} {r.gap_closed:.2f}" for r in g.itertuples()) + f" ({null}).")
    if len(agreement):
        picks = set(agreement.most_alike_a) | set(agreement.most_alike_b)
        verdict = (f"agree that {picks.pop()} is the most alike pair" if len(picks) == 1 else
                   f"disagree on the most alike pair ({', '.join(sorted(picks))})")
        rho = (f"; Spearman's correlation of their gap closed over the {agreement.pairs.iloc[0]} pairs is "
               f"{agreement.spearman.min():.2f} at the least" if agreement.pairs.iloc[0] >= 3 else "")
        out.append(f"The {len(set(agreement.measure_a) | set(agreement.measure_b))} measures {verdict}{rho}.")
    return out


def _aligned(own, control) -> list[str]:
    """Debiased CKA of the final features under the own recipes (04's sources, one seed) and under 01's
    aligned control (mean and t interval over the seeds), and which family the MLP is nearer under each."""
    cka = own[own.measure == "CKA"].set_index("pair").cross
    ci = lambda r: f"{_f(r.value)} [{_f(r.lo)}, {_f(r.hi)}]"
    pairs = "; ".join(f"{r.model_a} and {r.model_b} {ci(r)}" for r in control[control.kind == "families"]
                      .itertuples())
    ceiling = "; ".join(f"{r.model_a} {ci(r)}" for r in control[control.kind == "two seeds"].itertuples())
    out = [f"Family or recipe, debiased CKA of the final features (01's aligned control, mean over seeds, "
           f"95% t interval): {pairs}; the ceiling, each model against itself from another seed: {ceiling}."]
    diff = control[control.kind == "difference"]
    if len(diff) and {"mlp - cnn", "mlp - vit"} <= set(cka.index):
        d = diff.iloc[0]
        second, third = d.model_b.split(" - ")
        own_near = "CNN" if cka["mlp - cnn"] > cka["mlp - vit"] else "ViT"
        near = ("neither is nearer beyond the seed spread" if d.lo <= 0 <= d.hi
                else f"nearer {second if d.value > 0 else third}'s")
        out.append(f"Under the own recipes the MLP's final features are nearer the {own_near}'s (CKA "
                   f"{_f(cka['mlp - cnn'])} with the CNN, {_f(cka['mlp - vit'])} with the ViT; one seed); "
                   f"under the shared recipe CKA with {second} minus with {third} is {d.value:+.3f} "
                   f"[{d.lo:+.3f}, {d.hi:+.3f}]: {near}.")
    return out
