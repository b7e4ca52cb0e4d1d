"""Dictionary learning: sparse autoencoders (SAEs) on any layer's activations and their metrics (matching
features across models: feature_matching).

    acts = hooks.collect_activations(net, test_ds, "head:input", cache=hooks.activation_path(...))  # (N, D)
    sae, history = fit_sae(acts, replace(ORIGINAL, epochs=10))   # history: one row per epoch
    h = encode(sae, acts)                                        # (N, F) feature activations, >= 0
    sae_metrics(sae, acts); splice_accuracy(net, "head:input", sae, test_ds)   # SAEBench's core metrics

Notebook 09's tables: with_untrained + network_activations (the activations), fit_saes (every SAE and the
training history), metrics_table + split_metrics (SAEBench's metrics per SAE), logit_weight_table.

Layers are named as in `model.named_modules()`: "head" is the output of `head`, "head:input" its (first)
input. Activations are flattened per image to (N, D). The SAE sees them divided by one scalar (`sae.scale`,
set so that the mean squared norm of a vector is D, i.e. unit RMS per dimension) so one L1 coefficient means
the same for every model; `decode` undoes it, so callers always work in the layer's own units.

Definitions (over the N vectors given; a feature is *active* on a vector when its code is non-zero):
- L0: mean number of active features per vector.
- FVE: 1 - sum_d sum_n (x - x_hat)^2 / sum_d sum_n (x - mean_n x)^2; the residual is not centred, so a
  constant offset in the reconstruction counts as unexplained.
- dead fraction: share of features active on no vector; alive fraction = 1 - dead fraction.
- splice-in: the layer's tensor (its output; its input for "<module>:input") replaced by the SAE's
  reconstruction through a forward hook. Accuracy kept = spliced top-1 / clean top-1; CE increase = spliced
  minus clean mean cross-entropy (nats); CE recovered = (CE zero-ablated - CE spliced) / (CE zero-ablated -
  CE clean), the tensor zeroed for the zero-ablation (SAEBench's "CE loss score").

Dead-feature resampling follows Bricken et al. (2023) with these simplifications: a feature is dead when it
fired on none of the training vectors of the epoch just finished (not a 12.5M-token window); resampling runs
at the end of every `resample_every`-th epoch in the first half of training (not at fixed step counts); the
loss-weighted draw is over all training vectors (not a 819,200-sample pool); the bias b_dec is subtracted
from the drawn vector before it becomes the new direction; b_dec starts at the data mean (not the
geometric median).

Activations: "relu" (+ L1). "topk" (Gao et al. 2024) keeps the k largest pre-activations and ReLUs them, so
a vector whose top-k holds values <= 0 has fewer than k active features: the L0 reached can fall far below k
(their auxiliary dead-latent loss, AuxK, is not implemented). "topk_signed" keeps the k largest
pre-activations whatever their sign (the k-sparse autoencoder of Makhzani & Frey 2014, whose codes are
linear on the support): exactly k active features per vector, the L0 reached is k by construction, and the
share of negative codes (`sae_metrics`' negative_share) says how much the ReLU would have cut. Neither has an
L1 term.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import resolve
from ..data import ImageSet, make_loader
from ..hooks import activation_path, collect_activations, hooked
from ..metrics import evaluate
from ..models import create_model, family, model_device
from ..progress import bar as progress_bar

ACTIVATIONS = ("relu", "topk", "topk_signed")
TOPK = ("topk", "topk_signed")

# ---------------------------------------------------------------------------------------------- the SAE


@dataclass(frozen=True)
class SAEConfig:
    expansion: float = 3.0  # features per input dimension: n_features = round(expansion * D)
    activation: str = "relu"  # "relu" (+ L1), "topk" (Gao et al.: k largest, ReLU'd) or "topk_signed" (as is)
    k: int = 32  # active features per vector, topk* only (unless k_per_dim is set)
    # topk: k = max(1, round(k_per_dim * D)) for a D-dimensional layer, so SAEs on layers of different
    # widths keep the same share of their (expansion * D) features active: matched sparsity across families
    k_per_dim: float | None = None
    l1_coef: float = 3e-4  # loss = mean_n mean_d (x_hat - x)^2 + l1_coef * mean_n sum_f h_f (relu only)
    lr: float = 1e-3  # Adam
    lr_step: int = 10  # StepLR: lr *= lr_gamma every lr_step epochs
    lr_gamma: float = 0.5
    epochs: int = 100
    batch_size: int = 32  # vectors per step
    resample_every: int | None = None  # epochs between resamplings (first half of training); None: never
    normalize: bool = True  # divide inputs by one scalar so mean_n ||x||^2 = D (see the module docstring)
    seed: int = 0  # initialisation, batch order, resampling draws
    progress: bool = True

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}; got {self.activation!r}")


# The original study's settings: hidden 3x input, ReLU, unit-norm decoder directions, MSE + 3e-4 L1,
# Adam 1e-3 with StepLR(10, 0.5), 100 epochs, batch 32 (it trained on 10k test-set activations).
ORIGINAL = SAEConfig(expansion=3.0, activation="relu", l1_coef=3e-4, lr=1e-3, lr_step=10, lr_gamma=0.5,
                     epochs=100, batch_size=32, resample_every=None)


class SparseAutoencoder(nn.Module):
    """h = act(W_enc (x / scale - b_dec) + b_enc);  x_hat = scale * (W_dec h + b_dec).

    b_dec is the pre-encoder bias tied to the decoder bias; the columns of W_dec (D, F) are the dictionary
    directions, kept at unit L2 norm by `fit_sae`."""

    def __init__(self, d_in: int, n_features: int, activation: str = "relu", k: int = 32,
                 generator: torch.Generator | None = None):
        super().__init__()
        w = F.normalize(torch.randn(d_in, n_features, generator=generator), dim=0)  # (D, F), unit columns
        self.W_dec = nn.Parameter(w)
        self.W_enc = nn.Parameter(w.T.clone())  # (F, D): starts as the transpose (Bricken; Gao)
        self.b_enc = nn.Parameter(torch.zeros(n_features))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("scale", torch.tensor(1.0))
        self.activation, self.k = activation, k

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) layer units -> (B, F); topk_signed: signed
        pre = F.linear(x / self.scale - self.b_dec, self.W_enc, self.b_enc)
        if self.activation in TOPK:
            vals, idx = pre.topk(min(self.k, pre.shape[1]), dim=1)
            vals = F.relu(vals) if self.activation == "topk" else vals
            return torch.zeros_like(pre).scatter(1, idx, vals)
        return F.relu(pre)

    def decode(self, h: torch.Tensor) -> torch.Tensor:  # (B, F) -> (B, D) in layer units
        return (h @ self.W_dec.T + self.b_dec) * self.scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encode(x)
        return self.decode(h), h


@torch.no_grad()
def normalize_decoder(sae: SparseAutoencoder) -> None:
    sae.W_dec.div_(sae.W_dec.norm(dim=0, keepdim=True).clamp_min(1e-8))


@torch.no_grad()
def project_decoder_grad(sae: SparseAutoencoder) -> None:
    """Remove the gradient's component along each unit column, so a step changes direction, not norm."""
    if sae.W_dec.grad is not None:
        g, w = sae.W_dec.grad, sae.W_dec
        g.sub_(w * (g * w).sum(0, keepdim=True))


