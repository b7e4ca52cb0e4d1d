"""Feature visualisation: objectives, parametrisations, the optimisation loop and tile shuffles; known
answers (a linear model's optimum) and invariants."""


import pytest
import torch
import torch.nn as nn

from utils import models
from utils.experiments import feature_viz as fv


def tiny(name: str, channels: int = 1, size: int = 16) -> nn.Module:
    torch.manual_seed(0)
    return models.create_model(name, num_classes=5, in_chans=channels, img_size=size)


def linear(channels: int = 3, size: int = 12) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, 2))


# ---------------------------------------------------------------- objectives


def test_term_reductions_on_known_activations():
    units = torch.arange(12.0).view(2, 6)  # (B, D)
    tokens = torch.arange(24.0).view(2, 3, 4)  # (B, T, D)
    maps = torch.arange(2 * 2 * 9.0).view(2, 2, 3, 3)  # (B, C, H, W)
    assert fv.unit("l", 4)({"l": units}).tolist() == [4.0, 10.0]
    assert fv.unit("l", 1, "cls")({"l": tokens}).tolist() == [1.0, 13.0]
    assert fv.unit("l", 1, "mean")({"l": tokens}).tolist() == [5.0, 17.0]
    assert fv.unit("l", 1, "mean")({"l": maps}).tolist() == [13.0, 31.0]  # channel 1: 9..17 and 27..35
    assert fv.unit("l", 1, "center")({"l": maps}).tolist() == [13.0, 31.0]
    assert fv.unit("l", 0, relu=True)({"l": -units}).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="does not apply"):
        fv.unit("l", 0, "cls")({"l": maps})
    with pytest.raises(ValueError, match="reduce must be"):
        fv.unit("l", 0, "max")


def test_objectives_compose_by_sum_and_scale():
    acts = {None: torch.randn(3, 5), "a": torch.randn(3, 4, 2, 2)}
    a, b = fv.class_logit(2), fv.unit("a", 1)
    combined = 2 * a + b * -0.5
    assert torch.allclose(combined(acts), 2 * a(acts) - 0.5 * b(acts))
    assert combined.layers == {"a"} and combined.label == "2*class 2 + -0.5*a:mean 1"


@pytest.mark.parametrize("name, n, expected", [
    ("test_mlp", 3, ["stem", "blocks.0", "blocks.1"]),
    ("test_cnn", 3, ["stem", "layer1"]),
    ("test_vit", 2, ["patch_embed", "blocks.1"]),
])
def test_pick_layers(name, n, expected):
    assert fv.pick_layers(tiny(name), n) == expected


# ---------------------------------------------------------------- parametrisations and regularisers


def test_color_matrix_is_lucents_and_identity_for_grey():
    assert torch.equal(fv.color_matrix(1), torch.eye(1))
    m = fv.color_matrix(3)
    assert m.norm(dim=0).max() == pytest.approx(1.0)
    assert torch.allclose(m * 0.26 / m[0, 0], torch.tensor(fv.COLOR_CORRELATION_SVD_SQRT))


def test_fourier_image_of_one_channel_is_sigmoid_of_scaled_inverse_fft():
    img = fv.FourierImage((2, 1, 8, 8), torch.Generator().manual_seed(0), torch.device("cpu"))
    spectrum = torch.view_as_complex(img.param.detach()) * img.scale
    expected = torch.sigmoid(torch.fft.irfft2(spectrum, s=(8, 8), norm="ortho") / 4)
    assert torch.allclose(img.image(), expected)


def test_blur_keeps_constants_and_fourier_blur_keeps_the_mean():
    flat = torch.full((1, 3, 9, 9), 0.3)
    assert torch.allclose(fv.blur(flat, 5, 0.5), flat)
    assert fv.gaussian_kernel(5, 0.1)[2] == pytest.approx(1.0)  # sigma 0.1: practically no blur
    img = fv.FourierImage((1, 1, 8, 8), torch.Generator().manual_seed(0), torch.device("cpu"))
    before = img.param.detach().clone()
    img.after_step(5, 0.5)
    assert torch.equal(img.param[..., 0, 0, :], before[..., 0, 0, :])  # f = 0 untouched
    assert (img.param[..., 4, 4, :].abs() < before[..., 4, 4, :].abs()).all()  # highest frequency damped


