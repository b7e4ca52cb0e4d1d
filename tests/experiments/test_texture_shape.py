"""Image modifications, Fourier cue conflict and the shape-bias metric: invariants and known answers."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from PIL import Image
from torchvision.transforms.functional import rgb_to_grayscale

from utils import metrics
from utils.experiments import texture_shape as ts


def rand(b=4, c=3, h=32, w=32, seed=0):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def cosine(size: int, cycles: int, amp: float = 0.25) -> torch.Tensor:
    """(1, 1, size, size): 0.5 + amp cos(2 pi f x) along the columns, f = cycles / size cycles per pixel."""
    col = 0.5 + amp * torch.cos(2 * math.pi * cycles / size * torch.arange(size, dtype=torch.float64))
    return col.expand(size, size)[None, None].float()


# ---------------------------------------------------------------- every modification


@pytest.mark.parametrize("name", [n for n in ts.MODIFICATIONS if n != "stylized"])
@pytest.mark.parametrize("channels", [1, 3])
def test_modifications_keep_shape_and_range(name, channels):
    x = rand(c=channels, h=28, w=28)
    y = ts.modify(name, x, seed=3)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 1
    assert torch.equal(y, ts.modify(name, x, seed=3))  # seeded: the same images for every model


def test_unknown_modification_lists_the_names():
    with pytest.raises(KeyError, match="patch_shuffle_4"):
        ts.modify("swirl", rand())


# ---------------------------------------------------------------- patch_shuffle


def patches_of(img: torch.Tensor, grid: int, p: int, o: int) -> list[torch.Tensor]:
    """The grid x grid patches (C, p, p) of one image (C, H, W), row by row."""
    cells = [(o + i * p, o + j * p) for i in range(grid) for j in range(grid)]  # top-left corners
    return [img[:, r : r + p, c : c + p] for r, c in cells]


@pytest.mark.parametrize(("size", "grid", "patch", "frame", "far_frame"),
                         [(28, 2, 14, 0, 0), (28, 3, 8, 2, 2), (28, 4, 7, 0, 0), (28, 8, 3, 2, 2),
                          (32, 3, 10, 1, 1), (31, 4, 7, 1, 2)])  # 31 / 4: no even frame exists
def test_patch_grids_are_centred(size, grid, patch, frame, far_frame):
    p, o = ts.patch_grid(size, grid)
    assert (p, o, size - (o + grid * p)) == (patch, frame, far_frame)


@pytest.mark.parametrize(("size", "grid"), [(32, 2), (32, 4), (32, 8), (28, 8), (28, 4), (28, 3)])
def test_patch_shuffle_moves_whole_patches(size, grid):
    x = rand(b=3, h=size, w=size)  # continuous values: every patch is unique
    y = ts.patch_shuffle(x, grid=grid, seed=1)
    p, o = ts.patch_grid(size, grid)
    for a, b in zip(x, y, strict=True):
        assert torch.equal(a.flatten().sort().values, b.flatten().sort().values)  # same multiset of pixels
        before, after = patches_of(a, grid, p, o), patches_of(b, grid, p, o)
        # each output patch is exactly one input patch, and every input patch is used once: a permutation
        sources = [[k for k, q in enumerate(before) if torch.equal(q, patch)] for patch in after]
        assert all(len(s) == 1 for s in sources)
        assert sorted(s[0] for s in sources) == list(range(grid * grid))
        assert any(s[0] != k for k, s in enumerate(sources))  # it did shuffle
        inner = torch.zeros(size, size, dtype=torch.bool)
        inner[o : o + grid * p, o : o + grid * p] = True
        assert torch.equal(a[:, ~inner], b[:, ~inner])  # the border a grid does not cover stays put


def test_patch_shuffle_seeds_and_per_image_permutations():
    x = rand(b=1).repeat(2, 1, 1, 1)
    y = ts.patch_shuffle(x, grid=4, seed=0)
    assert not torch.equal(y[0], y[1])  # two equal images get their own permutations
    assert not torch.equal(y, ts.patch_shuffle(x, grid=4, seed=1))


# ---------------------------------------------------------------- grayscale, occlude, edges


def test_grayscale_equal_channels_match_torchvision():
    x = rand()
    y = ts.grayscale(x)
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    torch.testing.assert_close(y[:, :1], rgb_to_grayscale(x), atol=1e-6, rtol=0)


def test_grayscale_is_the_identity_on_one_channel_and_says_so():
    x = rand(c=1)
    assert torch.equal(ts.grayscale(x), x)
    assert "identity" in ts.note("grayscale", channels=1, size=28)
    assert ts.note("grayscale", channels=3, size=32) == ""


def test_occlude_squares_relative_to_the_image():
    assert ts.occluder_side(32, 32) == 8 and ts.occluder_side(28, 28) == 7  # 8 squares, half the area
    x = torch.zeros(50, 1, 32, 32)
    y = ts.occlude(x, fill=1.0, seed=0)
    covered = y.mean(dim=(1, 2, 3))  # fraction of each image under a square
    assert covered.min() >= 64 / 1024 - 1e-6 and covered.max() <= 0.5 + 1e-6
    assert 0.3 < covered.mean() < 0.5  # overlaps allowed: about 1 - (1 - 1/16)^8 = 0.40 expected
    assert torch.equal(torch.unique(y), torch.tensor([0.0, 1.0]))
    assert not torch.equal(y, ts.occlude(x, fill=1.0, seed=1))


def test_edges_range_blank_on_constant_dark_on_a_step():
    assert ts.edges(rand()).min() >= 0 and ts.edges(rand()).max() <= 1
    for value in (0.0, 0.3, 0.7, 1.0):
        flat = torch.full((2, 3, 16, 16), value)
        assert torch.equal(ts.edges(flat), torch.ones_like(flat))  # blank white, no border edges
    step = torch.zeros(1, 1, 16, 16)
    step[..., 8:] = 1.0
    e = ts.edges(step)[0, 0]
    assert torch.equal(e[:, 7:9], torch.zeros(16, 2))  # the strongest edge is black after normalising
    assert torch.equal(e[:, :7], torch.ones(16, 7)) and torch.equal(e[:, 9:], torch.ones(16, 7))


# ---------------------------------------------------------------- low_pass, high_pass


def test_low_pass_of_a_constant_is_the_constant():
    for value in (0.0, 0.25, 1.0):
        x = torch.full((2, 3, 28, 28), value)
        torch.testing.assert_close(ts.low_pass(x, cutoff=0.05), x, atol=1e-6, rtol=0)


def test_high_pass_of_a_constant_is_flat_grey():
    x = torch.full((2, 3, 28, 28), 0.8)
    torch.testing.assert_close(ts.high_pass(x), torch.full_like(x, 0.5), atol=1e-6, rtol=0)


@pytest.mark.parametrize("cutoff", [0.05, 0.1, 0.2])
def test_filters_scale_a_cosine_by_the_gaussian_gain(cutoff):
    size, cycles = 32, 4  # f = 1/8 cycles per pixel
    gain = math.exp(-((cycles / size) ** 2) / (2 * cutoff**2))
    x = cosine(size, cycles)
    torch.testing.assert_close(ts.low_pass(x, cutoff), 0.5 + gain * (x - 0.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(ts.high_pass(x, cutoff), 0.5 + (1 - gain) * (x - 0.5), atol=1e-5, rtol=0)


def test_low_pass_removes_a_checkerboard():
    board = ((torch.arange(16)[:, None] + torch.arange(16)) % 2).float().expand(1, 1, 16, 16)
    torch.testing.assert_close(ts.low_pass(board, cutoff=0.1), torch.full_like(board, 0.5), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- cue conflict


def test_cue_conflict_phase_from_shape_amplitude_from_texture():
    shape, texture = rand(seed=1), rand(seed=2)
    out = ts.cue_conflict(shape, texture, clip=False).double()
    f_out, f_shape, f_tex = (torch.fft.fft2(t.double()) for t in (out, shape, texture))
    torch.testing.assert_close(f_out.abs(), f_tex.abs(), atol=1e-4, rtol=1e-5)
    defined = (f_tex.abs() > 1e-3) & (f_shape.abs() > 1e-3)  # phase is meaningless at ~zero amplitude
    unit = lambda z: z / z.abs()
    assert (unit(f_out) - unit(f_shape))[defined].abs().max() < 1e-4
    assert defined.float().mean() > 0.99


def test_cue_conflict_is_per_channel_clipped_and_the_identity_on_itself():
    shape, texture = rand(seed=1), rand(seed=2)
    raw = ts.cue_conflict(shape, texture, clip=False)
    assert raw.min() < 0 or raw.max() > 1  # the test below is not vacuous
    assert torch.equal(ts.cue_conflict(shape, texture), raw.clamp(0, 1))
    texture2 = texture.clone()
    texture2[:, 1:] = rand(seed=3)[:, 1:]  # other channels change, channel 0 must not
    torch.testing.assert_close(ts.cue_conflict(shape, texture2, clip=False)[:, 0], raw[:, 0])
    torch.testing.assert_close(ts.cue_conflict(shape, shape, clip=False), shape, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="shapes differ"):
        ts.cue_conflict(shape, texture[:, :1])


def test_partners_are_of_another_class_and_seeded():
    labels = torch.tensor([0, 0, 1, 2, 2, 2, 1, 0])
    p = ts.partners(labels, seed=0)
    assert (labels[p] != labels).all()
    assert torch.equal(p, ts.partners(labels, seed=0))
    big = torch.arange(1000) % 10
    assert not torch.equal(ts.partners(big, seed=0), ts.partners(big, seed=1))
    with pytest.raises(ValueError, match="two classes"):
        ts.partners(torch.zeros(4, dtype=torch.long))


# ---------------------------------------------------------------- shape bias


def bias(pred, shape, texture):
    return ts.shape_bias(torch.tensor(pred), torch.tensor(shape), torch.tensor(texture))


def test_shape_bias_all_shape_all_texture():
    r = bias([0, 1, 2, 3], [0, 1, 2, 3], [1, 2, 3, 0])
    assert (r["shape_bias"], r["shape_acc"], r["texture_acc"]) == (1.0, 1.0, 0.0)
    r = bias([1, 2, 3, 0], [0, 1, 2, 3], [1, 2, 3, 0])
    assert (r["shape_bias"], r["shape_acc"], r["texture_acc"]) == (0.0, 0.0, 1.0)


def test_shape_bias_tie_and_decisions_for_neither_cue():
    # 2 shape decisions, 2 texture decisions, 1 for neither cue (not a decision)
    r = bias([0, 1, 7, 8, 9], [0, 1, 2, 3, 4], [5, 6, 7, 8, 0])
    assert r["shape_bias"] == 0.5 and r["shape_acc"] == 0.4 and r["texture_acc"] == 0.4
    assert (r["shape_decisions"], r["texture_decisions"], r["n"], r["excluded"]) == (2, 2, 5, 0)
    r = bias([0, 7, 8, 9], [0, 1, 2, 3], [5, 7, 8, 4])  # 1 shape, 2 texture, 1 neither
    assert r["shape_bias"] == pytest.approx(1 / 3) and r["shape_acc"] == 0.25 and r["texture_acc"] == 0.5


def test_shape_bias_excludes_pairs_whose_cues_agree():
    # pairs 2 and 3 have shape == texture: they would count as both; they are left out entirely
    r = bias([0, 6, 2, 3], [0, 1, 2, 3], [5, 6, 2, 3])
    assert (r["n"], r["excluded"], r["shape_decisions"], r["texture_decisions"]) == (2, 2, 1, 1)
    assert r["shape_bias"] == 0.5 and r["shape_acc"] == 0.5 and r["texture_acc"] == 0.5


def test_shape_bias_without_decisions_is_nan():
    r = bias([9, 9], [0, 1], [2, 3])  # no decision for either cue
    assert math.isnan(r["shape_bias"]) and r["shape_acc"] == 0.0 and r["texture_acc"] == 0.0
    r = bias([0, 1], [0, 1], [0, 1])  # every pair excluded
    assert r["n"] == 0 and all(math.isnan(r[k]) for k in ("shape_bias", "shape_acc", "texture_acc"))


# ---------------------------------------------------------------- stylized (user-provided folder)


def test_stylized_without_a_folder_says_what_to_provide(data_root):
    with pytest.raises(FileNotFoundError, match="not reachable offline") as err:
        ts.modify("stylized", rand(b=2), index=torch.tensor([0, 1]), dataset="cifar10")
    assert str(data_root / "stylized" / "cifar10") in str(err.value) and "00000.png" in str(err.value)
    assert not ts.stylized_available("cifar10")


def test_usable_drops_stylized_without_its_images_and_says_where_they_go(data_root, capsys):
    names = ["original", "stylized", "edges"]
    assert ts.usable(names, "cifar10") == ["original", "edges"]
    assert str(data_root / "stylized" / "cifar10") in capsys.readouterr().out
    folder = ts.stylized_dir("cifar10")
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "00000.png")
    assert ts.usable(names, "cifar10") == names and capsys.readouterr().out == ""


@pytest.mark.parametrize("channels", [1, 3])
def test_stylized_reads_the_images_by_test_index(data_root, channels):
    folder = ts.stylized_dir("toy")
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 8, 8, channels), dtype=np.uint8)
    for i, img in enumerate(pixels):
        Image.fromarray(img.squeeze(-1) if channels == 1 else img).save(folder / f"{i:05d}.png")
    y = ts.modify("stylized", torch.zeros(2, channels, 8, 8), index=torch.tensor([2, 0]), dataset="toy")
    expected = torch.from_numpy(pixels[[2, 0]]).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(y, expected)
    with pytest.raises(FileNotFoundError, match="missing"):
        ts.modify("stylized", torch.zeros(1, channels, 8, 8), index=torch.tensor([5]), dataset="toy")


# ---------------------------------------------------------------- evaluation helpers


class Echo(nn.Module):
    """Predicts the class written in pixel (0, 0) of each image, as an integer over 10."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return nn.functional.one_hot((x[:, 0, 0, 0] * 10).round().long(), 3).float() + self.w


