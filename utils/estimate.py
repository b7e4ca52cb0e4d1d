"""What the plan's training will cost on a GPU box, counted from the code and the configs (issue 26):

    python -m utils.plan --profile full --estimate          # per notebook and in total
    python -m utils.plan --profile full --estimate --json   # the same; `total` holds minutes_h200, ...

Per run (utils.plan.Run), from its recipe and its counted training images:

- optimizer steps = epochs x (train images // batch) (the training loader drops the last partial batch);
  image-steps = steps x batch; adversarial training adds its attack's forward-backward passes per step;
- evaluation passes: the validation split every epoch, the test split once (utils.train.fit);
- FLOPs = TRAIN_FLOPS_PER_FORWARD x forward x image-steps x (1 + attack passes) + forward x evaluated images;
- bytes written: a `last.pt` (the model's state, the optimizer's state of the trainable parameters,
  OPTIMIZER_STATES per parameter) each time the recipe's checkpoint_every_s of training has passed (every
  epoch when it is 0: utils.train's policy), then the final weights (write_final); disk left behind: the
  final weights (a finished run removes its states: utils.checkpoints.drop_states);
- minutes on one H200 = FLOPs / (H200_BF16_FLOPS x the model family's efficiency) + steps x STEP_OVERHEAD_S +
  bytes written / CHECKPOINT_WRITE_BYTES_S.

Every rate is one named constant in RATES with where it comes from. Counted here: training runs only; the
notebooks' analysis passes (attacks, features, CKA, SAEs) are not yet counted (issue 26).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pandas as pd

from . import models, train
from .plan import TRAIN_FLOPS_PER_FORWARD, Run, forward_flops, profile_of, split_size, train_images
from .profiles import Profile

BYTES_PER_PARAM = 4  # float32 weights and optimizer states (bf16 autocast keeps float32 master weights)
OPTIMIZER_STATES = {"adamw": 2, "lamb": 2, "lion": 1, "sgd": 1, "nesterov": 1}  # float32 values per parameter
OPTIMIZER_TENSORS = {"adamw": 3, "lamb": 3, "lion": 1, "sgd": 1, "nesterov": 1}  # per parameter tensor
# What a file holds beyond its tensors' bytes, measured on the smoke trio's last.pt and model.safetensors
# (tests/test_estimate.py checks the count against a real smoke run): torch.save's RNG state (5,056 bytes),
# history, config and data keys per state; its zip record and pickle entry per tensor; safetensors' header
# entry per tensor.
SAVE_OVERHEAD_BYTES = 8192
TENSOR_OVERHEAD_BYTES = 320
SAFETENSORS_TENSOR_BYTES = 80


@dataclass(frozen=True)
class Rate:
    value: float
    unit: str
    source: str


RATES = {
    "H200_BF16_FLOPS": Rate(790e12, "FLOP/s", "dense bf16 GEMM peak measured on an H200 (issue 26); the "
                            "device script benchmarks/full_path.py measures it where a GPU is lent"),
    "EFFICIENCY_MLP": Rate(0.5, "of peak", "assumed: large dense GEMMs (B-12/Wi-1024 at batch 1024)"),
    "EFFICIENCY_CNN": Rate(0.3, "of peak", "assumed: ResNet-18/VGG at 32 px (small convolutions, BatchNorm)"),
    "EFFICIENCY_VIT": Rate(0.4, "of peak", "assumed: ViT-S/16 at 224 px, attention and LayerNorm"),
    "EFFICIENCY_OTHER": Rate(0.2, "of peak", "assumed: the zoo's small models and the plain MLPs"),
    "STEP_OVERHEAD_S": Rate(3e-3, "s per optimizer step", "assumed: launch latency, optimizer, loader "
                            "(small models are bound by it, not by FLOPs)"),
    "CHECKPOINT_WRITE_BYTES_S": Rate(1e9, "bytes/s", "assumed local NVMe through torch.save (issue 26)"),
}


def rate(name: str) -> float:
    return RATES[name].value


def efficiency(model: str) -> float:
    family = models.family(model)
    if model.startswith(("mlp_plain", "test_")):
        return rate("EFFICIENCY_OTHER")
    return rate({"mlp": "EFFICIENCY_MLP", "cnn": "EFFICIENCY_CNN", "vit": "EFFICIENCY_VIT"}.get(
        family, "EFFICIENCY_OTHER"))


def attack_passes(run: Run, profile: Profile) -> int:
    """Extra forward-backward passes per step of adversarial training: FGSM 1, PGD its steps."""
    cfg = run.recipe_under(profile.name).train
    return 0 if cfg.adversarial is None else 1 if cfg.adversarial == "fgsm" else cfg.adv_steps


def _sizes(run: Run, profile: Profile) -> tuple[int, int, int, int, int]:
    """(parameters, trainable parameters, buffer elements, state-dict tensors, trainable parameter tensors)
    of the run's model, built on the meta device."""
    import torch

    from .data.cache import info_of

    recipe = run.recipe_under(profile.name)
    images = getattr(run.task, "image_dataset", run.dataset)  # 04: targets resized to the source's images
    info = replace(info_of(images), num_classes=info_of(run.dataset).num_classes)
    with torch.device("meta"):
        net = models.create_for(run.model, info, **recipe.overrides)
    mine = [p for n, p in net.named_parameters()
            if recipe.trainable is None or n.startswith(recipe.trainable + ".")]
    return (sum(p.numel() for p in net.parameters()), sum(p.numel() for p in mine),
            sum(b.numel() for b in net.buffers()), len(net.state_dict()), len(mine))


