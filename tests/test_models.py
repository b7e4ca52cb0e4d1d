"""utils.models: every registered model end to end, parameter counts, the input stage, checkpoints."""

import json
import math

import pytest
import safetensors.torch
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import models
from utils.models.common import InputAdapter

# Fashion-MNIST and CIFAR shapes; every registered name is built (forward + backward) at both.
SHAPES = [(3, 32), (1, 28)]


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _paper_count(blocks: int, width: int, d_in: int = 3 * 64 * 64, classes: int = 10, e: int = 4) -> int:
    """Hand count of the paper's BottleneckMLP: linear_in, blocks (LayerNorm, W1, W2), linear_out."""
    block = 2 * width + (width * e * width + e * width) + (e * width * width + width)
    return d_in * width + width + blocks * block + width * classes + classes


@pytest.mark.parametrize("chans,size", SHAPES)
@pytest.mark.parametrize("name", models.list_models())
def test_forward_backward(name, chans, size):
    torch.manual_seed(0)
    model = models.create_model(name, num_classes=7, in_chans=chans, img_size=size)
    x = torch.rand(2, chans, size, size)  # [0, 1] pixels
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
    assert next(iter(model.named_children()))[0] == "input"
    assert isinstance(model.input, InputAdapter)
    assert model.model_name == name


def test_paper_mlp_parameter_counts():
    with torch.device("meta"):  # counting only: no memory, no init time
        counts = {n: _count(models.create_model(n)) for n in models.list_models("mlp_b*_wi*")}
        with_final_norm = _count(models.create_model("mlp_b12_wi1024", final_norm=True))
    for blocks, width in [(12, 1024), (12, 512), (6, 1024), (6, 512)]:
        assert counts[f"mlp_b{blocks}_wi{width}"] == _paper_count(blocks, width)
    # The original code has no LayerNorm before the head; with one (final_norm=True) add 2 * 1024.
    assert counts["mlp_b12_wi1024"] == 113_343_498
    assert with_final_norm == 113_345_546
    assert counts["mlp_b4_wi256"] == _paper_count(4, 256, d_in=3 * 32 * 32)  # native resolution


def test_resnet18_parameter_count():
    assert _count(models.create_model("resnet18_cifar", num_classes=10)) == 11_173_962


def test_input_adapter_normalises_and_resizes():
    mean, std = (0.2, 0.4, 0.6), (0.1, 0.2, 0.3)
    x = torch.tensor(mean).view(1, 3, 1, 1).expand(2, 3, 28, 28)
    assert InputAdapter(mean, std)(x).abs().max() < 1e-6
    white = InputAdapter(mean, std)(torch.ones(1, 3, 4, 4))
    assert torch.allclose(white[0, :, 0, 0], torch.tensor([8.0, 3.0, 4.0 / 3.0]))  # (1 - mean) / std
    grey_to_rgb64 = InputAdapter((0.5,), (0.5,), size=64, out_chans=3)
    assert grey_to_rgb64(torch.rand(2, 1, 28, 28)).shape == (2, 3, 64, 64)


@pytest.mark.parametrize(
    "name,side,chans",
    [
        ("mlp_b6_wi512", 64, 1),
        ("resnet18_cifar", 28, 1),
        ("mlp_b4_wi256", 28, 1),
    ],
)
def test_models_resize_to_their_resolution(name, side, chans):
    model = models.create_model(name, in_chans=1, img_size=28, mean=(0.3,), std=(0.2,))
    out = model.input(torch.full((2, 1, 28, 28), 0.3))  # the mean image
    assert out.shape == (2, chans, side, side) and out.abs().max() < 1e-6