def test_predict_and_per_class_accuracy():
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    guess = torch.tensor([0, 1, 1, 1, 0, 2])
    x = torch.zeros(6, 1, 4, 4)
    x[:, 0, 0, 0] = guess / 10
    pred = metrics.predict_classes(Echo(), x, batch_size=4)
    assert torch.equal(pred, guess)
    df = ts.per_class_accuracy(pred, labels, ("a", "b", "c", "d"))
    assert list(df["class"]) == ["a", "b", "c", "d"] and list(df["n"]) == [2, 3, 1, 0]
    assert list(df["correct"]) == [1, 2, 1, 0]
    np.testing.assert_allclose(df["top1"][:3], [0.5, 2 / 3, 1.0])
    assert math.isnan(df["top1"][3])


class Const(nn.Module):
    """Always predicts class k (of 4)."""

    def __init__(self, k: int):
        super().__init__()
        self.logits = nn.Parameter(nn.functional.one_hot(torch.tensor(k), 4).float())

    def forward(self, x):
        return self.logits.expand(len(x), 4)


def test_modification_predictions_per_class_and_overall():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (40,), generator=gen)
    x = torch.rand(40, 1, 8, 8, generator=gen)
    x[:, 0, 0, 0] = torch.randint(0, 3, (40,), generator=gen) / 10  # what Echo will answer
    nets = {"echo": Echo(), "echo2": Echo()}
    names, classes = ["original", "grayscale"], ("a", "b", "c")
    predictions = ts.modification_predictions(nets, x, y, names, progress=False, index=torch.arange(40) + 100)
    assert len(predictions) == 2 * 2 * 40 and predictions.image.tolist()[:40] == list(range(100, 140))
    echo = metrics.predict_classes(Echo(), x)
    assert predictions.pred.tolist() == echo.tolist() * 4 and predictions.label.tolist() == y.tolist() * 4
    per_class = ts.per_class_table(predictions, classes, channels=1, size=8)
    assert len(per_class) == 2 * 2 * 3  # modification x model x class
    gray_notes = set(per_class["note"][per_class["modification"] == "grayscale"])
    assert gray_notes == {"identity: the images have 1 channel"}
    direct = ts.per_class_accuracy(metrics.predict_classes(Echo(), x), y, classes)
    for (mod, model), rows in per_class.groupby(["modification", "model"]):
        assert list(rows["correct"]) == list(direct["correct"]), (mod, model)  # grayscale: identity here
    overall = ts.overall_accuracy(per_class)
    assert len(overall) == 4 and (overall["n"] == 40).all()
    expected = (metrics.predict_classes(Echo(), x) == y).float().mean().item()
    np.testing.assert_allclose(overall["top1"], expected)
    np.testing.assert_allclose(overall["mean_class_top1"], direct["top1"].mean())


