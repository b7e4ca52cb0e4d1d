"""Feature inversion: the input stage inverts exactly, the distance falls at an early layer, penalties on
known images, seeded determinism, pixels in [0, 1], the model left as it was; picking a layer by depth."""

import json

import pandas as pd
import pytest
import torch
import torch.nn as nn

from utils import findings, models, plots
from utils.data import DatasetInfo, ImageSet
from utils.experiments import inversion as inv
from utils.hooks import stage_layers
from utils.results import save_arrays

OFF = dict(alpha_weight=0.0, tv_weight=0.0)  # penalties off


def tiny(name: str) -> nn.Module:
    torch.manual_seed(0)
    return models.create_model(name, num_classes=5, in_chans=1, img_size=8, mean=(0.3,), std=(0.2,))


def targets(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))  # (N, 1, 8, 8) in [0, 1]


class Stops(nn.Module):
    """input -> stem, then (explode) an error: inverting stem must not get there; `unused` is never run."""

    def __init__(self, explode: bool):
        super().__init__()
        self.input, self.stem, self.unused = nn.Identity(), nn.Linear(64, 4), nn.Linear(1, 1)
        self.explode = explode

    def forward(self, x):
        h = self.stem(self.input(x).flatten(1))
        if self.explode:
            raise RuntimeError("ran past the layer")
        return h


# ---------------------------------------------------------------- known answers


@pytest.mark.parametrize("layer", ["input", "input:input"])  # normalised pixels; the pixels themselves
def test_inverting_the_input_stage_recovers_the_images(layer):
    x0 = targets()
    out = inv.invert(tiny("test_mlp"), layer, x0, steps=100, **OFF)
    assert out.images.shape == x0.shape and out.layer == layer
    assert out.distance[0].min() > 0.2  # the noise starts far away
    assert out.pixel_error.max() < 0.02 and out.feature_distance.max() < 1e-3
    assert torch.allclose(out.pixel_error, (out.images - x0).pow(2).mean((1, 2, 3)).sqrt())


def test_no_steps_gives_the_seeded_noise_and_its_distance():
    x0, net = targets(), tiny("test_mlp")
    out = inv.invert(net, "input", x0, steps=0, **OFF)
    start = (0.5 + torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)) / 6).clamp(0, 1)
    assert torch.equal(out.images, start) and out.loss.shape == (1, 3)
    z, z0 = ((start - 0.3) / 0.2).flatten(1), ((x0 - 0.3) / 0.2).flatten(1)  # the input stage's map
    assert torch.allclose(out.feature_distance, (z - z0).pow(2).sum(1) / z0.pow(2).sum(1), rtol=1e-5)


def test_the_feature_distance_falls_at_an_early_layer():
    out = inv.invert(tiny("test_cnn"), "stem", targets(2), steps=60)  # random weights, default penalties
    assert out.distance.shape == out.loss.shape == (61, 2)
    # ~0.35 -> ~0.03 (the penalties hold it above 0 on noise targets)
    assert (out.distance[0] > 0.2).all() and (out.distance[-1] < 0.25 * out.distance[0]).all()
    assert (out.loss[-1] < 0.25 * out.loss[0]).all()
    assert torch.allclose(out.distance[-1], out.feature_distance)


def test_penalties_on_known_images():
    ramp = (torch.arange(5.0) * 0.1).expand(2, 3, 4, 5)  # rises 0.1 per column
    assert inv.total_variation(ramp, 2.0).tolist() == pytest.approx([0.01, 0.01])
    assert inv.total_variation(ramp, 1.0).tolist() == pytest.approx([0.1, 0.1], rel=1e-5)
    assert inv.alpha_norm(torch.full((1, 1, 2, 2), 0.5), 6).item() == 0.0
    assert inv.alpha_norm(torch.ones(1, 1, 2, 2), 6).item() == pytest.approx(1 / 64)


def test_the_tv_penalty_smooths_the_reconstruction():
    x0, net = targets(2), tiny("test_mlp")
    plain = inv.invert(net, "stem", x0, steps=40, **OFF)
    smooth = inv.invert(net, "stem", x0, steps=40, alpha_weight=0.0, tv_weight=1.0)
    assert (inv.total_variation(smooth.images, 2) < 0.5 * inv.total_variation(plain.images, 2)).all()