@pytest.mark.parametrize(
    "name,layer,dim",
    [
        ("mlp_b12_wi1024", "blocks.11", 1024),
        ("mlp_b12_wi1024", "norm", 1024),
        ("resnet18_cifar", "layer4", 512),
        ("resnet18_cifar", "head", 10),
        ("vgg13_bn_cifar", "classifier.4", 4096),
        ("vit_small_p4", "blocks.11", 384),
        ("vit_small_p4", "head", 10),
        ("mixer_small_p4", "blocks.7", 512),
    ],
)
def test_named_layers(name, layer, dim):
    model = models.create_model(name, num_classes=10).eval()
    seen = []
    model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        model(torch.rand(2, 3, 32, 32))
    channels = seen[0].shape[1] if seen[0].ndim == 4 else seen[0].shape[-1]  # (B, C, h, w) or (B, [N,] D)
    assert seen[0].shape[0] == 2 and channels == dim
    if layer == "classifier.4":
        assert isinstance(model.get_submodule(layer), nn.ReLU) and (seen[0] >= 0).all()


def test_family_and_patterns():
    assert models.family("vit_small_patch16_224") == "vit"
    assert models.family("mlp_b12_wi1024") == "mlp" and models.family("mlp_plain") == "mlp"
    assert models.family("resnet18_cifar") == "cnn" and models.family("cnn_small") == "cnn"
    zoo = ["swin_tiny_p2", "tnt_small_p4", "mixer_small_p4", "perceiver_base", "perceiver_io_base"]
    assert [models.family(n) for n in zoo] == ["vit", "vit", "mixer", "perceiver", "perceiver"]
    assert models.family("mixer_b16_224") == "mixer"
    assert models.family("swin_tiny_patch4_window7_224") == "vit"
    paper = ["mlp_b12_wi1024", "mlp_b12_wi512", "mlp_b4_wi256", "mlp_b6_wi1024", "mlp_b6_wi512"]
    assert models.list_models("mlp_*") == [*paper, "mlp_plain"]
    assert models.list_models("*cifar") == ["resnet18_cifar", "vgg13_bn_cifar"]
    assert {models.family(n) for n in models.list_models("test_*")} == set(models.FAMILIES)


def test_errors_are_clear():
    with pytest.raises(KeyError, match="resnet18_cifar.*vit_tiny_p4|vit_tiny_p4.*resnet18_cifar"):
        models.create_model("resnet19")
    with pytest.raises(TypeError, match="valid overrides.*'width'"):
        models.create_model("cnn_small", widht=8)
    with pytest.raises(TypeError, match="depth"):
        models.create_model("vit_tiny_p4", layers=3)
    with pytest.raises(ValueError, match="no pretrained weights"):
        models.create_model("resnet18_cifar", pretrained=True)


def test_mlp_plain_overrides():
    model = models.create_model(
        "mlp_plain", in_chans=1, img_size=28, depth=3, width=64, norm="batch", skip=True, dropout=0.1
    )
    assert len(model.blocks) == 2 and all(b.skip for b in model.blocks) and not model.stem.skip
    assert isinstance(model.blocks[0].bn, nn.BatchNorm1d)
    assert _count(model) == (784 * 64 + 64 + 128) + 2 * (64 * 64 + 64 + 128) + 64 * 10 + 10


@pytest.mark.parametrize("norm,kind,per_layer", [("none", nn.Identity, 0), ("batch", nn.BatchNorm1d, 128),
                                                 ("layer", nn.LayerNorm, 128)])