def sae_loss(sae: SparseAutoencoder, x: torch.Tensor,
             l1_coef: float) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """x: (B, D) layer units. MSE in normalised units (x / scale; mean over vectors and dims) + l1_coef *
    mean_n sum_f h; also the parts (detached 0-d tensors on x's device: reading them is a host sync, so
    fit_sae sums them on the device and reads once an epoch, issue 26) and the codes h (B, F)."""
    h = sae.encode(x)
    mse = ((sae.decode(h) - x) / sae.scale).pow(2).mean()
    l1 = h.abs().sum(1).mean()  # the unit-norm columns make sum_f |h_f| ||d_f|| = sum_f |h_f|
    coef = l1_coef if sae.activation == "relu" else 0.0
    parts = {"mse": mse.detach(), "l1": l1.detach(), "l0": (h != 0).sum(1).float().mean()}
    return mse + coef * l1, parts, h


@torch.no_grad()
def resample_dead(sae: SparseAutoencoder, x: torch.Tensor, dead: torch.Tensor,
                  optimizer: torch.optim.Optimizer | None = None, generator: torch.Generator | None = None,
                  batch_size: int = 4096) -> int:
    """Bricken et al. (2023) resampling of the `dead` (F,) bool features on x (N, D, layer units):
    draw vectors with probability proportional to their squared reconstruction loss; the decoder column
    becomes the unit direction of (x - b_dec), the encoder row that direction times 0.2 x the mean encoder
    row norm of live features, the encoder bias 0, and Adam's moments for them are reset. Returns the
    count."""
    idx = dead.nonzero().flatten()
    if len(idx) == 0:
        return 0
    loss = torch.cat([(sae(b)[0] - b).div(sae.scale).pow(2).sum(1) for b in x.split(batch_size)])  # (N,)
    weights = loss.pow(2) + 1e-12
    picks = torch.multinomial(weights / weights.sum(), len(idx), replacement=True, generator=generator)
    directions = F.normalize(x[picks] / sae.scale - sae.b_dec, dim=1)  # (n_dead, D), what encode sees
    alive = ~dead
    enc_norm = sae.W_enc[alive].norm(dim=1).mean().item() if alive.any() else 1.0
    sae.W_dec[:, idx] = directions.T
    sae.W_enc[idx] = directions * 0.2 * enc_norm
    sae.b_enc[idx] = 0.0
    if optimizer is not None:
        reset_adam(optimizer, sae, idx)
    return len(idx)