# ---------------------------------------------------------------- invariants


def test_the_same_seed_gives_the_same_images():
    x0, net = targets(2), tiny("test_mlp")
    a, b = (inv.invert(net, "blocks.0", x0, steps=10) for _ in range(2))
    c = inv.invert(net, "blocks.0", x0, steps=10, seed=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.loss, b.loss)
    assert (a.images - c.images).abs().max() > 0.01


def test_pixels_stay_in_the_unit_interval():
    x0 = (targets(2) > 0.5).float()  # black and white: a large step overshoots both ends
    out = inv.invert(tiny("test_mlp"), "input", x0, steps=5, lr=0.5, **OFF)
    assert out.images.min() == 0.0 and out.images.max() == 1.0


def test_the_model_is_left_as_it_was():
    net = tiny("test_cnn").train()  # BatchNorm: train mode would move the running statistics
    net.head.requires_grad_(False)
    flags = [p.requires_grad for p in net.parameters()]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    inv.invert(net, "layer1", targets(2), steps=3)
    assert net.training and [p.requires_grad for p in net.parameters()] == flags
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    assert all(p.grad is None for p in net.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def test_the_forward_stops_at_the_layer_and_names_are_checked():
    out = inv.invert(Stops(explode=True), "stem", targets(1), steps=2)
    assert out.feature_distance.shape == (1,)
    assert inv.hook_name("blocks.1", "input") == "blocks.1:input"
    with pytest.raises(ValueError, match="was not reached"):
        inv.invert(Stops(explode=False), "unused", targets(1), steps=1)
    with pytest.raises(ValueError, match="already names its point"):
        inv.hook_name("head:input", "input")
    with pytest.raises(ValueError, match="layer_point must be one of"):
        inv.hook_name("head", "middle")


def test_pick_at_depth():
    layers = ["a", "b", "c", "d", "e"]
    picks = [inv.pick_at_depth(layers, f) for f in (0.0, 0.3, 0.375, 0.5, 1.0)]
    assert picks == ["a", "b", "c", "c", "e"]  # 0.375 * 4 = 1.5 rounds up
    with pytest.raises(ValueError, match="fraction must be in"):
        inv.pick_at_depth(layers, 1.5)
    with pytest.raises(ValueError, match="no layers"):
        inv.pick_at_depth([], 0.5)


# ---------------------------------------------------------------- the 08 notebook's figure and findings


def test_the_inversion_figure_and_findings_read_the_saved_tables(tmp_path):
    folder = tmp_path / "08_activation_maximization"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"config": {"models": ["test_mlp", "test_cnn"],
                                                               "invert_depth": 0.25}}))
    x0, arrays, rows = targets(2), {}, []
    for kind in ("trained", "random"):
        for name in ("test_mlp", "test_cnn"):
            net = tiny(name)
            layer = inv.pick_at_depth(stage_layers(net), 0.25)
            out = inv.invert(net, layer, x0, steps=3)
            arrays[f"{kind}_{name}"] = out.images.numpy()
            rows += [{"model": name, "kind": kind, "layer": layer, "relative_depth": 0.0, "image": k,
                      "class": f"c{k}", "feature_distance": out.feature_distance[k].item(),
                      "pixel_error": 0.1 if name == "test_mlp" else 0.2, "start_pixel_error": 0.3}
                     for k in range(2)]
    save_arrays({"targets": x0.numpy(), **arrays}, folder / "inversion.npz")
    pd.DataFrame(rows).to_csv(folder / "inversion.csv", index=False)
    assert plots.draw(folder, "inversion.png")[0].stat().st_size > 1000
    table = pd.read_csv(folder / "inversion.csv")
    said = findings.features.inversion_sentences(table, ["test_mlp", "test_cnn"], {"invert_depth": 0.25})
    assert said[0].startswith("Feature inversion of 2 test images at relative depth 0.25 (test_mlp blocks.0 "
                              "at 0.00, test_cnn stem at 0.00)")
    assert "pixel RMSE test_mlp 0.100 and test_cnn 0.200 (the starting noise: 0.300)" in said[0]
    assert said[1].endswith("the closest reconstruction of the trained models is test_mlp's.")