def test_mlp_plain_norm_variants(norm, kind, per_layer):
    torch.manual_seed(0)
    model = models.create_model("mlp_plain", in_chans=1, img_size=28, depth=3, width=64, norm=norm)
    assert all(isinstance(b.bn, kind) for b in [model.stem, *model.blocks])
    assert _count(model) == (784 * 64 + 64) + 2 * (64 * 64 + 64) + 3 * per_layer + 64 * 10 + 10
    x = torch.rand(5, 1, 28, 28)
    hidden = []
    model.stem.bn.register_forward_hook(lambda m, i, o: hidden.append(o))
    model.train()(x)
    h = hidden[0]  # (5, 64): normalised over the batch (batch) or over the features (layer)
    if norm == "batch":
        assert torch.allclose(h.mean(0), torch.zeros(64), atol=1e-5)
        assert torch.allclose(h.var(0, unbiased=False), torch.ones(64), atol=1e-2)  # var / (var + eps)
    elif norm == "layer":
        assert torch.allclose(h.mean(1), torch.zeros(5), atol=1e-5)
        assert torch.allclose(h.var(1, unbiased=False), torch.ones(5), atol=1e-2)
    else:
        assert h.std(0).mean() < 0.5  # raw pre-activations of a default-initialised layer: unnormalised
    with pytest.raises(ValueError, match="norm must be one of none, batch, layer"):
        models.create_model("mlp_plain", norm="group")


def _x(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(3))


def test_fourier_features_are_tancik_and_fixed_per_seed():
    kw = dict(in_chans=1, img_size=28, depth=1, width=16, features="fourier", fourier_features=32,
              fourier_scale=0.5)
    a, b = (models.create_model("mlp_plain", feature_seed=7, **kw) for _ in range(2))
    torch.manual_seed(123)  # torch's global generator does not move B
    c = models.create_model("mlp_plain", feature_seed=7, **kw)
    other = models.create_model("mlp_plain", feature_seed=8, **kw)
    B = a.features.B
    assert B.shape == (784, 32) and torch.equal(B, b.features.B) and torch.equal(B, c.features.B)
    assert not torch.equal(B, other.features.B)
    assert abs(B.std().item() / (0.5 / 28) - 1) < 0.02  # N(0, (scale / sqrt(784))^2)
    assert "features.B" in a.state_dict() and a.stem.fc.in_features == 64
    z = a.flatten(a.input(_x()))  # the normalised pixel vector (4, 784)
    proj = 2 * torch.pi * z @ B
    assert torch.allclose(a.features(z), torch.cat([proj.sin(), proj.cos()], 1), atol=1e-6)
    f = a.features(z)
    assert torch.allclose(f[:, :32] ** 2 + f[:, 32:] ** 2, torch.ones(4, 32), atol=1e-5)


def test_sine_features_expand_every_pixel():
    model = models.create_model("mlp_plain", in_chans=1, img_size=28, depth=1, width=16, features="sine",
                                sine_freqs=(1.0, 3.0))
    assert model.stem.fc.in_features == 784 * 3
    z = torch.tensor([[0.0, 0.5] + [0.0] * 782])
    out = model.features(z).view(784, 3)
    assert torch.allclose(out[1], torch.tensor([0.5, math.sin(0.5), math.sin(1.5)]))
    assert torch.equal(out[0], torch.zeros(3))
    with pytest.raises(ValueError, match="features must be one of pixels, fourier, sine"):
        models.create_model("mlp_plain", features="wavelets")


@pytest.mark.parametrize("features", ["fourier", "sine"])
def test_feature_mlps_rebuild_identically_from_their_card(features, tmp_path):
    torch.manual_seed(0)
    model = models.create_model("mlp_plain", in_chans=1, img_size=28, depth=2, width=16, features=features,
                                fourier_features=8, feature_seed=4).eval()
    config = json.loads(json.dumps(model.model_config))  # as the model card stores it
    assert config["features"] == features and config["feature_seed"] == 4
    safetensors.torch.save_file(model.state_dict(), tmp_path / "m.safetensors")
    torch.manual_seed(99)
    rebuilt = models.create_model("mlp_plain", **config)
    for name, buf in model.named_buffers():
        assert torch.equal(buf, dict(rebuilt.named_buffers())[name]), name  # before loading any weights
    rebuilt.load_state_dict(safetensors.torch.load_file(tmp_path / "m.safetensors"))
    with torch.no_grad():
        assert torch.equal(model(_x()), rebuilt.eval()(_x()))


