"""Steering a dictionary feature: known answers through a linear head, the majority search on a constructed
case, relative values, and hooks and mode restored."""

import json

import pandas as pd
import pytest
import torch
import torch.nn as nn

from utils import findings, models, plots
from utils.experiments import steering
from utils.hooks import hooked, recording
from utils.metrics import predict_logits


def tiny(name: str) -> nn.Module:
    torch.manual_seed(0)
    return models.create_model(name, num_classes=5, in_chans=1, img_size=8, mean=(0.3,), std=(0.2,))


class Toy(nn.Module):
    """logits = (x0, x1, -x0, -100) of a (B, 1, 1, 2) image: steering x0 along e0 sets classes 0 and 2."""

    def __init__(self):
        super().__init__()
        self.input = nn.Identity()
        self.flatten = nn.Flatten()
        self.head = nn.Linear(2, 4)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, 0.0]]))
            self.head.bias.copy_(torch.tensor([0.0, 0.0, 0.0, -100.0]))

    def forward(self, x):
        return self.head(self.flatten(self.input(x)))


def toy_images() -> torch.Tensor:
    """5 images with x0 = 7 (removed by the edit) and x1 = 1..5: (5, 1, 1, 2)."""
    return torch.stack([torch.tensor([7.0, b]) for b in range(1, 6)]).view(5, 1, 1, 2)


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# ---------------------------------------------------------------- known answers


def test_steering_moves_the_logits_by_the_heads_response_to_the_direction():
    net, images = tiny("test_mlp"), torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    direction = 3 * torch.randn(32, generator=torch.Generator().manual_seed(2))  # not unit: steer normalises
    u = direction / direction.norm()
    values = [-2.0, 0.0, 0.5, 3.0]
    out = steering.steer(net, "head:input", direction, values, images, return_logits=True)  # (V, N, K)
    assert out.shape == (4, 6, 5)
    response = net.head.weight.detach() @ u  # (K,) logits per unit of u
    for v, logits in zip(values, out, strict=True):
        assert torch.allclose(logits - out[1], v * response.expand(6, 5), atol=1e-5)
    with torch.no_grad(), recording(net, ["head:input"]) as acts:
        net(images)
        x = acts["head:input"]  # (N, 32)
        removed = net.head(x - (x @ u)[:, None] * u)  # v = 0: the component along u is gone
    assert torch.allclose(out[1], removed, atol=1e-5)
    assert not torch.allclose(out[1], net.head(x), atol=1e-3)  # and it was there to begin with


def test_pinning_an_images_own_projection_changes_nothing_on_a_conv_layer():
    net, image = tiny("test_cnn"), torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), recording(net, ["layer1"]) as acts:
        net.eval()(image)
    x = acts["layer1"]  # (1, 16, H, W): the edit flattens and reshapes
    direction = torch.randn(x[0].numel(), generator=torch.Generator().manual_seed(4))
    own = (x.flatten() @ (direction / direction.norm())).item()
    out = steering.steer(net, "layer1", direction, [own, own + 5.0], image, return_logits=True)
    assert torch.allclose(out[0], predict_logits(net, image), atol=1e-5)
    assert (out[1] - out[0]).abs().max() > 1e-3  # the hook does act


def one_value_at_a_time(net, layer, direction, values, images):
    """The plain way: a whole forward per value (what steer did before issue 26)."""
    u = steering.unit_direction(direction)
    out = []
    for v in values:
        with torch.no_grad(), hooked(net, layer, lambda t, v=v: steering.edit(t, u, v)):
            out.append(predict_logits(net.eval(), images))
    return torch.stack(out)


@pytest.mark.parametrize(("name", "layer"), [("test_mlp", "head:input"), ("test_cnn", "layer1"),
                                             ("test_vit", "blocks.1"), ("test_vit", "head:input")])
def test_the_network_runs_to_the_layer_once_and_equals_a_forward_per_value(name, layer):
    net, images = tiny(name), torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), recording(net, [layer]) as acts:
        net.eval()(images[:1])
    direction = torch.randn(acts[layer][0].numel(), generator=torch.Generator().manual_seed(6))
    values = [-3.0, 0.0, 1.0, 4.0]
    first = next(m for m in net.modules() if not list(m.children()))  # the first leaf runs before any layer
    calls = []
    handle = first.register_forward_hook(lambda m, a, o: calls.append(len(a[0])))
    got = steering.steer(net, layer, direction, values, images, return_logits=True, batch_size=8)
    handle.remove()
    assert sum(calls) == len(images)  # each image once (2 images a forward: 8 // 4 values)
    assert calls == [2, 2, 2, 1]
    assert torch.allclose(got, one_value_at_a_time(net, layer, direction, values, images), atol=1e-5)