def reset_adam(optimizer: torch.optim.Optimizer, sae: SparseAutoencoder, idx: torch.Tensor) -> None:
    """Zero Adam's moments of the features idx (encoder rows and biases, decoder columns)."""
    for p, dim in ((sae.W_enc, 0), (sae.b_enc, 0), (sae.W_dec, 1)):
        state = optimizer.state.get(p, {})
        for moment in ("exp_avg", "exp_avg_sq"):
            if moment in state:
                state[moment].index_fill_(dim, idx, 0.0)


def k_for(cfg: SAEConfig, d_in: int) -> int:
    """The TopK k of an SAE on a d_in-dimensional layer: cfg.k, or round(k_per_dim * d_in) (at least 1)."""
    return cfg.k if cfg.k_per_dim is None else max(1, round(cfg.k_per_dim * d_in))


def init_sae(x: torch.Tensor, cfg: SAEConfig) -> SparseAutoencoder:
    """A new SAE for x (N, D): seeded directions, scale from the data, b_dec at the (normalised) data mean."""
    n_features, gen = max(1, round(cfg.expansion * x.shape[1])), torch.Generator().manual_seed(cfg.seed)
    sae = SparseAutoencoder(x.shape[1], n_features, cfg.activation, k_for(cfg, x.shape[1]), generator=gen)
    with torch.no_grad():
        if cfg.normalize:
            sae.scale.fill_(x.pow(2).sum(1).mean().div(x.shape[1]).sqrt().clamp_min(1e-8).item())
        sae.b_dec.copy_(x.mean(0) / sae.scale)
    return sae.to(x.device)


