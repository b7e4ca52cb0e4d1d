"""Adversarial attacks in [0, 1] pixel space: FGSM, PGD (L-inf, L2), AutoAttack, robust accuracy, transfer.

    x_adv = pgd(model, x, y, eps=8/255, norm="linf", steps=10)           # (B, C, H, W) in [0, 1]
    x_adv = fgsm(model, x, y, eps=8/255)
    x_adv, log = autoattack(model, x, y, eps=8/255, norm="linf", return_log=True)
    robust_accuracy(model, loader, pgd, [0, 2/255, 8/255], steps=10)  # DataFrame: attack, eps, top1, top5
    robust_predictions(model, loader, pgd, [8/255], steps=10)          # the same, one row per image
    autoattack_report(model, loader, 8/255)                            # DataFrame: top1 after each attack
    transfer_matrix({"mlp": m1, "cnn": m2}, loader, pgd, 8/255)       # DataFrame: a row per source x target

Every model of this project takes [0, 1] images (normalisation is its first module), so attacks work in
pixel space and clip to [0, 1]. Each attack runs the model in eval mode and restores its mode afterwards,
and takes gradients with respect to the input only: the parameters' requires_grad flags are switched off
for the attack (a smaller graph; nothing ever lands in `.grad`) and restored. fgsm and pgd with
random_start=False compute what torchattacks' FGSM / PGD / PGDL2 compute (tests/test_attacks.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchattacks

from .. import metrics
from ..config import resolve
from ..models import frozen, model_device
from ..progress import bar as progress_bar
from ..references import ORIGINAL_ATTACKS_CIFAR10

NORMS = ("linf", "l2")
# The "standard" AutoAttack of Croce & Hein (2020), in the order it runs them: APGD with cross-entropy,
# targeted APGD (DLR loss, 9 target classes), targeted FAB (9 targets), Square (black-box, 5000 queries).
AUTOATTACK_STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")
Attack = Callable[..., torch.Tensor]  # attack(model, x, y, eps, **kw) -> x_adv


def _check(eps: float, norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0; got {eps}")


def loss_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, targeted: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(d loss / d x (B, C, H, W), logits at x (B, classes)) for the summed cross-entropy, so that an image's
    gradient does not depend on the batch size. targeted: the loss is -CE(target y), i.e. the gradient
    points towards the target class."""
    x = x.detach().requires_grad_(True)
    logits = model(x).float()
    loss = F.cross_entropy(logits, y, reduction="sum")
    (grad,) = torch.autograd.grad(-loss if targeted else loss, x)
    return grad, logits.detach()


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-image L2 norm, shaped (B, 1, 1, 1) to broadcast."""
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.ndim - 1)))


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """x_adv pulled back into the eps-ball around x (L-inf: clamp; L2: rescale), then into [0, 1]."""
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * torch.clamp(eps / _flat_norm(delta).clamp_min(1e-12), max=1.0)
    return (x + delta).clamp(0, 1)


def step(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction of unit size in the norm: sign (L-inf) or grad / ||grad||_2 (L2)."""
    return grad.sign() if norm == "linf" else grad / (_flat_norm(grad) + 1e-10)