def test_bottleneck_block_norm_off_drops_only_the_block_layernorms():
    with torch.device("meta"):
        on = models.create_model("mlp_b4_wi256", in_chans=1, img_size=28)
        off = models.create_model("mlp_b4_wi256", in_chans=1, img_size=28, block_norm=False)
    assert all(isinstance(b.norm, nn.LayerNorm) for b in on.blocks)  # the default: today's model
    assert all(isinstance(b.norm, nn.Identity) for b in off.blocks)
    assert _count(on) - _count(off) == 4 * 2 * 256
    assert on.model_config["block_norm"] is True and off.model_config["block_norm"] is False
    assert not [k for k in off.state_dict() if ".norm." in k]


# ---------------------------------------------------------------------------------------------------------
# The ViT-zoo study's Perceiver ladder and TnT pixel sizes

STUDY_LADDER = {"perceiver_medium": 0.29e6, "perceiver_large": 1.15e6, "perceiver_xl": 4.43e6}


def test_perceiver_ladder_has_the_studys_parameter_counts():
    with torch.device("meta"):  # counting only
        counts = {n: _count(models.create_model(n, num_classes=10, img_size=32)) for n in STUDY_LADDER}
    assert counts == {"perceiver_medium": 296_606, "perceiver_large": 1_150_110, "perceiver_xl": 4_528_286}
    for name, study in STUDY_LADDER.items():
        assert abs(counts[name] / study - 1) < 0.025, name  # the study's counts, within 2.5%
        assert models.family(name) == "perceiver"
    net = models.create_model("perceiver_large")
    assert net.latents.shape == (64, 128) and len(net.layers) == 2  # 2 cross-attentions into 64 x 128
    assert all(m.p == 0.1 for m in net.modules() if isinstance(m, nn.Dropout))  # the study ablated dropout


