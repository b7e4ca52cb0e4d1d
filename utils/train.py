"""Training: `TrainConfig`, `fit`, `evaluate`, checkpoints that resume bit for bit.

    cfg = TrainConfig(epochs=10, lr=1e-3, checkpoint_dir="checkpoints/quick/fashion-mnist/cnn_small")
    train_loader, val_loader = make_loaders(train_ds, test_ds, cfg, device="cpu")
    history = fit(model, train_loader, val_loader, cfg)   # pandas DataFrame, one row per epoch
    evaluate(model, val_loader)                           # {"top1": .., "top5": .., "loss": ..}

A plain loop: timm's optimiser factory (adamw, sgd, lion, lamb) and warmup + cosine schedule stepped per
update, label smoothing, batch mixup, bf16 autocast on CUDA, optional torch.compile. With a checkpoint_dir,
every epoch writes `last.pt` atomically (model, optimiser, RNG, history); a later `fit` with the same config
resumes from it and reproduces the uninterrupted run exactly on CPU (the loaders' batches depend only on
(seed, epoch)). A finished run writes `model.safetensors`, `model.json` (the model card) and `history.csv`.

CLI: `python -m utils.train --model cnn_small --dataset fashion-mnist --epochs 5`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import safetensors.torch
import timm.optim
import timm.scheduler
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import Augment, ImageSet, default_augment, make_loader
from .data.base import epoch_seed
from .files import atomic_write, checkpoints_root, save_json
from .metrics import evaluate
from .models import autocast, model_device
from .results import environment

OPTIMIZERS = ("adamw", "sgd", "nesterov", "lion", "lamb")  # sgd: heavy-ball momentum; nesterov: Nesterov's
FINITE_CHECK_EVERY = 50  # steps between loss finiteness checks (each is a host-device sync)
_NOT_RESUME_RELEVANT = {"checkpoint_dir", "progress"}  # may change between a run and its resumption


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
    amp: bool = True  # bf16 autocast, on CUDA only (ignored on CPU)
    compile: bool = False  # torch.compile the model for training and evaluation
    seed: int = 0  # initialisation is the caller's; this seeds loaders, mixup and dropout
    checkpoint_dir: str | None = None  # None: no checkpoints, no resume
    progress: bool = True  # tqdm bars

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant'; got {self.schedule!r}")
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
    return timm.optim.create_optimizer_v2(model, opt=opt, lr=cfg.lr, weight_decay=cfg.weight_decay, **kw)


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


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, rng: np.random.Generator):
    """x mixed with a permutation of itself: (x', y, y[perm], lam), lam ~ Beta(alpha, alpha)."""
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(len(y))).to(y.device)
    return lam * x + (1 - lam) * x[perm], y, y[perm], lam


def train_epoch(model, forward, loader, optimizer, scheduler, cfg: TrainConfig, epoch: int) -> dict:
    """One pass; returns train loss/acc, images/s and the last lr. Updates are counted from epoch * len.

    The running sums stay on the device (float64 loss, int64 hits), so a step never waits for the device;
    the loss is checked for finiteness every FINITE_CHECK_EVERY steps and at the end of the epoch (a NaN or
    inf step loss makes the running sum non-finite, so no bad step goes unnoticed)."""
    model.train()
    device, steps = model_device(model), len(loader)
    rng = np.random.default_rng(epoch_seed(cfg.seed + 1, epoch))  # mixup draws: a function of (seed, epoch)
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    n, checked, start = 0, 0, time.perf_counter()
    bar = tqdm(
        loader, total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not cfg.progress
    )
    for i, (x, y) in enumerate(bar):
        if scheduler is not None:
            scheduler.step_update(num_updates=epoch * steps + i)
        lam, y_b = 1.0, y
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
            check_finite(total_loss, epoch, checked, i)
            checked = i + 1
            if cfg.progress:
                bar.set_postfix(loss=f"{total_loss.item() / n:.3f}")
    seconds = time.perf_counter() - start
    return {
        "train_loss": total_loss.item() / max(n, 1),
        "train_acc": correct.item() / max(n, 1),
        "lr": optimizer.param_groups[0]["lr"],
        "train_seconds": seconds,
        "images_per_s": n / seconds,
    }


def check_finite(total_loss: torch.Tensor, epoch: int, first: int, last: int) -> None:
    """FloatingPointError when the running loss sum is NaN or infinite (one host-device sync)."""
    if not math.isfinite(total_loss.item()):
        raise FloatingPointError(
            f"loss became {total_loss.item()} at epoch {epoch + 1}, between steps {first} and {last}: "
            "lower the lr (or set grad_clip)?"
        )


# ---------------------------------------------------------------- checkpoints


def resume_config(cfg: TrainConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in _NOT_RESUME_RELEVANT}


