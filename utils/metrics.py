"""What a model gets right: top-k hits, `evaluate` over a loader, batched predictions, calibration.

    evaluate(model, loader)                 # {"top1": .., "top5": .., "loss": ..}
    logits(model, x)                        # one batch, eval mode, no grad, on x's device
    predict_logits(model, images)           # (N, K) float32 on the CPU, in batches
    predict_classes(model, images)          # (N,) int64 on the CPU: argmax of the logits
    probs, labels = predict_proba(model, loader)
    expected_calibration_error(probs, labels); reliability_bins(probs, labels)

Top-1 is the argmax everywhere (ties go to the lowest class index, as `argmax` does); top-5 is top-k for
k = min(5, classes).
"""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import distributed
from .models import autocast, eval_mode, model_device


def topk_hits(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(top-1 hits, top-5 hits) in a batch of logits (B, classes), as 0-d int64 tensors on the logits'
    device (no host sync); top-1 is the argmax, top-5 is top-min(5, classes)."""
    topk = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, k)
    return (logits.argmax(1) == y).sum(), (topk == y[:, None]).any(1).sum()


@torch.no_grad()
def evaluate(model: nn.Module, loader, amp: bool = True) -> dict[str, float]:
    """Top-1, top-5 (top-k for k = min(5, classes)) and mean cross-entropy over the loader, in eval mode.
    Sums stay on the device (float64 loss, int64 counts) and are read once at the end. A loader serving one
    rank's slices under torchrun (world_size > 1) is summed over the ranks: the same numbers on every rank."""
    device = model_device(model)
    n, loss = 0, torch.zeros((), dtype=torch.float64, device=device)
    top1 = top5 = torch.zeros((), dtype=torch.long, device=device)
    with eval_mode(model):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with autocast(device, amp):
                out = model(x).float()
            loss += F.cross_entropy(out, y, reduction="sum").double()
            hit1, hit5 = topk_hits(out, y)
            top1, top5, n = top1 + hit1, top5 + hit5, n + len(y)
    if getattr(loader, "world_size", 1) > 1:
        loss, top1, top5, n = distributed.summed(loss, top1, top5, n)
        return {"top1": top1 / max(n, 1), "top5": top5 / max(n, 1), "loss": loss / max(n, 1)}
    n = max(n, 1)
    return {"top1": top1.item() / n, "top5": top5.item() / n, "loss": loss.item() / n}


@torch.no_grad()
def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits (B, classes) float32 of one batch on x's device, in eval mode, the model's mode restored."""
    with eval_mode(model):
        return model(x).float()


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits (N, classes), float32 on the CPU, in eval mode; images (N, C, H, W) in [0, 1] on any device,
    moved to the model's batch by batch."""
    device = model_device(model)
    with eval_mode(model):
        chunks = [model(images[i : i + batch_size].to(device)).float().cpu()
                  for i in range(0, len(images), batch_size)]
    if not chunks:
        raise ValueError("predict_logits: no images (an empty tensor)")
    return torch.cat(chunks)


def predict_classes(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Top-1 class per image, (N,) int64 on the CPU, in eval mode; images (N, C, H, W) in [0, 1]."""
    return predict_logits(model, images, batch_size).argmax(1)


@torch.no_grad()
def predict_proba(model: nn.Module, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities (N, classes) float32 on the CPU, and labels (N,), over a loader, in eval mode."""
    probs, labels, device = [], [], model_device(model)
    with eval_mode(model):
        for x, y in loader:
            probs.append(model(x.to(device)).float().softmax(dim=1).cpu())
            labels.append(y.cpu())
    return torch.cat(probs), torch.cat(labels)


# ---------------------------------------------------------------- calibration


def reliability_bins(probs, labels, n_bins: int = 15) -> pd.DataFrame:
    """One row per equal-width confidence bin (lo, hi]: count, mean confidence and accuracy (NaN when
    empty). Confidence is the top probability, the prediction its class."""
    probs, labels = torch.as_tensor(probs, dtype=torch.float64), torch.as_tensor(labels)
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    idx = torch.bucketize(conf, edges[1:-1], right=False)  # bin i holds edges[i] < conf <= edges[i + 1]
    count = torch.bincount(idx, minlength=n_bins).double()
    mean = lambda v: torch.bincount(idx, weights=v, minlength=n_bins) / count  # NaN in empty bins
    return pd.DataFrame({
        "bin_lo": edges[:-1].numpy(),
        "bin_hi": edges[1:].numpy(),
        "count": count.long().numpy(),
        "confidence": mean(conf).numpy(),
        "accuracy": mean(correct).numpy(),
    })


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """ECE (Guo et al. 2017): sum over bins of (bin count / N) * |accuracy - mean confidence|."""
    bins = reliability_bins(probs, labels, n_bins).query("count > 0")
    return float((bins["count"] / bins["count"].sum() * (bins.accuracy - bins.confidence).abs()).sum())
