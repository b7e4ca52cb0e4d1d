"""Findings of 08, 09 (see utils.findings)."""

from __future__ import annotations

from pathlib import Path

from . import _classes, _config, _csv, _f, _json, _order, chance_warning, family_list, finding  # noqa: F401

# ---------------------------------------------------------------- 08


@finding("08_activation_maximization")
def _units(folder: Path) -> list[str]:
    tiles = _csv(folder, "tile_shuffle.csv")
    models = _order(folder, tiles.model)
    out = chance_warning(tiles[tiles.grid == 1].set_index("model").top1.to_dict(), _classes(folder))
    verdicts = _json(folder, "prediction_1.json")
    out += [f"Class images: {verdicts['class_images']['verdict']}",
            f"Unit images: {verdicts['unit_images']['verdict']}"]
    for grid, g in tiles[tiles.grid > 1].groupby("grid"):
        moved = -g.set_index("model")["drop"].reindex(models)  # drop = intact - shuffled; it may be < 0
        out.append(f"Shuffling {grid}x{grid} tiles ({int(g.tile_px.iloc[0])} px) changes top-1 by "
                   + family_list(moved.to_dict(), signed=True)
                   + " (the original study's MLP on CIFAR-10, 4x4 tiles: 0.941 -> 0.734).")
    if (Path(folder) / "inversion.csv").exists():
        out += inversion_sentences(_csv(folder, "inversion.csv"), models, _config(folder))
    return out


def inversion_sentences(inverted, models: list[str], cfg: dict) -> list[str]:
    """What feature inversion at one relative depth reached per model, trained against random weights."""
    per = inverted.groupby(["model", "kind"]).agg(
        layer=("layer", "first"), depth=("relative_depth", "first"), distance=("feature_distance", "mean"),
        error=("pixel_error", "mean"), start=("start_pixel_error", "mean"))
    trained = per.xs("trained", level="kind").reindex([m for m in models if (m, "trained") in per.index])
    n = inverted.image.nunique()
    out = [f"Feature inversion of {n} test images at relative depth {cfg.get('invert_depth', '?')} ("
           + ", ".join(f"{m} {r.layer} at {r.depth:.2f}" for m, r in trained.iterrows())
           + f"): feature distance reached {family_list(trained.distance.to_dict())}, pixel RMSE "
           + family_list(trained.error.to_dict()) + f" (the starting noise: {_f(trained.start.mean())})."]
    if "random" in per.index.get_level_values("kind"):
        rand = per.xs("random", level="kind").reindex(trained.index)
        out.append("The same layers with random weights: pixel RMSE " + family_list(rand.error.to_dict())
                   + f"; the closest reconstruction of the trained models is {trained.error.idxmin()}'s.")
    return out


# ---------------------------------------------------------------- 09


