"""A multinomial logistic regression on frozen features, fitted full-batch with L-BFGS: the solver of 04's
linear probes (utils/experiments/probes.py) and of the probe heads LP-FT starts from
(utils/experiments/transfer.py). Infrastructure because two experiments share it; the reasons for the
solver are in probes.linear_probe's docstring."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class Standardizer:
    """Per-feature (x - mean) / std with statistics of the TRAINING features only: a shift of the test set
    stays visible to the probe instead of being normalised away."""

    mean: torch.Tensor  # (D,) float32
    std: torch.Tensor  # (D,) float32 population std; 1 for constant features (they become 0)

    @classmethod
    def fit(cls, x: torch.Tensor) -> Standardizer:
        x64 = x.double()  # float64 sums: features with mean >> std lose no digits
        mean, std = x64.mean(0), x64.std(0, correction=0)
        return cls(mean.float(), torch.where(std > 1e-12 * mean.abs().clamp_min(1), std, 1.0).float())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


def fit_lbfgs(x: torch.Tensor, y: torch.Tensor, num_classes: int, epochs: int, lr: float,
               weight_decay: float, batch_size: int, seed: int) -> nn.Linear:
    """Full-batch L-BFGS on mean CE + weight_decay / 2 ||W||^2; the loss and gradient of each pass summed
    over chunks of batch_size rows (bounded autograd memory, same result up to float rounding)."""
    g = torch.Generator().manual_seed(seed)
    probe = nn.Linear(x.shape[1], num_classes).to(x.device)
    with torch.no_grad():  # small seeded init, from a private generator (the global RNG is untouched)
        probe.weight.copy_(torch.randn(probe.weight.shape, generator=g) * 0.01)
        probe.bias.zero_()
    opt = torch.optim.LBFGS(probe.parameters(), lr=lr, max_iter=epochs, history_size=20,
                            tolerance_grad=1e-7, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        total = torch.zeros((), device=x.device)
        for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
            loss = F.cross_entropy(probe(xb), yb, reduction="sum") / len(x)
            loss.backward()
            total += loss.detach()
        penalty = weight_decay / 2 * probe.weight.pow(2).sum()
        penalty.backward()
        return total + penalty.detach()

    opt.step(closure)
    state, group = opt.state[probe.weight], opt.param_groups[0]
    if state["n_iter"] >= epochs or state["func_evals"] >= group["max_eval"]:  # no tolerance fired
        warnings.warn(f"linear_probe: L-BFGS stopped at its {epochs}-iteration budget before converging; "
                      "the score is below the optimum's (raise epochs)", RuntimeWarning, stacklevel=3)
    return probe



def fit_linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, *, num_classes: int, epochs: int = 1000,
                     lr: float = 1.0, weight_decay: float = 1e-4, batch_size: int = 16384, seed: int = 0,
                     standardize: bool = True) -> nn.Linear:
    """probes.linear_probe's fit as an nn.Linear on the RAW features (D -> num_classes): the standardisation
    is folded into it (W' = W / std, b' = b - W' mean), so it can replace a network's head whose input the
    features are (LP-FT: fine-tuning starts from the probe). Same arguments and solver as
    probes.linear_probe; its logits equal the probe's on standardised features up to float32 rounding."""
    tx = train_x.float()
    s = Standardizer.fit(tx) if standardize else None
    probe = fit_lbfgs(s(tx) if s else tx, train_y, num_classes, epochs, lr, weight_decay, batch_size, seed)
    if s is not None:
        with torch.no_grad():
            w = probe.weight / s.std.to(probe.weight.device)  # (K, D)
            probe.bias.copy_((probe.bias.double() - w.double() @ s.mean.double().to(w.device)).float())
            probe.weight.copy_(w)
    return probe.requires_grad_(False)