def test_a_rung_at_another_resolution_is_the_native_network_fed_the_resized_images():
    torch.manual_seed(0)
    small = models.create_model("perceiver_medium", in_chans=1, img_size=28, resolution=14).eval()
    native = models.create_model("perceiver_medium", in_chans=1, img_size=14).eval()
    native.load_state_dict(small.state_dict())  # same parameters: the Fourier features are not learned
    x = torch.rand(3, 1, 28, 28)
    x14 = F.interpolate(x, size=(14, 14), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(small(x), native(x14), rtol=0, atol=1e-6)
    assert _count(small) == _count(native) == 296_086  # at 1 channel
    with pytest.raises(ValueError, match="takes images of 1x28x28"):
        small(x14)  # it is fed the data's images and resizes them itself


@pytest.mark.parametrize("patch,pixel", [(4, 2), (4, 4), (8, 2)])
def test_tnt_pixels_are_linear_projections_of_pixel_squares(patch, pixel):
    torch.manual_seed(0)
    net = models.create_model("test_tnt", in_chans=1, img_size=8, patch_size=patch, pixel_size=pixel).eval()
    x = torch.rand(2, 1, 8, 8)
    got = []
    net.pixel_embed.register_forward_hook(lambda m, i, o: got.append(o))
    net(x)
    words = (patch // pixel) ** 2
    assert got[0].shape == (2 * (8 // patch) ** 2, words, 8)  # (images x patches, words per patch, inner_dim)
    z = net.input(x)  # normalised pixels
    # by hand: patches in raster order, each cut into pixel x pixel squares in raster order, W vec(square) + b
    squares = z.unfold(2, patch, patch).unfold(3, patch, patch)  # (B, 1, P, P, patch, patch)
    squares = squares.reshape(-1, patch // pixel, pixel, patch // pixel, pixel).permute(0, 1, 3, 2, 4)
    squares = squares.reshape(len(got[0]), words, pixel * pixel)  # (B * patches, words, pixel^2)
    conv = net.pixel_embed.proj
    expected = squares @ conv.weight.reshape(8, -1).T + conv.bias  # (B * patches, words, inner_dim)
    pos = net.pixel_pos.reshape(8, -1).T  # (words, inner_dim), added by timm
    assert torch.allclose(got[0], expected + pos, atol=1e-5)


def test_tnt_pixel_size_must_tile_the_patch_and_the_patch_the_image():
    with pytest.raises(ValueError, match="patch 4, pixel 3"):
        models.create_model("test_tnt", in_chans=1, img_size=28, patch_size=4, pixel_size=3)
    with pytest.raises(ValueError, match="image 28, patch 16"):
        models.create_model("test_tnt", in_chans=1, img_size=28, patch_size=16, pixel_size=4)
    default = models.create_model("test_tnt")  # no pixel_size: timm's 7x7 stride-first_stride embedding
    assert default.pixel_embed.proj.kernel_size == (7, 7)


# ---------------------------------------------------------------------------------------------------------
# The Scaling-MLPs authors' checkpoint layout


def _paper_state_dict(blocks: int, width: int, d_in: int, classes: int) -> dict[str, torch.Tensor]:
    """Random tensors under the original BottleneckMLP's keys."""
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g) * 0.05
    sd = {
        "linear_in.weight": r(width, d_in),
        "linear_in.bias": r(width),
        "linear_out.weight": r(classes, width),
        "linear_out.bias": r(classes),
    }
    for i in range(blocks):
        sd |= {
            f"blocks.{i}.block.0.weight": r(4 * width, width),
            f"blocks.{i}.block.0.bias": r(4 * width),
            f"blocks.{i}.block.2.weight": r(width, 4 * width),
            f"blocks.{i}.block.2.bias": r(width),
            f"layernorms.{i}.weight": 1 + r(width),
            f"layernorms.{i}.bias": r(width),
        }
    return sd


def _paper_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, blocks: int) -> torch.Tensor:
    """The original forward written out: linear_in, x + block(layernorm(x)) per block, linear_out."""
    z = F.linear(x.flatten(1), sd["linear_in.weight"], sd["linear_in.bias"])
    for i in range(blocks):
        h = F.layer_norm(z, z.shape[-1:], sd[f"layernorms.{i}.weight"], sd[f"layernorms.{i}.bias"])
        h = F.gelu(F.linear(h, sd[f"blocks.{i}.block.0.weight"], sd[f"blocks.{i}.block.0.bias"]))
        z = z + F.linear(h, sd[f"blocks.{i}.block.2.weight"], sd[f"blocks.{i}.block.2.bias"])
    return F.linear(z, sd["linear_out.weight"], sd["linear_out.bias"])


def test_load_paper_state_dict_matches_reference():
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    model = models.create_model("mlp_b4_wi256", img_size=16, mean=mean, std=std).eval()
    sd = _paper_state_dict(4, 256, 3 * 16 * 16, 10)
    models.load_paper_state_dict(model, sd)
    assert torch.equal(model.stem.weight, sd["linear_in.weight"])
    assert torch.equal(model.blocks[3].fc2.bias, sd["blocks.3.block.2.bias"])
    assert torch.equal(model.blocks[2].norm.weight, sd["layernorms.2.weight"])
    assert torch.equal(model.head.weight, sd["linear_out.weight"])
    x = torch.rand(3, 3, 16, 16)
    normalised = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    ref = _paper_forward(sd, normalised, 4)
    with torch.no_grad():
        assert torch.allclose(model(x), ref, atol=1e-5)


def test_paper_checkpoint_detected_and_head_dropped(tmp_path):
    sd = _paper_state_dict(4, 256, 1 * 28 * 28, 100)  # a 100-class head for a 10-class model
    path = tmp_path / "B-4_Wi-256_res_28_weights"  # the authors' files carry no extension
    torch.save({"_orig_mod." + k: v for k, v in sd.items()}, path)  # as saved from a torch.compile'd model
    with pytest.warns(UserWarning, match="head not loaded"):
        model = models.create_model("mlp_b4_wi256", in_chans=1, img_size=28, checkpoint=path)
    assert torch.equal(model.blocks[0].fc1.weight, sd["blocks.0.block.0.weight"])
    assert torch.equal(model.stem.weight, sd["linear_in.weight"]) and model.head.weight.shape == (10, 256)
    with pytest.raises(ValueError, match="input features"):
        models.load_paper_state_dict(models.create_model("mlp_b4_wi256", img_size=16), sd)


# ---------------------------------------------------------------------------------------------------------
# Checkpoints: our own (safetensors / torch), timm-style files, and pretrained=True offline


def _trained_a_bit(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    model = models.create_model(name, **kw)
    side = kw["img_size"]
    model(torch.rand(4, kw["in_chans"], side, side))  # train mode: BatchNorm running stats move
    return model.eval()


@pytest.mark.parametrize("fmt", ["safetensors", "pt", "trainer"])
@pytest.mark.parametrize("name", ["test_cnn", "test_vit", "test_perceiver_io"])
def test_checkpoint_round_trip(tmp_path, name, fmt):
    kw = dict(num_classes=5, in_chans=1, img_size=28, mean=(0.3,), std=(0.4,))
    model = _trained_a_bit(name, **kw)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / ("model.safetensors" if fmt == "safetensors" else "model.pt")
    if fmt == "safetensors":
        safetensors.torch.save_file(sd, str(path))
    else:
        torch.save(sd if fmt == "pt" else {"model": sd, "epoch": 3}, path)
    torch.manual_seed(1)
    loaded = models.create_model(name, checkpoint=path, **{**kw, "mean": None, "std": None}).eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.input.mean.item() == pytest.approx(0.3)  # the stats travel with the weights


def test_timm_style_checkpoint_without_input_stage(tmp_path):
    """A hub file (1000 classes, no `input.*` buffers) loads into a 10-class model; the head is dropped."""
    source = models.create_model("test_vit", num_classes=1000)
    sd = {k: v for k, v in source.state_dict().items() if not k.startswith("input.")}
    safetensors.torch.save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.warns(UserWarning, match="head not loaded"):
        model = models.create_model("test_vit", num_classes=10, checkpoint=tmp_path / "model.safetensors")
    assert torch.equal(model.blocks[1].mlp.fc1.weight, source.blocks[1].mlp.fc1.weight)
    assert model.head.weight.shape == (10, 32)


PRETRAINED_HUB_IDS = {
    "vit_small_patch16_224": "timm/vit_small_patch16_224.augreg_in21k_ft_in1k",
    "swin_tiny_patch4_window7_224": "timm/swin_tiny_patch4_window7_224.ms_in1k",
    "tnt_s_patch16_224": "timm/tnt_s_patch16_224.in1k",
    "mixer_b16_224": "timm/mixer_b16_224.goog_in21k_ft_in1k",
}


@pytest.mark.parametrize("arch", list(PRETRAINED_HUB_IDS))
def test_pretrained_offline_message(monkeypatch, arch):
    import timm.models._hub

    def offline(*args, **kwargs):
        raise ConnectionError("no route to huggingface.co")

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", offline)
    with torch.device("meta"), pytest.raises(models.WeightsUnreachable, match="unreachable") as err:
        models.create_model(arch, pretrained=True)
    msg = str(err.value)
    assert "checkpoint=" in msg and "model.safetensors" in msg
    assert PRETRAINED_HUB_IDS[arch] in msg


def test_pretrained_archs_take_small_grey_images_and_use_the_weights_statistics():
    assert sorted(models.vit.PRETRAINED_224) == sorted(PRETRAINED_HUB_IDS)
    make = lambda c: models.create_model("swin_tiny_patch4_window7_224", num_classes=10, in_chans=c,
                                         img_size=28, mean=(0.286,) * c, std=(0.353,) * c).eval()
    model, for_rgb = make(1), make(3)
    for_rgb.load_state_dict(model.state_dict())
    assert model.input.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])  # ImageNet's, not ours
    grey = torch.rand(2, 1, 28, 28)
    assert model.input(grey).shape == (2, 3, 224, 224)
    with torch.no_grad():
        out = model(grey)
        rgb = for_rgb(grey.expand(-1, 3, -1, -1))  # grey repeated to RGB by hand: the same logits
    assert out.shape == (2, 10)
    torch.testing.assert_close(out, rgb)


def test_paper_pretrained_offline_message(monkeypatch, tmp_path):
    import gdown

    def offline(*args, **kwargs):
        raise ConnectionError("no route to drive.google.com")

    monkeypatch.setattr(gdown, "download", offline)
    monkeypatch.setenv("MLPZOOM_CHECKPOINTS", str(tmp_path))
    with torch.device("meta"), pytest.raises(models.WeightsUnreachable, match="could not download") as err:
        models.create_model("mlp_b6_wi512", pretrained=True)
    assert "checkpoint=" in str(err.value) and "1QV3a99UT8llfh9zDDuNKWDH_5c6S_YT5" in str(err.value)
    with pytest.raises(ValueError, match="in21k_cifar10"):
        models.create_model("mlp_b6_wi512", pretrained="in21k_imagenet")


def test_vgg_flatten_follows_input_size():
    for size, side in [(32, 1), (28, 1), (64, 2)]:
        model = models.create_model("vgg13_bn_cifar", in_chans=1, img_size=size)
        assert model.classifier[0].in_features == 512 * side * side
        assert math.isfinite(model(torch.rand(2, 1, size, size)).sum().item())


def test_model_config_rebuilds_the_architecture():
    grey_on_rgb = models.create_model("mlp_b4_wi256", in_chans=1, img_size=28, net_chans=3, resolution=16)
    config = grey_on_rgb.model_config
    assert config["net_chans"] == 3 and config["resolution"] == 16 and config["in_chans"] == 1
    rebuilt = models.create_model("mlp_b4_wi256", **config)
    assert rebuilt.stem.in_features == 3 * 16 * 16
    assert rebuilt.input(torch.rand(2, 1, 28, 28)).shape == (2, 3, 16, 16)
    assert models.create_model("cnn_small", width=8).model_config["width"] == 8


def _dropout_bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Dropout(0.5), nn.BatchNorm1d(8), nn.Linear(8, 3))


def test_frozen_restores_mode_and_flags_even_after_an_error():
    net = _dropout_bn_net().train()
    net[1].weight.requires_grad_(False)  # a flag that differs from the rest must come back as it was
    with pytest.raises(KeyError, match="inside"), models.frozen(net):
        assert not net.training and not any(p.requires_grad for p in net.parameters())
        raise KeyError("inside")
    assert net.training
    assert [p.requires_grad for p in net.parameters()] == [False, True, True, True, True, True]
    with models.eval_mode(net):
        assert not net.training
    assert net.training


@pytest.mark.parametrize("name", ["mlp_b4_wi256", "cnn_small", "vit_mini_p4", "mlp_b12_wi1024"])
def test_a_model_fed_the_wrong_shape_says_what_it_takes(name):
    model = models.create_model(name, in_chans=1, img_size=28).eval()
    for wrong in ((2, 3, 28, 28), (2, 1, 32, 32), (1, 28, 28)):
        got = ", ".join(map(str, wrong))
        with pytest.raises(ValueError, match=rf"{name} takes images of 1x28x28 .*got \({got}"):
            model(torch.rand(wrong))
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name", ["model.safetensors", "model.pt"])
def test_a_corrupt_checkpoint_is_named_with_what_to_do(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00truncated")
    with pytest.raises(ValueError, match=r"' is unreadable .*copy or train it again") as err:
        models.create_model("test_mlp", num_classes=10, checkpoint=path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