def test_transforms_schedule_and_penalties():
    t = fv.Transforms(blur_size=5, tv=1.0, l2=1.0)
    assert (t.sigma(0, 11), t.sigma(5, 11), t.sigma(10, 11)) == pytest.approx((0.5, 0.3, 0.1))
    checker = (torch.arange(4)[:, None] + torch.arange(4)).remainder(2).float()[None, None]  # 0/1
    assert fv.Transforms(tv=1.0).penalty(checker).item() == pytest.approx(2.0)  # |diff| = 1 on both axes
    assert t.penalty(torch.full((2, 1, 4, 4), 0.5)).tolist() == [0.0, 0.0]
    assert fv.Transforms(l2=1.0).penalty(torch.ones(1, 1, 4, 4)).item() == pytest.approx(0.25)


# ---------------------------------------------------------------- the optimisation


@pytest.mark.parametrize("name", ["test_mlp", "test_cnn", "test_vit"])
@pytest.mark.parametrize("param", ["pixels", "fourier"])
@pytest.mark.parametrize("step_rule", ["normalized", "adam"])
def test_objective_ends_higher_and_images_stay_in_range(name, param, step_rule):
    net = tiny(name, channels=3)
    objs = [fv.class_logit(0), fv.unit(fv.pick_layers(net, 2)[-1], 1)]
    vis = fv.visualize(net, objs, steps=25, param=param, step_rule=step_rule, transforms=fv.ORIGINAL)
    assert vis.trace.shape == (26, 2) and vis.images.shape == (2, 3, 16, 16)
    assert (vis.trace[-1] > vis.trace[0]).all(), vis.trace[[0, -1]]
    assert vis.images.min() >= 0 and vis.images.max() <= 1


@pytest.mark.parametrize("param", ["pixels", "fourier"])
def test_images_stay_in_range_with_huge_steps(param):
    vis = fv.visualize(linear(), fv.class_logit(1), steps=5, param=param, lr=100.0, image_shape=(3, 12, 12))
    assert vis.images.min() >= 0 and vis.images.max() <= 1


def test_normalized_step_moves_pixels_by_step_over_mean_abs_gradient():
    net, shape = linear(), (3, 12, 12)
    x0 = fv.visualize(net, fv.class_logit(1), steps=0, image_shape=shape, transforms=fv.PLAIN).images
    x1 = fv.visualize(net, fv.class_logit(1), steps=1, lr=1e-3, image_shape=shape, transforms=fv.PLAIN).images
    w = net[1].weight[1].detach().view(1, *shape)  # the gradient of logit 1 with respect to the image
    inside = (x0 > 0.01) & (x0 < 0.99)  # not clipped
    assert torch.allclose((x1 - x0)[inside], (1e-3 * w / w.abs().mean()).expand_as(x0)[inside], atol=1e-6)


@pytest.mark.parametrize("param, step_rule, steps, min_cos", [
    ("pixels", "normalized", 400, 0.985),
    ("pixels", "adam", 200, 0.999),
    ("fourier", "adam", 400, 0.75),
])
def test_linear_model_optimum_points_along_the_weight_sign(param, step_rule, steps, min_cos):
    net = linear()
    w = net[1].weight[1].detach()
    vis = fv.visualize(net, fv.class_logit(1), steps=steps, param=param, step_rule=step_rule,
                       transforms=fv.PLAIN, image_shape=(3, 12, 12))
    cos = torch.cosine_similarity(vis.images.flatten() - 0.5, w.sign(), dim=0).item()
    assert cos > min_cos
    optimum = (net[1].bias[1] + w.clamp_min(0).sum()).item()  # the logit at x = 1 where w > 0, else 0
    assert vis.trace[-1].item() <= optimum + 1e-4
    assert vis.trace[-1].item() > vis.trace[0].item() + 0.5 * (optimum - vis.trace[0].item())


def test_fourier_direction_improves_with_steps():
    net = linear()
    sign = net[1].weight[1].detach().sign()
    cos = [torch.cosine_similarity(
        fv.visualize(net, fv.class_logit(1), steps=s, param="fourier", step_rule="adam", transforms=fv.PLAIN,
                     image_shape=(3, 12, 12)).images.flatten() - 0.5, sign, dim=0).item() for s in (50, 200)]
    assert cos[1] > cos[0] > 0.3


