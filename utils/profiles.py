"""Run sizes for every notebook: `smoke` (CI, seconds), `quick` (CPU, minutes, real numbers), `full` (GPU).

    p = get_profile("quick")          # or get_profile(None): full where CUDA is present, else quick
    p.dataset, p.models["mlp"], p.train_subset

A notebook's `parameters` cell names the profile; everything sized by it comes from here, so the
notebooks never hard-code sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import cpu

FAMILY_ORDER = ("mlp", "cnn", "vit")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    dataset: str  # a name from utils.data.list_datasets()
    models: dict[str, str]  # family -> the registered model that represents it in the comparison trio
    train_subset: int | None  # n training images (a seeded, stratified subset); None: the whole split
    test_subset: int | None  # n test images (stratified); None: the whole split
    batch_size: int  # training batch (images)
    eval_batch_size: int  # evaluation batch (images)
    epochs: int  # default training length (01's recipes may set their own per model)
    device: str  # "cuda" or "cpu"
    backend: str = "resident"  # loader backend for training (utils.data.BACKENDS)
    path: str = ""  # the code path it runs ("full" for the rehearsal); "": its own name
    data_subdir: str | None = None  # its datasets live in <data>/<data_subdir>/ (the rehearsal's fake files)
    # bf16 autocast on a CPU too, where a recipe asks for it and the CPU has native bf16 (the rehearsal; where
    # bf16 is emulated it is ~8x slower, and tests/test_bf16.py checks that path instead): autocast_here
    cpu_autocast: bool = False

    @property
    def code_path(self) -> str:
        """Which profile's branches a notebook takes: the rehearsal takes full's."""
        return self.path or self.name

    @property
    def autocast_here(self) -> bool:
        """Whether this profile autocasts to bf16 on this machine's CPU: it asks to and the CPU has native
        bf16 (utils.cpu.native_bf16; $MLPZOOM_CPU_BF16=0 turns it off)."""
        return self.cpu_autocast and cpu.native_bf16()

    @property
    def trio(self) -> list[str]:
        """The comparison trio in family order: [mlp, cnn, vit]."""
        return [self.models[f] for f in FAMILY_ORDER]


PROFILES = {
    "smoke": Profile(
        "smoke",
        "CI: a few hundred Fashion-MNIST images, the test_* models, seconds per notebook",
        dataset="fashion-mnist",
        models={"mlp": "test_mlp", "cnn": "test_cnn", "vit": "test_vit"},
        train_subset=512,
        test_subset=256,
        batch_size=128,
        eval_batch_size=256,
        epochs=1,
        device="cpu",
    ),
    "quick": Profile(
        "quick",
        "CPU: all of Fashion-MNIST, small members of each family, minutes, real numbers",
        dataset="fashion-mnist",
        models={"mlp": "mlp_b4_wi256", "cnn": "cnn_small", "vit": "vit_mini_p4"},
        train_subset=None,
        test_subset=None,
        batch_size=256,
        eval_batch_size=1000,
        epochs=5,
        device="cpu",
    ),
    "full": Profile(
        "full",
        "GPU: CIFAR-10 and the paper's models",
        dataset="cifar10",
        models={"mlp": "mlp_b12_wi1024", "cnn": "resnet18_cifar", "vit": "vit_small_patch16_224"},
        train_subset=None,
        test_subset=None,
        batch_size=1024,
        eval_batch_size=2048,
        epochs=100,
        device="cuda",
        backend="ffcv",  # the original study's .beton files (resident when ffcv is not installed, said so)
    ),
    # The full profile's code path, models and recipes on a CPU at toy counts (CIFAR-10's own file format,
    # synthetic pixels in CI): so that `full` never fails first on a user's GPU. Numbers mean nothing.
    "rehearsal": Profile(
        "rehearsal",
        "CPU: the full code path, models and recipes at toy counts, on CIFAR-10-format files",
        dataset="cifar10",
        models={"mlp": "mlp_b12_wi1024", "cnn": "resnet18_cifar", "vit": "vit_small_patch16_224"},
        train_subset=60,
        test_subset=20,
        batch_size=8,
        eval_batch_size=20,
        epochs=1,  # one epoch, no warmup: CI on a CPU without native bf16 (issue 24); warmup runs in quick
        device="cpu",
        backend="ffcv",
        path="full",
        data_subdir="rehearsal",
        cpu_autocast=True,
    ),
}


def default_profile_name() -> str:
    """`full` where CUDA is present, else `quick`."""
    return "full" if torch.cuda.is_available() else "quick"


def get_profile(name: str | Profile | None = None) -> Profile:
    """The named profile (None: `default_profile_name()`; a Profile: itself); an unknown name lists the
    valid ones; a CUDA profile without a visible GPU is a RuntimeError."""
    if isinstance(name, Profile):
        return name
    name = default_profile_name() if name is None else name
    if name not in PROFILES:
        raise KeyError(f"unknown profile {name!r}; profiles: {', '.join(PROFILES)}")
    profile = PROFILES[name]
    if profile.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"profile {name!r} needs a CUDA GPU and none is visible; use 'quick' on a CPU")
    return profile
