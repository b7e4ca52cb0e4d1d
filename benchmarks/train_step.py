"""Training-step throughput (images/s) per model, batch size and mode: fp32, bf16 autocast, torch.compile.

    python -m benchmarks.train_step --models mlp_b4_wi256,cnn_small,vit_mini_p4 --batch-sizes 64,256

One step = forward, cross-entropy, backward, AdamW update, on random (C, H, W) images in [0, 1] (the cost
of a step does not depend on the data). Per (model, batch, mode): a fresh model, `--warmup` steps (compile
happens here), then `--repeats` timed blocks of `--steps` steps, the median block reported. bf16 autocasts
the forward on the model's device type (CPU autocast included), the loss in float32. It answers "which
mode trains this model fastest here", e.g. before choosing a quick recipe; `utils.train` itself autocasts
on CUDA only.
"""

from __future__ import annotations

import argparse
import statistics

import pandas as pd
import torch
import torch.nn.functional as F

from utils import models, timing

MODES = ("fp32", "bf16", "compile")


def images_per_s(name: str, batch_size: int, mode: str, args: argparse.Namespace) -> float:
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = models.create_model(name, num_classes=10, in_chans=args.channels, img_size=args.size).to(device)
    forward = torch.compile(net) if mode == "compile" else net
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.rand(batch_size, args.channels, args.size, args.size, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode == "bf16"):
            logits = forward(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    timing.sync(device)
    blocks = timing.time_calls(lambda: [step() for _ in range(args.steps)], device, args.repeats, None)
    return args.steps * batch_size / statistics.median(blocks)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="mlp_b4_wi256,cnn_small,vit_mini_p4")
    parser.add_argument("--batch-sizes", default="64,256")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; modes: {', '.join(MODES)}")
    rows = [
        {"model": m, "batch": b, "mode": mode, "images_per_s": images_per_s(m, b, mode, args)}
        for m in args.models.split(",")
        for b in map(int, args.batch_sizes.split(","))
        for mode in modes
    ]
    table = pd.DataFrame(rows).pivot_table(index=["model", "batch"], columns="mode", values="images_per_s")
    table = table[modes]
    for mode in modes[1:]:
        table[f"{mode} / {modes[0]}"] = table[mode] / table[modes[0]]
    print(f"training-step images/s on {args.device}, {args.channels}x{args.size}x{args.size} inputs, "
          f"median of {args.repeats} blocks of {args.steps} steps, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(table.round(2).to_string())


if __name__ == "__main__":
    main()
