"""What the plan's training will cost on a GPU box, counted from the code and the configs (issue 26):

    python -m utils.plan --profile full --estimate          # per notebook and in total
    python -m utils.plan --profile full --estimate --json   # the same; `total` holds minutes_h200, ...

Per run (utils.plan.Run), from its recipe and its counted training images:

- optimizer steps = epochs x (train images // batch) (the training loader drops the last partial batch);
  image-steps = steps x batch; adversarial training adds its attack's forward-backward passes per step;
- evaluation passes: the validation split every epoch, the test split once (utils.train.fit);
- FLOPs = TRAIN_FLOPS_PER_FORWARD (1 for a frozen backbone's head) x forward x image-steps x (1 + attack
  passes) + forward x evaluated images;
- bytes written: a `last.pt` (the model's state, the optimizer's state of the trainable parameters,
  OPTIMIZER_STATES per parameter) each time the recipe's checkpoint_every_s of training has passed (every
  epoch when it is 0: utils.train's policy), then the final weights (write_final); disk left behind: the
  final weights (a finished run removes its states: utils.checkpoints.drop_states);
- minutes on one H200 = FLOPs / (H200_BF16_FLOPS x the model family's efficiency) + steps x STEP_OVERHEAD_S +
  bytes written / CHECKPOINT_WRITE_BYTES_S.

Every rate is one named constant in RATES with where it comes from.

The notebooks' analysis passes (ANALYSES: 02's attacks, 03's modifications, 04's features, 05's timing, 08's
optimised images, 09's activations and SAEs), one `Pass` per kind of work and model, counted from each
notebook's config the way its cells loop: images x forward-equivalents (a forward 1, a forward and backward
3) at the model's forward FLOPs and its family's efficiency, plus STEP_OVERHEAD_S per sequential batched call
(SAE_STEP_S per SAE step) and the seconds a config fixes (05's timing caps, COMPILE_S per compile). Upper
bounds where the work depends on the data (PGD's early stop is not credited), except AutoAttack's later
members (AUTOATTACK_ROBUST). Not counted: work on the host CPU (04's probe fits and XGBoost, 09's feature
matching) and 01/04/06's notebook-side evaluations beyond their runs' own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

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
ACTIVATION_BYTES = {True: 2, False: 4}  # per activation element: bf16 autocast (recipe amp) or float32
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
    # the analysis passes (ANALYSES below)
    "SAE_STEP_S": Rate(0.6e-3, "s per SAE step", "assumed: dictionary.fit_sae's step is ~60 small kernels "
                       "(encode, top-k, decode, loss, backward, fused Adam, decoder norms) at ~10 us of host "
                       "dispatch each; its matmuls (batch 32) take microseconds"),
    "COMPILE_S": Rate(40.0, "s per compile", "assumed: one inductor compile of a trio network for one "
                      "static batch size (05 compiles each batch size: cost._prepare)"),
    "PROCESS_HOST_BYTES": Rate(4e9, "bytes", "assumed: one notebook kernel's resident memory with torch, "
                               "CUDA's context and the libraries imported (about 1 GB measured on a CPU)"),
    "AUTOATTACK_ROBUST": Rate(0.1, "of the images", "assumed: the share APGD-CE leaves robust at 8/255, "
                              "which APGD-T, FAB-T and Square then attack (standard training: "
                              "RobustBench's standard models keep none; 0.1 leaves room for the MLP)"),
}


MEASURED: dict[str, float] = {}  # rates measured on a device (use_measured), in place of RATES' values


def use_measured(path: str | Path) -> dict[str, float]:
    """Count with the rates benchmarks.full_path measured (its rates.csv: rate, value, unit, source) in place
    of the assumed ones; a rate it did not measure keeps RATES' value. Returns the measured rates."""
    table = pd.read_csv(path)
    if unknown := sorted(set(table.rate) - set(RATES)):
        raise ValueError(f"{path}: unknown rates {', '.join(unknown)}; known: {', '.join(RATES)}")
    if bad := table[~(table.value > 0)].rate.tolist():
        raise ValueError(f"{path}: rates must be positive: {', '.join(bad)}; rerun benchmarks.full_path")
    MEASURED.clear()
    MEASURED.update(zip(table.rate, table.value.astype(float), strict=True))
    return dict(MEASURED)