def test_same_seed_same_image_and_model_restored():
    net = tiny("test_cnn").train()
    kw = dict(steps=5, param="fourier", step_rule="adam", transforms=fv.ROBUST)
    a, b = (fv.visualize(net, fv.class_logit(1), seed=3, **kw) for _ in range(2))
    c = fv.visualize(net, fv.class_logit(1), seed=4, **kw)
    assert torch.equal(a.images, b.images) and torch.equal(a.trace, b.trace)
    assert not torch.equal(a.images, c.images)
    assert net.training and all(p.requires_grad and p.grad is None for p in net.parameters())


def test_image_shape_is_needed_for_models_without_a_config():
    with pytest.raises(ValueError, match="image_shape"):
        fv.visualize(linear(), fv.class_logit(0), steps=1)


# ---------------------------------------------------------------- tile shuffle


# ---------------------------------------------------------------- notebook 08's tables


def test_class_and_unit_objectives_and_the_units_table():
    objs = fv.class_objectives([0, 2], n_starts=2)
    assert [o.terms[0].index for o in objs] == [0, 2, 0, 2] and all(o.layers == set() for o in objs)
    units = fv.unit_objectives({"m": tiny("test_mlp")}, n_layers=2, n_units=3)
    assert [o.label for o in units["m"]] == [f"{layer}:mean {i}" for layer in ("stem", "blocks.1")
                                             for i in range(3)]
    table = fv.units_table(units)
    assert table.to_dict("list") == {"model": ["m"] * 6, "layer": ["stem"] * 3 + ["blocks.1"] * 3,
                                     "index": [0, 1, 2] * 2}


def test_visualize_groups_and_class_images_with_their_controls():
    """Every network of every group, in order, as visualize would; the blurred control of a zero objective
    without blur is the starting noise itself (a zero gradient never moves a pixel)."""
    a, b = linear(), nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 2))
    kw = dict(steps=3, transforms=fv.PLAIN, image_shape=(3, 12, 12), seed=2)
    objs = fv.class_objectives([0, 1], n_starts=1)
    noise = (0.5 + torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(2)) / 6).clamp(0, 1)
    vis, arrays = fv.class_images({"trained": {"a": a}, "random": {"b": b}}, objs, noise, **kw)
    assert list(vis) == [("trained", "a"), ("random", "b")]
    assert torch.equal(vis["random", "b"].images, fv.visualize(b, objs, **kw).images)
    assert list(arrays) == ["trained_class_a", "random_class_b", "noise", "blurred"]
    assert (arrays["random_class_b"] == vis["random", "b"].images.numpy()).all()
    assert (arrays["noise"] == noise.numpy()).all() and (arrays["blurred"] == noise.numpy()).all()
    per_model = fv.visualize_groups({"g": {"a": a, "b": b}}, {"a": objs[:1], "b": objs}, **kw)
    assert [v.images.shape[0] for v in per_model.values()] == [1, 2]
    assert list(fv.image_arrays(per_model, "unit")) == ["g_unit_a", "g_unit_b"]


def test_trace_table_and_its_ends_on_a_known_trace():
    objs = fv.class_objectives([3, 5], n_starts=2)  # image k: class [3, 5][k % 2], start k // 2
    trace = torch.arange(12.0).view(3, 4)  # (steps + 1, K): 2 steps, 4 images
    vis = {("trained", "m"): fv.Visualization(torch.zeros(4, 1, 2, 2), trace, ("",) * 4)}
    table = fv.trace_table(vis, objs, n_classes=2)
    assert list(table.columns) == ["model", "kind", "class", "start", "step", "objective"]
    assert len(table) == 12
    assert table["class"].tolist() == [3] * 3 + [5] * 3 + [3] * 3 + [5] * 3
    assert table.start.tolist() == [0] * 6 + [1] * 6 and table.step.tolist() == [0, 1, 2] * 4
    assert table.objective.tolist() == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
    ends = fv.trace_ends(table)
    assert list(ends.columns) == [0, 2] and ends.loc[("m", "trained")].tolist() == [1.5, 9.5]


def test_visualize_and_lucent_options_of_a_config():
    cfg = fv.config("smoke", jitter=2)
    opt = fv.visualize_options(cfg, seed=3)
    assert opt == dict(steps=40, param="pixels", step_rule="normalized", lr=0.01,
                       transforms=fv.Transforms(5, (0.5, 0.1), 2, 0.0, 0.0), seed=3, progress=False)
    lucent = fv.lucent_options(cfg, seed=3, progress=True)
    assert lucent == dict(steps=40, param="fourier", step_rule="adam", lr=0.05,
                          transforms=fv.Transforms(jitter=1), seed=3, progress=True)
