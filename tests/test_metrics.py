"""utils.metrics: top-k hits, evaluate, batched predictions, calibration."""

import math

import pytest
import torch
import torch.nn as nn

from utils import data, metrics


class FixedLogits(nn.Module):
    """Returns logits[i] for the i-th image of the whole set (the image's first pixel holds i / 255)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, x):
        return self.logits[(x[:, 0, 0, 0] * 255).round().long()]


def indexed_set(n: int, classes: int) -> data.ImageSet:
    images = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    info = data.DatasetInfo("idx", classes, tuple(map(str, range(classes))), 1, 2, (0.0,), (1.0,))
    return data.ImageSet(images, torch.arange(n) % classes, info)


def test_evaluate_matches_hand_computed():
    ds = indexed_set(4, 6)  # labels 0, 1, 2, 3
    logits = torch.tensor(
        [
            [9.0, 0, 0, 0, 0, 0],  # label 0 ranked 1st
            [0, 1, 2, 3, 4, 5],  # label 1 ranked 5th: in the top 5, not top 1
            [5.0, 4, 0, 3, 2, 1],  # label 2 ranked 6th: not in the top 5
            [0, 0, 0, 7, 0, 0],  # label 3 ranked 1st
        ]
    )
    loader = data.make_loader(ds, 3, train=False)  # batches of 3 and 1: per-image averaging matters
    out = metrics.evaluate(FixedLogits(logits), loader)
    expect_loss = nn.functional.cross_entropy(logits, torch.arange(4)).item()
    assert out["top1"] == 0.5 and out["top5"] == 0.75
    assert out["loss"] == pytest.approx(expect_loss, rel=1e-6)


def test_evaluate_top5_with_few_classes_is_top_all():
    ds = indexed_set(3, 3)
    out = metrics.evaluate(FixedLogits(torch.eye(3)[[1, 2, 0]]), data.make_loader(ds, 8, train=False))
    assert out["top1"] == 0 and out["top5"] == 1.0


def test_top1_is_the_argmax_on_ties():
    logits = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [3.0, 3.0, 3.0]])  # ties everywhere
    y = logits.argmax(1)  # argmax takes the first maximum: 0, 1, 0
    hit1, hit5 = metrics.topk_hits(logits, y)
    assert int(hit1) == 3 and int(hit5) == 3
    assert int(metrics.topk_hits(logits, torch.tensor([1, 2, 2]))[0]) == 0  # the other tied classes: misses


def dropout_bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Dropout(0.5), nn.BatchNorm1d(8), nn.Linear(8, 3))


def test_predict_gives_eval_mode_logits_in_batches_and_restores_the_mode():
    net, x = dropout_bn_net().train(), torch.rand(10, 3, 2, 2)
    running_mean = net[3].running_mean.clone()
    out = metrics.predict_logits(net, x, batch_size=4)  # batches of 4, 4, 2
    assert net.training and torch.equal(net[3].running_mean, running_mean)  # statistics untouched
    with torch.no_grad():
        expected = net.eval()(x)
    assert out.shape == (10, 3) and out.device.type == "cpu" and out.dtype == torch.float32
    torch.testing.assert_close(out, expected)


def _probs(confidences, correct, classes=3):
    """Rows whose top probability is `confidences[i]` on class 0; the label is 0 when correct, else 1."""
    c = torch.tensor(confidences, dtype=torch.float64)
    rest = ((1 - c) / (classes - 1))[:, None].expand(-1, classes - 1)
    return torch.cat([c[:, None], rest], 1), torch.tensor([0 if k else 1 for k in correct])


def test_ece_is_zero_when_confidence_equals_accuracy():
    probs, labels = _probs([0.7] * 10 + [0.95] * 20, [1] * 7 + [0] * 3 + [1] * 19 + [0])
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(0, abs=1e-12)


def test_ece_matches_a_hand_computed_value():
    # bin (13/15, 14/15]: conf 0.9, acc 1/2 -> gap 0.4, weight 2/5; bin (8/15, 9/15]: conf 0.55, acc 2/3.
    probs, labels = _probs([0.9, 0.9, 0.55, 0.55, 0.55], [1, 0, 1, 1, 0])
    expected = 2 / 5 * 0.4 + 3 / 5 * (2 / 3 - 0.55)  # = 0.23
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(expected, abs=1e-12)
    diagram = metrics.reliability_bins(probs, labels)
    assert len(diagram) == 15 and diagram["count"].sum() == 5
    assert diagram.loc[13, ["count", "confidence", "accuracy"]].tolist() == pytest.approx([2, 0.9, 0.5])
    assert diagram.loc[8, "count"] == 3 and math.isnan(diagram.loc[0, "accuracy"])
    one_bin = metrics.expected_calibration_error(probs, labels, n_bins=1)  # |mean acc - mean conf|
    assert one_bin == pytest.approx(abs(3 / 5 - (2 * 0.9 + 3 * 0.55) / 5))


def test_predict_proba_rows_are_the_models_softmax():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    x, y = torch.rand(10, 1, 8, 8), torch.arange(10) % 3
    probs, labels = metrics.predict_proba(net, [(x[:6], y[:6]), (x[6:], y[6:])])
    assert torch.allclose(probs, net.eval()(x).softmax(1), atol=1e-6) and torch.equal(labels, y)
    assert torch.allclose(probs.sum(1), torch.ones(10))


def test_predict_classes_is_the_argmax_of_predict_logits():
    net, x = dropout_bn_net(), torch.rand(7, 3, 2, 2)
    expected = metrics.predict_logits(net, x).argmax(1)
    assert torch.equal(metrics.predict_classes(net, x, batch_size=3), expected)