def rate(name: str) -> float:
    return MEASURED.get(name, RATES[name].value)


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


def _sizes(run: Run, profile: Profile) -> tuple[int, int, int, int, int, int, int]:
    """(parameters, trainable parameters, buffer elements, state-dict tensors, trainable parameter tensors,
    and per image: the elements every leaf module outputs, the largest one's) of the run's model, built and
    run on the meta device (nothing allocated)."""
    recipe = run.recipe_under(profile.name)
    images = getattr(run.task, "image_dataset", run.dataset)  # 04: targets resized to the source's images
    return _model_sizes(run.model, json.dumps(recipe.overrides, sort_keys=True), images, run.dataset,
                        recipe.trainable)


def _model_sizes(model: str, overrides: str, images: str, dataset: str, trainable: str | None
                 ) -> tuple[int, int, int, int, int, int, int]:
    from .plan import built

    b = built(model, overrides, images, dataset)
    mine = [n for name, n in b.param_numels if trainable is None or name.startswith(trainable + ".")]
    return b.params, sum(mine), b.buffers, b.tensors, len(mine), b.outputs, b.largest_output


def dataset_bytes(profile: Profile, dataset: str) -> int:
    """The dataset's uint8 images, training and test split (held in host memory, and on the device by the
    resident loader)."""
    from .data.cache import info_of

    info = info_of(dataset)
    n = split_size(profile, dataset, capped=False) + split_size(profile, dataset, "test", capped=False)
    return n * info.channels * info.image_size**2