def test_a_layer_inside_a_residual_branch_is_a_shape_error_not_a_wrong_number():
    net, images = tiny("test_vit"), torch.rand(3, 1, 8, 8)
    hooks = lambda: [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in net.modules()]
    before = hooks()  # the model's own (its input adapter's pre-hook)
    with torch.no_grad(), recording(net, ["blocks.0.mlp"]) as acts:
        net.eval()(images[:1])
    with pytest.raises(RuntimeError, match="size"):  # x + mlp(x): 3 images against 2 x 3 edits
        steering.steer(net, "blocks.0.mlp", torch.randn(acts["blocks.0.mlp"][0].numel()), [0.0, 1.0], images)
    assert hooks() == before


def test_activation_scale_is_the_mean_vector_norm():
    acts = torch.tensor([[3.0, 4.0], [0.0, 0.0], [6.0, 8.0]]).view(3, 1, 2)
    assert steering.activation_scale(acts) == pytest.approx(5.0)


def test_relative_values_are_multiples_of_the_layers_mean_norm():
    net, images = tiny("test_mlp"), torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), recording(net, ["head:input"]) as acts:
        net.eval()(images)
    scale = steering.activation_scale(acts["head:input"])
    direction = torch.randn(32, generator=torch.Generator().manual_seed(6))
    rel = steering.steer(net, "head:input", direction, [0.5, -2.0], images, relative=True, return_logits=True,
                         batch_size=4)
    raw = steering.steer(net, "head:input", direction, [0.5 * scale, -2.0 * scale], images,
                         return_logits=True)
    assert torch.allclose(rel, raw, atol=1e-5)
    table = steering.steering_table(net, "head:input", direction, [0.5, -2.0], images, 5, relative=True)
    assert table.raw_value.tolist() == pytest.approx([0.5 * scale] * 5 + [-2.0 * scale] * 5, rel=1e-6)


# ---------------------------------------------------------------- the table and the majority


def toy_table() -> pd.DataFrame:
    return steering.steering_table(Toy(), "head:input", torch.tensor([1.0, 0.0]), list(range(-6, 7)),
                                   toy_images(), num_classes=4)


def test_the_table_counts_predictions_per_value_and_class():
    table = toy_table()
    assert len(table) == 13 * 4 and table.groupby("value").share.sum().tolist() == pytest.approx([1.0] * 13)
    at = lambda v: table[table.value == v].sort_values("class_index")
    # logits (v, b, -v, -100), b = 1..5, ties to the lowest class: class 0 where b <= v, class 2 where b < -v
    assert at(3).share.tolist() == pytest.approx([0.6, 0.4, 0.0, 0.0])
    assert at(-3).share.tolist() == pytest.approx([0.0, 0.6, 0.4, 0.0])
    assert at(-4)["count"].tolist() == [0, 2, 3, 0]


def test_majority_value_finds_where_a_class_takes_over():
    table = toy_table()
    assert steering.majority_value(table, 0) == 3.0  # 3 of 5 at v = 3, 2 of 5 at v = 2
    assert steering.majority_value(table, 2) == -4.0
    assert steering.majority_value(table, 1) == 0.0
    assert steering.majority_value(table, 3) is None
    assert steering.majority_value(table, 2, sign="positive") is None
    assert steering.majority_value(table, 0, sign="negative") is None


def test_majority_is_strict_and_searches_outward_positive_first():
    table = pd.DataFrame({"value": [-2.0, -1.0, 0.0, 1.0, 2.0], "class_index": 0,
                          "share": [0.9, 0.5, 0.2, 0.5, 0.9]})  # exactly half is no majority
    assert steering.majority_value(table, 0) == 2.0
    assert steering.majority_value(table, 0, sign="negative") == -2.0
    with pytest.raises(ValueError, match="sign must be one of"):
        steering.majority_value(table, 0, sign="up")


