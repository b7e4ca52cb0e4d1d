"""Shape vs texture: image modifications, Fourier cue-conflict images and Geirhos et al.'s shape bias.

    x2 = modify("patch_shuffle_4", x, seed=0)            # (B, C, H, W) in [0, 1] -> same shape, in [0, 1]
    MODIFICATIONS                                        # name -> Modification(x, seed=, index=, dataset=)
    cc = cue_conflict(shape_images, texture_images)      # phase of the first, amplitude of the second
    shape_bias(pred, shape_labels, texture_labels)       # {"shape_bias", "shape_acc", "texture_acc", ...}
    modification_predictions(nets, x, y, names)          # 03's per-image table: model x modification x image
    per_class_table(predictions, classes, channels, size)  # counted per class, then overall_accuracy(...)
    cue_conflict_bias(cue_conflict_predictions(nets, x, y, seed=0))  # one shape-bias row per model
    tile_shuffle_accuracy(nets, x, y)                    # 08's check: top-1 on 2x2 / 4x4 tile-shuffled images

Every modification maps a float batch (B, C, H, W) in [0, 1] to one of the same shape and range; random ones
draw from a generator seeded by `seed` only, so every model sees the same modified images. `stylized`
is the exception that needs data: stylised copies of the test images that the user provides (style
transfer needs pretrained VGG weights, not reachable offline), looked up by test-set `index`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..config import resolve
from ..files import data_root
from ..metrics import predict_classes
from ..progress import bar as progress_bar
from ..registry import Registry

LUMA = (0.2989, 0.587, 0.114)  # ITU-R BT.601 luma weights, as torchvision's rgb_to_grayscale uses

# ---------------------------------------------------------------- modifications


def grayscale(x: Tensor) -> Tensor:
    """Luminance copied to every channel; the identity on 1-channel images (nothing to remove)."""
    return luminance(x).expand_as(x).clone()


def luminance(x: Tensor) -> Tensor:
    """(B, 1, H, W): BT.601 luminance for RGB, the mean over channels otherwise."""
    if x.shape[1] == 3:
        return torch.einsum("bchw,c->bhw", x, x.new_tensor(LUMA))[:, None]
    return x.mean(1, keepdim=True)


def occluder_side(h: int, w: int, k: int = 8, coverage: float = 0.5) -> int:
    """Side (pixels) of k squares whose areas add up to `coverage` of an h x w image."""
    return max(1, round(math.sqrt(coverage / k * h * w)))


def occlude(x: Tensor, k: int = 8, coverage: float = 0.5, fill: float = 0.5, seed: int = 0) -> Tensor:
    """`k` squares at random places per image, each of area coverage / k of the image (side relative to
    the image: 8 squares of 8x8 on 32x32, the original's setting), overlaps allowed, filled with mid-grey so
    they show on dark and light images alike."""
    b, _, h, w = x.shape
    side = occluder_side(h, w, k, coverage)
    gen = torch.Generator().manual_seed(seed)
    top = torch.randint(0, h - side + 1, (b, k, 1), generator=gen)  # (B, k, 1) top-left corners
    left = torch.randint(0, w - side + 1, (b, k, 1), generator=gen)
    rows, cols = torch.arange(h), torch.arange(w)
    in_rows = (rows >= top) & (rows < top + side)  # (B, k, H)
    in_cols = (cols >= left) & (cols < left + side)  # (B, k, W)
    mask = (in_rows[..., :, None] & in_cols[..., None, :]).any(1)  # (B, H, W)
    return torch.where(mask[:, None].to(x.device), torch.full_like(x, fill), x)


def patch_grid(size: int, grid: int) -> tuple[int, int]:
    """(patch side, offset) of a grid x grid tiling centred in a side of `size` pixels. When size is not
    divisible by grid, the frame of size - grid * patch pixels around the grid stays in place; the patch is
    the largest whose frame is even, so the frame is the same width on every side (28 px, grid 3: patches
    of 8, a 2 px frame all round, rather than 9 with 1 px at the bottom and right only). Only an odd size
    with an even grid has no even frame; there the bottom/right frame is one pixel wider."""
    if size // grid < 1:
        raise ValueError(f"a {grid}x{grid} grid does not fit {size} pixels")
    even = [p for p in range(size // grid, 0, -1) if (size - grid * p) % 2 == 0]
    patch = even[0] if even and even[0] >= size // grid - 1 else size // grid  # lose at most 1 px a patch
    return patch, (size - grid * patch) // 2


def patch_shuffle(x: Tensor, grid: int = 4, seed: int = 0) -> Tensor:
    """The grid x grid square patches of each image in a random order (one permutation per image)."""
    b, c, h, w = x.shape
    p, o = patch_grid(min(h, w), grid)
    region = x[..., o : o + grid * p, o : o + grid * p]
    patches = region.reshape(b, c, grid, p, grid, p).permute(0, 2, 4, 1, 3, 5)  # (B, gy, gx, C, p, p)
    patches = patches.reshape(b, grid * grid, c, p, p)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.rand(b, grid * grid, generator=gen).argsort(1).to(x.device)  # (B, grid^2)
    patches = patches[torch.arange(b, device=x.device)[:, None], perm]
    out = x.clone()
    out[..., o : o + grid * p, o : o + grid * p] = (
        patches.reshape(b, grid, grid, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, grid * p, grid * p)
    )
    return out


SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def edges(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Sobel gradient magnitude of the luminance, divided by each image's maximum, inverted (dark edges
    on white, as the original) and copied to every channel. Replicate padding: no edge at the border;
    an image whose maximum magnitude is below `eps` (flat) comes out all white."""
    kx = x.new_tensor(SOBEL_X)
    kernels = torch.stack([kx, kx.T])[:, None]  # (2, 1, 3, 3): d/dx, d/dy
    grad = F.conv2d(F.pad(luminance(x), (1, 1, 1, 1), mode="replicate"), kernels)  # (B, 2, H, W)
    mag = grad.pow(2).sum(1, keepdim=True).sqrt()
    scale = mag.amax(dim=(2, 3), keepdim=True)
    mag = torch.where(scale > eps, mag / scale.clamp_min(eps), torch.zeros_like(mag))
    return (1 - mag).expand_as(x).clone()


def gaussian_gain(h: int, w: int, cutoff: float, device=None) -> Tensor:
    """(H, W // 2 + 1) gain exp(-f^2 / (2 cutoff^2)) on rfft2's grid, f the radial frequency in cycles per
    pixel (Nyquist 0.5); spatially a Gaussian blur of sigma = 1 / (2 pi cutoff) pixels, periodic borders."""
    if cutoff <= 0:
        raise ValueError(f"cutoff must be > 0 cycles per pixel; got {cutoff}")
    fy = torch.fft.fftfreq(h, device=device)[:, None]
    fx = torch.fft.rfftfreq(w, device=device)[None, :]
    return torch.exp(-(fy**2 + fx**2) / (2 * cutoff**2))


def low_pass(x: Tensor, cutoff: float = 0.1) -> Tensor:
    """Gaussian low-pass in the Fourier domain (DC gain 1: a constant image stays that constant)."""
    h, w = x.shape[-2:]
    out = torch.fft.irfft2(torch.fft.rfft2(x) * gaussian_gain(h, w, cutoff, x.device), s=(h, w))
    return out.clamp(0, 1)


def high_pass(x: Tensor, cutoff: float = 0.1, offset: float = 0.5) -> Tensor:
    """x minus its Gaussian low-pass, shifted by `offset` so it can be shown (and fed) as an image in [0, 1]
    (clipped): a constant image becomes flat `offset` grey."""
    h, w = x.shape[-2:]
    low = torch.fft.irfft2(torch.fft.rfft2(x) * gaussian_gain(h, w, cutoff, x.device), s=(h, w))
    return (x - low + offset).clamp(0, 1)


def stylized_dir(dataset: str) -> Path:
    """Where the user puts stylised test images: `<data>/stylized/<dataset>/NNNNN.png`."""
    return data_root() / "stylized" / dataset


def stylized_available(dataset: str) -> bool:
    return stylized_dir(dataset).is_dir() and any(stylized_dir(dataset).glob("*.png"))


def stylized(x: Tensor, index: Tensor, dataset: str) -> Tensor:
    """The stylised copies of the test images `index` (positions in the full test split) of `dataset`:
    PNGs named by index (00000.png, ...), the test images' size; read as grey or RGB to match x."""
    folder = stylized_dir(dataset)
    if not stylized_available(dataset):
        raise FileNotFoundError(
            f"stylized: no stylised images in {folder}. Style-transfer networks (AdaIN, as the original "
            "study used) need pretrained VGG weights that are not reachable offline, so this project does "
            "not make them: stylise the test images elsewhere and put them in that folder as PNGs named by "
            f"test-set index (00000.png, 00001.png, ...), {x.shape[2]}x{x.shape[3]} pixels."
        )
    mode = "L" if x.shape[1] == 1 else "RGB"
    files = [folder / f"{int(i):05d}.png" for i in index]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"stylized: {len(missing)} images missing in {folder}, e.g. {missing[:3]}")
    arrays = [np.asarray(Image.open(f).convert(mode), dtype=np.uint8) for f in files]  # (H, W[, 3]) each
    images = torch.from_numpy(np.stack(arrays)).reshape(len(files), *x.shape[2:], -1)  # (B, H, W, C)
    return images.permute(0, 3, 1, 2).to(x.device, x.dtype) / 255


