"""Numbers quoted from elsewhere (never run here), kept as data in one place: the notebooks put them beside
this project's results and the report's side-by-side table reads them. Each says where it comes from.
"""

from __future__ import annotations

import pandas as pd

# Fashion-MNIST benchmark table (Xiao et al. 2017, zalandoresearch/fashion-mnist README), test accuracy.
FASHION_MNIST_BENCHMARK = (
    ("MLP 256-128-100", "mlp", 0.883),
    ("2 conv + pooling + BN", "cnn", 0.934),
    ("ResNet18", "cnn", 0.949),
)

# The original study (CIFAR-10, top-1, L-inf) at one eps of each attack grid, by family.
ORIGINAL_ATTACKS_CIFAR10 = {("fgsm", 0.0125): {"mlp": 0.617, "cnn": 0.344, "vit": 0.234},
                            ("pgd", 0.023): {"mlp": 0.257, "cnn": 0.0008, "vit": 0.002}}

# Geirhos et al. (2019), shape bias on style-transfer cue-conflict ImageNet images.
GEIRHOS_SHAPE_BIAS = {"humans": 0.96, "ImageNet ResNet-50": 0.21}

# The original study: its MLP on CIFAR-10 with 4x4 shuffled tiles (8 px), top-1 before and after.
ORIGINAL_TILE_SHUFFLE_CIFAR10 = {"original": 0.941, "4x4 tiles": 0.734}


# The original study's notebook 04: its CIFAR-10 MLP fine-tuned on CIFAR-100 classes 0-9 (every layer, one
# optimiser step per epoch), top-1 after one epoch.
ORIGINAL_TRANSFER_CIFAR100 = 0.278


def original_transfer() -> pd.DataFrame:
    setting = "the original study: CIFAR-10 MLP fine-tuned on CIFAR-100 classes 0-9, one epoch"
    return pd.DataFrame([{"setting": setting, "top1": ORIGINAL_TRANSFER_CIFAR100,
                          "source": "the original study (not run here)"}])


# The ViT-zoo study (week 8 of the original project): Perceiver medium / large / XL trained from scratch on
# CIFAR-10, parameters and top-1 (as quoted in this project's issue 19; the study's configurations are not at
# hand: utils.models.vit.perceiver_rung gives the same counts). model: (params, CIFAR-10 top-1).
VIT_ZOO_PERCEIVER_LADDER_CIFAR10 = {
    "perceiver_medium": (0.29e6, 0.662),
    "perceiver_large": (1.15e6, 0.671),
    "perceiver_xl": (4.43e6, 0.677),
}
VIT_ZOO_SOURCE = "the ViT-zoo study (CIFAR-10, not run here)"


def perceiver_ladder_reference() -> pd.DataFrame:
    """The study's ladder as rows: model, params, test_top1, dataset, input_side (CIFAR-10's 32), source."""
    rows = [{"model": m, "params": p, "test_top1": a, "dataset": "cifar10", "input_side": 32,
             "source": VIT_ZOO_SOURCE}
            for m, (p, a) in VIT_ZOO_PERCEIVER_LADDER_CIFAR10.items()]
    return pd.DataFrame(rows)


def fashion_mnist_reference() -> pd.DataFrame:
    """The benchmark rows as a table (model, family, top1, source)."""
    rows = [{"model": m, "family": f, "top1": a, "source": "Fashion-MNIST benchmark"}
            for m, f, a in FASHION_MNIST_BENCHMARK]
    return pd.DataFrame(rows)