def run_cost(run: Run, profile: str | Profile) -> dict:
    """One run's counted cost (module docstring)."""
    p = profile_of(profile)
    cfg = run.recipe_under(p.name).train
    n = train_images(run, p)
    steps = cfg.epochs * (n // cfg.batch_size)
    fwd, _ = forward_flops(run, p)
    n_val = split_size(p, run.dataset) - n if run.task is None else run.task.n_val(p)
    n_test = split_size(p, run.dataset, "test") if run.task is None else split_size(p, run.dataset, "test",
                                                                                     capped=False)
    evaluated = n_val * cfg.epochs + n_test
    params, trainable, buffers, tensors, trainable_tensors = _sizes(run, p)
    state = ((params + buffers + OPTIMIZER_STATES[cfg.optimizer] * trainable) * BYTES_PER_PARAM
             + SAVE_OVERHEAD_BYTES
             + (tensors + OPTIMIZER_TENSORS[cfg.optimizer] * trainable_tensors) * TENSOR_OVERHEAD_BYTES)
    final = (params + buffers) * BYTES_PER_PARAM + tensors * SAFETENSORS_TENSOR_BYTES
    flops = TRAIN_FLOPS_PER_FORWARD * fwd * steps * cfg.batch_size * (1 + attack_passes(run, p)) \
        + fwd * evaluated
    training = flops / (rate("H200_BF16_FLOPS") * efficiency(run.model)) + steps * rate("STEP_OVERHEAD_S")
    saves = checkpoint_saves(cfg.epochs, training, train.checkpoint_every(cfg))
    written = saves * state + final
    seconds = training + written / rate("CHECKPOINT_WRITE_BYTES_S")
    return {"notebook": run.notebook, "run": run.name, "dataset": run.dataset, "steps": steps,
            "image_steps": steps * cfg.batch_size, "evaluated_images": evaluated, "flops": flops,
            "checkpoint_saves": saves, "bytes_written": written, "disk_left": final,
            "minutes_h200": seconds / 60}


def checkpoint_saves(epochs: int, seconds: float, every_s: float) -> int:
    """How many last.pt a run of `epochs` epochs over `seconds` writes under utils.train's policy (a state at
    the first epoch end at least every_s after the previous one; epochs of equal length)."""
    if every_s <= 0:
        return epochs
    epoch_s = seconds / epochs
    per_state = max(1, math.ceil(every_s / epoch_s)) if epoch_s > 0 else epochs + 1
    return epochs // per_state


def estimate(runs: Sequence[Run], profile: str | Profile) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per training, counted where it is first asked for: a run asked for again, or a twin of one
    trained before (Run.trained_as), costs nothing more; per notebook with a last row `all`)."""
    p = profile_of(profile)
    seen, rows = set(), []
    for r in runs:
        if (training := r.trained_as(p.name)) not in seen:
            seen.add(training)
            rows.append(run_cost(r, p))
    per_run = pd.DataFrame(rows)
    sums = per_run.drop(columns=["run", "dataset"]).groupby("notebook", sort=False).sum()
    sums.loc["all"] = sums.sum()
    return per_run, sums.reset_index()


def as_json(per_notebook: pd.DataFrame, profile: str) -> str:
    total = per_notebook[per_notebook.notebook == "all"].iloc[0]
    return json.dumps({"profile": profile, "counted": "training runs only (analysis passes: not yet)",
                       "rates": {k: vars(v) for k, v in RATES.items()},
                       "notebooks": per_notebook[per_notebook.notebook != "all"].to_dict("records"),
                       "total": {"minutes_h200": total.minutes_h200, "disk_gb": total.disk_left / 1e9,
                                 "written_gb": total.bytes_written / 1e9, "steps": int(total.steps),
                                 "flops": total.flops}}, indent=1, default=float)


def caveat(per_notebook: pd.DataFrame) -> str:
    """The report's sentence on what a profile's training was counted to cost before it ran."""
    rows = per_notebook[per_notebook.notebook != "all"]
    total = per_notebook[per_notebook.notebook == "all"].iloc[0]
    parts = ", ".join(f"{r.notebook[:2]}: {r.minutes_h200:.0f}" for r in rows.itertuples())
    return (f"Counted before it ran (`python -m utils.plan --profile full --estimate`, training only; the "
            f"analysis passes are not counted): {total.minutes_h200:.0f} minutes on one H200 ({parts}), "
            f"{total.bytes_written / 1e9:.0f} GB written, {total.disk_left / 1e9:.0f} GB left on disk. "
            "The rates behind it are assumed (estimate.RATES) until the device script measures them.")

