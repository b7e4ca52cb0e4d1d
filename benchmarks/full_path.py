"""The rates full's cost estimate assumes (utils/estimate.py RATES), measured on this device (issue 26).

    python -m benchmarks.full_path --out results/device          # a GPU box: the full trio, a few minutes
    python -m benchmarks.full_path --device cpu --out /tmp/fp    # a check of the script: toy sizes, seconds
    python -m utils.plan --profile full --estimate --measured results/device/rates.csv

No downloads and no dataset: synthetic CIFAR-shaped images (uint8 3x32x32, 10 classes) and every model built
without its pretrained weights (a step costs the same). On CUDA the full profile's trio with its recipes; on a
CPU the smoke trio at toy sizes. Sections, each a row per measurement (section, what, value, unit, rate):

- gemm: dense n x n matmuls in bf16, TF32, IEEE fp32 and fp64 (FLOP/s: 2 n^3 per product); copy: a device
  to device copy (bytes read + written per second) and, on CUDA, pinned host to device;
- fit: a few epochs of utils.train.fit with each trio recipe (checkpoints every epoch, into --out): images/s
  of the last epoch, and its MFU (images/s x forward FLOPs x 3, or 1 for a frozen backbone's head-only run, /
  the measured bf16 GEMM rate) -> the family's EFFICIENCY_*; the ViT also fully fine-tuned; the zoo's Swin
  -> EFFICIENCY_OTHER; the torch.save
  of each model's last.pt (model and optimizer state) -> CHECKPOINT_WRITE_BYTES_S;
- attack: PGD-10 steps (02's cost) per trio model, images/s;
- overhead: fit of a tiny MLP at batch 64, seconds per optimizer step -> STEP_OVERHEAD_S;
- sae: dictionary.fit_sae at the ViT's width (384) and batch 32, seconds per step -> SAE_STEP_S;
- compile: the first call of torch.compile of the trio's CNN (inductor on CUDA; aot_eager on a CPU, which
  has no C++ toolchain to spare: the code path only) -> COMPILE_S;
- host: the process's peak resident memory (ru_maxrss: Linux reports KiB) -> PROCESS_HOST_BYTES.

Writes DIR/measurements.csv (every row) and DIR/rates.csv (rate, value, unit, source: the rows that measure
an estimate.RATES entry), and prints the table.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from benchmarks.loaders import cifar_shaped
from utils import models, recipes
from utils.data import make_loader
from utils.experiments import attacks, cost, dictionary
from utils.store import freeze_except
from utils.timing import sync, time_calls
from utils.train import fit, make_optimizer

SIZES = {  # device type -> (GEMM side, training images, epochs, SAE vectors, attacked images)
    "cuda": (8192, 10240, 3, 20000, 1024),
    "cpu": (256, 256, 2, 1024, 16),
}
FAMILY_RATE = {"mlp": "EFFICIENCY_MLP", "cnn": "EFFICIENCY_CNN", "vit": "EFFICIENCY_VIT"}


def row(section: str, what: str, value: float, unit: str, rate: str = "") -> dict:
    return {"section": section, "what": what, "value": value, "unit": unit, "rate": rate}


def gemm_rows(device: torch.device, n: int) -> list[dict]:
    out = []
    for name, dtype, tf32 in (("bf16", torch.bfloat16, False), ("tf32", torch.float32, True),
                              ("fp32", torch.float32, False), ("fp64", torch.float64, False)):
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        seconds = min(time_calls(lambda: a @ b, device, 10, 5.0))  # noqa: B023 (called here, at once)
        torch.backends.cuda.matmul.allow_tf32 = previous
        out.append(row("gemm", f"{name} {n}x{n}", 2 * n**3 / seconds, "FLOP/s",
                       "H200_BF16_FLOPS" if name == "bf16" else ""))
    x = torch.empty(n * n * 4, dtype=torch.uint8, device=device)
    seconds = min(time_calls(lambda: x.clone(), device, 10, 5.0))
    out.append(row("copy", "device to device", 2 * x.numel() / seconds, "bytes/s"))
    if device.type == "cuda":
        host = torch.empty(x.numel(), dtype=torch.uint8).pin_memory()
        seconds = min(time_calls(lambda: x.copy_(host, non_blocking=True), device, 10, 5.0))
        out.append(row("copy", "pinned host to device", x.numel() / seconds, "bytes/s"))
    return out


def fit_recipes(device: torch.device) -> dict[str, tuple[recipes.Recipe, str]]:
    """name -> (recipe, the rate its MFU measures): the profile's trio (full on CUDA, smoke on a CPU), the ViT
    fully fine-tuned, and the zoo's Swin (the small models' EFFICIENCY_OTHER)."""
    from utils.experiments import zoo
    from utils.profiles import PROFILES

    profile = "full" if device.type == "cuda" else "smoke"
    out = {m: (recipes.get_recipe(m, profile), FAMILY_RATE[models.family(m)]) for m in PROFILES[profile].trio}
    vit = PROFILES[profile].trio[-1]
    out[f"{vit} (every weight)"] = (replace(out[vit][0], trainable=None), "")
    swin = zoo.config(profile).zoo[0]
    out[swin] = (recipes.get_recipe(swin, profile), "EFFICIENCY_OTHER")
    return out


def fit_rows(device: torch.device, n: int, epochs: int, peak: float, folder: Path) -> list[dict]:
    data = cifar_shaped(n)
    val = cifar_shaped(max(n // 8, 64), seed=1)
    out, saved = [], []
    for name, (recipe, rate_name) in fit_recipes(device).items():
        model = name.split(" ")[0]
        net = models.create_for(model, data.info, seed=0, **recipe.overrides)
        freeze_except(net, recipe.trainable)
        batch = min(recipe.train.batch_size, n // 2)
        cfg = replace(recipe.train, epochs=epochs, warmup_epochs=0, batch_size=batch, progress=False,
                      checkpoint_every_s=0.0, checkpoint_dir=str(folder / name.replace(" ", "_")))
        train = make_loader(data, batch, train=True, device=device)
        history = fit(net, train, make_loader(val, batch, train=False, device=device), cfg)
        rate = float(history.images_per_s.iloc[-1])
        fwd = cost.count_flops(net, tuple(data.images.shape[1:]))
        per_image = 3 if recipe.trainable is None else 1
        out += [row("fit", f"{name}, batch {batch}", rate, "images/s"),
                row("fit", f"{name} MFU", rate * fwd * per_image / peak, "of bf16 GEMM", rate_name)]
        state = {"model": net.state_dict(), "optimizer": make_optimizer(net, cfg).state_dict()}
        path = folder / f"{model}.pt"
        start = time.perf_counter()
        torch.save(state, path)
        saved.append((path.stat().st_size, time.perf_counter() - start))
        path.unlink()
        net.eval().requires_grad_(False)
        n_attack = SIZES[device.type][4]
        x, y = data.images[:n_attack].to(device).float() / 255, data.labels[:n_attack].to(device)
        seconds = min(time_calls(lambda: attacks.pgd(net, x, y, 8 / 255, steps=10), device, 3, 30.0))  # noqa: B023
        out.append(row("attack", f"{name} PGD-10", len(y) / seconds, "images/s"))
    size, seconds = map(sum, zip(*saved, strict=True))
    out.append(row("checkpoint", "torch.save of the trio's last.pt states", size / seconds, "bytes/s",
                   "CHECKPOINT_WRITE_BYTES_S"))
    return out


def overhead_rows(device: torch.device) -> list[dict]:
    data = cifar_shaped(64 * 20)
    net = models.create_for("mlp_plain", data.info, seed=0, depth=2, width=64)
    cfg = replace(recipes.default_recipe("smoke").train, epochs=2, warmup_epochs=0, batch_size=64,
                  progress=False)
    history = fit(net, make_loader(data, 64, train=True, device=device),
                  make_loader(data.head(64), 64, train=False, device=device), cfg)
    return [row("overhead", "tiny MLP step (batch 64, utils.train.fit)", 64 / history.images_per_s.iloc[-1],
                "s per step", "STEP_OVERHEAD_S")]


def sae_rows(device: torch.device, n: int) -> list[dict]:
    acts = torch.randn(n, 384, device=device)
    cfg = replace(dictionary.ORIGINAL, activation="topk_signed", k_per_dim=1 / 16, epochs=2, progress=False)
    dictionary.fit_sae(acts[:256], replace(cfg, epochs=1))  # warm-up
    sync(device)
    start = time.perf_counter()
    dictionary.fit_sae(acts, cfg)
    sync(device)
    steps = cfg.epochs * -(-n // cfg.batch_size)
    seconds = (time.perf_counter() - start) / steps
    return [row("sae", f"fit_sae step (384 wide, batch {cfg.batch_size})", seconds, "s per step",
                "SAE_STEP_S")]


def compile_rows(device: torch.device) -> list[dict]:
    profile = "full" if device.type == "cuda" else "smoke"
    from utils.profiles import PROFILES

    cnn = PROFILES[profile].models["cnn"]
    net = models.create_for(cnn, cifar_shaped(8).info, seed=0).to(device).eval()
    backend = "inductor" if device.type == "cuda" else "aot_eager"
    torch.compiler.reset()
    compiled = torch.compile(net, dynamic=False, backend=backend)
    x = torch.rand(128, 3, 32, 32, device=device)
    start = time.perf_counter()
    with torch.no_grad():
        compiled(x)
    sync(device)
    return [row("compile", f"{cnn}, batch 128, {backend}: first call", time.perf_counter() - start,
                "s per compile", "COMPILE_S")]


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", required=True, type=Path, help="folder for measurements.csv and rates.csv")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    side, n, epochs, n_sae, _ = SIZES[device.type]
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    rows = gemm_rows(device, side)
    peak = rows[0]["value"]
    with tempfile.TemporaryDirectory(dir=args.out) as scratch:
        rows += fit_rows(device, n, epochs, peak, Path(scratch))
    rows += overhead_rows(device) + sae_rows(device, n_sae) + compile_rows(device)
    rows.append(row("host", "this process's peak resident memory (torch, CUDA, the models above)",
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "bytes", "PROCESS_HOST_BYTES"))
    table = pd.DataFrame(rows)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    table.to_csv(args.out / "measurements.csv", index=False)
    rates = table[table.rate != ""].assign(
        source=f"measured by benchmarks.full_path on {name}, {time.strftime('%Y-%m-%d')}")
    rates[["rate", "value", "unit", "source"]].to_csv(args.out / "rates.csv", index=False)
    print(f"benchmarks.full_path on {name} ({device})")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return table


if __name__ == "__main__":
    main()