Modification = Callable[..., Tensor]  # fn(x, seed=0, index=None, dataset=None) -> x'


def _fixed(fn: Callable[..., Tensor], **params) -> Modification:
    """A deterministic image-wise function as a Modification (seed, index and dataset are not needed)."""
    return lambda x, seed=0, index=None, dataset=None: fn(x, **params)


def _seeded(fn: Callable[..., Tensor], **params) -> Modification:
    return lambda x, seed=0, index=None, dataset=None: fn(x, seed=seed, **params)


MODIFICATIONS: Registry[Modification] = Registry("modification")
for _name, _fn in {
    "original": _fixed(lambda x: x.clone()),
    "grayscale": _fixed(grayscale),
    "occlude": _seeded(occlude),
    "patch_shuffle_2": _seeded(patch_shuffle, grid=2),
    "patch_shuffle_4": _seeded(patch_shuffle, grid=4),
    "patch_shuffle_8": _seeded(patch_shuffle, grid=8),
    "edges": _fixed(edges),
    "low_pass": _fixed(low_pass),
    "high_pass": _fixed(high_pass),
    "stylized": lambda x, seed=0, index=None, dataset=None: stylized(x, index, dataset),
}.items():
    MODIFICATIONS.add(_name, _fn)


def modify(
    name: str, x: Tensor, seed: int = 0, index: Tensor | None = None, dataset: str | None = None
) -> Tensor:
    """MODIFICATIONS[name] on a batch (B, C, H, W) in [0, 1]; an unknown name lists the registered ones."""
    return MODIFICATIONS[name](x, seed=seed, index=index, dataset=dataset)  # KeyError listing the names