# ---------------------------------------------------------------- hooks and mode


def test_hooks_and_mode_are_restored_also_after_an_error():
    net, images = tiny("test_mlp").train(), torch.rand(3, 1, 8, 8)
    steering.steer(net, "head:input", torch.randn(32), [1.0], images)
    assert net.training and no_hooks(net)
    with pytest.raises(ValueError, match="direction has 7 dims but the layer's vectors have 32"):
        steering.steer(net, "head:input", torch.randn(7), [1.0], images)
    assert net.training and no_hooks(net)
    with pytest.raises(ValueError, match="non-zero norm"):
        steering.steer(net, "head:input", torch.zeros(32), [1.0], images)
    with pytest.raises(ValueError, match="predicts class 2; num_classes=2 is too few"):
        steering.steering_table(Toy(), "head:input", torch.tensor([1.0, 0.0]), [-6.0], toy_images(), 2)


def test_features_are_chosen_and_steered_on_disjoint_halves():
    for n in (0, 1, 7, 256, 2000):
        choose, steer = steering.disjoint_halves(n, seed=0)
        assert len(choose) == n // 2 and len(steer) == n - n // 2
        assert not set(choose.tolist()) & set(steer.tolist())  # disjoint
        assert sorted(choose.tolist() + steer.tolist()) == list(range(n))  # and together every image
        assert (choose.diff() > 0).all() and (steer.diff() > 0).all()  # sorted
    a, b = steering.disjoint_halves(2000, seed=0), steering.disjoint_halves(2000, seed=1)
    assert torch.equal(a[0], steering.disjoint_halves(2000, seed=0)[0]) and not torch.equal(a[0], b[0])
    assert 400 < (a[0] < 1000).sum() < 600  # a shuffle, not the first half (a folder may be sorted by class)


# ---------------------------------------------------------------- the 09 notebook's figure and findings


def test_the_steering_figure_and_findings_read_the_saved_tables(tmp_path):
    folder = tmp_path / "09_dictionary_learning"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"config": {"models": ["test_mlp"]}}))
    # two "features" of the toy: e0 steers class 0 (majority at v = 3) or class 2 (at v = -4); e1 class 1
    parts, rows, values = [], [], list(range(-6, 7))
    # the control direction e1 pins x1 and keeps x0 = 7: logits (7, v, -7, -100) give class 0 at every v <= 6
    control = steering.steering_table(Toy(), "head:input", torch.tensor([0.0, 1.0]), values, toy_images(), 4)
    for f, (direction, own) in enumerate([([1.0, 0.0], 0), ([0.0, 1.0], 3)]):
        t = steering.steering_table(Toy(), "head:input", torch.tensor(direction), values, toy_images(), 4)
        parts.append(t.assign(model="test_mlp", feature=f, feature_class=own, **{"class": "c"}))
        v, mine = steering.majority_value(t, own), t[t.class_index == own]
        rows.append({"model": "test_mlp", "layer": "head:input", "feature": f, "feature_class": own,
                     "majority_value": v, "majority": "never" if v is None else f"{v:g}",
                     "share_at_0": mine[mine.value == 0].share.item(), "max_share": mine.share.max(),
                     "n_images": 5, "chosen_on": 6,
                     "control_max_share": control[control.class_index == own].share.max(),
                     "control_majorities": int(steering.majority_value(control, own) is not None),
                     "n_control": 1})
    pd.concat(parts).to_csv(folder / "steering.csv", index=False)
    pd.DataFrame(rows).to_csv(folder / "steering_majority.csv", index=False)
    control.assign(model="test_mlp", control=0).to_csv(folder / "steering_control.csv", index=False)
    assert plots.draw(folder, "steering.png")[0].stat().st_size > 1000
    said = findings.features.steering_sentences(pd.read_csv(folder / "steering_majority.csv"), ["test_mlp"])
    assert said[0].startswith("Steering the 2 most class-selective features per model at head:input")
    assert "5 test images, held out from the 6 that chose the features" in said[0]
    # feature 0 wins at v = 3 (positive); feature 1's class 3 (bias -100) never does; v = 0: class 0 holds
    # 0 of 5 (x0 removed, logits (0, b, 0, -100) pick class 1), class 3 holds 0
    # at its best (v = 6) e0 gives class 0 all 5 images, class 3 none: mean 0.5; the control e1 the same
    assert said[1] == ("test_mlp: 1 of 2 features make their class the majority (median |v| 3; 1 at "
                       "positive v); removing the direction (v = 0) leaves that class 0.000 of the "
                       "predictions on average. At its best the class takes 0.500 of the predictions along "
                       "the feature and 0.500 along random unit directions at the same v (the control: they "
                       "make it the majority in 1 of 2 tries).")