def test_cue_conflict_bias_scores_shape_and_texture_labels():
    y = torch.arange(60) % 4
    x = torch.rand(60, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    predictions = ts.cue_conflict_predictions({"zero": Const(0), "one": Const(1)}, x, y, seed=5)
    texture = y[ts.partners(y, seed=5)]
    assert len(predictions) == 120 and predictions.texture_label.tolist() == texture.tolist() * 2
    assert predictions.correct.tolist() == (y == 0).tolist() + (y == 1).tolist()  # the shape class named
    table = ts.cue_conflict_bias(predictions)
    for k, row in zip((0, 1), table.itertuples(), strict=True):
        assert row.shape_decisions == (y == k).sum() and row.texture_decisions == (texture == k).sum()
        assert row.n == 60 and row.excluded == 0
        assert row.shape_bias == pytest.approx(int((y == k).sum()) / int(((y == k) | (texture == k)).sum()))


def test_tile_shuffle_accuracy():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 28, 28)
    positional = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 4))
    pooled = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 4))  # sees no positions
    y = positional(x).argmax(1)
    y_pooled = pooled(x).argmax(1)
    out = ts.tile_shuffle_accuracy({"positional": positional}, x, y, grids=(2, 4))
    assert out.grid.tolist() == [1, 2, 4] and out.tile_px.tolist() == [28, 14, 7]
    assert out.top1.iloc[0] == 1.0 and (out.top1.iloc[1:] < 0.9).all() and out["drop"].iloc[0] == 0
    out = ts.tile_shuffle_accuracy({"pooled": pooled}, x, y_pooled)
    assert out.top1.tolist() == [1.0, 1.0, 1.0]


