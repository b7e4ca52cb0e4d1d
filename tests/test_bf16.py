"""full's bf16 path, checked on any CPU: one short bf16-autocast training step of every full-size model
with its own full recipe, and of every recipe path (optimizer, mixup, frozen backbone, fine-tune lr groups,
adversarial crafting), through the trainer's own `train_epoch`.

The rehearsal autocasts every epoch only where the CPU has native bf16 (utils.cpu; emulated bf16 made one
vit_small_p4 step 8x slower and `.ci/run` pass 90 minutes, issue 24). What it caught there is caught here:
a dtype mismatch, an op without bf16 support, a loss computed in bf16 (the last tests break a layer and the
trainer on purpose and show the check fails)."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import models, recipes, store, train
from utils.models import set_cpu_autocast

SHAPE, CLASSES, BATCH = (3, 32, 32), 10, 2  # full's CIFAR-10 images; two per step keeps ViT-S/16@224 at ~1 s


@dataclasses.dataclass(frozen=True)
class Info:  # the DatasetInfo fields create_for reads: CIFAR-10's
    num_classes: int = CLASSES
    channels: int = SHAPE[0]
    image_size: int = SHAPE[1]
    mean: tuple = (0.49, 0.48, 0.45)
    std: tuple = (0.25, 0.24, 0.26)


def path_of(run: str, r: recipes.Recipe) -> tuple:
    """What a bf16 step of a run depends on: the architecture and the training path its recipe takes."""
    t = r.train
    return (store.model_of(run), repr(sorted(r.overrides.items())), t.optimizer, r.trainable,
            t.grad_clip is not None, t.mixup_alpha > 0, t.label_smoothing > 0)


def full_runs() -> dict[str, recipes.Recipe]:
    """The full recipe table, one run per architecture and training path (the ladder's no-aug run is its
    rung's path without augmentation, which a step on random images does not see)."""
    runs: dict[tuple, tuple[str, recipes.Recipe]] = {}
    for (profile, run), r in sorted(recipes.RECIPES.items()):
        if profile == "full":
            runs.setdefault(path_of(run, r), (run, r))
    return dict(runs.values())


FULL = full_runs()
# 06's models under full (utils.experiments.ablations): the tricks' bottleneck MLP and the plain MLP with its
# input features (random Fourier features, sines)
EXTRA = {"mlp_b6_wi512": {}, "mlp_plain": {"depth": 6, "width": 1024},
         "mlp_plain@fourier": {"depth": 2, "width": 256, "fourier_features": 256, "fourier_scale": 0.1},
         "mlp_plain@sine": {"depth": 2, "width": 256, "sine_freqs": [1.0, 2.0]}}


def bf16_step(net: nn.Module, cfg: train.TrainConfig, seed: int = 0) -> dict:
    """One training step of `net` with `cfg` under CPU bf16 autocast, through train.train_epoch. Returns the
    dtypes the step saw: those of every Linear/Conv output (autocast really ran: bfloat16) and of every
    input to the loss (float32), and the step's loss. Raises what the step raises."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(BATCH, *SHAPE, generator=gen)
    y = torch.randint(0, CLASSES, (BATCH,), generator=gen)
    cfg = dataclasses.replace(cfg, epochs=1, warmup_epochs=0, batch_size=BATCH, amp=True, progress=False,
                              checkpoint_dir=None)
    seen: dict[str, set] = {"layer": set(), "loss": set()}
    hooks = [m.register_forward_hook(lambda m, i, o: seen["layer"].add(o.dtype))
             for m in net.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    real_ce = F.cross_entropy

    def ce(logits, *a, **kw):
        seen["loss"].add(logits.dtype)
        return real_ce(logits, *a, **kw)

    opt = train.make_optimizer(net, cfg)
    sched = train.make_scheduler(opt, cfg, steps_per_epoch=1)
    set_cpu_autocast(True)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(F, "cross_entropy", ce)
            stats = train.train_epoch(net, net, [(x, y)], opt, sched, cfg, epoch=0)
    finally:
        set_cpu_autocast(False)
        for h in hooks:
            h.remove()
    return {**seen, "loss_value": stats["train_loss"]}


def check(seen: dict, net: nn.Module) -> None:
    assert torch.bfloat16 in seen["layer"], "autocast did not run: nothing was computed in bf16"
    assert seen["loss"] == {torch.float32}, f"the loss was computed in {seen['loss']}, not float32"
    assert torch.isfinite(torch.tensor(seen["loss_value"])), seen["loss_value"]
    for name, p in net.named_parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all(), name


def build(run: str) -> nn.Module:
    """The run's architecture for CIFAR-10, seeded (pretrained runs: their architecture, random weights)."""
    return models.create_for(store.model_of(run), Info(), seed=0, **recipes.get_recipe(run, "full").overrides)


@pytest.mark.parametrize("run", sorted(FULL))
def test_every_full_model_trains_a_bf16_step_with_its_full_recipe(run):
    recipe = FULL[run]
    net = build(run)
    store.freeze_except(net, recipe.trainable)  # the frozen-backbone recipes: only the head learns
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    check(bf16_step(net, recipe.train), net)
    moved = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    assert moved, "the step changed no weight"
    if recipe.trainable:
        assert all(n.startswith(recipe.trainable + ".") for n in moved), sorted(moved)[:3]


@pytest.mark.parametrize("name", sorted(EXTRA))
def test_sixes_full_models_train_a_bf16_step(name):
    net = models.create_for(store.model_of(name), Info(), seed=0, **EXTRA[name])
    check(bf16_step(net, recipes.get_recipe("mlp_b12_wi1024", "full").train), net)


PATHS = {  # the training paths full's notebooks take besides the recipe table's (01's sweeps use the zoo's)
    "adversarial pgd (06)": dict(adversarial="pgd", adv_eps=8 / 255, adv_steps=2),
    "adversarial fgsm (06)": dict(adversarial="fgsm", adv_eps=8 / 255),
    "fine-tune lr groups (04)": dict(backbone_lr_scale=0.1),
    "constant schedule": dict(schedule="constant"),
}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_every_training_path_runs_under_bf16(path):
    base = recipes.get_recipe("resnet18_cifar", "full").train
    net = models.create_for("resnet18_cifar", Info(), seed=0)
    check(bf16_step(net, dataclasses.replace(base, **PATHS[path])), net)


# ------------------------------------------------------------------------- the check fails where it should


class MismatchedScatter(nn.Module):
    """A layer that adds its input into a float32 buffer with index_add: fine in fp32, a dtype mismatch
    under bf16 autocast (the bf16 activations meet the fp32 buffer)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("acc", torch.zeros(BATCH, dim))

    def forward(self, x):
        return self.acc.index_add(0, torch.arange(len(x)), x)


def with_broken_layer(net: nn.Module) -> nn.Module:
    width = net.head.in_features
    net.head = nn.Sequential(nn.Linear(width, 16), MismatchedScatter(16), nn.Linear(16, CLASSES))
    return net


def test_the_check_fails_on_a_layer_that_breaks_only_in_bf16():
    base = recipes.get_recipe("mlp_b12_wi1024", "full").train
    fp32 = dataclasses.replace(base, amp=False)
    net = with_broken_layer(build("mlp_b12_wi1024"))
    before = net.state_dict()
    loader = [(torch.rand(BATCH, *SHAPE), torch.zeros(BATCH, dtype=torch.long))]
    opt = train.make_optimizer(net, fp32)
    train.train_epoch(net, net, loader, opt, None, dataclasses.replace(fp32, progress=False), epoch=0)  # fine
    net.load_state_dict(before)
    with pytest.raises(RuntimeError, match="must have the same scalar type"):
        bf16_step(net, base)


def test_the_check_fails_on_a_loss_computed_in_bf16(monkeypatch):
    """A trainer that forgot to cast the logits to float32 before the loss (`.float()` made a no-op)."""
    net = build("vit_small_patch16_224")
    monkeypatch.setattr(torch.Tensor, "float", lambda t: t)
    seen = bf16_step(net, recipes.get_recipe("vit_small_patch16_224@finetune", "full").train)
    with pytest.raises(AssertionError, match="loss was computed in"):
        check(seen, net)


def test_the_check_fails_where_autocast_never_ran(monkeypatch):
    """A trainer that ignores `amp` (its autocast a no-op): the check says nothing ran in bf16."""
    net = build("resnet18_cifar")
    monkeypatch.setattr(train, "autocast", lambda device, enabled=True: contextlib.nullcontext())
    seen = bf16_step(net, recipes.get_recipe("resnet18_cifar", "full").train)
    with pytest.raises(AssertionError, match="autocast did not run"):
        check(seen, net)


# ------------------------------------------------------------------ where the rehearsal autocasts (utils.cpu)


def test_the_rehearsal_autocasts_only_where_the_cpu_has_native_bf16(monkeypatch, tmp_path):
    from utils import cpu, profiles, results
    from utils.models import common

    rehearsal, quick = profiles.PROFILES["rehearsal"], profiles.PROFILES["quick"]
    monkeypatch.delenv(cpu.FORCE, raising=False)
    monkeypatch.setattr(cpu, "flags", lambda: {"avx2", "fma"})  # the AVX2 EPYC of issue 24
    assert not cpu.native_bf16() and not rehearsal.autocast_here and "native bf16: no" in cpu.describe()
    monkeypatch.setattr(cpu, "flags", lambda: {"avx2", "avx512_bf16"})
    assert cpu.native_bf16() and rehearsal.autocast_here and not quick.autocast_here
    monkeypatch.setenv(cpu.FORCE, "0")  # the slow path, forced on a CPU that has bf16
    assert not rehearsal.autocast_here and "forced by MLPZOOM_CPU_BF16=0" in cpu.describe()
    monkeypatch.setenv("MLPZOOM_RESULTS", str(tmp_path))
    results.start("98_bf16", "rehearsal")
    assert common._CPU_AUTOCAST is False
    monkeypatch.setenv(cpu.FORCE, "1")
    results.start("98_bf16", "rehearsal")
    assert common._CPU_AUTOCAST is True
    set_cpu_autocast(False)
    monkeypatch.setenv(cpu.FORCE, "yes")
    with pytest.raises(ValueError, match="must be 0 or 1"):
        cpu.native_bf16()
