"""utils.timing: FLOPs and sizes against closed forms, measure's rows and refusals, ECE on hand-made cases."""


import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from test_models import _paper_count  # the hand count of the paper's MLPs, shared with test_models

from utils import models
from utils.experiments import cost


def tiny_cnn() -> nn.Module:
    """Unregistered: a CNN by structure (a 3x3 stride-1 convolution)."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


def tiny_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3))


@pytest.mark.parametrize("batch,i,o", [(1, 5, 7), (8, 32, 10), (3, 100, 1)])
def test_flops_of_a_linear_layer_are_two_per_multiply_add(batch, i, o):
    assert cost.count_flops(nn.Linear(i, o, bias=False), (i,), batch_size=batch) == 2 * batch * i * o


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0)])
def test_flops_of_a_conv_match_the_closed_form(stride, padding):
    b, c_in, c_out, k, side = 2, 3, 5, 3, 9
    conv = nn.Conv2d(c_in, c_out, k, stride, padding, bias=False)
    out = (side + 2 * padding - k) // stride + 1  # output pixels per side
    expected = 2 * b * c_out * out * out * c_in * k * k  # one multiply-add per weight per output pixel
    assert cost.count_flops(conv, (c_in, side, side), batch_size=b) == expected


def test_cpu_attention_is_counted_like_its_matmuls():
    b, h, n, d = 2, 3, 10, 8  # QK^T and AV: each 2 * b * h * n * n * d
    attend = lambda q: F.scaled_dot_product_attention(q, q, q)
    assert cost.count_flops(_Lambda(attend), (h, n, d), batch_size=b) == 4 * b * h * n * n * d
    vit = models.create_model("test_vit", in_chans=1, img_size=28)
    fused = cost.count_flops(vit, (1, 28, 28))
    for m in vit.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False  # timm's explicit q @ k^T, softmax, @ v
    assert fused == cost.count_flops(vit, (1, 28, 28)) > 0


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn, self.dummy = fn, nn.Parameter(torch.zeros(()))  # a parameter fixes the device

    def forward(self, x):
        return self.fn(x)


def test_count_params_matches_the_hand_count_of_the_paper_mlps():
    for blocks, width in [(12, 1024), (12, 512), (6, 1024), (6, 512)]:
        with torch.device("meta"):  # counting only
            net = models.create_model(f"mlp_b{blocks}_wi{width}")
        total, trainable = cost.count_params(net)
        assert total == trainable == _paper_count(blocks, width)
        assert cost.param_bytes(net) == 4 * total  # float32
    net = models.create_model("mlp_b4_wi256", in_chans=3, img_size=32)
    net.head.requires_grad_(False)
    total, trainable = cost.count_params(net)
    assert total == _paper_count(4, 256, d_in=3 * 32 * 32) and trainable == total - (256 * 10 + 10)


def test_param_bytes_with_buffers_adds_batchnorm_statistics():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    assert cost.param_bytes(net) == 4 * (16 + 8)
    assert cost.param_bytes(net, buffers=True) == 4 * (16 + 8) + 4 * 8 + 8  # means, vars, int64 counter


def test_summary_totals():
    b, i, o = 4, 6, 5
    s = cost.summary(nn.Sequential(nn.Linear(i, o)), (i,), batch_size=b)
    assert s.params == s.trainable == i * o + o and s.param_bytes == 4 * (i * o + o)
    assert s.activation_bytes == 2 * b * o * 4  # the layer's float32 output and its gradient
    assert s.input_bytes == b * i * 4 and "Linear: 1-1" in s.table


def test_is_cnn_follows_the_registry_then_the_structure():
    names = ("test_cnn", "test_vit", "test_tnt")  # TnT's pixel embedding is an overlapping conv
    with torch.device("meta"):
        nets = [models.create_model(n, in_chans=1, img_size=28) for n in names]
    assert [cost.is_cnn(n) for n in nets] == [True, False, False]
    patchify = nn.Sequential(nn.Conv2d(1, 4, 4, stride=4), nn.Flatten())  # a ViT-style patch embedding
    assert cost.is_cnn(tiny_cnn()) and not cost.is_cnn(tiny_mlp()) and not cost.is_cnn(patchify)


def test_measure_reports_positive_numbers_for_every_supported_mode():
    net = tiny_cnn()
    modes = cost.supported_modes(net, "cpu")
    assert modes[0] == "fp32" and "channels_last" in modes
    for mode in modes:
        sizes = (1, 4) if mode != "compile" else (2,)  # compiling is slow on CPU: one batch size
        df = cost.measure(net, (1, 8, 8), batch_sizes=sizes, device="cpu", mode=mode, repeats=6, warmup=1,
                            progress=False)
        assert list(df.batch_size) == list(sizes) and (df["mode"] == mode).all() and (df.repeats == 6).all()
        for col in ("latency_ms", "latency_q25_ms", "latency_q75_ms", "throughput", "first_call_ms"):
            assert (df[col] > 0).all() and np.isfinite(df[col]).all(), (mode, col)
        assert (df.latency_q25_ms <= df.latency_ms).all() and (df.latency_ms <= df.latency_q75_ms).all()
        assert np.allclose(df.throughput, df.batch_size / (df.latency_ms / 1e3))
        assert df.peak_mem_mb.isna().all()  # CPU: no allocator statistics
    assert net.training and next(net.parameters()).is_contiguous()  # the caller's model is left as it was


def test_measure_stops_at_max_seconds_but_not_before_five_calls():
    df = cost.measure(tiny_mlp(), (1, 8, 8), batch_sizes=(1,), repeats=1000, warmup=0, max_seconds=0.0,
                        progress=False)
    assert df.repeats.item() == 5


def test_measure_refuses_what_the_device_cannot_run(monkeypatch):
    mlp = tiny_mlp()
    with pytest.raises(ValueError, match=r"'channels_last' cannot run .* CNNs only.*supported here: fp32"):
        cost.measure(mlp, (1, 8, 8), batch_sizes=(1,), mode="channels_last")
    with pytest.raises(ValueError, match="unknown timing mode 'fp16'; modes: fp32, bf16, compile"):
        cost.measure(mlp, (1, 8, 8), batch_sizes=(1,), mode="fp16")
    monkeypatch.setattr(cost, "_cpu_has_bf16", lambda: False)  # a CPU without AVX512-BF16 / AMX
    monkeypatch.setattr(cost, "_has_cxx_compiler", lambda: False)
    assert cost.supported_modes(tiny_cnn(), "cpu") == ("fp32", "channels_last")
    with pytest.raises(ValueError, match=r"'bf16' cannot run .*native bf16.*supported here: fp32$"):
        cost.measure(mlp, (1, 8, 8), batch_sizes=(1,), mode="bf16")
    with pytest.raises(ValueError, match=r"'compile' cannot run .*C\+\+ compiler"):
        cost.measure(mlp, (1, 8, 8), batch_sizes=(1,), mode="compile")
    with pytest.raises(ValueError, match="cpu and cuda"):
        cost.supported_modes(mlp, "meta")


def test_headline_and_pareto_front():
    rows = [("a", "fp32", 1, 2.0, 500.0), ("a", "fp32", 8, 4.0, 2000.0), ("a", "fp32", 64, 40.0, 1600.0)]
    df = pd.DataFrame(rows, columns=["model", "mode", "batch_size", "latency_ms", "throughput"])
    head = cost.headline(df.assign(latency_iqr_ms=0.1)).iloc[0]
    assert (head.latency_batch, head.latency_ms, head.best_batch, head.best_throughput) == (1, 2.0, 8, 2000.0)
    x, y = [1, 2, 3, 2, 3], [0.9, 0.8, 0.5, 0.7, 0.5]  # (2, .7) is dominated by (2, .8); ties stay
    assert cost.pareto_front(x, y).tolist() == [True, True, True, False, True]




# ------------------------------------------------------------------ notebook 05: its config and its tables


class FixedProbs(nn.Module):
    """Says class 0 with probability 0.8 (class 1: 0.2) whatever the image."""

    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.log(torch.tensor([0.8, 0.2])))

    def forward(self, x):
        return self.logits.expand(len(x), 2) + 0 * x.flatten(1).sum(1, keepdim=True)


def test_05s_tables_by_hand():
    nets = {"mlp": tiny_mlp(), "cnn": tiny_cnn()}
    sizes, tables = cost.size_table(nets, (1, 8, 8))
    assert sizes.params.tolist() == [64 * 16 + 16 + 16 * 3 + 3, 1 * 4 * 9 + 4 + 4 * 3 + 3]
    assert sizes.flops_per_image.iloc[0] == 2 * (64 * 16 + 16 * 3) and set(tables) == {"mlp", "cnn"}
    cfg = cost.config("smoke", modes=["fp32", "channels_last"], batch_sizes=[1, 2], repeats=2)
    timed, skipped = cost.throughput_table(nets, (1, 8, 8), cfg, "cpu")
    assert len(timed) == 2 + 2 + 2  # mlp fp32, cnn fp32 and channels_last, at 2 batch sizes each
    assert skipped[["model", "mode"]].values.tolist() == [["mlp", "channels_last"]]
    assert "channels_last" in skipped.reason.iloc[0]  # not for an MLP: the reason names the mode
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 0, 0, 1])  # 3 of 4 right at confidence 0.8
    quality, bins = cost.quality_table({"fixed": FixedProbs()}, [(x, y)], n_bins=10)
    assert quality.top1.item() == 0.75 and quality.ece.item() == pytest.approx(0.05)
    assert bins.model.unique().tolist() == ["fixed"]


def test_05s_config_is_fulls_with_the_smaller_profiles_changes():
    assert cost.config("full").modes == list(cost.MODES) and cost.config("quick").threads == 1
    assert cost.config("rehearsal").batch_sizes == [1] and cost.config("quick", repeats=3).repeats == 3


def test_compile_mode_passes_its_backend_to_torch_compile(monkeypatch):
    """The rehearsal traces with "aot_eager" (no C++ built on a CPU); full compiles with inductor."""
    seen = []
    monkeypatch.setattr(cost, "_can_compile", lambda device: True)
    monkeypatch.setattr(torch, "compile", lambda model, **kw: seen.append(kw["backend"]) or model)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    for backend in ("aot_eager", "inductor"):
        cost.measure(net, (3, 2, 2), batch_sizes=[1], mode="compile", repeats=1, warmup=0, progress=False,
                     compile_backend=backend)
    assert seen == ["aot_eager", "inductor"]
    backends = [cost.config(p).compile_backend for p in ("rehearsal", "full")]
    assert backends == ["aot_eager", "inductor"]
