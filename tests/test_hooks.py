"""utils.hooks: record and replace named layers' tensors, collect activations with a cache."""

import pytest
import torch

from utils import data, hooks, models


def test_collect_activations_hooks_inputs_and_outputs_and_caches(tiny, tmp_path):
    net, ds = tiny
    x = ds.images[:10].float() / 255
    cache = tmp_path / "acts.pt"
    acts = hooks.collect_activations(net, ds, "head:input", n=10, batch_size=4, cache=cache,
                                          progress=False)
    with torch.no_grad():
        logits = net(x)
    torch.testing.assert_close(net.head(acts), logits, atol=2e-2, rtol=1e-2)  # float16 cache
    assert torch.load(cache, weights_only=True)["acts"].dtype == torch.float16
    torch.testing.assert_close(hooks.collect_activations(net, ds, "head", n=10, progress=False), logits)
    again = hooks.collect_activations(net, ds, "head:input", n=10, cache=cache, progress=False)
    torch.testing.assert_close(again, acts, atol=0, rtol=0)  # loaded from the cache
    with torch.no_grad():
        net.head.weight.mul_(1)  # same weights: same fingerprint
        before = hooks.fingerprint(net)
        net.stem.bias.add_(1.0)
    assert hooks.fingerprint(net) != before  # other weights: the cache is not reused
    changed = hooks.collect_activations(net, ds, "head:input", n=10, cache=cache, progress=False)
    assert not torch.allclose(changed, acts)
    with torch.no_grad():
        net.stem.bias.sub_(1.0)
    with pytest.raises(ValueError, match="module"):
        hooks.parse_layer("head:weights")


def test_activation_path_is_under_the_checkpoints_root(monkeypatch, tmp_path):
    monkeypatch.setenv("MLPZOOM_CHECKPOINTS", str(tmp_path))
    path = hooks.activation_path("smoke", "fashion-mnist", "test_mlp", "head:input", "test", 256)
    assert path == tmp_path / "smoke/fashion-mnist/activations/test_mlp__head-input__test256.pt"


def test_recording_sees_the_layer_output():
    net = models.create_model("test_mlp", num_classes=5, in_chans=1, img_size=16).eval()
    x = torch.rand(3, 1, 16, 16)
    with hooks.recording(net, ["stem"]) as acts:
        net(x)
    assert torch.allclose(acts["stem"], net.stem(net.flatten(net.input(x))))
    assert not net.stem._forward_hooks  # removed on exit


def test_hooked_replaces_an_output_and_an_input_and_is_removed_after_an_error():
    net = models.create_model("test_mlp", num_classes=3, in_chans=1, img_size=4).eval()
    x = torch.rand(2, 1, 4, 4)
    with hooks.hooked(net, "head", lambda t: torch.zeros_like(t)):
        assert torch.equal(net(x), torch.zeros(2, 3))
    with hooks.hooked(net, "head:input", lambda t: torch.zeros_like(t)):
        assert torch.allclose(net(x), net.head.bias.expand(2, 3))  # W @ 0 + b
    with pytest.raises(RuntimeError, match="boom"), hooks.hooked(net, "head", lambda t: None):
        raise RuntimeError("boom")
    assert not net.head._forward_hooks and not net.head._forward_pre_hooks


def test_collect_many_equals_one_layer_at_a_time(tiny, tmp_path):
    net, ds = tiny
    layers = ["stem", "blocks.0", "head:input"]
    caches = {layer: tmp_path / f"{layer}.pt" for layer in layers}
    many = hooks.collect_many(net, ds, layers, n=20, batch_size=8, caches=caches, dtype=torch.float32,
                              progress=False)
    for layer in layers:
        one = hooks.collect_activations(net, ds, layer, n=20, batch_size=5, progress=False)
        torch.testing.assert_close(many[layer], one)
        assert caches[layer].exists()


def test_the_activation_cache_is_not_reused_for_other_images(tiny, tmp_path):
    net, ds = tiny
    cache = tmp_path / "acts.pt"
    acts = hooks.collect_activations(net, ds, "stem", n=10, cache=cache, progress=False)
    other = data.ImageSet(ds.images.flip(0), ds.labels.flip(0), ds.info, ds.split)  # same name, split, n
    changed = hooks.collect_activations(net, other, "stem", n=10, cache=cache, progress=False)
    assert not torch.allclose(changed, acts)
