"""`python -m utils.data [--profile P | --dataset NAME]`: decode a dataset once into the cache under data/."""

from __future__ import annotations

import argparse

from ..profiles import default_profile_name, get_profile
from . import list_datasets, load_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", help="smoke | quick | full (default: full with CUDA, else quick)")
    parser.add_argument("--dataset", help=f"one of: {', '.join(list_datasets())}")
    args = parser.parse_args(argv)
    try:
        name = args.dataset or get_profile(args.profile or default_profile_name()).dataset
        datasets = [load_dataset(name, split) for split in ("train", "test")]
    except (KeyError, FileNotFoundError, RuntimeError) as err:
        parser.error(str(err).strip("'\""))
    for ds in datasets:
        counts = ds.labels.bincount(minlength=ds.info.num_classes)
        print(f"{name}/{ds.split}: {len(ds)} images of {tuple(ds.images.shape[1:])}, "
              f"{ds.info.num_classes} classes ({counts.min().item()}-{counts.max().item()} per class)")


if __name__ == "__main__":
    main()