def usable(modifications: Sequence[str], dataset: str) -> list[str]:
    """The modifications that can run on `dataset`, in order: "stylized" only where its images are (says
    where to put them when they are not; style-transfer networks are not reachable offline)."""
    names = [m for m in modifications if m != "stylized" or stylized_available(dataset)]
    if len(names) < len(modifications):
        print(f"stylized: skipped, no stylised images in {stylized_dir(dataset)}. Style-transfer networks"
              " are not reachable offline; put stylised test images there as PNGs named by test index"
              " (00000.png, ...) and rerun.")
    return names


def notes(names: Sequence[str], channels: int, size: int) -> pd.DataFrame:
    """One row per modification: modification, note (what it does on these images, where not its name)."""
    return pd.DataFrame({"modification": list(names), "note": [note(m, channels, size) for m in names]})


def note(name: str, channels: int, size: int) -> str:
    """What a modification really does on images of `channels` x `size` x `size` where that differs from
    its name (for the tables): grayscale on 1 channel, patch grids that do not divide the side."""
    if name == "grayscale" and channels == 1:
        return "identity: the images have 1 channel"
    if name.startswith("patch_shuffle_"):
        grid = int(name.rsplit("_", 1)[1])
        p, _ = patch_grid(size, grid)
        border = size - grid * p
        frame = f"; they cover the central {grid * p} px, the frame around stays in place" if border else ""
        return f"{grid}x{grid} patches of {p} px{frame}"
    if name == "occlude":
        return f"8 squares of {occluder_side(size, size)} px, mid-grey, overlaps allowed"
    return ""


