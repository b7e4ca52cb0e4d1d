"""`python -m utils.data`: the registered datasets. `python -m utils.data --profile P | --dataset NAME`:
decode that dataset's train and test splits once into the cache under data/ (P = auto: the default
profile, full with CUDA, else quick)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..profiles import PROFILES, default_profile_name, get_profile
from . import get_info, list_datasets, load_dataset


def describe() -> None:
    print(f"{'dataset':15s} {'classes':>7s}  image")
    for name in list_datasets():
        info = get_info(name)
        shape = (f"{info.channels}x{info.image_size}x{info.image_size}" if info.image_size
                 else "from the files")
        print(f"{name:15s} {info.num_classes or 'any':>7}  {shape}")
    print(f"\nprofiles: {', '.join(PROFILES)}; decode one with --profile P or --dataset NAME")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", help=f"{' | '.join(PROFILES)} | auto")
    parser.add_argument("--dataset", help=f"one of: {', '.join(list_datasets())}")
    parser.add_argument("--root", help="the data folder (default $MLPZOOM_DATA or <repo>/data)")
    args = parser.parse_args(argv)
    if args.profile is None and args.dataset is None:
        describe()
        return
    try:
        profile = default_profile_name() if args.profile in (None, "auto") else args.profile
        p = get_profile(profile) if args.profile or not args.dataset else None
        name = args.dataset or p.dataset
        root = args.root
        if p is not None and p.data_subdir:  # the rehearsal: synthetic pixels in CIFAR's own file format
            from ..files import data_root
            from .fake import write_rehearsal

            root = Path(args.root or data_root()) / p.data_subdir
            for folder in write_rehearsal(root):
                print(f"rehearsal files (synthetic pixels) in {folder}")
        datasets = [load_dataset(name, split, root=root) for split in ("train", "test")]
    except (KeyError, FileNotFoundError, RuntimeError, ValueError) as err:
        parser.error(str(err).strip("'\""))
    for ds in datasets:
        counts = ds.labels.bincount(minlength=ds.info.num_classes)
        print(f"{name}/{ds.split}: {len(ds)} images of {tuple(ds.images.shape[1:])}, "
              f"{ds.info.num_classes} classes ({counts.min().item()}-{counts.max().item()} per class)")


if __name__ == "__main__":
    main()
