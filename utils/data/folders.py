"""Readers for folders of image files: Tiny ImageNet (its standard layout) and any `<split>/<class>/` tree."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..progress import bar as progress_bar
from .registry import DatasetInfo, ImageSet, register_dataset
from .sources import channel_stats, check_split, ensure_files, source_dir

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
GRAY_MODES = {"1", "L", "I", "I;16", "F"}


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)


def decode_images(paths: list[Path], mode: str, size: int | None = None) -> torch.Tensor:
    """PIL-decode files to uint8 (N, C, H, W); mode "RGB" or "L"; bilinear resize to size x size if given."""
    from PIL import Image

    def one(path: Path) -> np.ndarray:
        with Image.open(path) as im:
            im = im.convert(mode)
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(im)

    if not paths:
        raise FileNotFoundError("no image files to decode")
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes outside the GIL
        jobs = pool.map(one, paths)
        arrays = list(progress_bar(jobs, total=len(paths), desc="decoding", disable=len(paths) < 5000))
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) > 1:
        raise ValueError(f"images differ in size ({shapes[:3]} ...); pass size=N to resize them all to N x N")
    x = np.stack(arrays)  # (N, H, W) or (N, H, W, C)
    x = x[..., None] if x.ndim == 3 else x
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------- Tiny ImageNet

TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
# Class order (wnids.txt) and names (words.txt) come from the files; the loaded ImageSet carries them.
TINY_IMAGENET = DatasetInfo(
    "tiny-imagenet", 200, (), 3, 64, (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)
)


def _tiny_classes(folder: Path) -> tuple[list[str], list[str]]:
    """wnids in wnids.txt order, and their first names from words.txt (the wnid itself if absent)."""
    wnids = (folder / "wnids.txt").read_text().split()
    words = {}
    if (folder / "words.txt").exists():
        for line in (folder / "words.txt").read_text().splitlines():
            wnid, _, names = line.partition("\t")
            words[wnid] = names.split(",")[0].strip()
    return wnids, [words.get(w, w) for w in wnids]


def _tiny_files(folder: Path, split: str, wnids: list[str]) -> tuple[list[Path], list[int]]:
    index = {w: i for i, w in enumerate(wnids)}
    if split == "train":  # train/<wnid>/images/<wnid>_<k>.JPEG
        pairs = [(p, i) for i, w in enumerate(wnids) for p in image_files(folder / "train" / w / "images")]
    else:  # val/images/val_<k>.JPEG, labels in val_annotations.txt: name \t wnid \t box
        lines = (folder / "val" / "val_annotations.txt").read_text().splitlines()
        label_of = {f: index[w] for f, w, *_ in (line.split("\t") for line in lines if line.strip())}
        pairs = [(p, label_of[p.name]) for p in image_files(folder / "val" / "images")]
    return [p for p, _ in pairs], [i for _, i in pairs]


@register_dataset(TINY_IMAGENET)
def read_tiny_imagenet(split: str, root: Path, download: bool = True) -> ImageSet:
    split = check_split("tiny-imagenet", split, ("train", "val"))
    folder = source_dir("tiny-imagenet", root)
    files = ["wnids.txt", "words.txt"]
    files += ["train"] if split == "train" else ["val/images", "val/val_annotations.txt"]
    how = (f"Download {TINY_URL} and unzip it into {Path(root)}/ (load_dataset does this when online); "
           "layout: train/<wnid>/images/*.JPEG, val/images/*.JPEG, val/val_annotations.txt.")

    def fetch() -> None:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(TINY_URL, str(root), md5=TINY_MD5)

    ensure_files("tiny-imagenet", folder, files, how, fetch, download)
    wnids, names = _tiny_classes(folder)
    paths, labels = _tiny_files(folder, split, wnids)
    images = decode_images(paths, "RGB")  # a few files are grayscale JPEGs
    info = replace(TINY_IMAGENET, num_classes=len(wnids), classes=tuple(names), image_size=images.shape[-1])
    return ImageSet(images, torch.tensor(labels, dtype=torch.int64), info, split, {"wnids": wnids})


# ---------------------------------------------------------------- any <root>/<split>/<class>/*.png|jpg

IMAGE_FOLDER = DatasetInfo("image-folder", 0, (), 3, 0, (), ())  # placeholder; real info comes from the files


def _look(paths: list[Path]) -> tuple[int, set[tuple[int, int]]]:
    """(channels the files decode to: 1 if every one is grayscale, else 3; their (width, height)s), from
    the files' headers only."""
    from PIL import Image

    modes, sizes = set(), set()
    for path in paths:
        with Image.open(path) as im:
            modes.add(im.mode)
            sizes.add(im.size)
    return (1 if modes <= GRAY_MODES else 3), sizes