# ---------------------------------------------------------------- cue conflict and shape bias


def cue_conflict(shape_images: Tensor, texture_images: Tensor, clip: bool = True) -> Tensor:
    """Per channel, the real image whose Fourier phase is the shape image's and whose amplitude spectrum
    is the texture image's (both (B, C, H, W)); clipped to [0, 1] unless clip=False (for tests)."""
    if shape_images.shape != texture_images.shape:
        raise ValueError(f"shapes differ: {tuple(shape_images.shape)} vs {tuple(texture_images.shape)}")
    h, w = shape_images.shape[-2:]
    phase = torch.angle(torch.fft.rfft2(shape_images.double()))
    amplitude = torch.fft.rfft2(texture_images.double()).abs()
    out = torch.fft.irfft2(torch.polar(amplitude, phase), s=(h, w)).to(shape_images.dtype)
    return out.clamp(0, 1) if clip else out


def partners(labels: Tensor, seed: int = 0) -> Tensor:
    """For each image an index of a random image of another class (seeded): (N,) int64."""
    if labels.unique().numel() < 2:
        raise ValueError("cue conflict needs images of at least two classes")
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty_like(labels)
    for c in labels.unique():
        others = (labels != c).nonzero().squeeze(1)
        mine = labels == c
        out[mine] = others[torch.randint(len(others), (int(mine.sum()),), generator=gen)]
    return out


def shape_bias(pred: Tensor, shape_labels: Tensor, texture_labels: Tensor) -> dict[str, float]:
    """Geirhos et al. (2019): shape decisions / (shape + texture decisions), over the pairs whose shape and
    texture classes differ (agreeing pairs are excluded). Also shape_acc and texture_acc (fractions of the
    kept pairs) and the counts. No cue decision at all: shape_bias is nan; no kept pair: all three nan."""
    pred, shape_labels, texture_labels = (torch.as_tensor(t) for t in (pred, shape_labels, texture_labels))
    kept = shape_labels != texture_labels
    shape = int((pred == shape_labels)[kept].sum())
    texture = int((pred == texture_labels)[kept].sum())
    n = int(kept.sum())
    ratio = lambda a, b: a / b if b else float("nan")
    return {
        "shape_bias": ratio(shape, shape + texture),
        "shape_acc": ratio(shape, n),
        "texture_acc": ratio(texture, n),
        "shape_decisions": shape,
        "texture_decisions": texture,
        "n": n,
        "excluded": int((~kept).sum()),
    }


# ---------------------------------------------------------------- evaluation


def per_class_accuracy(pred: Tensor, labels: Tensor, classes: tuple[str, ...]) -> pd.DataFrame:
    """One row per class, in label order: class_index, class, n, correct, top1 (nan for an absent class)."""
    k = len(classes)
    n = torch.bincount(labels, minlength=k)
    correct = torch.bincount(labels[pred == labels], minlength=k)
    top1 = (correct / n.clamp_min(1)).where(n > 0, torch.tensor(float("nan")))
    return pd.DataFrame({"class_index": range(k), "class": classes, "n": n.numpy(),
                         "correct": correct.numpy(), "top1": top1.numpy()})


def _tensor(column: pd.Series) -> Tensor:
    return torch.from_numpy(column.to_numpy().copy())  # pandas hands out read-only views


def _rows(model: str, setting: str, index: Tensor, labels: Tensor, pred: Tensor) -> pd.DataFrame:
    return pd.DataFrame({"model": model, "setting": setting, "image": index.numpy(), "label": labels.numpy(),
                         "pred": pred.numpy(), "correct": (pred == labels).numpy()})