def fit_sae(acts: torch.Tensor, cfg: SAEConfig = ORIGINAL, sae: SparseAutoencoder | None = None,
            device: str | torch.device | None = None) -> tuple[SparseAutoencoder, pd.DataFrame]:
    """Train an SAE (a new one, or continue `sae`) on acts (N, D) in layer units; returns it in eval mode
    and the per-epoch history (loss, mse, l1, l0, dead fraction, resampled features, lr)."""
    x = acts.float().to(device or acts.device)
    sae = init_sae(x, cfg) if sae is None else sae.to(x.device)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, fused=True)  # fused: ~1.3x faster on CPU
    sched = torch.optim.lr_scheduler.StepLR(opt, cfg.lr_step, cfg.lr_gamma)
    gen = torch.Generator().manual_seed(cfg.seed)
    rows = []
    for epoch in progress_bar(range(1, cfg.epochs + 1), desc="SAE epochs", disable=not cfg.progress,
                              leave=False):
        sae.train()
        fired, sums, steps = torch.zeros(sae.b_enc.shape, dtype=torch.bool, device=x.device), {}, 0
        # the permutation drawn on the host (the seeded CPU generator: the same order on every device), moved
        # once per epoch: a host index per step would be a host-to-device copy and a wait every step
        for index in torch.randperm(len(x), generator=gen).to(x.device).split(cfg.batch_size):
            loss, parts, h = sae_loss(sae, x[index], cfg.l1_coef)
            fired |= (h != 0).any(0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            project_decoder_grad(sae)
            opt.step()
            normalize_decoder(sae)
            sums = {k: sums.get(k, 0.0) + v for k, v in {"loss": loss.detach(), **parts}.items()}
            steps += 1
        lr = opt.param_groups[0]["lr"]
        sched.step()
        resample = cfg.resample_every and epoch % cfg.resample_every == 0 and epoch <= cfg.epochs / 2
        n_new = resample_dead(sae, x, ~fired, opt, gen) if resample else 0
        rows.append({"epoch": epoch, **{k: float(v) / steps for k, v in sums.items()},
                     "dead_fraction": 1 - fired.float().mean().item(), "resampled": n_new, "lr": lr})
    return sae.eval(), pd.DataFrame(rows)


@torch.no_grad()
def encode(sae: SparseAutoencoder, acts: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Feature codes (N, F) of acts (N, D), in batches, on acts' device (>= 0 unless "topk_signed")."""
    device = sae.b_dec.device
    return torch.cat([sae.encode(b.float().to(device)).to(acts.device) for b in acts.split(batch_size)])


def l0(h: torch.Tensor) -> float:
    """Mean number of active (non-zero) features per vector; h (N, F)."""
    return (h != 0).sum(1).float().mean().item()


def fve(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """1 - sum of squared residuals / sum of squared deviations from the per-dimension mean; x (N, D)."""
    x, x_hat = x.double(), x_hat.double()
    return 1.0 - ((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp_min(1e-30)).item()


def dead_fraction(h: torch.Tensor) -> float:
    """Share of features that are zero on every vector; h (N, F)."""
    return 1.0 - (h != 0).any(0).float().mean().item()


def negative_share(h: torch.Tensor) -> float:
    """Share of the active codes that are negative (0 for ReLU codes); h (N, F)."""
    active = (h != 0).sum().item()
    return (h < 0).sum().item() / active if active else math.nan


@torch.no_grad()
def sae_metrics(sae: SparseAutoencoder, acts: torch.Tensor) -> dict[str, float]:
    """On acts (N, D): the feature count, k (NaN for relu), L0 reached, active share L0 / features, FVE, dead
    and alive fractions, and the share of active codes that are negative."""
    h = encode(sae, acts)
    x_hat = torch.cat([sae.decode(b.to(sae.b_dec.device)).cpu() for b in h.split(4096)])
    dead = dead_fraction(h)
    return {"features": h.shape[1], "k": sae.k if sae.activation in TOPK else math.nan, "l0": l0(h),
            "active_share": l0(h) / h.shape[1], "fve": fve(acts.cpu(), x_hat), "dead_fraction": dead,
            "alive_fraction": 1.0 - dead, "negative_share": negative_share(h)}


def _splice_loader(model: nn.Module, ds: ImageSet, n: int | None, batch_size: int):
    images = ds.subset(min(n or len(ds), len(ds)))
    return make_loader(images, batch_size, train=False, device=model_device(model))


@torch.no_grad()
def splice_reference(model: nn.Module, layer: str, ds: ImageSet, n: int | None = None, batch_size: int = 256
                     ) -> dict[str, dict[str, float]]:
    """What splice_accuracy compares an SAE against, the same for every SAE of one network and layer: the
    clean evaluation and the one with the layer's tensor zeroed, on the first n images of ds. Computed once
    per network, it saves two of every SAE's three passes over the images."""
    loader = _splice_loader(model, ds, n, batch_size)
    clean = evaluate(model, loader, amp=False)
    with hooked(model, layer, torch.zeros_like):
        zeroed = evaluate(model, loader, amp=False)
    return {"clean": clean, "zeroed": zeroed}


@torch.no_grad()
def splice_accuracy(model: nn.Module, layer: str, sae: SparseAutoencoder, ds: ImageSet,
                    n: int | None = None, batch_size: int = 256,
                    reference: dict[str, dict[str, float]] | None = None) -> dict[str, float]:
    """On the first n images of ds: top-1 and mean cross-entropy (nats) clean, with the layer's tensor
    replaced by the SAE's reconstruction (same shape), and with it zeroed; accuracy kept = spliced / clean
    top-1, ce_increase = spliced - clean CE, ce_recovered = (zeroed - spliced) / (zeroed - clean) CE.
    reference: splice_reference's of the same model, layer, images (default: computed here)."""
    reference = reference or splice_reference(model, layer, ds, n, batch_size)
    splice = lambda t: sae(t.flatten(1).float())[0].reshape(t.shape).to(t.dtype)
    with hooked(model, layer, splice):
        spliced = evaluate(model, _splice_loader(model, ds, n, batch_size), amp=False)
    clean, zeroed = reference["clean"], reference["zeroed"]
    top1, ce, ce_zero = clean["top1"], clean["loss"], zeroed["loss"]
    return {"top1": top1, "top1_spliced": spliced["top1"],
            "accuracy_kept": spliced["top1"] / top1 if top1 > 0 else math.nan,
            "ce": ce, "ce_spliced": spliced["loss"], "ce_increase": spliced["loss"] - ce, "ce_zero": ce_zero,
            "ce_recovered": (ce_zero - spliced["loss"]) / (ce_zero - ce) if ce_zero != ce else math.nan}


@torch.no_grad()
def logit_weights(sae: SparseAutoencoder, head: nn.Linear) -> torch.Tensor:
    """(K, F): the change of each logit per unit of each feature when the SAE sits at the head's input, i.e.
    the decoder directions (in layer units) mapped through the head's weight."""
    return (head.weight.float() @ (sae.W_dec * sae.scale).to(head.weight.device)).cpu()


# ---------------------------------------------------------------- notebook 09: its knobs


def _sae(**changes) -> dict:
    """09's SAE settings (changes to ORIGINAL): matched sparsity reached, k = D / 16 of 3 D features."""
    return {"activation": "topk_signed", "k_per_dim": 0.0625, **changes}


@dataclass(frozen=True)
class Config:
    """09's knobs. Defaults are full's; SMALLER holds what the other profiles change. Families are compared
    at matched sparsity, reached and not only asked for: every SAE keeps exactly k = D / 16 of its 3 D
    features active on every image with "topk_signed" (the k largest pre-activations whatever their sign;
    Gao et al.'s "topk" ReLUs them and can reach fewer than k: the sweep shows it). Each profile's `sae`
    recovers a planted overcomplete dictionary (tests/experiments/test_dictionary.py)."""

    # the hooked layer per family: "<module>" its output, "<module>:input" its input; "head:input" is the last
    # hidden representation (the original: the MLP's input to its output layer, VGG13-bn's classifier[4])
    layers: dict[str, str] = field(default_factory=lambda: {"mlp": "head:input", "cnn": "head:input",
                                                            "vit": "head:input"})
    fit_split: str = "train"  # SAEs learn from the first n_fit images of this split (the original: test)
    n_fit: int = 10000
    n_eval: int = 10000  # metrics, features and matching: the first n_eval test images (every model's)
    sae: dict[str, str | float | int] = field(default_factory=_sae)  # dictionary.ORIGINAL with these changes
    # the sparsity sweep: one more SAE per trained model (seeds[0]) per entry, `sae` with these changes
    sweep: list[dict[str, str | float]] = field(default_factory=lambda: [
        {"k_per_dim": 0.015625}, {"k_per_dim": 0.25}, {"activation": "topk"}])
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # SAEs per trained model; the second: ceiling
    random_seed: int = 0  # the untrained copies (the floor), the feature/steering image split, controls
    threshold: float = 0.5  # Prediction 2 holds for a pair whose matching closes this share of the gap
    n_shown: int = 6  # features shown (and steered) per model: the most class-selective on one half of n_eval
    n_top: int = 8  # top-activating images per shown feature
    # steering: the component along a feature's unit decoder direction u replaced by v u, v in multiples of
    # the layer's mean activation norm, on the first n_steer images of the other half
    steer_values: list[float] = field(default_factory=lambda: [-2.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0,
                                                               2.0])
    n_steer: int = 2000
    n_control: int = 4  # the control: random unit directions per model (seeded by random_seed), steered alike


SMALLER = {  # lr 1e-2 where the epochs are few
    "quick": dict(n_fit=5000, n_eval=2000, sae=_sae(epochs=5, batch_size=128, lr=1e-2, resample_every=2),
                  n_steer=500),
    "smoke": dict(n_fit=512, n_eval=256, sae=_sae(epochs=20, batch_size=32, lr=1e-2, resample_every=2),
                  sweep=[{"k_per_dim": 0.25}, {"activation": "topk"}], n_steer=64),
    # rehearsal: 2 features shown, as steering is 2/3 of its time there
    "rehearsal": dict(n_fit=40, n_eval=16, sae=_sae(epochs=2, batch_size=8), sweep=[{"activation": "topk"}],
                      n_shown=2, n_steer=8, n_control=1),
}


def config(profile: str | None = None, **overrides) -> Config:
    """09's config under `profile`, with `overrides` (checked: unknown knobs and wrong types are errors)."""
    return resolve(Config, profile, SMALLER, overrides)


# ---------------------------------------------------------------- notebook 09: its tables

Networks = dict[tuple[str, str], nn.Module]  # (model, "trained" | "untrained") -> network
Acts = dict[tuple[str, str], torch.Tensor]  # keyed like Networks: (N, D) float32 activations on the CPU

# the columns 09 shows of sae_metrics.csv (the sweep's: model, setting, activation and SHOWN[3:])
SHOWN = ["model", "network", "seed", "k", "l0", "active_share", "fve", "alive_fraction", "negative_share",
         "ce_increase", "ce_recovered", "accuracy_kept"]


def with_untrained(nets: dict[str, nn.Module], seed: int, device: str | torch.device) -> Networks:
    """(model, "trained") -> each of nets, then (model, "untrained") -> a fresh copy of each (the same
    architecture and input stage: create_model(name, **net.model_config)), each built right after
    torch.manual_seed(seed), in eval mode on `device`: Prediction 2's floor."""
    networks = {(name, "trained"): net for name, net in nets.items()}
    for name, net in nets.items():
        torch.manual_seed(seed)  # the same draw for every copy, whatever was drawn before
        networks[name, "untrained"] = create_model(name, **net.model_config).to(device).eval()
    return networks


def network_activations(networks: Networks, layers: dict[str, str], fit_ds: ImageSet, eval_ds: ImageSet,
                        n_fit: int, n_eval: int, profile: str, dataset: str, seed: int,
                        batch_size: int = 256) -> tuple[Acts, Acts]:
    """(fit, eval): each network's activations at its model's layer (`layers`: model -> layer) on the first
    n_fit images of fit_ds and the first n_eval of eval_ds, keyed like `networks`. Cached (float16) at
    hooks.activation_path under the model's name, an untrained copy's as "<model>@random<seed>"."""
    fit_acts, eval_acts = {}, {}
    for (name, kind), net in networks.items():
        tag = name if kind == "trained" else f"{name}@random{seed}"
        for acts, ds, n in ((fit_acts, fit_ds, n_fit), (eval_acts, eval_ds, n_eval)):
            path = activation_path(profile, dataset, tag, layers[name], ds.split, n)
            acts[name, kind] = collect_activations(net, ds, layers[name], n=n, cache=path,
                                                   batch_size=batch_size)
    return fit_acts, eval_acts


def activation_table(fit_acts: Acts, eval_acts: Acts, layers: dict[str, str]) -> pd.DataFrame:
    """One row per network: model, network, layer, fit_vectors, eval_vectors, dims (D)."""
    return pd.DataFrame([{"model": n, "network": k, "layer": layers[n], "fit_vectors": len(fit_acts[n, k]),
                          "eval_vectors": len(eval_acts[n, k]), "dims": fit_acts[n, k].shape[1]}
                         for n, k in fit_acts])


def fit_saes(fit_acts: Acts, cfg: SAEConfig, models: Sequence[str], seeds: Sequence[int],
             sweep: Sequence[dict], device: str | torch.device | None = None
             ) -> tuple[dict, dict, pd.DataFrame]:
    """09's SAEs, fitted in this order with a printed line each: every trained model x seed, one per
    untrained copy (seeds[0]), one per trained model x sweep entry (seeds[0]; `cfg` with the entry's changes;
    setting "sweep<i>", i from 1). Returns (saes: (model, network, seed) -> SAE, the main ones; sweep_saes:
    (model, setting) -> (its config, SAE); history: fit_sae's rows of every SAE with model, network, seed and
    setting)."""
    saes, sweep_saes, histories = {}, {}, []
    jobs = [(n, "trained", s, "main", {}) for n in models for s in seeds]
    jobs += [(n, "untrained", seeds[0], "main", {}) for n in models]
    jobs += [(n, "trained", seeds[0], f"sweep{i}", c) for n in models for i, c in enumerate(sweep, 1)]
    for name, kind, seed, setting, changes in jobs:
        c = replace(cfg, seed=seed, **changes)
        print(f"SAE on {name} ({kind}), seed {seed}, {setting}: {c.activation}, k/D {c.k_per_dim}")
        sae, hist = fit_sae(fit_acts[name, kind], c, device=device)
        if setting == "main":
            saes[name, kind, seed] = sae
        else:
            sweep_saes[name, setting] = (c, sae)
        histories.append(hist.assign(model=name, network=kind, seed=seed, setting=setting))
    return saes, sweep_saes, pd.concat(histories, ignore_index=True)


def metrics_table(networks: Networks, layers: dict[str, str], saes: dict, sweep_saes: dict, cfg: SAEConfig,
                  eval_acts: Acts, eval_ds: ImageSet, sweep_seed: int, batch_size: int = 256) -> pd.DataFrame:
    """One row per SAE of fit_saes (the main ones, then the sweep's, whose seed is `sweep_seed`): model,
    family, network, seed, setting, activation, k_per_dim, layer, dims, sae_metrics on eval_acts and
    splice_accuracy on eval_ds (the clean and zero-ablated passes once per network)."""
    every = [((n, k, s, "main"), cfg, sae) for (n, k, s), sae in saes.items()]
    every += [((n, "trained", sweep_seed, setting), c, sae) for (n, setting), (c, sae) in sweep_saes.items()]
    reference = {key: splice_reference(net, layers[key[0]], eval_ds, batch_size=batch_size)
                 for key, net in networks.items()}
    rows = []
    for (name, kind, seed, setting), c, sae in every:
        acc = splice_accuracy(networks[name, kind], layers[name], sae, eval_ds, batch_size=batch_size,
                              reference=reference[name, kind])
        rows.append({"model": name, "family": family(name), "network": kind, "seed": seed, "setting": setting,
                     "activation": sae.activation, "k_per_dim": c.k_per_dim, "layer": layers[name],
                     "dims": sae.b_dec.numel(), **sae_metrics(sae, eval_acts[name, kind]), **acc})
    return pd.DataFrame(rows)


def split_metrics(every: pd.DataFrame, sweep_seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """metrics_table's rows as (the main SAEs', index reset; the sweep's: every trained network's SAE of seed
    `sweep_seed`, main and sweep settings, with metrics_table's index)."""
    metrics = every[every.setting == "main"].reset_index(drop=True)
    return metrics, every[(every.network == "trained") & (every.seed == sweep_seed)]


def logit_weight_table(nets: dict[str, nn.Module], layers: dict[str, str], saes: dict[str, SparseAutoencoder],
                       shown: dict[str, pd.DataFrame], classes: Sequence[str]) -> pd.DataFrame:
    """One row per model x shown feature (shown[model].feature) x class: logit_weights' weight of the feature
    on the class's logit. A model whose layer is not "head:input" has none (a printed line says so)."""
    rows = []
    for name, net in nets.items():
        if layers[name] != "head:input":
            print(f"{name}: logit weights need the SAE at the head's input; layer is {layers[name]}")
            continue
        w = logit_weights(saes[name], net.get_submodule("head"))  # (K, F)
        for f in shown[name].feature:
            rows += [{"model": name, "feature": int(f), "class": c, "weight": w[k, f].item()}
                     for k, c in enumerate(classes)]
    return pd.DataFrame(rows)
