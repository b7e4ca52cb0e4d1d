"""Recurring patterns: autocorrelation against brute force, periodicity of tiled, noisy and smooth images,
and the Prediction 1 verdict on made-up scores."""

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from utils.experiments import feature_viz as fv
from utils.experiments import recurrence


def tiled(n: int, channels: int, size: int, period: int, seed: int = 0) -> torch.Tensor:
    """(n, C, size, size): a random period x period tile repeated (the last repeat cut at the border)."""
    tile = torch.rand(n, channels, period, period, generator=torch.Generator().manual_seed(seed))
    reps = math.ceil(size / period)
    return tile.repeat(1, 1, reps, reps)[..., :size, :size]


def test_autocorrelation_matches_brute_force():
    x = torch.rand(1, 2, 5, 6, generator=torch.Generator().manual_seed(1))
    g = x.double().mean(1)[0]
    g = g - g.mean()
    r = recurrence.autocorrelation(x)[0]
    assert r.shape == (9, 11) and r[4, 5] == pytest.approx(1.0)
    for dy, dx in [(1, 0), (0, 2), (-2, 3), (4, -5)]:
        a = g[max(0, -dy): 5 - max(0, dy), max(0, -dx): 6 - max(0, dx)]
        b = g[max(0, dy): 5 + min(0, dy), max(0, dx): 6 + min(0, dx)]
        assert r[4 + dy, 5 + dx].item() == pytest.approx(((a * b).mean() / g.pow(2).mean()).item())


@pytest.mark.parametrize("channels, size, period", [(1, 28, 7), (1, 28, 14), (3, 32, 8), (1, 28, 5)])
def test_periodicity_is_one_for_tiled_images(channels, size, period):
    assert recurrence.periodicity(tiled(4, channels, size, period)).min() > 0.99


def test_periodicity_is_low_for_noise_and_smooth_images():
    noise = recurrence.noise_images(32, (1, 28, 28), seed=0)
    assert recurrence.periodicity(noise).max() < 0.3
    ramp = torch.linspace(0, 1, 28).expand(1, 1, 28, 28)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    blob = torch.exp(-((yy - 10) ** 2 + (xx - 16) ** 2) / 50)[None, None]
    assert recurrence.periodicity(torch.cat([ramp, blob])).max() < 0.05
    assert recurrence.periodicity(torch.full((1, 3, 8, 8), 0.5)).item() == 0.0


def test_periodicity_counts_a_grating_along_one_axis():
    grating = 0.5 + 0.4 * torch.cos(2 * math.pi * torch.arange(28.0) / 7).expand(1, 1, 28, 28)
    assert recurrence.periodicity(grating).item() > 0.99
    assert recurrence.spectral_peak_share(grating).item() == pytest.approx(1.0, abs=1e-6)
    assert recurrence.spectral_peak_share(recurrence.noise_images(16, (1, 28, 28))).max() < 0.05


def scores(mlp_trained: float, cnn_trained: float, n: int = 12, blurred: float | None = None) -> pd.DataFrame:
    """Per-image scores: trained around the given mean, random weights and noise around 0.15, and the
    blurred-noise control around `blurred` when given."""
    rng = np.random.default_rng(0)
    rows = [{"family": f, "model": f"m_{f}", "kind": k, "periodicity": mean + 0.02 * rng.standard_normal()}
            for f, trained in (("mlp", mlp_trained), ("cnn", cnn_trained), ("vit", 0.15))
            for k, mean in (("trained", trained), ("random", 0.15)) for _ in range(n)]
    noise = 0.15 + 0.02 * rng.standard_normal(n)
    rows += [{"family": "-", "model": "noise", "kind": "noise", "periodicity": v} for v in noise]
    if blurred is not None:
        rows += [{"family": "-", "model": "blurred", "kind": "blurred", "periodicity": blurred + 0.02 * v}
                 for v in rng.standard_normal(n)]
    return pd.DataFrame(rows)


def test_beating_noise_is_not_enough_when_smoothing_alone_scores_as_high():
    """White noise scores ~0.15; the same noise through the blur schedule scores more (the issue measured
    0.26 +- 0.21): trained images at 0.3 beat noise and random weights but not the blurred control."""
    table = recurrence.recurrence_table(scores(0.3, 0.3, blurred=0.35)).set_index("family")
    assert table.loc["mlp", "z_vs_noise"] > 2 and table.loc["mlp", "z_vs_random"] > 2
    assert table.loc["mlp", "z_vs_blurred"] < 0 and not table.loc["mlp", "recurs"]
    verdict, text = recurrence.prediction_1(table.reset_index())
    assert not verdict and "blurred noise 0.35" in text


def test_the_blur_schedule_alone_raises_periodicity_above_white_noise():
    from utils import models
    from utils.experiments import feature_viz as fv

    net = models.create_model("test_mlp", num_classes=3, in_chans=1, img_size=28)
    zero = [0 * fv.class_logit(0) for _ in range(24)]
    blurred = fv.visualize(net, zero, steps=40, transforms=fv.ORIGINAL, seed=0).images
    noise = recurrence.noise_images(24, (1, 28, 28), seed=0)  # the same starting noise (same seed)
    assert recurrence.periodicity(blurred).mean() > recurrence.periodicity(noise).mean() + 0.03
    assert recurrence.contrast(blurred).mean() < 0.5 * recurrence.contrast(noise).mean()