@finding("09_dictionary_learning")
def _dictionaries(folder: Path) -> list[str]:
    metrics = _csv(folder, "sae_metrics.csv")
    first_seed = metrics.seed == metrics.seed.min()
    trained = metrics[(metrics.network == "trained") & first_seed].set_index("model")
    models = _order(folder, trained.index)
    out = chance_warning(trained.top1.to_dict(), _classes(folder))
    def per(column: str, digits: int = 3) -> str:
        return family_list(trained[column].reindex(models).to_dict(), digits)

    if "ce_increase" in trained:  # SAEBench's core metrics at the sparsity reached (older tables: without)
        reached = _and([f"{m} {trained.l0[m]:.1f} of {trained.k[m]:.0f}" for m in models])
        out.append(f"At matched sparsity (L0 reached {reached} active features; active share "
                   f"{per('active_share', 4)}) the SAEs explain {per('fve')} of the variance with "
                   f"{per('alive_fraction')} of their features alive; spliced in, they raise the "
                   f"cross-entropy by {per('ce_increase')} nats (recovering {per('ce_recovered')} of the "
                   f"zero-ablation's increase) and keep {per('accuracy_kept')} of the accuracy.")
    else:
        out.append(f"At matched sparsity (L0 {per('l0', 1)} active features) the SAEs explain {per('fve')} "
                   f"of the variance and keep {per('accuracy_kept')} of the accuracy when spliced in.")
    if (Path(folder) / "sae_sweep.csv").exists():
        out += sweep_sentences(_csv(folder, "sae_sweep.csv"), models)
    for v in _csv(folder, "prediction2.csv").itertuples():
        out.append(f"{v.pair}: cross-model matching {_f(v.cross)} against a floor of {_f(v.floor)} and a "
                   f"ceiling of {_f(v.ceiling)} closes {v.gap_closed:.2f} of the gap: Prediction 2 "
                   f"{'holds' if v.holds else 'does not hold'} for this pair.")
    if (Path(folder) / "steering_majority.csv").exists():
        out += steering_sentences(_csv(folder, "steering_majority.csv"), models)
    return out


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def sweep_sentences(sweep, models: list[str]) -> list[str]:
    """What Gao et al.'s ReLU'd TopK reached at the main k, and the FVE range over the sparsity sweep."""
    out, models = [], [m for m in models if m in set(sweep.model)]
    relu = sweep[sweep.activation == "topk"].set_index("model").reindex(models).dropna(subset=["l0"])
    if len(relu):
        out.append("With the ReLU after the top-k (Gao et al.'s TopK) at the same k, the SAEs reach L0 "
                   + _and([f"{m} {r.l0:.1f} of {r.k:.0f}" for m, r in relu.iterrows()]) + ".")
    signed = sweep[sweep.activation == "topk_signed"]
    if signed.setting.nunique() > 1:  # sparsest and densest SAE of each model
        ends = {m: signed[signed.model == m].sort_values("l0").iloc[[0, -1]] for m in models
                if (signed.model == m).any()}
        out.append("Over the sparsity sweep, from the sparsest to the densest SAE: " + "; ".join(
            f"{m} L0 {_f(g.l0.iloc[0], 0)} -> {_f(g.l0.iloc[1], 0)}, FVE {_f(g.fve.iloc[0])} -> "
            f"{_f(g.fve.iloc[1])}, CE increase {_f(g.ce_increase.iloc[0])} -> {_f(g.ce_increase.iloc[1])}"
            for m, g in ends.items()) + ".")
    return out


def steering_sentences(majority, models: list[str]) -> list[str]:
    """Per model: how many shown features steer the network to their own class, and at which v."""
    n, layers = majority.groupby("model").size().max(), ", ".join(dict.fromkeys(majority.layer))
    held_out = (f", held out from the {int(majority.chosen_on.iloc[0])} that chose the features"
                if "chosen_on" in majority else "")
    out = [f"Steering the {n} most class-selective features per model at {layers} (v in multiples of the "
           f"mean activation norm, {int(majority.n_images.iloc[0])} test images{held_out}), one model at a "
           "time:"]
    for name in [m for m in models if m in set(majority.model)]:
        m = majority[majority.model == name]
        won = m[m.majority != "never"]
        at = (f" (median |v| {won.majority_value.abs().median():g}; {(won.majority_value > 0).sum()} at "
              "positive v)") if len(won) else ""
        out.append(f"{name}: {len(won)} of {len(m)} features make their class the majority{at}; removing "
                   f"the direction (v = 0) leaves that class {_f(m.share_at_0.mean())} of the predictions on "
                   "average." + _steering_control(m))
    return out


def _steering_control(m) -> str:
    """The feature's class at its best along the feature against along random unit directions (same v)."""
    if "control_max_share" not in m:
        return ""
    return (f" At its best the class takes {_f(m.max_share.mean())} of the predictions along the feature and "
            f"{_f(m.control_max_share.mean())} along random unit directions at the same v (the control: they "
            f"make it the majority in {int(m.control_majorities.sum())} of {int(m.n_control.sum())} tries).")