def _sizes(sizes: set[tuple[int, int]]) -> str:
    return ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:3]) + (" ..." if len(sizes) > 3 else "")


def check_splits_agree(root: Path, split: str, classes: list[str], look: tuple, size: int | None) -> None:
    """The other split folders of `root` decode to this split's channels (and, without size=, its image
    size): else a model trained on one split fails only when it meets the other, after training."""
    channels, sizes = look
    for other in sorted(d for d in Path(root).iterdir() if d.is_dir() and d.name != split):
        paths = [p for c in classes if (other / c).is_dir() for p in image_files(other / c)]
        if not paths:  # not a split folder (e.g. cache/)
            continue
        their_channels, their_sizes = _look(paths)
        if their_channels != channels:
            kind = {1: "grayscale (1 channel)", 3: "RGB (3 channels)"}
            raise ValueError(f"image-folder: {split}/ holds {kind[channels]} images but {other.name}/ holds "
                             f"{kind[their_channels]} ones; convert one split's images so every split has "
                             "the same channels (e.g. PIL: Image.open(f).convert('RGB').save(f))")
        if size is None and their_sizes != sizes:
            raise ValueError(f"image-folder: {split}/ images are {_sizes(sizes)} but {other.name}/ images "
                             f"are {_sizes(their_sizes)}; pass size=N to resize every split to N x N")


@register_dataset(IMAGE_FOLDER)
def read_image_folder(split: str, root: Path, size: int | None = None) -> ImageSet:
    """Class names = sorted folder names of `<root>/train` (else of `<root>/<split>`); label = their index.

    Grayscale-only folders give 1 channel, anything else RGB. mean/std are computed from this split.
    """
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(
            f"image-folder: expected {folder}/<class name>/*.png|jpg (one folder per class); "
            "pass root= the folder that holds the split folders (train/, test/)."
        )
    class_root = Path(root) / "train" if (Path(root) / "train").is_dir() else folder
    classes = sorted(d.name for d in class_root.iterdir() if d.is_dir())
    extra = sorted({d.name for d in folder.iterdir() if d.is_dir()} - set(classes))
    if extra:
        raise ValueError(f"image-folder: {folder} has classes {extra} that {class_root} lacks")
    empty = [c for c in classes if (folder / c).is_dir() and not image_files(folder / c)]
    if empty:
        raise ValueError(f"image-folder: class folder(s) {empty} in {folder} hold no "
                         f"{'/'.join(sorted(IMAGE_EXTS))} file; add images or remove the folder")
    pairs = [(p, i) for i, c in enumerate(classes) if (folder / c).is_dir() for p in image_files(folder / c)]
    if not pairs:
        raise FileNotFoundError(f"image-folder: no {'/'.join(sorted(IMAGE_EXTS))} files in {folder}/<class>/")
    paths = [p for p, _ in pairs]
    look = _look(paths)
    check_splits_agree(root, split, classes, look, size)  # before decoding: fail before any training
    images = decode_images(paths, "L" if look[0] == 1 else "RGB", size)
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"image-folder: images are {tuple(images.shape[-2:])}, not square; pass size=N")
    mean, std = channel_stats(images)
    c, size = images.shape[1], images.shape[-1]
    info = DatasetInfo("image-folder", len(classes), tuple(classes), c, size, mean, std)
    labels = torch.tensor([i for _, i in pairs], dtype=torch.int64)
    return ImageSet(images, labels, info, split, {"files": [str(p.relative_to(root)) for p in paths]})