@pytest.mark.parametrize("mlp, cnn, holds, says", [
    (0.6, 0.7, True, "holds"),
    (0.15, 0.7, False, "does not hold"),
    (0.6, 0.15, False, "not borne out"),
])
def test_prediction_1_verdict(mlp, cnn, holds, says):
    table = recurrence.recurrence_table(scores(mlp, cnn))
    assert table.family.tolist() == ["mlp", "cnn", "vit"]
    assert table.set_index("family").recurs.tolist() == [mlp > 0.3, cnn > 0.3, False]
    verdict, text = recurrence.prediction_1(table)
    assert verdict is holds and says in text


# ---------------------------------------------------------------- notebook 08's tables


def test_tiled_noise_repeats_the_seeded_noise_tile():
    x = recurrence.tiled_noise(3, (1, 28, 28), 4, seed=5)
    tile = recurrence.noise_images(3, (1, 7, 7), seed=5)
    assert x.shape == (3, 1, 28, 28) and torch.equal(x[..., 7:14, 21:28], tile)
    assert recurrence.periodicity(x).min() > 0.99


def test_periodicity_scores_label_every_image_set():
    noise = recurrence.noise_images(4, (1, 8, 8), seed=0)
    flat = torch.full((2, 1, 8, 8), 0.5)
    class_objs = fv.class_objectives([3, 7], n_starts=2)
    unit_objs = {"m": [fv.unit("stem", 0), fv.unit("blocks.0", 1)]}
    images = SimpleNamespace(images=noise)  # what visualize gives: .images (N, C, H, W)
    scores = recurrence.periodicity_scores(
        {("trained", "m"): images, ("random", "m"): images}, class_objs,
        {("trained", "m"): SimpleNamespace(images=noise[:2])}, unit_objs,
        {"noise": noise.numpy(), "flat": flat}, family=str.upper,
        fourier={("fourier", "m"): SimpleNamespace(images=noise[:2])})
    assert scores.target.tolist() == ["class"] * 8 + ["unit"] * 2 + ["control"] * 6 + ["class (Fourier)"] * 2
    assert scores.kind.tolist() == ["trained"] * 4 + ["random"] * 4 + ["trained"] * 2 + ["noise"] * 4 \
        + ["flat"] * 2 + ["trained"] * 2
    assert scores.model.tolist()[8:] == ["m"] * 2 + ["noise"] * 4 + ["flat"] * 2 + ["m"] * 2
    assert scores.family.tolist()[:2] == ["M", "M"] and scores.family.tolist()[10] == "-"
    assert scores["index"].tolist() == [3, 7, 3, 7] * 2 + [0, 1] + [-1] * 6 + [3, 7]
    assert scores.layer.tolist()[7:11] == ["logits", "stem", "blocks.0", "-"]
    p = recurrence.periodicity(noise).tolist()
    assert scores.periodicity.tolist() == pytest.approx(p * 2 + p[:2] + p + [0.0, 0.0] + p[:2])
    assert scores.contrast.tolist()[14:16] == [0.0, 0.0]


def test_periodicity_summary_by_target_model_and_kind():
    scores = pd.DataFrame({"target": ["unit", "unit", "class"], "model": ["m"] * 3, "kind": ["trained"] * 3,
                           "periodicity": [0.2, 0.4, 0.9], "spectral_peak_share": [0.1, 0.1, 0.5],
                           "contrast": [1.0, 3.0, 2.0]})
    summary = recurrence.periodicity_summary(scores)
    assert summary.target.tolist() == ["unit", "class"]  # first-seen order
    assert summary.columns.tolist()[3:6] == ["periodicity_mean", "periodicity_sem", "periodicity_count"]
    assert summary.periodicity_mean.tolist() == pytest.approx([0.3, 0.9])
    assert summary.periodicity_sem.iloc[0] == pytest.approx(0.1)  # std 0.1414 / sqrt(2)
    assert summary.contrast_mean.tolist() == pytest.approx([2.0, 2.0])
    assert summary.contrast_count.tolist() == [2, 1]


def test_recurrence_and_prediction_1_by_target():
    """Class images that recur in both families and unit images that do not: one table per target against
    the same controls, and the two verdicts under the keys prediction_1.json holds."""
    s = scores(0.6, 0.7)
    controls = s[s.kind == "noise"].assign(target="control")
    units = scores(0.15, 0.15)
    units = units[units.kind != "noise"]
    per_image = pd.concat([s[s.kind != "noise"].assign(target="class"), units.assign(target="unit"),
                           controls])
    recurs = recurrence.recurrence_by_target(per_image)
    assert recurs.target.tolist() == ["class"] * 3 + ["unit"] * 3
    assert recurs.recurs.tolist() == [True, True, False, False, False, False]
    alone = recurrence.recurrence_table(pd.concat([per_image[per_image.target == "class"], controls]))
    assert recurs.iloc[:3].drop(columns="target").equals(alone)
    verdicts = recurrence.prediction_1_by_target(recurs)
    assert list(verdicts) == ["class_images", "unit_images"]
    assert verdicts["class_images"]["holds"] is True and verdicts["unit_images"]["holds"] is False
    assert verdicts["unit_images"]["verdict"] == recurrence.prediction_1(recurs.iloc[3:])[1]