def random_start(x: torch.Tensor, eps: float, norm: str, seed: int | None = None) -> torch.Tensor:
    """A random point of the eps-ball around x, clipped to [0, 1]: uniform per pixel (L-inf); a uniform
    direction at radius eps * U(0, 1) (L2, torchattacks' convention). Drawn on the CPU from `seed` (None:
    torch's global generator), so a seed gives the same start on any device."""
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    shape = x.shape
    if norm == "linf":
        delta = (torch.rand(shape, generator=gen) * 2 - 1) * eps
    else:
        direction = torch.randn(shape, generator=gen)
        radius = torch.rand((shape[0],) + (1,) * (len(shape) - 1), generator=gen)
        delta = direction / _flat_norm(direction) * radius * eps
    return (x + delta.to(x.device, x.dtype)).clamp(0, 1)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, targeted: bool = False
         ) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): x + eps * sign(grad), clipped to [0, 1].
    x: (B, C, H, W) in [0, 1] on the model's device; y: (B,) labels (targets when targeted)."""
    _check(eps, "linf")
    if eps == 0:
        return x.detach().clone()
    with frozen(model):
        return (x + eps * loss_grad(model, x, y, targeted)[0].sign()).clamp(0, 1).detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, norm: str = "linf",
        steps: int = 10, step_size: float | None = None, random_start: bool = True, targeted: bool = False,
        seed: int | None = None, early_stop: bool = False) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018) on the cross-entropy, L-inf or L2 ball of radius eps.

    step_size: per step, in the norm's units (default 2.5 * eps / steps, Madry et al.); every step is
    projected to the eps-ball and to [0, 1]; the last iterate is returned. random_start: begin at a random
    point of the ball (seeded by `seed`). targeted: y are target classes and the loss is minimised.
    early_stop: an image stays at the first iterate the model gets wrong (reaches the target) and is not
    computed further: the same robust accuracy up to iterates that later turn right again (which then
    count as broken), at a fraction of the cost for models that break early. Off: torchattacks' PGD.
    """
    _check(eps, norm)
    if eps == 0:
        return x.detach().clone()
    step_size = 2.5 * eps / max(steps, 1) if step_size is None else step_size
    x = x.detach()
    x_adv = _random_start(x, eps, norm, seed) if random_start else x.clone()  # (B, C, H, W), the output
    idx, cur, x0, y0 = torch.arange(len(x), device=x.device), x_adv.clone(), x, y  # rows still attacked
    with frozen(model):
        for _ in range(steps):
            grad, logits = loss_grad(model, cur, y0, targeted)
            if early_stop:
                going = (logits.argmax(1) == y0) != targeted  # untargeted: still right; targeted: not there
                if not going.all():  # keep the finished rows' iterate, attack on with the rest
                    x_adv[idx] = cur
                    idx, cur, x0, y0, grad = idx[going], cur[going], x0[going], y0[going], grad[going]
                    if len(idx) == 0:
                        break
            cur = project(cur + step_size * step(grad, norm), x0, eps, norm)
    x_adv[idx] = cur
    return x_adv


_random_start = random_start  # pgd's keyword `random_start` shadows the function inside pgd


# ---------------------------------------------------------------- AutoAttack (torchattacks)


def _torchattacks_attack(name: str, model: nn.Module, eps: float, norm: str, n_classes: int, steps: int,
                         n_queries: int, seed: int) -> torchattacks.attack.Attack:
    """One member of AutoAttack as torchattacks builds it (its own AutoAttack uses steps=10)."""
    kw = dict(norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, seed=seed, n_restarts=1)
    if name == "apgd-ce":
        return torchattacks.APGD(model, steps=steps, loss="ce", **kw)
    if name == "apgd-t":
        return torchattacks.APGDT(model, steps=steps, n_classes=n_classes, **kw)
    if name == "fab-t":
        return torchattacks.FAB(model, steps=steps, multi_targeted=True, n_classes=n_classes, **kw)
    return torchattacks.Square(model, n_queries=n_queries, **kw)


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf", *,
               attacks: Sequence[str] = AUTOATTACK_STANDARD, steps: int = 100, n_queries: int = 5000,
               seed: int = 0, return_log: bool = False):
    """AutoAttack (Croce & Hein 2020) through torchattacks: `attacks` run in order, each on the images
    that are still classified correctly, and an image keeps the first adversarial found for it.

    steps: iterations of APGD, APGD-T and FAB (100 in the original; torchattacks' AutoAttack uses 10);
    n_queries: Square's budget. Returns x_adv, or (x_adv, log) with return_log: a dict, for "clean" and
    each attack in order, of how many images are still classified correctly after it (the attacks that
    ran, and what each added). torchattacks seeds torch's global generator; its state is restored here.
    """
    _check(eps, norm)
    unknown = [a for a in attacks if a not in AUTOATTACK_STANDARD]
    if unknown:
        raise ValueError(f"unknown AutoAttack member {unknown}; members: {', '.join(AUTOATTACK_STANDARD)}")
    x, y = x.detach(), y.detach()
    logits = metrics.logits(model, x)
    robust, n_classes = logits.argmax(1) == y, logits.shape[1]  # robust (B,) bool: not broken yet
    x_adv, log = x.clone(), {"clean": int(robust.sum())}
    with frozen(model), torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        for name in attacks:
            idx = robust.nonzero().flatten()
            if len(idx) > 0 and eps > 0:
                atk = _torchattacks_attack(name, model, eps, norm, n_classes, steps, n_queries, seed)
                adv = atk(x[idx], y[idx]).to(x.device)
                broken = metrics.logits(model, adv).argmax(1) != y[idx]
                x_adv[idx[broken]], robust[idx[broken]] = adv[broken], False
            log[name] = int(robust.sum())
    return (x_adv, log) if return_log else x_adv


# ---------------------------------------------------------------- evaluation over a loader


def _bar(loader: Iterable, per_batch: int, desc: str, progress: bool) -> object:
    """A progress bar over `per_batch` units of work (eps values, source models) per batch of the loader."""
    total = len(loader) * per_batch if hasattr(loader, "__len__") else None
    return progress_bar(total=total, desc=desc, leave=False, disable=not progress)


def _attacked(model: nn.Module, loader: Iterable, attack: Attack, eps_list: Sequence[float], progress: bool,
              **kw) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pred (E, N), top5 (E, N) bool, labels (N,)), on the CPU: the top-1 class and whether the label is
    among the top-5 (top-min(5, classes)) on `attack(model, x, y, eps, **kw)` images, for each of the E eps
    values; N images in the loader's order. One pass, every eps per batch, read to the host at the end."""
    device, name = model_device(model), getattr(attack, "__name__", str(attack))
    pred, top5, labels = [[] for _ in eps_list], [[] for _ in eps_list], []
    with _bar(loader, len(eps_list), name, progress) as bar:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            for i, eps in enumerate(eps_list):
                logits = metrics.logits(model, attack(model, x, y, eps, **kw))
                pred[i].append(logits.argmax(1))
                top5[i].append((logits.topk(min(5, logits.shape[1]), dim=1).indices == y[:, None]).any(1))
                bar.update()
            labels.append(y)
    if not labels:
        empty = torch.zeros(len(eps_list), 0, dtype=torch.long)
        return empty, empty.bool(), torch.zeros(0, dtype=torch.long)
    return (torch.stack([torch.cat(p) for p in pred]).cpu(), torch.stack([torch.cat(t) for t in top5]).cpu(),
            torch.cat(labels).cpu())


def robust_accuracy(model: nn.Module, loader: Iterable, attack: Attack, eps_list: Sequence[float], *,
                    progress: bool = True, **kw) -> pd.DataFrame:
    """Top-1 and top-5 accuracy on `attack(model, x, y, eps, **kw)` images for each eps: one row per eps
    (columns attack, eps, top1, top5, n). loader: (x in [0, 1], y) batches; one pass, every eps per batch."""
    eps_list, name = list(eps_list), getattr(attack, "__name__", str(attack))
    pred, top5, labels = _attacked(model, loader, attack, eps_list, progress, **kw)
    n = len(labels)
    top1 = (pred == labels).double().sum(1) / max(n, 1)
    return pd.DataFrame([{"attack": name, "eps": eps, "top1": float(a), "top5": float(b), "n": n}
                         for eps, a, b in zip(eps_list, top1, top5.double().sum(1) / max(n, 1), strict=True)])


def robust_predictions(model: nn.Module, loader: Iterable, attack: Attack, eps_list: Sequence[float], *,
                       progress: bool = True, **kw) -> pd.DataFrame:
    """What robust_accuracy counts, per image: one row per eps x image (attack, eps, image: its place in the
    loader's order, label, pred on the attacked image, correct, top5). The trial-level table that error
    consistency (utils.experiments.similarity) is computed from."""
    eps_list, name = list(eps_list), getattr(attack, "__name__", str(attack))
    pred, top5, labels = _attacked(model, loader, attack, eps_list, progress, **kw)
    return pd.concat([pd.DataFrame({"attack": name, "eps": eps, "image": range(len(labels)),
                                    "label": labels.numpy(), "pred": p.numpy(),
                                    "correct": (p == labels).numpy(), "top5": t.numpy()})
                      for eps, p, t in zip(eps_list, pred, top5, strict=True)], ignore_index=True)


def autoattack_report(model: nn.Module, loader: Iterable, eps: float, norm: str = "linf", *,
                      progress: bool = True, **kw) -> pd.DataFrame:
    """Which AutoAttack members ran and what each did: one row for "clean" and one per attack, with the
    top-1 accuracy after it (cumulative: an image counts as broken once any attack so far broke it)."""
    device, total, n = model_device(model), {}, 0
    with _bar(loader, 1, "autoattack", progress) as bar:
        for x, y in loader:
            _, log = autoattack(model, x.to(device), y.to(device), eps, norm, return_log=True, **kw)
            total = {k: total.get(k, 0) + v for k, v in log.items()}
            n += len(y)
            bar.update()
    return pd.DataFrame([{"stage": i, "attack": k, "norm": norm, "eps": eps, "top1": v / max(n, 1), "n": n}
                         for i, (k, v) in enumerate(total.items())])


def _transfer_counts(models: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor, attack: Attack,
                     eps: float, bar, **kw) -> dict[tuple[str, str], torch.Tensor]:
    """Per (source, target), for one batch: [target right on the clean image, target right on the source's
    x_adv, eligible, transferred]. eligible: the target is right on the clean image and the attack breaks
    the source (the source is right on the clean image and wrong on x_adv); transferred: eligible and the
    target is wrong on x_adv."""
    on = {k: (x.to(model_device(m)), y.to(model_device(m))) for k, m in models.items()}
    right = lambda k, images: (metrics.logits(models[k], images.to(on[k][0].device)).argmax(1)
                               == on[k][1]).cpu()
    clean = {k: right(k, x) for k in models}  # (B,) bool per model
    counts = {}
    for s, source in models.items():
        x_adv = attack(source, *on[s], eps, **kw)
        adv = {t: right(t, x_adv) for t in models}
        broken = clean[s] & ~adv[s]
        for t in models:
            eligible = broken & clean[t]
            moved = eligible & ~adv[t]
            counts[s, t] = torch.tensor([clean[t].sum(), adv[t].sum(), eligible.sum(), moved.sum()])
        bar.update()
    return counts


def transfer_matrix(models: Mapping[str, nn.Module], loader: Iterable, attack: Attack, eps: float, *,
                    progress: bool = True, **kw) -> pd.DataFrame:
    """Craft `attack(source, x, y, eps, **kw)` on each source model, evaluate on each target: one row per
    (source, target) with target_clean_top1, target_adv_top1 (the target's accuracy on the source's
    adversarial images), n_eligible (images the target gets right when clean and the attack breaks on the
    source) and transfer_rate (the fraction of those the target gets wrong; NaN when none is eligible).
    On the diagonal the transfer rate is 1 by construction."""
    totals = {(s, t): torch.zeros(4, dtype=torch.long) for s in models for t in models}
    n = 0
    with _bar(loader, len(models), "transfer", progress) as bar:
        for x, y in loader:
            for key, c in _transfer_counts(models, x, y, attack, eps, bar, **kw).items():
                totals[key] += c
            n += len(y)
    name, rows = getattr(attack, "__name__", str(attack)), []
    for (s, t), (clean, adv, eligible, moved) in ((k, v.tolist()) for k, v in totals.items()):
        rows.append({"source": s, "target": t, "attack": name, "eps": eps, "n": n,
                     "target_clean_top1": clean / max(n, 1), "target_adv_top1": adv / max(n, 1),
                     "n_eligible": eligible, "transfer_rate": moved / eligible if eligible else float("nan")})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the original study's numbers

def original_vs_ours(curves: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The original study's top-1 (references.ORIGINAL_ATTACKS_CIFAR10) beside this run's at the nearest eps
    of each grid: one row per attack x model (curves: robust_accuracy rows with model and family columns)."""
    rows = []
    for (attack, eps), by_family in ORIGINAL_ATTACKS_CIFAR10.items():
        c = curves[curves.attack == attack]
        nearest = c.eps.iloc[(c.eps - eps).abs().argmin()]
        for model, family in c[["model", "family"]].drop_duplicates().itertuples(index=False):
            ours = c[(c.model == model) & (c.eps == nearest)].top1.item()
            rows.append({"attack": attack, "eps": nearest, "family": family, "model": model,
                         "original_top1_cifar10": by_family.get(family, float("nan")),
                         f"top1_{dataset}": ours})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- notebook 02: its knobs and its tables


@dataclass(frozen=True)
class Config:
    """02's knobs. Defaults are full's (CIFAR-10 on a GPU); SMALLER holds what the other profiles change."""

    n_images: int | None = 5000  # test images (the first n) for the grids and standard settings; None: all
    # (5,000, not 10,000: issue 26's budget; a proportion's 95% interval is then at most +-1.4 points)
    n_transfer: int | None = 2000  # test images (the first n) for the transfer matrix
    n_autoattack: int | None = 1000  # test images (the first n) for AutoAttack
    autoattack_steps: int = 100  # iterations of APGD, APGD-T and FAB-T (the original AutoAttack: 100)
    autoattack_queries: int = 5000  # Square's queries (the original: 5000)
    batch_size: int = 512  # images per attack batch
    fgsm_points: int = 21  # eps values of the original FGSM grid, evenly 0 .. 0.25
    pgd_points: int = 12  # eps values of the original PGD grid, evenly 0 .. 0.025
    max_pgd_steps: int = 50  # a cap on PGD iterations (settings keep the names they stand for)
    ceiling_seed: int | None = 1  # the trio trained again from this seed: each model's error consistency with
    # itself, the ceiling a pair of families is read against (clean and PGD-10;
    # 01 trains them); None: no ceiling
    aligned: bool = True  # the trio under one shared recipe (recipes.ALIGNED; 01 trains it): clean and PGD-10
    # top-1 and their error consistency, beside the own recipes' (utils/aligned.py)


SMALLER = {
    # quick: the ceiling from the aligned control's seeds, not from seed twins (01's budget)
    "quick": dict(n_images=500, n_transfer=500, n_autoattack=128, autoattack_steps=10, autoattack_queries=500,
                  batch_size=128, ceiling_seed=None),
    "smoke": dict(n_images=32, n_transfer=32, n_autoattack=8, autoattack_steps=3, autoattack_queries=10,
                  batch_size=32),
    # rehearsal: no seed twins (01's rehearsal trains none: utils/experiments/zoo.py)
    "rehearsal": dict(ceiling_seed=None, n_images=2, n_transfer=2, n_autoattack=2,
                      autoattack_steps=1,
                      autoattack_queries=2,
                      batch_size=2, fgsm_points=3, pgd_points=2, max_pgd_steps=2),
}


def config(profile: str | None = None, **overrides) -> Config:
    """02's config under `profile`, with `overrides` (checked: unknown knobs and wrong types are errors)."""
    return resolve(Config, profile, SMALLER, overrides)


@dataclass(frozen=True)
class Setting:
    """One attack setting as data: `Setting("PGD-10", "pgd", "linf", 8/255, steps=10, step_size=2/255)`."""

    name: str  # what tables call it ("PGD-10 L2")
    attack: str  # "fgsm", "pgd" or "clean" (no attack)
    norm: str = "linf"
    eps: float = 8 / 255  # radius in [0, 1] pixel units
    steps: int = 1  # PGD iterations (FGSM: 1)
    step_size: float | None = None  # per PGD step; None: 2.5 eps / steps (Madry et al.)
    random_start: bool = True  # PGD starts at a random point of the ball (seeded)
    early_stop: bool = False  # an image stays at the first iterate that fools the model

    def __repr__(self) -> str:
        if self.attack == "clean":
            return f"{self.name}: no attack"
        if self.attack == "fgsm":
            return f"{self.name}: FGSM, {self.norm} eps {self.eps:.4g}"
        step = "2.5 eps / steps" if self.step_size is None else f"{self.step_size:.4g}"
        extra = ", random start" * self.random_start + ", early stop" * self.early_stop
        return f"{self.name}: PGD, {self.norm} eps {self.eps:.4g}, {self.steps} steps of {step}{extra}"

    def kwargs(self, seed: int) -> dict:
        """The keyword arguments of fgsm / pgd for this setting."""
        if self.attack in ("fgsm", "clean"):
            return {}
        return dict(norm=self.norm, steps=self.steps, step_size=self.step_size,
                    random_start=self.random_start, seed=seed, early_stop=self.early_stop)

    @property
    def fn(self) -> Attack:
        return {"fgsm": fgsm, "pgd": pgd, "clean": clean}[self.attack]


def standard_settings(max_steps: int = 50) -> list[Setting]:
    """RobustBench's settings: L-inf 8/255 (FGSM, PGD-10, PGD-50) and L2 0.5 (PGD-10, PGD-50), step eps / 4,
    random start, early stop; PGD iterations capped at max_steps (the names stay)."""
    pgd_at = lambda name, norm, eps, steps: Setting(name, "pgd", norm, eps, min(steps, max_steps), eps / 4,
                                                    early_stop=True)
    return [Setting("FGSM", "fgsm"), pgd_at("PGD-10", "linf", 8 / 255, 10),
            pgd_at("PGD-50", "linf", 8 / 255, 50), pgd_at("PGD-10 L2", "l2", 0.5, 10),
            pgd_at("PGD-50 L2", "l2", 0.5, 50)]


def transfer_settings(max_steps: int = 50) -> list[Setting]:
    """The transfer matrix's settings: FGSM and PGD-10 (step 2/255, random start, last iterate) at 8/255."""
    return [Setting("FGSM", "fgsm"), Setting("PGD-10", "pgd", steps=min(10, max_steps), step_size=2 / 255)]


def grid_eps(cfg: Config) -> dict[str, list[float]]:
    """The original study's eps grids: FGSM 0 .. 0.25, PGD 0 .. 0.025 (cfg.*_points values each)."""
    return {"fgsm": np.linspace(0, 0.25, cfg.fgsm_points).tolist(),
            "pgd": np.linspace(0, 0.025, cfg.pgd_points).tolist()}


def grid_table(nets: Mapping[str, nn.Module], loader: Iterable, cfg: Config, seed: int = 0,
               family: Callable[[str], str] = str) -> pd.DataFrame:
    """Top-1/top-5 against eps on the original grids: FGSM, and L-inf PGD with 5 iterations of eps / 2
    (2.5 eps / steps), random start, last iterate. One row per model x attack x eps."""
    steps = min(5, cfg.max_pgd_steps)
    kw = {"fgsm": {}, "pgd": dict(steps=steps, random_start=True, seed=seed)}
    return pd.concat([robust_accuracy(net, loader, {"fgsm": fgsm, "pgd": pgd}[a], eps, **kw[a])
                      .assign(model=m, family=family(m), norm="linf", steps=kw[a].get("steps", 1))
                      for m, net in nets.items() for a, eps in grid_eps(cfg).items()], ignore_index=True)


def clean(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 0.0, **kw) -> torch.Tensor:
    """No attack: the images themselves (the `CLEAN` setting: clean predictions by the attacks' path)."""
    return x


CLEAN = Setting("clean", "clean", eps=0.0)


def robustness_tables(points: Iterable[tuple[dict, nn.Module, bool]], curve_loader: Iterable,
                      aa_loader: Iterable, eps: float, curve_eps: Sequence[float], aa_steps: int,
                      aa_queries: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Robustness of trained points ((tags, network, whether AutoAttack scores it), one network at a time):
    (PGD-10's robust top-1 at each of `curve_eps` on curve_loader's images (early stop), one row per point x
    eps with the tags; AutoAttack's report at `eps` on aa_loader's images beside PGD-10's top-1 there
    (`pgd_top1`, every step run), for the flagged points)."""
    curves, reports = [], []
    for tags, net, full in points:
        curves.append(robust_accuracy(net, curve_loader, pgd, list(curve_eps), steps=10, seed=seed,
                                      early_stop=True, progress=False).assign(**tags))
        if full:
            pgd_top1 = robust_accuracy(net, aa_loader, pgd, [eps], steps=10, seed=seed,
                                       progress=False).top1.iloc[0]
            reports.append(autoattack_report(net, aa_loader, eps, steps=aa_steps, n_queries=aa_queries,
                                             seed=seed, progress=False).assign(pgd_top1=pgd_top1, **tags))
    return pd.concat(curves, ignore_index=True), pd.concat(reports, ignore_index=True)


def autoattack_table(nets: Mapping[str, nn.Module], loader: Iterable, eps: float, steps: int, n_queries: int,
                     seed: int = 0, family: Callable[[str], str] = str, norm: str = "linf",
                     progress: bool = True) -> pd.DataFrame:
    """autoattack_report for each model, one table: stage, attack, norm, eps, top1, n, model, family, steps
    (APGD's), n_queries (Square's)."""
    return pd.concat([autoattack_report(net, loader, eps, norm, steps=steps, n_queries=n_queries, seed=seed,
                                        progress=progress)
                      .assign(model=m, family=family(m), steps=steps, n_queries=n_queries)
                      for m, net in nets.items()], ignore_index=True)


def settings_predictions(nets: Mapping[str, nn.Module], loader: Iterable, settings: Sequence[Setting],
                         seed: int = 0, family: Callable[[str], str] = str) -> pd.DataFrame:
    """Per image, each model under each setting: one row per model x setting x image (model, family,
    setting, attack, norm, eps, steps, image, label, pred, correct, top5; no rows without nets).
    settings_table counts it."""
    if not nets:
        return pd.DataFrame()
    return pd.concat([robust_predictions(net, loader, s.fn, [s.eps], **s.kwargs(seed))
                      .assign(model=m, family=family(m), setting=s.name, norm=s.norm, steps=s.steps)
                      for m, net in nets.items() for s in settings], ignore_index=True)


def settings_table(predictions: pd.DataFrame, settings: Sequence[Setting]) -> pd.DataFrame:
    """Robust top-1 (and top-5 where the attack runs every step) per model x setting, counted from
    settings_predictions' table (rows in its order); only the rows of `settings`."""
    names = [s.name for s in settings]
    part = predictions[predictions.setting.isin(names)]
    keys = ["model", "setting"]
    table = (part.groupby(keys, sort=False)
             .agg(attack=("attack", "first"), eps=("eps", "first"), top1=("correct", "mean"),
                  top5=("top5", "mean"), n=("image", "size"), family=("family", "first"),
                  norm=("norm", "first"), steps=("steps", "first"))
             .reset_index())
    stopped = table.setting.isin([s.name for s in settings if s.early_stop])
    table.loc[stopped, "top5"] = float("nan")  # early stop: never attacked past the first top-1 error
    return table[["attack", "eps", "top1", "top5", "n", "model", "family", "setting", "norm", "steps"]
                 ].reset_index(drop=True)


def transfer_table(nets: Mapping[str, nn.Module], loader: Iterable, settings: Sequence[Setting],
                   seed: int = 0) -> pd.DataFrame:
    """transfer_matrix for each setting, one table with a `setting` column."""
    return pd.concat([transfer_matrix(nets, loader, s.fn, s.eps, **s.kwargs(seed)).assign(setting=s.name)
                      for s in settings], ignore_index=True)


def summary_table(grids: pd.DataFrame, standard: pd.DataFrame, autoattack: pd.DataFrame) -> pd.DataFrame:
    """Everything in one tidy table, one row per model x setting: the grids ("FGSM grid", "PGD grid"), the
    standard settings, and AutoAttack's last stage (its robust accuracy)."""
    last = autoattack[autoattack.attack == autoattack.attack.iloc[-1]]
    columns = ["model", "family", "setting", "attack", "norm", "eps", "steps", "top1", "top5", "n"]
    return pd.concat([grids.assign(setting=grids.attack.str.upper() + " grid"), standard,
                      last.assign(setting="AutoAttack", attack="autoattack", top5=float("nan"))],
                     ignore_index=True)[columns]


def compact_table(clean: pd.DataFrame, standard: pd.DataFrame, autoattack: pd.DataFrame,
                  transfer: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """One row per model (in `order`): clean top-1 on the attacked images, each standard setting, AutoAttack
    (n images), and the mean PGD-10 transfer rate from the model to the others."""
    last = autoattack[autoattack.attack == autoattack.attack.iloc[-1]]
    off = transfer[(transfer.setting == "PGD-10") & (transfer.source != transfer.target)]
    settings = list(dict.fromkeys(standard.setting))
    return pd.concat([
        clean.set_index("model").attacked_top1.rename("clean"),
        standard.pivot(index="model", columns="setting", values="top1")[settings],
        last.set_index("model").top1.rename(f"AutoAttack (n={last.n.iloc[0]})"),
        off.groupby("source").transfer_rate.mean().rename("PGD-10 transfer rate to others"),
    ], axis=1).loc[list(order)]


def clean_table(nets: Mapping[str, nn.Module], loader: Iterable, test_set_top1: Mapping[str, float],
                family: Callable[[str], str] = str) -> pd.DataFrame:
    """Clean accuracy per model: on the whole test set (`test_set_top1`, from training's model card) and on
    the images the attacks use (`loader`: attacked_top1, attacked_top5, attacked_loss)."""
    return pd.DataFrame([{"model": m, "family": family(m), "test_set_top1": test_set_top1[m],
                          **{f"attacked_{k}": v for k, v in metrics.evaluate(net, loader).items()}}
                         for m, net in nets.items()])
