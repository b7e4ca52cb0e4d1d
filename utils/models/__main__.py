"""`python -m utils.models [PATTERN] [--in-chans 3 --img-size 32]`: registered models, their family and
parameter count (built on the meta device: no memory, no weights)."""

from __future__ import annotations

import argparse

import torch

from . import create_model, family, list_models


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'mlp_*'")
    parser.add_argument("--in-chans", type=int, default=3)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--num-classes", type=int, default=10)
    args = parser.parse_args(argv)
    names = list_models(args.pattern)
    if not names:
        parser.error(f"no model matches {args.pattern!r}; models: {', '.join(list_models())}")
    print(f"{'model':32s} {'family':10s} params (at {args.in_chans}x{args.img_size}x{args.img_size}, "
          f"{args.num_classes} classes)")
    for name in names:
        with torch.device("meta"):
            net = create_model(name, num_classes=args.num_classes, in_chans=args.in_chans,
                               img_size=args.img_size)
        print(f"{name:32s} {family(name):10s} {sum(p.numel() for p in net.parameters()) / 1e6:8.2f}M")


if __name__ == "__main__":
    main()