def test_examples_are_the_first_images_modified_and_in_cue_conflict_with_their_partners():
    x, y = rand(b=6, c=1, h=8, w=8), torch.tensor([0, 1, 2, 0, 1, 2])
    out = ts.examples(x, y, ["original", "grayscale"], ("a", "b", "c"), n=2, seed=3)
    partner = ts.partners(y, 3)[:2]
    assert out["columns"] == ["original", "grayscale", "cue conflict"] and out["classes"] == ["a", "b", "c"]
    assert torch.equal(out["original"], x[:2]) and torch.equal(out["grayscale"], x[:2])  # 1 channel
    assert torch.equal(out["cue conflict"], ts.cue_conflict(x[:2], x[partner]))
    assert out["labels"].tolist() == [0, 1] and torch.equal(out["partner_labels"], y[partner])
    assert (out["partner_labels"] != out["labels"]).all()


def test_per_class_wide_orders_rows_as_given_and_names_the_classes():
    per_class = pd.DataFrame({"modification": ["original"] * 4 + ["edges"] * 4,
                              "model": ["m", "m", "n", "n"] * 2, "class_index": [1, 0] * 4,
                              "top1": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]})
    wide = ts.per_class_wide(per_class, ["edges", "original"], ["n", "m"], ("zero", "one"))
    assert list(wide.index) == [("edges", "n"), ("edges", "m"), ("original", "n"), ("original", "m")]
    assert list(wide.columns) == ["zero", "one"]
    assert wide.loc[("edges", "n")].tolist() == [0.8, 0.7]
    assert wide.loc[("original", "m")].tolist() == [0.2, 0.1]


def test_predictions_of_no_nets_are_an_empty_table():
    x, y = rand(b=4, c=1, h=8, w=8), torch.tensor([0, 1, 0, 1])
    assert ts.modification_predictions({}, x, y, ["original"], progress=False).empty
    assert ts.cue_conflict_predictions({}, x, y).empty