def test_steer_features_tables_each_feature_and_the_random_control():
    """Toy: feature 0 is e0 (class 0 wins from v = 3, class 2 from v = -4), feature 1 is e1 (x0 = 7 stays, so
    class 1 never wins within |v| <= 6); two random directions as the control, as computed by hand."""
    directions = torch.eye(2)  # (D, F)
    features = pd.DataFrame({"feature": [0, 1], "class_index": [0, 1], "youden": [0.9, 0.5]})
    values = [float(v) for v in range(-6, 7)]
    steered, control, majority = steering.steer_features(
        Toy(), "head:input", directions, features, values, toy_images(), ["a", "b", "c", "d"], n_control=2,
        relative=False)
    assert len(steered) == 2 * 13 * 4 and set(steered.feature) == {0, 1} and len(control) == 2 * 13 * 4
    m = majority.set_index("feature")
    assert m.loc[0, "majority_value"] == 3.0 and m.loc[0, "majority"] == "3" and m.loc[0, "class"] == "a"
    assert m.loc[0, "share_at_0"] == 0.0 and m.loc[0, "max_share"] == 1.0  # x0 = 0: class 1 (x1 >= 1) wins
    own = steering.steering_table(Toy(), "head:input", torch.tensor([0.0, 1.0]), values, toy_images(), 4)
    assert steering.majority_value(own, 1) is None and m.loc[1, "majority"] == "never"
    by_hand = [steering.steering_table(Toy(), "head:input", r, values, toy_images(), 4)
               for r in torch.randn(2, 2, generator=torch.Generator().manual_seed(0))]
    expected = sum(t[t.class_index == 0].share.max() for t in by_hand) / 2
    assert m.loc[0, "control_max_share"] == pytest.approx(expected) and m.loc[0, "n_control"] == 2


def test_steer_models_joins_the_models_draws_controls_in_turn_and_notes_the_choosing_images(capsys):
    """Two toy models: each model's tables are steer_features', the random directions of the second drawn
    after the first's from one generator; chosen_on follows n_images."""
    features = pd.DataFrame({"feature": [0], "class_index": [0], "youden": [0.9]})
    values, classes = [-4.0, 0.0, 3.0], ["a", "b", "c", "d"]
    both = lambda a, b: {"x": a, "y": b}
    steered, control, majority = steering.steer_models(
        both(Toy(), Toy()), both("head:input", "head:input"), both(torch.eye(2), torch.eye(2)),
        both(features, features), values, toy_images(), classes, both("mlp", "cnn"), n_control=1, seed=5,
        relative=False, chosen_on=6)
    gen = torch.Generator().manual_seed(5)
    by_hand = [steering.steer_features(Toy(), "head:input", torch.eye(2), features, values, toy_images(),
                                       classes, n_control=1, generator=gen, relative=False) for _ in range(2)]
    pd.testing.assert_frame_equal(control, pd.concat([by_hand[0][1].assign(model="x"),
                                                      by_hand[1][1].assign(model="y")], ignore_index=True))
    cols = majority.columns.tolist()
    assert cols[:2] == ["model", "family"] and cols[cols.index("n_images") + 1] == "chosen_on"
    assert majority.family.tolist() == ["mlp", "cnn"] and majority.chosen_on.tolist() == [6, 6]
    assert majority.majority.tolist() == ["3", "3"] and len(steered) == 2 * 3 * 4
    assert steered.columns.tolist()[-4:] == ["model", "feature", "feature_class", "class"]
    said = "1 features and 1 random directions steered at 3 values on 5 images"
    assert capsys.readouterr().out.count(said) == 2
    one = steering.steer_models({"x": Toy()}, {"x": "head:input"}, {"x": torch.eye(2)}, {"x": features},
                                values, toy_images(), classes, {"x": "mlp"}, relative=False)
    assert "chosen_on" not in one[2]
