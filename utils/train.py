"""Training: `TrainConfig`, `fit`, `evaluate`, checkpoints that resume bit for bit.

    train_ds, val_ds = data.train_val_split(train_split, 0.1)   # every choice is made on val_ds
    cfg = TrainConfig(epochs=10, lr=1e-3, checkpoint_dir="checkpoints/quick/fashion-mnist/cnn_small")
    train_loader, val_loader = make_loaders(train_ds, val_ds, cfg, device="cpu")
    history = fit(model, train_loader, val_loader, cfg, test_loader=test)  # one row per epoch; test once

A plain loop: timm's optimiser factory (adamw, sgd, nesterov, lion, lamb) and warmup + cosine schedule stepped
per update, label smoothing, batch mixup, bf16 autocast on CUDA, optional torch.compile. With a
checkpoint_dir, an epoch's end writes `last.pt` atomically (model, optimiser, RNG, history, the data's
fingerprints) once checkpoint_every_s seconds have passed since the run started or last saved (runs shorter
than that write none); a later `fit` with the same config and data resumes from it and reproduces the
uninterrupted run exactly on CPU (the loaders' batches depend only on (seed, epoch)). A finished run writes
`model.safetensors`, `model.json` (the model card, with the test score) and `history.csv`, then removes
`last.pt` and `prev.pt`; the run folder's file handling (lock, corrupt files, rebuilding) is
utils.checkpoints'.

CLI: `python -m utils.train --model cnn_small --dataset fashion-mnist --epochs 5` (every TrainConfig field is
a flag; `python -m utils.train --help`). Multi-GPU: `torchrun --standalone --nproc_per_node=N -m utils.train
...` trains with DistributedDataParallel: batch_size and lr are the global batch's, rank 0 writes every file
(utils/distributed.py says what each part does under torchrun).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import timm.optim
import timm.scheduler
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import checkpoints, distributed
from .data import Augment, ImageSet, default_augment, make_loader
from .data.base import epoch_seed
from .files import checkpoints_root
from .metrics import evaluate
from .models import autocast, model_device
from .progress import bar, say
from .results import environment

OPTIMIZERS = ("adamw", "sgd", "nesterov", "lion", "lamb")  # sgd: heavy-ball momentum; nesterov: Nesterov's
FINITE_CHECK_EVERY = 50  # steps between loss finiteness checks (each is a host-device sync)
# fields that may change between a run and its resumption
_NOT_RESUME_RELEVANT = {"checkpoint_dir", "progress", "checkpoint_every_s"}
# Seconds of training between two last.pt (issue 26): a full B-12/Wi-1024 state is ~0.9 GB, and saving it
# every epoch wrote ~9.9 TB per `full` reproduce (utils.estimate, before this policy). Ten minutes bounds what
# a killed run loses; $MLPZOOM_CHECKPOINT_EVERY_S sets it (0: every epoch, as the tests use).
CHECKPOINT_EVERY_S = 600.0
CHECKPOINT_EVERY_ENV = "MLPZOOM_CHECKPOINT_EVERY_S"


def checkpoint_every(cfg: TrainConfig) -> float:
    """cfg.checkpoint_every_s, else $MLPZOOM_CHECKPOINT_EVERY_S, else CHECKPOINT_EVERY_S (read when asked)."""
    if cfg.checkpoint_every_s is not None:
        return cfg.checkpoint_every_s
    text = os.environ.get(CHECKPOINT_EVERY_ENV, "").strip()
    try:
        value = float(text) if text else CHECKPOINT_EVERY_S
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ValueError(f"${CHECKPOINT_EVERY_ENV} must be seconds >= 0 (0: a last.pt every epoch); "
                         f"got {text!r}")
    return value


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 256  # training images per step (make_loaders)
    eval_batch_size: int = 1024  # images per evaluation batch (make_loaders)
    optimizer: str = "adamw"  # one of OPTIMIZERS (timm.optim.create_optimizer_v2)
    lr: float = 1e-3  # peak learning rate, after warmup
    weight_decay: float = 0.05  # not applied to biases and norm parameters
    momentum: float = 0.9  # sgd and nesterov only
    warmup_epochs: int = 0  # linear warmup from warmup_lr, then cosine to min_lr at the last update
    warmup_lr: float = 1e-6
    min_lr: float = 0.0
    schedule: str = "cosine"  # "cosine" or "constant"
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0  # > 0: mix each batch with a permutation of itself, lambda ~ Beta(a, a)
    crop_pad: int | None = None  # random crop after zero padding (pixels); None: the dataset's default (4)
    flip: bool | None = None  # random horizontal flips; None: the dataset's default (not for digits)
    grad_clip: float | None = None  # max global gradient norm
    backbone_lr_scale: float = 1.0  # lr of every parameter outside the head (`head`) = lr x this (fine-tune)
    frozen_bn_stats: bool = False  # BatchNorm layers normalise with their running statistics while training
    # and keep them (eval mode; their affine weights still train): fine-tuning keeps the source's statistics
    # Adversarial training: every batch is replaced by adversarial examples crafted on it, on the fly, against
    # the model being trained. "fgsm": FGSM from a random start (Wong et al. 2020); "pgd": PGD with a random
    # start (Madry et al. 2018). L-inf radius adv_eps (pixels in [0, 1]); step None: 1.25 eps (fgsm),
    # 2.5 eps / adv_steps (pgd).
    adversarial: str | None = None
    adv_eps: float = 0.0
    adv_steps: int = 1
    adv_step_size: float | None = None
    amp: bool = True  # bf16 autocast, on CUDA only (on a CPU under the rehearsal: models.set_cpu_autocast)
    compile: bool = False  # torch.compile the model for training and evaluation
    seed: int = 0  # loaders, mixup and dropout (and initialisation, in the CLI and the store)
    checkpoint_dir: str | None = None  # None: no checkpoints, no resume
    # seconds between two last.pt (0: every epoch); None: $MLPZOOM_CHECKPOINT_EVERY_S, else CHECKPOINT_EVERY_S
    checkpoint_every_s: float | None = None
    progress: bool = True  # a line per epoch (and tqdm bars in a terminal)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant'; got {self.schedule!r}")
        if self.adversarial not in (None, "fgsm", "pgd") or (self.adversarial and self.adv_eps <= 0):
            raise ValueError(f"adversarial must be None, 'fgsm' or 'pgd' with adv_eps > 0; got "
                             f"{self.adversarial!r}, adv_eps={self.adv_eps}")
        if not self.lr >= 0 or not math.isfinite(self.lr):  # lr 0: refused by fit (measurements use it)
            raise ValueError(f"lr must be a positive number (the peak learning rate); got lr={self.lr}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be None (no clipping) or a positive gradient norm; got "
                             f"grad_clip={self.grad_clip}")
        if self.epochs < 1 or not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(
                f"need epochs >= 1 and 0 <= warmup_epochs < epochs; got epochs={self.epochs}, "
                f"warmup_epochs={self.warmup_epochs}"
            )


def make_loaders(
    train_ds: ImageSet,
    val_ds: ImageSet | None,
    cfg: TrainConfig,
    device: str = "cpu",
    backend: str = "resident",
    **kw,
):
    """(train loader: shuffled, augmented as cfg says, drop_last; val loader: in order, or None), seeded by
    cfg.seed."""
    aug = default_augment(train_ds.info, train=True)
    pad = aug.pad if cfg.crop_pad is None else cfg.crop_pad
    aug = Augment(pad, aug.flip if cfg.flip is None else cfg.flip)
    train = make_loader(
        train_ds, cfg.batch_size, train=True, device=device, backend=backend, augment=aug, seed=cfg.seed, **kw
    )
    val = (
        None
        if val_ds is None
        else make_loader(val_ds, cfg.eval_batch_size, train=False, device=device, backend=backend, **kw)
    )
    return train, val


# ---------------------------------------------------------------- pieces of a step


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # timm's names: "momentum" is SGD with heavy-ball momentum, "sgd" and "nesterov" are Nesterov's.
    opt = {"sgd": "momentum", "nesterov": "nesterov"}.get(cfg.optimizer, cfg.optimizer)
    kw = {"momentum": cfg.momentum} if cfg.optimizer in ("sgd", "nesterov") else {}
    params = model if cfg.backbone_lr_scale == 1.0 else head_and_backbone_groups(model, cfg)
    return timm.optim.create_optimizer_v2(params, opt=opt, lr=cfg.lr, weight_decay=cfg.weight_decay, **kw)


def head_and_backbone_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Parameter groups for fine-tuning: the head (parameters under `head`) at the full lr, the backbone at
    lr x backbone_lr_scale (as `lr_scale`, which timm's scheduler keeps), each split like timm's default into
    weight decay and none (biases and other 1-d parameters)."""
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = (name.startswith("head."), p.ndim > 1 and not name.endswith(".bias"))
            buckets.setdefault(key, []).append(p)
    return [{"params": params, "weight_decay": cfg.weight_decay if decay else 0.0,
             "lr_scale": 1.0 if in_head else cfg.backbone_lr_scale,
             "lr": cfg.lr * (1.0 if in_head else cfg.backbone_lr_scale)}
            for (in_head, decay), params in sorted(buckets.items(), reverse=True)]


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """timm's scheduler in update units: lr(step) is a pure function of the step (resume-safe)."""
    if cfg.schedule == "constant":
        return None
    scheduler, _ = timm.scheduler.create_scheduler_v2(
        optimizer,
        sched="cosine",
        num_epochs=cfg.epochs,
        warmup_epochs=cfg.warmup_epochs,
        warmup_lr=cfg.warmup_lr,
        min_lr=cfg.min_lr,
        step_on_epochs=False,
        updates_per_epoch=steps_per_epoch,
    )
    return scheduler


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device`; to CUDA through pinned memory without blocking (a copy from pageable memory
    waits for the GPU: a host sync every step, issue 26). The values are the CPU draw's, on any device."""
    if torch.device(device).type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def adversarial_batch(forward, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, gen: torch.Generator
                      ) -> torch.Tensor:
    """The batch x (B, C, H, W) in [0, 1] replaced by L-inf adversarial examples against the model as it is
    now (train mode, as Wong et al. and Madry et al. train): a random start in the adv_eps ball (drawn on
    the CPU from `gen`: the same start on any device), then one FGSM step or adv_steps PGD steps of
    sign(grad), each projected to the ball and to [0, 1]. Gradients w.r.t. the input only: the parameters'
    .grad are untouched."""
    eps, steps = cfg.adv_eps, 1 if cfg.adversarial == "fgsm" else cfg.adv_steps
    alpha = cfg.adv_step_size or (1.25 * eps if cfg.adversarial == "fgsm" else 2.5 * eps / steps)
    b, r = len(x), distributed.rank()  # under torchrun: this rank's part of the global batch's draw
    start = torch.rand((b * distributed.world_size(), *x.shape[1:]), generator=gen)[r * b : r * b + b]
    delta = to_device((start * 2 - 1) * eps, x.device).to(x.dtype)
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        with autocast(x.device, cfg.amp):
            loss = F.cross_entropy(forward(x + delta).float(), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, rng: np.random.Generator):
    """x mixed with a permutation of itself: (x', y, y[perm], lam), lam ~ Beta(alpha, alpha)."""
    lam = float(rng.beta(alpha, alpha))
    perm = to_device(torch.from_numpy(rng.permutation(len(y))), y.device)
    return lam * x + (1 - lam) * x[perm], y, y[perm], lam


def train_mode(model: nn.Module, frozen_bn_stats: bool = False) -> nn.Module:
    """model.train(), except that every module whose parameters are all frozen (requires_grad False) runs in
    eval mode: a frozen backbone gives the head deterministic features (no dropout, no drop-path) and keeps
    its BatchNorm statistics (issue 26). Modules without parameters (a top-level dropout) follow the model.
    frozen_bn_stats: every BatchNorm layer normalises with its running statistics (fine-tuning)."""
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        frozen = params and not any(p.requires_grad for p in params)
        if frozen or (frozen_bn_stats and isinstance(module, nn.modules.batchnorm._BatchNorm)):
            module.eval()
    return model


def train_epoch(model, forward, loader, optimizer, scheduler, cfg: TrainConfig, epoch: int) -> dict:
    """One pass; returns train loss/acc, images/s and the last lr. Updates are counted from epoch * len.
    `forward` trains (the DDP wrapper under torchrun); adversarial examples are crafted on `model` there.

    The running sums stay on the device (float64 loss, int64 hits), so a step never waits for the device;
    the loss is checked for finiteness every FINITE_CHECK_EVERY steps and at the end of the epoch (a NaN or
    inf step loss makes the running sum non-finite, so no bad step goes unnoticed). Under torchrun the checks
    and the epoch's sums are over every rank (global train loss/acc, images/s)."""
    train_mode(model, cfg.frozen_bn_stats)
    device, steps = model_device(model), len(loader)
    rng = np.random.default_rng(epoch_seed(cfg.seed + 1, epoch))  # mixup draws: a function of (seed, epoch)
    adv_gen = torch.Generator().manual_seed(epoch_seed(cfg.seed + 2, epoch)) if cfg.adversarial else None
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    n, checked, start = 0, 0, time.perf_counter()
    craft = model if distributed.active() else forward  # input gradients need no gradient sync
    bar_ = bar(loader, total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}",
               disable=not cfg.progress or not distributed.is_main())
    for i, (x, y) in enumerate(bar_):
        if scheduler is not None:
            scheduler.step_update(num_updates=epoch * steps + i)
        lam, y_b = 1.0, y
        if cfg.adversarial:
            x = adversarial_batch(craft, x, y, cfg, adv_gen)
        if cfg.mixup_alpha > 0:
            x, y, y_b, lam = mixup(x, y, cfg.mixup_alpha, rng)
        with autocast(device, cfg.amp):
            logits = forward(x).float()
        loss = lam * F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        if lam < 1:
            loss = loss + (1 - lam) * F.cross_entropy(logits, y_b, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        total_loss += loss.detach().double() * len(y)
        correct += (logits.argmax(1) == y).sum()
        n += len(y)
        if (i + 1) % FINITE_CHECK_EVERY == 0 or i + 1 == steps:
            check_finite(distributed.summed(total_loss)[0] if distributed.active() else total_loss.item(),
                         epoch, checked, i)
            checked = i + 1
            if cfg.progress:
                bar_.set_postfix(loss=f"{total_loss.item() / n:.3f}")
    seconds = time.perf_counter() - start
    total, hits = total_loss.item(), correct.item()
    if distributed.active():
        total, hits, n = distributed.summed(total_loss, correct, n)
    return {
        "train_loss": total / max(n, 1),
        "train_acc": hits / max(n, 1),
        "lr": optimizer.param_groups[0]["lr"],
        "train_seconds": seconds,
        "images_per_s": n / seconds,
    }


def check_finite(total_loss: float, epoch: int, first: int, last: int) -> None:
    """FloatingPointError when the running loss sum (read from the device: one sync) is NaN or infinite."""
    if not math.isfinite(total_loss):
        raise FloatingPointError(
            f"loss became {total_loss} at epoch {epoch + 1}, between steps {first} and {last}: "
            "lower the lr (or set grad_clip)?"
        )


def all_finite(model: nn.Module) -> bool:
    """Every floating-point parameter and buffer is finite (one device sync)."""
    flags = [torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def check_diverged(model: nn.Module, row: dict, name: str, kept: str = "") -> None:
    """FloatingPointError naming the run and epoch when an epoch ended with NaN or inf weights or losses
    (the last step's update can break the weights after a finite loss), before the epoch is saved."""
    losses = {k: row[k] for k in ("train_loss", "val_loss") if k in row}
    if all(math.isfinite(v) for v in losses.values()) and all_finite(model):
        return
    what = ", ".join(f"{k} {v}" for k, v in losses.items())
    raise FloatingPointError(f"{name}: the run diverged in epoch {row['epoch']} ({what}; weights finite: "
                             f"{all_finite(model)}): lower the lr (or set grad_clip){kept}")


def _kept(folder: Path | None, epoch: int) -> str:
    """What a diverged run leaves: its last good checkpoint, never a finished model."""
    if folder is None:
        return ""
    return f"; not saved as finished, {folder / 'last.pt'} keeps epoch {epoch}" if epoch else \
        "; nothing was saved"


# ---------------------------------------------------------------- checkpoints


def resume_config(cfg: TrainConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in _NOT_RESUME_RELEVANT}


def comparable(config: dict | None) -> dict:
    """A saved training config with the fields at TrainConfig's defaults dropped, so that a field added
    later (with a default that keeps the old behaviour) does not make every stored run look different."""
    defaults = _json(resume_config(TrainConfig()))
    return {k: v for k, v in _json(config or {}).items() if k not in defaults or defaults[k] != v}


def data_keys(train_loader, val_loader) -> dict:
    """What the run was trained and selected on: each loader's data key (dataset, split, n, fingerprint)."""
    key = lambda loader: loader.data_key() if hasattr(loader, "data_key") else None
    return {"train": key(train_loader), "val": key(val_loader) if val_loader is not None else None}


def _json(obj):
    return json.loads(json.dumps(obj, default=str))  # tuples vs lists, as saved


def check_same(saved: dict | None, now: dict, what: str, folder: Path, defaults: dict | None = None) -> None:
    """ValueError naming every field that differs between a stored run and this call (a field missing from
    one side counts as its value in `defaults`, when given)."""
    fill = _json(defaults or {})
    saved, now = fill | _json(saved or {}), fill | _json(now)
    diff = {k: (saved.get(k), now.get(k)) for k in sorted(set(saved) | set(now))
            if saved.get(k) != now.get(k)}
    if diff:
        changes = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"{folder} holds a run with another {what} ({changes}); use another checkpoint "
                         "folder, or delete that one to start over")


def model_card(model: nn.Module, history: list[dict], cfg: TrainConfig, data: dict,
               test: dict | None) -> dict:
    """The model card: what was trained, on what, how, and what it scored (validation per epoch; test
    once)."""
    return {
        "model": getattr(model, "model_name", type(model).__name__),
        "model_config": getattr(model, "model_config", None),
        "dataset": (data.get("train") or {}).get("dataset"),
        "data": data,
        "train_config": asdict(cfg),
        "metrics": {**{k: v for k, v in history[-1].items() if k.startswith("val_")},
                    **{f"test_{k}": v for k, v in (test or {}).items()}},
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": len(history),
        "train_seconds": sum(h["train_seconds"] for h in history),
        "world_size": distributed.world_size(),  # processes (torchrun); batch_size is the global batch
        "environment": environment(model_device(model)),
    }


# ---------------------------------------------------------------- fit


def fit(model: nn.Module, train_loader, val_loader, cfg: TrainConfig, test_loader=None) -> pd.DataFrame:
    """Train `model` (moved to the loader's device) for cfg.epochs; one history row per epoch, validated on
    `val_loader` (the validation split: every choice is made on it); `test_loader`, if given, is scored once
    at the end, into the model card.

    With cfg.checkpoint_dir: one process at a time (a per-run lock), resumes from last.pt when the config
    and the data are the same (else a ValueError naming what changed), returns at once if that run had
    finished, rebuilds a missing final file from a finished last.pt, and never trains over a finished model:
    when its checkpoints are lost the finished model is loaded instead. Raises FloatingPointError on a
    non-finite loss.

    Under torchrun (build the loaders after utils.distributed.setup()): DDP for the training forward, `model`
    itself evaluated and saved; rank 0 reads and writes the run folder, every rank returns the same model and
    history (but for the timing columns, each rank's own).
    """
    distributed.setup(getattr(train_loader, "device", "cpu"))
    distributed.check_sharded(train_loader)
    model.to(getattr(train_loader, "device", model_device(model)))
    if cfg.lr == 0:  # a run that trains nothing must not be saved as a trained model
        raise ValueError("lr=0 trains nothing; give fit a positive lr")
    if len(train_loader) == 0:
        n = getattr(train_loader, "num_samples", "the")
        raise ValueError(f"no training batch: batch_size {cfg.batch_size} is larger than the {n} "
                         "training images "
                         "(the last incomplete batch is dropped); use a smaller batch or more images")
    if not cfg.checkpoint_dir:
        return pd.DataFrame(_train(model, train_loader, val_loader, cfg, None, [], 0, None)[0])
    folder = Path(cfg.checkpoint_dir)
    distributed.on_main(folder.mkdir, parents=True, exist_ok=True)
    with distributed.main_lock(folder):
        distributed.on_main(_tidy, folder)
        return _fit_in(folder, model, train_loader, val_loader, cfg, test_loader)


def _tidy(folder: Path) -> None:
    checkpoints.tidy(folder)
    for name, why in checkpoints.unreadable_finals(folder).items():
        checkpoints.set_aside(folder / name, why)


def _saved(folder: Path, cfg: TrainConfig, data: dict) -> tuple[dict | None, tuple | None]:
    """(the state to resume from, or None; (weights, history) of a finished run, or None), after checking
    that they were made with this config on this data. A finished run is read from its final files alone,
    whatever state its checkpoints are in (an unreadable last.pt must not resume from prev.pt and train
    over the finished model)."""
    if checkpoints.has_final(folder):  # _tidy has set unreadable final files aside
        card = checkpoints.read_card(folder)
        saved = {k: v for k, v in card["train_config"].items() if k not in _NOT_RESUME_RELEVANT}
        check_same(saved, resume_config(cfg), "training config", folder, resume_config(TrainConfig()))
        check_same(card.get("data"), data, "data", folder)
        return None, (checkpoints.read_weights(folder), checkpoints.read_history(folder, card["epochs"]))
    state = checkpoints.load_state(folder)
    if state is not None:
        check_same(state["config"], resume_config(cfg), "training config", folder,
                   resume_config(TrainConfig()))
        check_same(state.get("data"), data, "data", folder)
    return state, None


def _fit_in(folder: Path, model, train_loader, val_loader, cfg: TrainConfig, test_loader) -> pd.DataFrame:
    data = data_keys(train_loader, val_loader)
    state, finished = distributed.on_main(_saved, folder, cfg, data)  # rank 0 reads; the others get a copy
    if finished is not None:
        model.load_state_dict(finished[0])
        model.eval()
        return pd.DataFrame(finished[1])
    history, start = ([], 0) if state is None else (state["history"], state["epoch"])
    history, trained = _train(model, train_loader, val_loader, cfg, folder, history, start, state)
    if trained or not distributed.on_main(checkpoints.has_final, folder):
        for row in history:  # e.g. rebuilding the final files from a last.pt of a run that diverged
            check_diverged(model, row, folder.name, "; not saved as finished: train it again")
        test = evaluate(model, test_loader, cfg.amp) if test_loader is not None else None
        distributed.on_main(lambda: checkpoints.write_final(folder, model.state_dict(), history,
                                                            model_card(model, history, cfg, data, test)))
    distributed.on_main(checkpoints.drop_states, folder)  # the final files replace them (disk: issue 26)
    return pd.DataFrame(history)


def _restore(model, optimizer, state: dict, cfg: TrainConfig) -> None:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if distributed.active():
        distributed.restore_rng(state, cfg.seed)  # this rank's streams
        return
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def _save(folder: Path, model, optimizer, epoch: int, history: list[dict], cfg: TrainConfig, data: dict
          ) -> None:
    """last.pt (rank 0, with every rank's RNG states gathered under torchrun: call on every rank)."""
    ranks = distributed.rng_states()
    distributed.on_main(checkpoints.save_state, folder, {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
        "history": history, "config": resume_config(cfg), "data": data, "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        **({"rng_ranks": ranks} if ranks else {})})


def _due(saved_at: float, every_s: float) -> bool:
    return time.time() - saved_at >= every_s


def _train(model, train_loader, val_loader, cfg: TrainConfig, folder: Path | None, history: list[dict],
           start: int, state: dict | None) -> tuple[list[dict], bool]:
    """Epochs start .. cfg.epochs (restoring `state` first); returns (history, whether any epoch ran)."""
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, len(train_loader))
    if state is not None:
        _restore(model, optimizer, state, cfg)
    else:  # dropout / drop-path streams (one per rank); initialisation happened in the caller
        torch.manual_seed(distributed.rank_seed(cfg.seed))
    name, begin = folder.name if folder is not None else getattr(model, "model_name", "model"), time.time()
    saved_at, saved_epoch = begin, start  # when, and after which epoch, last.pt was written (0: none)
    every_s = checkpoint_every(cfg)
    loud = cfg.progress and distributed.is_main()
    with distributed.batchnorm_synced(model):  # SyncBatchNorm under torchrun on CUDA
        forward = torch.compile(model) if cfg.compile else model  # evaluation (and training in one process)
        train_forward = forward
        if distributed.active():  # DDP for the training forward only: `model` is evaluated and saved
            train_forward = distributed.wrap(model)
            train_forward = torch.compile(train_forward) if cfg.compile else train_forward
        for epoch in range(start, cfg.epochs):
            try:
                row = {"epoch": epoch + 1,
                       **train_epoch(model, train_forward, train_loader, optimizer, scheduler, cfg, epoch)}
            except FloatingPointError as err:
                raise FloatingPointError(f"{name}: {err}{_kept(folder, saved_epoch)}") from None
            distributed.sync_buffers(model)  # rank 0's BatchNorm statistics on every rank (CPU: per-rank BN)
            if val_loader is not None:
                row.update({f"val_{k}": v for k, v in evaluate(forward, val_loader, cfg.amp).items()})
            check_diverged(model, row, name, _kept(folder, saved_epoch))
            history.append(row)
            if loud:
                val = f", val top-1 {row['val_top1']:.4f}" if "val_top1" in row else ""
                say(f"{name}: epoch {epoch + 1}/{cfg.epochs}, train loss {row['train_loss']:.4f}{val} "
                    f"({time.time() - begin:.0f} s)")
            if folder is not None and distributed.on_main(  # rank 0's clock decides for every rank
                    _due, saved_at, every_s):
                _save(folder, model, optimizer, epoch, history, cfg, data_keys(train_loader, val_loader))
                saved_at, saved_epoch = time.time(), epoch + 1
    model.eval()
    return history, start < cfg.epochs


# ---------------------------------------------------------------- CLI


def cli_parser() -> argparse.ArgumentParser:
    """Every TrainConfig field is a flag (--crop-pad 0, --flip no, --grad-clip none, --amp yes)."""
    from . import cli, data, models

    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description="Train one registered model on one registered dataset: "
                                     "90% of the training split trains, a stratified 10% validates every "
                                     "epoch, the test split is scored once at the end.")
    parser.add_argument("--model", required=True, type=cli.one_of(models.list_models, "model"))
    parser.add_argument("--dataset", required=True, type=cli.one_of(data.list_datasets, "dataset"))
    parser.add_argument("--root",
                        help="the data folder; for image-folder the folder holding train/ and test/")
    parser.add_argument("--subset", type=cli.positive_int,
                        help="n training images, stratified (default: all)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="held out for validation (0.1)")
    parser.add_argument("--set", type=cli.key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="a model override, e.g. --set depth=2 --set norm=batch (repeatable)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", default="resident", choices=data.BACKENDS.names())
    parser.add_argument("--out", help="checkpoint folder (default: checkpoints/cli/<dataset>/<model>)")
    for f in fields(TrainConfig):
        if f.name != "checkpoint_dir":
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=cli.FIELD_TYPES[f.type],
                                default=getattr(defaults, f.name), metavar=f.type.upper().replace(" | ", "|"))
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = cli_parser()
    args = parser.parse_args(argv)
    device = distributed.setup(args.device)  # under torchrun: the process group; cuda:LOCAL_RANK
    try:
        _main(parser, args, device)
    finally:
        distributed.shutdown()


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace, device: str) -> None:
    from . import data, models

    try:
        full = data.load_dataset(args.dataset, "train", root=args.root, subset=args.subset,
                                 subset_seed=args.seed)
        train_ds, val_ds = data.train_val_split(full, args.val_fraction, seed=args.seed)
        test_ds = data.load_dataset(args.dataset, "test", root=args.root)
        cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)
                             if hasattr(args, f.name)},
                          checkpoint_dir=str(args.out or checkpoints_root() / "cli" / args.dataset
                                             / args.model))
    except (ValueError, FileNotFoundError, KeyError) as err:
        parser.error(str(err).strip("'\""))
    if cfg.batch_size > len(train_ds):
        parser.error(f"--batch-size {cfg.batch_size} is larger than the {len(train_ds)} training images "
                     "(after the validation split); use a smaller batch or more images")
    try:
        model = models.create_for(args.model, train_ds.info, seed=cfg.seed, **dict(args.set))
        loaders = make_loaders(train_ds, val_ds, cfg, device=device, backend=args.backend)
        test = make_loader(test_ds, cfg.eval_batch_size, train=False, device=device, backend=args.backend)
        history = fit(model, *loaders, cfg, test_loader=test)
    except (ValueError, TypeError, OSError, FloatingPointError, checkpoints.RunBusy) as err:
        raise SystemExit(f"error: {err}") from None
    if not distributed.is_main():
        return
    print(history.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    card = checkpoints.read_card(Path(cfg.checkpoint_dir))
    print(json.dumps({"checkpoint_dir": cfg.checkpoint_dir, **card["metrics"]}, default=float))


if __name__ == "__main__":
    main()