def save_state(folder: Path, model, optimizer, epoch: int, history: list[dict], cfg: TrainConfig) -> None:
    """`last.pt`: everything a resumption needs; the previous one is kept as `prev.pt`."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "history": history,
        "config": resume_config(cfg),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    last = folder / "last.pt"
    if last.exists():
        last.replace(folder / "prev.pt")
    atomic_write(last, lambda p: torch.save(state, p))


def load_state(folder: Path) -> dict | None:
    """The newest readable state (`last.pt`, else `prev.pt`); an unreadable file is renamed `*.corrupt`,
    never overwritten, and named in a warning."""
    for name in ("last.pt", "prev.pt"):
        path = folder / name
        if not path.exists():
            continue
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated zip, bad pickle, ...: any failure means unusable
            bad = path.with_name(name + ".corrupt")
            path.replace(bad)
            warnings.warn(f"{path} is unreadable ({type(err).__name__}); kept as {bad.name}", stacklevel=2)
    return None


def check_resumable(state: dict, cfg: TrainConfig, folder: Path) -> None:
    diff = {
        k: (v, resume_config(cfg).get(k))
        for k, v in state["config"].items()
        if resume_config(cfg).get(k) != v
    }
    if diff:
        changes = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(diff.items()))
        raise ValueError(
            f"{folder} holds a run with another config ({changes}); "
            "use another checkpoint_dir or delete that folder to start over"
        )


def write_final(folder: Path, model: nn.Module, history: list[dict], cfg: TrainConfig, loader) -> None:
    """model.safetensors (weights), history.csv, model.json (the model card)."""
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(folder / "model.safetensors", lambda p: safetensors.torch.save_file(weights, str(p)))
    atomic_write(folder / "history.csv", lambda p: pd.DataFrame(history).to_csv(p, index=False))
    info = getattr(loader, "info", None)
    card = {
        "model": getattr(model, "model_name", type(model).__name__),
        "model_config": getattr(model, "model_config", None),
        "dataset": info.name if info is not None else None,
        "train_config": asdict(cfg),
        "metrics": {k: v for k, v in history[-1].items() if k.startswith("val_")},
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": len(history),
        "train_seconds": sum(h["train_seconds"] for h in history),
        "environment": environment(model_device(model)),
    }
    save_json(card, folder / "model.json")


# ---------------------------------------------------------------- fit


def fit(model: nn.Module, train_loader, val_loader, cfg: TrainConfig) -> pd.DataFrame:
    """Train `model` (moved to the loader's device) for cfg.epochs; one history row per epoch.

    With cfg.checkpoint_dir, resumes from its last.pt (same config required) and returns at once if
    that run had finished. Raises FloatingPointError on a non-finite loss.
    """
    device = getattr(train_loader, "device", model_device(model))
    model.to(device)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, len(train_loader))
    folder = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    history, start = [], 0
    if folder is not None and (state := load_state(folder)) is not None:
        check_resumable(state, cfg, folder)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, start = state["history"], state["epoch"]
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
    else:
        torch.manual_seed(cfg.seed)  # dropout / drop-path streams; initialisation happened in the caller
    forward = torch.compile(model) if cfg.compile else model
    epochs = tqdm(
        range(start, cfg.epochs), initial=start, total=cfg.epochs, desc="training", disable=not cfg.progress
    )
    for epoch in epochs:
        row = {
            "epoch": epoch + 1,
            **train_epoch(model, forward, train_loader, optimizer, scheduler, cfg, epoch),
        }
        if val_loader is not None:
            row.update({f"val_{k}": v for k, v in evaluate(forward, val_loader, cfg.amp).items()})
        history.append(row)
        epochs.set_postfix({k: f"{v:.4f}" for k, v in row.items() if k in ("train_loss", "val_top1")})
        if folder is not None:
            save_state(folder, model, optimizer, epoch + 1, history, cfg)
    model.eval()
    if folder is not None and (start < cfg.epochs or not (folder / "model.json").exists()):
        write_final(folder, model, history, cfg, train_loader)
    return pd.DataFrame(history)


# ---------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    from . import data, models

    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description="Train one registered model on one registered dataset.")
    parser.add_argument("--model", required=True, help="a name from utils.models.list_models()")
    parser.add_argument("--dataset", required=True, help="a name from utils.data.list_datasets()")
    parser.add_argument("--subset", type=int, help="first n training images (default: all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", default="resident", choices=data.loaders.BACKENDS)
    parser.add_argument("--out", help="checkpoint folder (default: checkpoints/cli/<dataset>/<model>)")
    for f in fields(TrainConfig):
        if f.name != "checkpoint_dir" and f.type in ("int", "float", "str", "bool"):
            kind = {"int": int, "float": float, "str": str, "bool": lambda s: s.lower() in ("1", "true")}[
                f.type
            ]
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=getattr(defaults, f.name))
    args = parser.parse_args(argv)
    train_ds = data.load_dataset(args.dataset, "train", subset=args.subset)
    test_ds = data.load_dataset(args.dataset, "test")
    out = args.out or checkpoints_root() / "cli" / args.dataset / args.model
    cfg_kw = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    cfg = TrainConfig(**cfg_kw, checkpoint_dir=str(out))
    model = models.create_for(args.model, train_ds.info)
    history = fit(model, *make_loaders(train_ds, test_ds, cfg, device=args.device, backend=args.backend), cfg)
    print(history.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(json.dumps({"checkpoint_dir": str(out), **history.iloc[-1].to_dict()}, default=float))


if __name__ == "__main__":
    main()