def run_cost(run: Run, profile: str | Profile) -> dict:
    """One run's counted cost (module docstring)."""
    p = profile_of(profile)
    recipe = run.recipe_under(p.name)
    cfg = recipe.train
    n = train_images(run, p)
    steps = cfg.epochs * (n // cfg.batch_size)
    fwd, _ = forward_flops(run, p)
    n_val = split_size(p, run.dataset) - n if run.task is None else run.task.n_val(p)
    n_test = split_size(p, run.dataset, "test") if run.task is None else split_size(p, run.dataset, "test",
                                                                                     capped=False)
    evaluated = n_val * cfg.epochs + n_test
    params, trainable, buffers, tensors, trainable_tensors, act_sum, act_max = _sizes(run, p)
    state = ((params + buffers + OPTIMIZER_STATES[cfg.optimizer] * trainable) * BYTES_PER_PARAM
             + SAVE_OVERHEAD_BYTES
             + (tensors + OPTIMIZER_TENSORS[cfg.optimizer] * trainable_tensors) * TENSOR_OVERHEAD_BYTES)
    final = (params + buffers) * BYTES_PER_PARAM + tensors * SAFETENSORS_TENSOR_BYTES
    # a frozen backbone (recipe.trainable: the head only) is not differentiated: a step is its forward (the
    # head's backward is a rounding error); otherwise forward + backward (TRAIN_FLOPS_PER_FORWARD)
    per_image = TRAIN_FLOPS_PER_FORWARD if recipe.trainable is None else 1
    flops = per_image * fwd * steps * cfg.batch_size * (1 + attack_passes(run, p)) + fwd * evaluated
    training = flops / (rate("H200_BF16_FLOPS") * efficiency(run.model)) + steps * rate("STEP_OVERHEAD_S")
    saves = checkpoint_saves(cfg.epochs, training, train.checkpoint_every(cfg))
    written = saves * state + final
    seconds = training + written / rate("CHECKPOINT_WRITE_BYTES_S")
    # device memory, an upper bound: the weights, the trainable ones' gradients and optimizer states, every
    # leaf module's output of the batch kept for the backward (ACTIVATION_BYTES each; a frozen backbone
    # keeps none: its largest output at a time), and the resident dataset
    kept = act_sum if recipe.trainable is None else act_max
    device = ((params + buffers + (1 + OPTIMIZER_STATES[cfg.optimizer]) * trainable) * BYTES_PER_PARAM
              + cfg.batch_size * kept * ACTIVATION_BYTES[bool(cfg.amp)]
              + dataset_bytes(p, run.dataset))
    return {"notebook": run.notebook, "run": run.name, "dataset": run.dataset, "steps": steps,
            "image_steps": steps * cfg.batch_size, "evaluated_images": evaluated, "flops": flops,
            "checkpoint_saves": saves, "bytes_written": written, "disk_left": final,
            "device_bytes": device, "host_bytes": dataset_bytes(p, run.dataset) + rate("PROCESS_HOST_BYTES"),
            "minutes_h200": seconds / 60}


def checkpoint_saves(epochs: int, seconds: float, every_s: float) -> int:
    """How many last.pt a run of `epochs` epochs over `seconds` writes under utils.train's policy (a state at
    the first epoch end at least every_s after the previous one; epochs of equal length)."""
    if every_s <= 0:
        return epochs
    epoch_s = seconds / epochs
    per_state = max(1, math.ceil(every_s / epoch_s)) if epoch_s > 0 else epochs + 1
    return epochs // per_state


# ---------------------------------------------------------------- the notebooks' analysis passes


@dataclass(frozen=True)
class Pass:
    """One kind of analysis work on one network: `images` images of `passes` forward-equivalents each (a
    forward 1, a forward and backward 3), in `launches` sequential batched calls, plus `seconds` the config
    fixes. `model` is a trio member (a seed twin costs its model's) or "sae" (`flops_per_image` given)."""

    what: str
    model: str
    images: int
    passes: float
    launches: int = 0
    seconds: float = 0.0
    flops_per_image: float | None = None


def _batches(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def _attack_02(cfg, p: Profile, models_: list[str], twins: list[str], n_test: int, classes: int
               ) -> list[Pass]:
    from .experiments import attacks

    n, b = n_test if cfg.n_images is None else min(cfg.n_images, n_test), cfg.batch_size
    out = []
    for m in models_:
        out.append(Pass("clean (clean_table)", m, n, 1, _batches(n, b)))
        # grid_table: eps 0 is a clean pass; every other eps an attack (FGSM 1 step, PGD 5) and a scoring pass
        for attack, points, steps in (("fgsm", cfg.fgsm_points, 1), ("pgd", cfg.pgd_points,
                                                                     min(5, cfg.max_pgd_steps))):
            out.append(Pass(f"{attack} grid", m, n, 1 + (points - 1) * (3 * steps + 1),
                            _batches(n, b) * (1 + (points - 1) * (steps + 1))))
        for s in [attacks.CLEAN, *attacks.standard_settings(cfg.max_pgd_steps)]:  # no early stop credited
            steps = s.steps if s.attack == "pgd" else int(s.attack == "fgsm")
            out.append(Pass(s.name, m, n, 3 * steps + 1, _batches(n, b) * (steps + 1)))
        for s in attacks.transfer_settings(cfg.max_pgd_steps):  # crafted on m, scored on every model
            t = min(cfg.n_transfer, n_test)
            steps = s.steps if s.attack == "pgd" else 1
            out.append(Pass(f"transfer {s.name}", m, t, 3 * steps + len(models_),
                            _batches(t, b) * (steps + 1)))
        a, k = min(cfg.n_autoattack, n_test), cfg.autoattack_steps
        robust = math.ceil(a * rate("AUTOATTACK_ROBUST"))
        out += [Pass("AutoAttack APGD-CE", m, a, 3 * k + 1, _batches(a, b) * k),
                Pass("AutoAttack APGD-T and FAB-T", m, robust, 2 * (classes - 1) * 3 * k,
                     2 * (classes - 1) * k),
                Pass("AutoAttack Square", m, robust, cfg.autoattack_queries, cfg.autoattack_queries)]
    for m in twins:  # the ceiling: CLEAN and PGD-10
        out.append(Pass("twin: clean and PGD-10", m, n, 1 + 3 * 10 + 1, _batches(n, b) * 12))
    return out


def _modifications_03(cfg, p: Profile, models_: list[str], twins: list[str], n_test: int,
                      control: list[str]) -> list[Pass]:
    n = n_test if cfg.n_images is None else min(cfg.n_images, n_test)
    cue = n_test if cfg.n_cue is None else min(cfg.n_cue, n_test)
    return ([Pass("modifications and cue conflict", m, len(cfg.modifications) * n + cue, 1,
                  _batches(len(cfg.modifications) * n + cue, p.eval_batch_size)) for m in [*models_, *twins]]
            + [Pass("aligned control: cue conflict", m, cue, 1, _batches(cue, p.eval_batch_size))
               for m in control])


def _features_04(cfg, p: Profile, models_: list[str]) -> list[Pass]:
    from .data.cache import info_of

    out = []
    for m in models_:
        out.append(Pass("CKA features: seed 0, seed 1, initialisation", m, 3 * cfg.n_cka, 1,
                        3 * _batches(cfg.n_cka, p.eval_batch_size)))
        out.append(Pass("similarity suite: final features of the three", m, 3 * cfg.n_similarity, 1,
                        3 * _batches(cfg.n_similarity, p.eval_batch_size)))
        probes = cfg.n_probe_train + cfg.n_probe_test
        out.append(Pass("layer probe features", m, probes, 1, _batches(probes, p.eval_batch_size)))
        for target in cfg.targets:  # the linear probe's and LP-FT head's features: every k, the test split
            pool = split_size(p, target, capped=False)
            ks = [pool if k is None else min(pool, k * info_of(target).num_classes) for k in cfg.per_class]
            images = sum(ks) + split_size(p, target, "test", capped=False)
            out.append(Pass(f"{target}: probe features", m, images, 1, _batches(images, p.eval_batch_size)))
    return out


def _timing_05(cfg, p: Profile, models_: list[str], flops: dict[str, float], n_test: int) -> list[Pass]:
    from .experiments import cost

    out = []
    for m in models_:
        modes = [mode for mode in cfg.modes if mode != "channels_last" or models.family(m) == "cnn"]
        for mode in modes:
            for bs in cost.batch_sizes(cfg, mode):
                call = bs * flops[m] / (rate("H200_BF16_FLOPS") * efficiency(m)) + rate("STEP_OVERHEAD_S")
                timed = min(cfg.repeats, math.ceil(cfg.max_seconds / call))
                compile_s = rate("COMPILE_S") if mode == "compile" else 0.0
                out.append(Pass(f"{mode} timing, batch {bs}", m, bs * (1 + cfg.warmup + timed), 1,
                                1 + cfg.warmup + timed, compile_s))
        n = n_test if cfg.n_images is None else min(cfg.n_images, n_test)
        out.append(Pass("top-1 and calibration", m, n, 1, _batches(n, p.eval_batch_size)))
    return out


def _images_08(cfg, p: Profile, models_: list[str], n_test: int, classes: int) -> list[Pass]:
    # a forward and backward to the input (weights frozen: counted as 3, an upper bound) per image and step
    n_cls = min(cfg.n_classes, classes) * cfg.n_starts
    out = [Pass("blurred control (zero objective)", models_[0], n_cls, 3 * cfg.steps, cfg.steps)]
    for m in models_:
        for kind in ("trained", "random"):
            out += [Pass(f"class images ({kind})", m, n_cls, 3 * cfg.steps, cfg.steps),
                    Pass(f"unit images ({kind})", m, cfg.n_layers * cfg.n_units, 3 * cfg.steps, cfg.steps),
                    Pass(f"inversion ({kind})", m, min(cfg.n_invert, classes), 3 * cfg.invert_steps,
                         cfg.invert_steps)]
        if cfg.compare_fourier:
            out.append(Pass("class images (Fourier)", m, min(cfg.n_classes, classes), 3 * cfg.steps,
                            cfg.steps))
        n = n_test if cfg.n_test is None else min(cfg.n_test, n_test)
        tiles = (1 + len(cfg.tile_grids)) * n
        out.append(Pass("tile shuffle", m, tiles, 1, _batches(tiles, p.eval_batch_size)))
    return out


def _saes_09(cfg, p: Profile, models_: list[str], n_train: int, n_test: int) -> list[Pass]:
    from .experiments import dictionary

    out, base = [], replace(dictionary.ORIGINAL, **cfg.sae)
    n_fit = min(cfg.n_fit, n_train if cfg.fit_split == "train" else n_test)
    n_eval = min(cfg.n_eval, n_test)
    for m in models_:
        d = _head_width(m, p.dataset)
        jobs = [{}] * (len(cfg.seeds) + 1) + list(cfg.sweep)  # every seed, the untrained control, the sweep
        out.append(Pass("activations, trained and untrained", m, 2 * (n_fit + n_eval), 1,
                        2 * _batches(n_fit + n_eval, p.eval_batch_size)))
        for changes in jobs:
            c = replace(base, **changes)
            f = round(c.expansion * d)
            steps = c.epochs * _batches(n_fit, c.batch_size)
            out.append(Pass(f"SAE {changes or 'main'}", "sae", steps * c.batch_size, 3, steps,
                            flops_per_image=2 * 2 * d * f))
        out.append(Pass("spliced, clean and ablated passes", m, (len(jobs) + 2 * 2) * n_eval, 1,
                        (len(jobs) + 4) * _batches(n_eval, p.eval_batch_size)))
        steer = min(cfg.n_steer, n_eval)
        out.append(Pass("steering", m, (1 + cfg.n_shown + cfg.n_control) * steer, 1,
                        (1 + cfg.n_shown + cfg.n_control) * _batches(steer, p.eval_batch_size)))
    return out


def _head_width(model: str, dataset: str) -> int:
    """The width of the head's input (09's layer "head:input"), from the model built on the meta device."""
    import torch

    from .data.cache import info_of

    with torch.device("meta"):
        return models.create_for(model, info_of(dataset)).get_submodule("head").in_features


def analysis_passes(notebook: str, profile: str | Profile, dataset: str | None = None) -> list[Pass]:
    """The analysis work of one notebook under `profile` (module docstring), from its config."""
    from . import config, recipes
    from .data.cache import info_of

    p = profile_of(profile)
    dataset = dataset or p.dataset
    if notebook not in ANALYSES:
        return []
    cfg = config.for_notebook(notebook, p.name)
    trio = list(p.trio)
    twins = list(recipes.seed_twins(trio, p.name, getattr(cfg, "ceiling_seed", None)))  # their models' costs
    control = (list(recipes.aligned_runs(trio, p.name, recipes.ALIGNED[p.name].lrs[0]))  # every seed, one lr
               if getattr(cfg, "aligned", False) else [])
    n_train, n_test = split_size(p, dataset, capped=False), split_size(p, dataset, "test")
    classes = info_of(dataset).num_classes
    if notebook == "02_adversarial_robustness":
        return _attack_02(cfg, p, trio, twins + control, n_test, classes)  # the control: as a twin
    if notebook == "03_texture_vs_shape_bias":
        return _modifications_03(cfg, p, trio, twins, n_test, control)
    if notebook == "04_feature_generalizability":
        return _features_04(cfg, p, trio) + [Pass("aligned control: final features", m, cfg.n_similarity, 1,
                                                  _batches(cfg.n_similarity, p.eval_batch_size))
                                             for m in control]
    if notebook == "05_inference_time":
        return _timing_05(cfg, p, trio, {m: _flops(m, p, dataset) for m in trio}, n_test)
    if notebook == "08_activation_maximization":
        return _images_08(cfg, p, trio, n_test, classes)
    return _saes_09(cfg, p, trio, n_train, n_test)


ANALYSES = ("02_adversarial_robustness", "03_texture_vs_shape_bias", "04_feature_generalizability",
            "05_inference_time", "08_activation_maximization", "09_dictionary_learning")


def _flops(model: str, p: Profile, dataset: str) -> float:
    """Forward FLOPs per image of a trio member (its profile recipe's overrides) on the dataset's images."""
    return forward_flops(Run("", model, dataset), p)[0]


def analysis_cost(notebook: str, profile: str | Profile) -> dict:
    """One notebook's counted analysis cost: forward-equivalent image passes, launches, FLOPs, minutes."""
    p = profile_of(profile)
    passes = analysis_passes(notebook, p)
    flops = seconds = 0.0
    for a in passes:
        base = a.model.split("@", 1)[0]
        fwd = a.flops_per_image if a.flops_per_image is not None else _flops(base, p, p.dataset)
        work = a.images * a.passes * fwd
        flops += work
        overhead = rate("SAE_STEP_S") if a.model == "sae" else rate("STEP_OVERHEAD_S")
        eff = rate("EFFICIENCY_OTHER") if a.model == "sae" else efficiency(base)
        seconds += work / (rate("H200_BF16_FLOPS") * eff) + a.launches * overhead + a.seconds
    host, device = analysis_memory(notebook, p)
    return {"notebook": notebook, "analysis_images": sum(a.images * a.passes for a in passes),
            "analysis_launches": sum(a.launches for a in passes), "analysis_flops": flops,
            "analysis_minutes": seconds / 60, "analysis_host_bytes": host, "analysis_device_bytes": device}


def analysis_memory(notebook: str, profile: str | Profile) -> tuple[int, int]:
    """(host bytes, device bytes) a notebook's analysis holds at its peak, counted: the kernel process
    (PROCESS_HOST_BYTES) and the dataset (host, and on the device for the resident loader), and what a
    notebook keeps beside it: 04's centred Gram matrices (float64, n_cka^2 each: every stage of the 9
    networks, on the device until the CKA table is built) and its probe features (host, float32, two
    models' at a time), 09's float16 activations (host). Not counted: the networks' weights and one batch's
    activations (a few GB at most, next to 141 GB of H200 memory)."""
    import torch

    from . import config, hooks
    from .data.cache import info_of

    p = profile_of(profile)
    data = dataset_bytes(p, p.dataset)
    if notebook not in ANALYSES:
        return 0, 0
    cfg = config.for_notebook(notebook, p.name)
    host, device = data + rate("PROCESS_HOST_BYTES"), data
    if notebook == "04_feature_generalizability":
        from .experiments import probes

        info = info_of(cfg.source)
        widths = []  # per model: the probe features of every stage (probes.compact), per image
        with torch.device("meta"):
            nets = [models.create_for(m, info).eval() for m in p.trio]
            for net in nets:
                out: list[int] = []
                for name in hooks.stage_layers(net):
                    net.get_submodule(name).register_forward_hook(
                        lambda _m, _i, o, out=out: out.append(probes.compact(o).shape[1]))
                net(torch.empty(1, info.channels, info.image_size, info.image_size))
                widths.append(sum(out))
        layers = sum(len(hooks.stage_layers(net)) + 1 for net in nets)
        device += 3 * layers * cfg.n_cka**2 * 8  # seed 0, seed 1 and the initialisation of each model
        host += 2 * (cfg.n_probe_train + cfg.n_probe_test) * max(widths) * 4  # a model's and the previous
    if notebook == "09_dictionary_learning":
        for m in p.trio:
            host += 2 * (cfg.n_fit + cfg.n_eval) * _head_width(m, p.dataset) * 2  # trained, untrained; fp16
    return host, device


def estimate(runs: Sequence[Run], profile: str | Profile, analyses: bool = True
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per training, counted where it is first asked for: a run asked for again, or a twin of one
    trained before (Run.trained_as), costs nothing more; per notebook with a last row `all`: its training,
    and with `analyses` its notebook's analysis passes, in `minutes_h200` = training + analysis minutes)."""
    p = profile_of(profile)
    seen, rows = set(), []
    for r in runs:
        if (training := r.trained_as(p.name)) not in seen:
            seen.add(training)
            rows.append(run_cost(r, p))
    per_run = pd.DataFrame(rows)
    notebooks = list(dict.fromkeys(r.notebook for r in runs))
    memory = ["device_bytes", "host_bytes"]
    grouped = per_run.drop(columns=["run", "dataset"]).groupby("notebook", sort=False)
    sums = grouped.sum().drop(columns=memory).join(grouped[memory].max())
    sums = sums.reindex(notebooks, fill_value=0).rename(columns={"minutes_h200": "training_minutes"})
    counted = [analysis_cost(nb, p) if analyses else {"notebook": nb} for nb in notebooks]
    sums = sums.join(pd.DataFrame(counted).set_index("notebook")).fillna(0.0)
    sums["minutes_h200"] = sums.training_minutes + sums.get("analysis_minutes", 0.0)
    for kind in ("device", "host"):  # a notebook's peak: its largest run, or its analysis
        sums[f"{kind}_bytes"] = sums[[c for c in sums if c.endswith(f"{kind}_bytes")]].max(axis=1)
    sums = sums.drop(columns=[c for c in sums if c.startswith("analysis_") and c.endswith("_bytes")])
    total = sums.sum()
    total[memory] = sums[memory].max()  # the notebooks run one after another
    sums.loc["all"] = total
    return per_run, sums.reset_index()


def as_json(per_notebook: pd.DataFrame, profile: str) -> str:
    total = per_notebook[per_notebook.notebook == "all"].iloc[0]
    return json.dumps({"profile": profile, "counted": "training runs and the notebooks' analysis passes "
                       "(GPU work; host CPU work is not counted)",
                       "rates": {k: {**vars(v), "value": rate(k), "measured": k in MEASURED}
                                 for k, v in RATES.items()},
                       "notebooks": per_notebook[per_notebook.notebook != "all"].to_dict("records"),
                       "total": {"minutes_h200": total.minutes_h200,
                                 "training_minutes": total.training_minutes,
                                 "analysis_minutes": total.get("analysis_minutes", 0.0),
                                 "disk_gb": total.disk_left / 1e9, "host_ram_gb": total.host_bytes / 1e9,
                                 "device_gb": total.device_bytes / 1e9,
                                 "written_gb": total.bytes_written / 1e9, "steps": int(total.steps),
                                 "flops": total.flops}}, indent=1, default=float)


def caveat(per_notebook: pd.DataFrame) -> str:
    """The report's sentence on what a profile's training was counted to cost before it ran."""
    rows = per_notebook[per_notebook.notebook != "all"]
    total = per_notebook[per_notebook.notebook == "all"].iloc[0]
    parts = ", ".join(f"{r.notebook[:2]}: {r.minutes_h200:.0f}" for r in rows.itertuples())
    return (f"Counted before it ran (`python -m utils.plan --profile full --estimate`: training and the "
            f"notebooks' analysis passes, not host CPU work): {total.minutes_h200:.0f} minutes on one H200 "
            f"({parts}), "
            f"{total.bytes_written / 1e9:.0f} GB written, {total.disk_left / 1e9:.0f} GB left on disk. "
            + ("The rates behind it are assumed (estimate.RATES) until the device script measures them."
               if not MEASURED else f"Rates measured on a device: {', '.join(MEASURED)}; the rest assumed."))