def test_08s_inversion_table_by_hand():
    """Two networks x the first image of classes 0 and 1: one row each, the stage at the asked depth, the
    start error of the seeded noise, the images under "<kind>_<model>"."""
    labels = torch.tensor([1, 0, 1, 0])
    index = inv.first_of_each_class(labels, 2)
    assert index.tolist() == [1, 0]
    x0 = targets(4)[index]
    nets = {("trained", "test_mlp"): tiny("test_mlp"), ("random", "test_cnn"): tiny("test_cnn")}
    table, arrays = inv.inversion_table(nets, x0, index, ["zero", "one"], labels[index], depth=1.0, steps=0,
                                        family=str.upper)
    assert len(table) == 4 and set(arrays) == {"targets", "trained_test_mlp", "random_test_cnn"}
    assert table["class"].tolist() == ["zero", "one"] * 2 and table.test_index.tolist() == [1, 0] * 2
    assert (table.relative_depth == 1.0).all() and table.family.tolist()[0] == "TEST_MLP"
    assert table.layer.iloc[0] == stage_layers(nets["trained", "test_mlp"])[-1]
    start = (0.5 + torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)) / 6).clamp(0, 1)
    rmse = (start - x0).pow(2).mean((1, 2, 3)).sqrt().tolist()
    assert table.start_pixel_error.tolist() == pytest.approx(rmse * 2)
    assert table.pixel_error.tolist() == pytest.approx(rmse * 2)  # no steps: still the noise


def test_class_inversions_take_the_first_image_of_each_class_for_every_group():
    """Classes capped at the dataset's two; the first images of class 0 and 1 are at 1 and 0; trained then
    random, as inversion_table gives them on the flattened groups."""
    info = DatasetInfo("toy", 2, ("zero", "one"), 1, 8, (0.3,), (0.2,))
    images = (targets(4) * 255).to(torch.uint8)
    test = ImageSet(images, torch.tensor([1, 0, 1, 0]), info)
    groups = {"trained": {"test_mlp": tiny("test_mlp")}, "random": {"test_cnn": tiny("test_cnn")}}
    table, arrays = inv.class_inversions(groups, test, 5, depth=1.0, steps=0, family=str.upper)
    assert list(arrays) == ["targets", "trained_test_mlp", "random_test_cnn"]
    assert torch.equal(torch.from_numpy(arrays["targets"]), images[[1, 0]].float() / 255)
    assert table.test_index.tolist() == [1, 0] * 2 and table["class"].tolist() == ["zero", "one"] * 2
    assert table.kind.tolist() == ["trained"] * 2 + ["random"] * 2 and table.family.iloc[-1] == "TEST_CNN"
    start = (0.5 + torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) / 6).clamp(0, 1)
    rmse = (start - images[[1, 0]].float() / 255).pow(2).mean((1, 2, 3)).sqrt().tolist()
    assert table.pixel_error.tolist() == pytest.approx(rmse * 2)  # no steps: still the seeded noise


def test_inversion_summary_means_per_model_kind_and_layer_in_first_seen_order():
    table = pd.DataFrame({"model": ["b", "b", "a", "a"], "kind": ["trained"] * 4, "layer": ["x"] * 4,
                          "relative_depth": [0.5] * 4, "feature_distance": [0.1, 0.3, 1.0, 2.0],
                          "pixel_error": [0.2, 0.4, 0.0, 1.0], "start_pixel_error": [0.4] * 4,
                          "image": range(4)})
    summary = inv.inversion_summary(table)
    assert summary.index.tolist() == [("b", "trained", "x"), ("a", "trained", "x")]
    assert list(summary.columns) == ["relative_depth", "feature_distance", "pixel_error", "start_pixel_error"]
    assert summary.feature_distance.tolist() == pytest.approx([0.2, 1.5])
    assert summary.pixel_error.tolist() == pytest.approx([0.3, 0.5])