def modification_predictions(
    nets: dict[str, nn.Module],
    x: Tensor,
    y: Tensor,
    names: list[str],
    *,
    seed: int = 0,
    index: Tensor | None = None,
    dataset: str | None = None,
    batch_size: int = 1000,
    progress: bool = True,
) -> pd.DataFrame:
    """Every model on every modification of the same images x (N, C, H, W) in [0, 1] with labels y, per
    image: one row per modification x model x image (model, setting: the modification, image: `index`,
    default 0..N-1, label, pred, correct; no rows without nets). per_class_table counts it; error
    consistency reads it as is."""
    if not nets:
        return pd.DataFrame()
    index = torch.arange(len(x)) if index is None else index
    rows, bar = [], progress_bar(total=len(names) * len(nets), desc="modification x model",
                                 disable=not progress)
    for name in names:
        modified = modify(name, x, seed=seed, index=index, dataset=dataset)  # once, the same for every model
        for model, net in nets.items():
            rows.append(_rows(model, name, index, y, predict_classes(net, modified, batch_size)))
            bar.update()
    bar.close()
    return pd.concat(rows, ignore_index=True)


def per_class_table(predictions: pd.DataFrame, classes: tuple[str, ...], channels: int, size: int
                    ) -> pd.DataFrame:
    """modification_predictions' table counted per class: one row per modification x model x class (in the
    table's order), with the modification's note for images of `channels` x `size` x `size`."""
    rows = [per_class_accuracy(_tensor(part.pred), _tensor(part.label), classes)
            .assign(modification=name, model=model, note=note(name, channels, size))
            for (name, model), part in predictions.groupby(["setting", "model"], sort=False)]
    cols = ["modification", "model", "class_index", "class", "n", "correct", "top1", "note"]
    return pd.concat(rows, ignore_index=True)[cols]


def overall_accuracy(per_class: pd.DataFrame) -> pd.DataFrame:
    """per_class_table summed over classes: one row per modification x model (top1 over images) plus
    mean_class_top1 (the unweighted mean over classes present)."""
    keys = ["modification", "model", "note"]
    g = per_class.groupby(keys, sort=False)
    out = g[["n", "correct"]].sum().join(g["top1"].mean().rename("mean_class_top1")).reset_index()
    out["top1"] = out["correct"] / out["n"]
    return out[[*keys[:2], "n", "correct", "top1", "mean_class_top1", "note"]]


CUE_CONFLICT = "cue conflict"  # the setting name of the cue-conflict images in the predictions tables


def cue_conflict_predictions(
    nets: dict[str, nn.Module], x: Tensor, y: Tensor, seed: int = 0, batch_size: int = 1000,
    index: Tensor | None = None,
) -> pd.DataFrame:
    """Each image of x (shape cue, label y) combined with a seeded partner of another class (texture cue)
    by cue_conflict; every model's prediction per image: model, setting ("cue conflict"), image, label (the
    shape class), texture_label, pred, correct (the shape class predicted); no rows without nets.
    cue_conflict_bias counts it."""
    if not nets:
        return pd.DataFrame()
    index = torch.arange(len(x)) if index is None else index
    partner = partners(y, seed)
    images = cue_conflict(x, x[partner])
    return pd.concat([_rows(m, CUE_CONFLICT, index, y, predict_classes(net, images, batch_size))
                      .assign(texture_label=y[partner].numpy()) for m, net in nets.items()],
                     ignore_index=True)


def examples(x: Tensor, y: Tensor, names: Sequence[str], classes: Sequence[str], n: int = 3, seed: int = 0,
             dataset: str | None = None) -> dict:
    """The arrays of the examples figure: the first n images (x (N, C, H, W) in [0, 1], labels y) under each
    modification and as cue conflict with their seeded partners (as cue_conflict_predictions pairs them);
    "columns" (the figure's column order), "classes", "labels", "partner_labels"."""
    rows = torch.arange(n)
    partner = partners(y, seed)[rows]
    shown = {m: modify(m, x[rows], seed=seed, index=rows, dataset=dataset) for m in names}
    shown[CUE_CONFLICT] = cue_conflict(x[rows], x[partner])
    return {**shown, "columns": list(shown), "classes": list(classes), "labels": y[rows],
            "partner_labels": y[partner]}


def per_class_wide(per_class: pd.DataFrame, names: Sequence[str], models: Sequence[str],
                   classes: Sequence[str]) -> pd.DataFrame:
    """per_class_table as a grid: one row per (modification, model) in the given orders, one column of top-1
    per class label in label order."""
    wide = per_class.pivot(index=["modification", "model"], columns="class_index", values="top1")
    wide = wide.reindex(pd.MultiIndex.from_product([list(names), list(models)]))
    wide.columns = [classes[i] for i in wide.columns]
    return wide


def cue_conflict_bias(predictions: pd.DataFrame) -> pd.DataFrame:
    """shape_bias of every model from cue_conflict_predictions' table: one row per model."""
    cues = ["pred", "label", "texture_label"]  # shape_bias takes them as arrays
    return pd.DataFrame([{"model": m, **shape_bias(*(part[c].to_numpy() for c in cues))}
                         for m, part in predictions.groupby("model", sort=False)])


# ---------------------------------------------------------------- tile shuffle


def tile_shuffle_accuracy(nets: dict[str, nn.Module], x: Tensor, y: Tensor, grids: Sequence[int] = (2, 4),
                          seed: int = 0, batch_size: int = 1000) -> pd.DataFrame:
    """Top-1 of every model on x (N, C, H, W) in [0, 1] and on tile-shuffled copies (patch_shuffle: grid x
    grid tiles in a random order per image, the same images for every model). One row per model x grid
    (grid 1: the original images) with the tile side in pixels and the drop in top-1."""
    size = x.shape[-1]
    images = {1: x, **{g: patch_shuffle(x, grid=g, seed=seed) for g in grids}}
    rows = [{"model": m, "grid": g, "tile_px": patch_grid(size, g)[0],
             "top1": (predict_classes(net, xs, batch_size) == y).float().mean().item(),
             "note": note(f"patch_shuffle_{g}", x.shape[1], size) if g > 1 else "original"}
            for m, net in nets.items() for g, xs in images.items()]
    out = pd.DataFrame(rows)
    out["drop"] = out.groupby("model")["top1"].transform("first") - out["top1"]
    return out


# ---------------------------------------------------------------- notebook 03: its knobs


@dataclass(frozen=True)
class Config:
    """03's knobs. Defaults are full's; SMALLER holds what the other profiles change. quick on 2 CPU
    cores: 10 passes (9 modifications + cue conflict) x 3 models took 26 s on 2000 images, the 10k test
    set 2-3 min."""

    n_images: int | None = None  # test images per modification (the first n); None: the whole test set
    n_cue: int | None = None  # cue-conflict images (the first n test images as shapes); None: all
    modifications: list[str] = field(default_factory=lambda: [  # names in MODIFICATIONS, in table order
        "original", "grayscale", "occlude", "patch_shuffle_2", "patch_shuffle_4", "patch_shuffle_8", "edges",
        "low_pass", "high_pass", "stylized"])
    ceiling_seed: int | None = 1  # the trio trained again from this seed: each model's error consistency with
    # itself, the ceiling a pair of families is read against (01 trains them); None: no ceiling
    aligned: bool = True  # the trio under one shared recipe (recipes.ALIGNED; 01 trains it): its shape bias
    # on the cue-conflict images and its error consistency there, beside the own recipes' (utils/aligned.py)


SMALLER = {"smoke": dict(n_images=256, n_cue=256),
           # quick: the ceiling from the aligned control's seeds, not from seed twins (01's budget)
           "quick": dict(ceiling_seed=None),
           # rehearsal: no seed twins (01's rehearsal trains none: utils/experiments/zoo.py)
           "rehearsal": dict(n_images=8, n_cue=8, ceiling_seed=None)}


def config(profile: str | None = None, **overrides) -> Config:
    """03's config under `profile`, with `overrides` (checked: unknown knobs and wrong types are errors)."""
    return resolve(Config, profile, SMALLER, overrides)
