"""The run plan: every training run the notebooks will ask the store for, listed before anything runs, with
what it costs; and `--train`, which trains the plan ahead on every GPU of a box or on a SLURM cluster.

    python -m utils.plan --profile full                        # one row per run, a total per notebook
    python -m utils.plan --profile full --only 04,06 --json    # the same rows as JSON
    python -m utils.plan --profile quick --only 06 -p epochs=5 # -p: any knob, as for utils.run_notebooks
    python -m utils.plan --profile full --train                # what is not stored: one worker per GPU
    python -m utils.plan --profile full --train --slurm gpu    # ... as SLURM jobs on partition `gpu`

Each notebook's runs come from `runs(cfg, ctx)` of its experiment module (PLANNERS), built from the same
functions the notebook calls, so the two cannot disagree: tests/test_plan.py executes the notebooks and
compares what they asked the store for (its request log) with this list. A run that waits for a choice made on
the validation split (01's batch sweep at the best lr, 06's studies at the plain MLP's best lr, 04's final
transfer runs at the chosen lr) is listed as waiting, with a provisional recipe for its cost, until every run
the choice is made from is stored; a run that starts from another (04's fine-tunes from the sources) is ready
once that one is stored. `--train` therefore trains in waves: what is ready, then what that made ready.

Costs are counted, not measured: training images from the published split sizes (SPLIT_SIZES; nothing is
read), forward FLOPs per image from utils.experiments.cost.count_flops on a model built on the meta device,
and training FLOPs = TRAIN_FLOPS_PER_FORWARD x forward x images x epochs.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from . import cli, config, store, train
from .data.cache import info_of
from .data.registry import check_dataset_name
from .files import checkpoints_root
from .profiles import PROFILES, Profile, get_profile
from .recipes import ALIGNED, Recipe, aligned_lr, aligned_runs, aligned_trials, get_recipe, seed_twins

# Training and test images of each registered dataset's published splits (sklearn-digits: this repository's
# seeded 70/30 split of its 1,797 images), so that the plan counts without reading any data.
SPLIT_SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000), "stl10": (5_000, 8_000),
               "fashion-mnist": (60_000, 10_000), "mnist": (60_000, 10_000), "svhn": (73_257, 26_032),
               "tiny-imagenet": (100_000, 10_000), "sklearn-digits": (1_258, 539)}
TRAIN_FLOPS_PER_FORWARD = 3  # a training step: forward + backward (2x: input and weight gradients)


@dataclass(frozen=True)
class Run:
    """One training run a notebook asks the store for."""

    notebook: str  # the notebook's stem
    name: str  # the store's run name; a waiting run's name may end in "?" (its chosen value is not known)
    dataset: str  # what it trains on (a registered name, optionally with a class selection)
    recipe: Recipe | None = None  # None: the registry's (recipes.get_recipe); provisional while waiting
    waits_for: str = ""  # the choice it waits for ("": ready once what it starts from is stored)
    task: Any = None  # its data when not the store's own splits: an object with .train(run, profile, device)
    # and .n_train(profile) (04's transfer tasks)

    @property
    def model(self) -> str:
        return store.model_of(self.name)

    def recipe_under(self, profile: str) -> Recipe:
        return self.recipe or get_recipe(self.name, profile)

    def starts_from(self, profile: str) -> str | None:
        """"<dataset>/<run>" it is initialised from, or None."""
        return self.recipe_under(profile).init_from

    def trained_as(self, profile: str) -> tuple:
        """What training it means: its dataset, model and the recipe's fields the store's key holds (its own
        data for a task's run). Two runs of one training are twins: the store trains the first and links its
        files for the other (store._link_twin), so the plan trains and counts it once."""
        if self.task is not None or "?" in self.name:
            return self.dataset, self.name
        r = self.recipe_under(profile)
        key = {**store.recipe_key(r), "subset": r.train_subset, "init_from": r.init_from,
               "head_init": r.head_init}
        key["train"] = train.comparable(key["train"])  # as store._same compares them
        return self.dataset, self.model, json.dumps(key, sort_keys=True, default=str)


@dataclass
class Context:
    """What a notebook's planner knows: its resolved parameters, and the store (for choices)."""

    notebook: str
    profile: Profile
    dataset: str
    models: list[str]
    seed: int = 0

    def run(self, name: str, recipe: Recipe | None = None, dataset: str | None = None, *, waits_for: str = "",
            task: Any = None) -> Run:
        return Run(self.notebook, name, dataset or self.dataset, recipe, waits_for, task)

    def settled(self, run: Run) -> str | None:
        return store.settled(run.name, run.dataset, self.profile.name)

    def chosen(self, runs: Sequence[Run], choose: Callable[[pd.DataFrame], Any]) -> Any:
        """choose(table) once every run is stored or known to diverge, else None. The table: one row per run
        in order, `run` and `val_top1` (NaN for a run that diverged)."""
        if not all(self.settled(r) for r in runs):
            return None
        rows = [{"run": r.name, "val_top1": store.model_card(r.name, r.dataset, self.profile)["metrics"]
                 ["val_top1"] if self.settled(r) == "stored" else math.nan} for r in runs]
        return choose(pd.DataFrame(rows))


    def aligned(self) -> list[Run]:
        """The recipe-aligned control (recipes.ALIGNED): its lr trials, then its other seeds at the lr chosen
        on the validation split (waiting for it, at the grid's first lr for their cost, until it is known)."""
        P, control = self.profile.name, ALIGNED[self.profile.name]
        trials = [self.run(n, r) for n, r in aligned_trials(self.models, P).items()]
        lr = self.chosen(trials, lambda t: aligned_lr(t, P))
        later = aligned_runs(self.models, P, control.lrs[0] if lr is None else lr, control.seeds[1:])
        if lr is not None:
            return trials + [self.run(n, r) for n, r in later.items()]
        waits = "the aligned control's lr (validation)"
        return trials + [self.run(n.replace(f"-lr{control.lrs[0]:g}-", "-lr?-"), r, waits_for=waits)
                         for n, r in later.items()]


def profile_of(profile: str | Profile | None) -> Profile:
    """A profile to plan under: any named one, `full` included where there is no GPU (planning needs none)."""
    return PROFILES[profile] if isinstance(profile, str) and profile in PROFILES else get_profile(profile)


# notebook -> the module whose `runs(cfg, ctx)` lists its runs (those without: the trio, or nothing: 07)
PLANNERS = {**config.CONFIGS}
TRIO_ONLY = ("02_adversarial_robustness", "03_texture_vs_shape_bias", "05_inference_time",
             "08_activation_maximization", "09_dictionary_learning")


def trio_runs(cfg: Any, ctx: Context) -> list[Run]:
    """The notebooks that train nothing of their own: the models they compare, with their recipes, their
    seed twins where the config has a `ceiling_seed` and the aligned control where it has `aligned` (01
    trains both first)."""
    twins = seed_twins(ctx.models, ctx.profile.name, getattr(cfg, "ceiling_seed", None))
    aligned = ctx.aligned() if getattr(cfg, "aligned", False) else []
    return [ctx.run(m) for m in ctx.models] + [ctx.run(*twin) for twin in twins.values()] + aligned


def notebook_runs(notebook: str, profile: str | Profile, dataset: str | None = None,
                  models: list[str] | None = None, seed: int = 0, overrides: dict | None = None) -> list[Run]:
    """The runs one notebook asks for, with its parameters (as its parameters cell would have them)."""
    p = profile_of(profile)
    ctx = Context(notebook, p, check_dataset_name(dataset or p.dataset), list(models or p.trio), seed)
    if notebook not in PLANNERS:
        return []
    cfg = config.for_notebook(notebook, p.name, **(overrides or {}))
    planner = trio_runs if notebook in TRIO_ONLY else importlib.import_module(PLANNERS[notebook]).runs
    return planner(cfg, ctx)


def notebooks(only: Sequence[str] | None = None) -> list[str]:
    """The numbered notebooks' stems (those `only` names, by number or stem), in order."""
    from .run_notebooks import find_notebooks

    return [path.stem for path in find_notebooks(only=list(only) if only is not None else None)]


def plan(profile: str | Profile, only: Sequence[str] | None = None, parameters: dict | None = None
         ) -> list[Run]:
    """Every run of the selected notebooks, in notebook order (a run several notebooks share appears once
    per notebook: see `table` for who trains it first). `parameters`: as for utils.run_notebooks (dataset,
    models, seed, and any knob, routed to the notebooks that have it)."""
    from .run_notebooks import SHARED, check_knobs_known, find_notebooks, notebook_parameters

    parameters = dict(parameters or {})
    paths = find_notebooks(only=list(only) if only is not None else None)
    check_knobs_known(paths, parameters)
    runs = []
    for path in paths:
        given = notebook_parameters(path.stem, parameters)
        shared = {k: given[k] for k in SHARED if k in given}
        runs += notebook_runs(path.stem, profile, overrides=given.get("overrides"), **shared)
    return runs


# ---------------------------------------------------------------- counting


def split_size(profile: Profile, dataset: str, split: str = "train", capped: bool = True) -> int:
    """Images of a split under a profile, counted: the published size (a class selection: its share of the
    classes), capped by the profile's subset (`capped`: as store.load_splits does; 04's targets are not)."""
    base = dataset.split("[", 1)[0]
    if base not in SPLIT_SIZES:
        return len(store.load_data(profile, dataset, split))  # an image folder: count it
    n = SPLIT_SIZES[base][split == "test"] * info_of(dataset).num_classes // info_of(base).num_classes
    cap = (profile.train_subset if split == "train" else profile.test_subset) if capped else None
    return min(n, cap) if cap else n


def train_images(run: Run, profile: Profile) -> int:
    """Training images per epoch: the split (capped by the run's subset) less the validation share."""
    if run.task is not None:
        return run.task.n_train(profile)
    n = split_size(profile, run.dataset)
    subset = store.train_subset(profile, run.recipe_under(profile.name))
    n = min(n, subset) if subset else n
    return n - round(store.VAL_FRACTION * n)


@dataclass(frozen=True)
class Built:
    """What the plan and the estimate read off a model built and run once on the meta device, per image."""

    flops: int  # forward FLOPs (utils.experiments.cost.count_flops)
    params: int
    param_numels: tuple[tuple[str, int], ...]  # (name, elements) of every parameter
    buffers: int  # buffer elements
    tensors: int  # state-dict entries
    outputs: int  # elements every leaf module outputs
    largest_output: int  # ... the largest of them


@functools.cache
def built(model: str, overrides: str, images: str, classes: str) -> Built:
    """The model for `images`' size and channels and `classes`' class count, with create_model overrides (a
    JSON string: cached per value), built on the meta device and run once: nothing allocated, nothing
    computed (ViT-S/16 at 224 in a blink)."""
    import torch

    from . import models
    from .experiments.cost import count_flops

    info = replace(info_of(images), num_classes=info_of(classes).num_classes)
    outputs: list[int] = []
    with torch.device("meta"):
        net = models.create_for(model, info, **json.loads(overrides)).requires_grad_(False)
        for m in net.modules():
            if not any(m.children()):
                m.register_forward_hook(lambda _m, _i, o: outputs.append(o.numel() if torch.is_tensor(o)
                                                                         else 0))
        flops = count_flops(net, (info.channels, info.image_size, info.image_size))  # eval: one forward
    numels = tuple((n, p.numel()) for n, p in net.named_parameters())
    return Built(flops, sum(n for _, n in numels), numels, sum(b.numel() for b in net.buffers()),
                 len(net.state_dict()), sum(outputs), max(outputs))


def _forward_flops(model: str, overrides: str, dataset: str) -> tuple[int, int]:
    """(forward FLOPs per image, parameters) of a model built on the meta device for a dataset's images."""
    b = built(model, overrides, dataset, dataset)
    return b.flops, b.params


def forward_flops(run: Run, profile: Profile) -> tuple[int, int]:
    recipe = run.recipe_under(profile.name)
    dataset = getattr(run.task, "image_dataset", run.dataset)  # 04: the source's images, resized targets
    return _forward_flops(run.model, json.dumps(recipe.overrides, sort_keys=True), dataset)


def table(runs: Sequence[Run], profile: str | Profile) -> pd.DataFrame:
    """One row per run: notebook, run, model, dataset, epochs, train_images, images_x_epochs,
    gflops_per_image (forward), train_pflop, params, status (stored / diverged / waiting / to train),
    waits_for, starts_from, `first`: the notebook that trains it (a later one loads it), and `twin_of`: the
    run of the same training asked for before under another name ("": none; Run.trained_as)."""
    p, rows, first = profile_of(profile), [], {}
    for r in runs:
        recipe = r.recipe_under(p.name)
        n, (flops, params) = train_images(r, p), forward_flops(r, p)
        first_notebook, first_name = first.setdefault(r.trained_as(p.name), (r.notebook, r.name))
        status = store.settled(r.name, r.dataset, p.name) if "?" not in r.name else None
        rows.append({"notebook": r.notebook, "run": r.name, "model": r.model, "dataset": r.dataset,
                     "epochs": recipe.train.epochs, "train_images": n,
                     "images_x_epochs": n * recipe.train.epochs,
                     "gflops_per_image": flops / 1e9, "params": params,
                     "train_pflop": TRAIN_FLOPS_PER_FORWARD * flops * n * recipe.train.epochs / 1e15,
                     "status": status or ("waiting" if r.waits_for else "to train"), "waits_for": r.waits_for,
                     "starts_from": recipe.init_from or "", "first": first_notebook,
                     "twin_of": first_name if first_name != r.name else ""})
    return pd.DataFrame(rows)


def totals(rows: pd.DataFrame) -> pd.DataFrame:
    """Per notebook, over the runs it trains first (a run it loads, or a twin of one trained before, counts
    where it is trained): runs, stored, images_x_epochs, train_pflop; and a last row `all`."""
    own = rows[rows.twin_of == ""].drop_duplicates(["dataset", "run"])  # the first ask: where it is trained
    out = own.groupby("notebook", sort=False).agg(runs=("run", "size"),
                                                  stored=("status", lambda s: int((s == "stored").sum())),
                                                  waiting=("status", lambda s: int((s == "waiting").sum())),
                                                  images_x_epochs=("images_x_epochs", "sum"),
                                                  train_pflop=("train_pflop", "sum"))
    out.loc["all"] = out.sum()
    return out.reset_index()


# ---------------------------------------------------------------- training ahead


def train_run(run: Run, profile: str | Profile, device: str | None = None) -> str:
    """Train (or load) one planned run through the store: "stored", or "diverged"."""
    p = get_profile(profile)
    try:
        if run.task is not None:
            run.task.train(run, p, device)
        elif run.recipe is None:  # the registry's recipe: pretrained weights fetched here (or the fallback)
            name, net = store.resolve(run.name, run.dataset, p)
            store.get_or_train(name, run.dataset, p, device=device, net=net)  # a line per epoch in the log
        else:
            store.get_or_train(run.name, run.dataset, p, recipe=run.recipe, device=device)
    except FloatingPointError as err:
        print(f"{run.name}: diverged ({str(err).splitlines()[0]})", flush=True)
        return "diverged"
    return "stored"


def train_runs(profile: str, runs: list[Run], worker: int, threads: int | None = None) -> list[dict]:
    """A worker's share, one run after another (a submitit job): one row per run with its outcome."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    store.context.update(notebook="plan", worker=worker)
    rows = []
    for r in runs:
        began = time.time()
        print(f"[worker {worker}] {r.dataset}/{r.name} ...", flush=True)
        outcome = train_run(r, profile)
        rows.append({"run": r.name, "dataset": r.dataset, "outcome": outcome, "seconds": time.time() - began,
                     "worker": worker})
        print(f"[worker {worker}] {r.dataset}/{r.name}: {outcome} ({time.time() - began:.0f} s)", flush=True)
    return rows


def ready(runs: Sequence[Run], profile: Profile) -> list[Run]:
    """The runs to train now: not stored or known to diverge, not waiting for a choice, whatever they start
    from stored; one per (dataset, run)."""
    out, seen, p = [], set(), profile.name
    for r in runs:
        key = (r.dataset, r.name)
        if key in seen or r.waits_for or store.settled(r.name, r.dataset, p):
            continue
        if (source := r.starts_from(p)) is not None:
            dataset, _, name = source.partition("/")
            if store.settled(name, dataset, p) != "stored":
                continue
        seen.add(key)
        out.append(r)
    return out


def shares(runs: Sequence[Run], workers: int, profile: Profile) -> list[list[Run]]:
    """The runs dealt to `workers` workers, longest first onto the least loaded (by training FLOPs, at least
    one image-epoch's worth so that tiny runs spread too); empty shares dropped. Twins (Run.trained_as) go to
    one worker, one after the other: the first trains, the others link its files."""
    cost = lambda r: max(1.0, forward_flops(r, profile)[0] * train_images(r, profile)
                         * r.recipe_under(profile.name).train.epochs)
    twins: dict[tuple, list[Run]] = {}
    for r in runs:
        twins.setdefault(r.trained_as(profile.name), []).append(r)
    loads, dealt = [0.0] * workers, [[] for _ in range(workers)]
    for group in sorted(twins.values(), key=lambda g: cost(g[0]), reverse=True):
        i = loads.index(min(loads))
        dealt[i] += group
        loads[i] += cost(group[0])
    return [d for d in dealt if d]


def default_workers() -> int:
    """One per GPU of the box (CUDA_VISIBLE_DEVICES respected), else 1."""
    import torch

    return torch.cuda.device_count() or 1


SLURM_CPUS = 8  # CPU cores asked per GPU job (torch threads, the loaders' workers); --slurm-cpus changes it


def executor(folder: Path, slurm: str | None, workers: int, gpu: bool, timeout_min: int,
             cpus: int | None = None):
    """A submitit executor: SLURM jobs on partition `slurm`, else local processes; with `gpu`, one GPU each
    (a CPU profile's SLURM jobs ask for none); `cpus`: cores per SLURM job (None: the cluster's default)."""
    import submitit

    ex = submitit.AutoExecutor(folder=folder, cluster="slurm" if slurm else "local")
    ex.update_parameters(timeout_min=timeout_min, nodes=1, tasks_per_node=1, name="mlpzoom-plan",
                         **({"gpus_per_node": 1} if gpu else {}))  # 0 would be "--gpus-per-node=0" to SLURM
    if slurm:
        ex.update_parameters(slurm_partition=slurm, slurm_array_parallelism=workers)
        if cpus:
            ex.update_parameters(cpus_per_task=cpus)
    return ex


def cpu_budget() -> int:
    """The CPU threads this process may use: its OMP_NUM_THREADS where set (a test worker's share, a
    scheduler's allocation), else every core. Local CPU workers split it: two GEMM threads per process on two
    cores shared with another worker ran 7x slower (CI at 1651cc7)."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    return int(given) if given.isdigit() and int(given) > 0 else os.cpu_count() or 1


def train_ahead(profile: str | Profile, only: Sequence[str] | None = None, parameters: dict | None = None, *,
                workers: int | None = None, slurm: str | None = None, pattern: str | None = None,
                timeout_min: int = 24 * 60, log_dir: Path | None = None, slurm_cpus: int | None = None
                ) -> pd.DataFrame:
    """Train every planned run that is not stored, in waves (module docstring), each wave's runs dealt to
    `workers` submitit jobs (local processes, one GPU each where there are GPUs; or SLURM jobs); workers=0:
    one run after another in this process (no job, no import per wave: a debugger sees every run). A run
    that fails or diverges is not retried in this call. `pattern`: only runs whose name matches (fnmatch)
    and what they start from. SLURM jobs of a CUDA profile ask for one GPU and `slurm_cpus` cores (default
    SLURM_CPUS), a CPU profile's for no GPU and the cluster's default cores unless `slurm_cpus` is given;
    `timeout_min`: each job's time limit. Returns one row per run trained, with its outcome."""
    # where it trains, a CUDA profile needs a GPU; a SLURM login node only submits
    p = profile_of(profile) if slurm else get_profile(getattr(profile, "name", profile))
    gpus = 0 if slurm else default_workers() if p.device.startswith("cuda") else 0
    here = workers == 0 and not slurm
    workers = workers or gpus or 1
    threads = None if gpus or slurm else max(1, cpu_budget() // workers)
    log_dir = log_dir or checkpoints_root() / p.name / "plan-logs"
    done: list[dict] = []
    tried: set[tuple[str, str]] = set()
    for wave in range(1, 100):
        todo = [r for r in ready(_matching(plan(p, only, parameters), pattern, p), p)
                if (r.dataset, r.name) not in tried]
        if not todo:
            break
        if here:
            print(f"wave {wave}: {len(todo)} runs in this process", flush=True)
            before = dict(store.context)
            try:
                done += train_runs(p.name, todo, 0)
            finally:  # the caller's own requests keep its context
                store.context.clear()
                store.context.update(before)
            tried |= {(r.dataset, r.name) for r in todo}
            continue
        dealt = shares(todo, workers, p)
        print(f"wave {wave}: {len(todo)} runs on {len(dealt)} worker(s)", flush=True)
        cuda_jobs = bool(slurm) and p.device.startswith("cuda")
        ex = executor(log_dir, slurm, workers, bool(gpus) or cuda_jobs, timeout_min,
                      slurm_cpus or (SLURM_CPUS if cuda_jobs else None))
        jobs = []
        for i, share in enumerate(dealt):
            if gpus:  # the local executor would give every job the first GPU: one each, in turn
                ex.update_parameters(local_visible_gpus=[i % gpus])
            jobs.append(ex.submit(train_runs, p.name, share, i, threads))
        for job, share in zip(jobs, dealt, strict=True):
            try:
                done += job.result()
            except Exception as err:  # a failed job (a bug, out of memory): reported, its runs not retried
                first = str(err).strip().splitlines()
                print(f"worker job {job.job_id} failed: {first[-1] if first else err}; log: "
                      f"{job.paths.stderr}", flush=True)
                done += [{"run": r.name, "dataset": r.dataset, "outcome": "failed", "worker": None}
                         for r in share if not store.settled(r.name, r.dataset, p.name)]
            tried |= {(r.dataset, r.name) for r in share}
    return pd.DataFrame(done, columns=["run", "dataset", "outcome", "seconds", "worker"])


def _matching(runs: list[Run], pattern: str | None, p: Profile) -> list[Run]:
    """The runs whose name matches `pattern`, and the runs they start from (transitively)."""
    if pattern is None:
        return runs
    keep = {(r.dataset, r.name) for r in runs if fnmatch.fnmatchcase(r.name, pattern)}
    while True:
        sources = {tuple(r.starts_from(p.name).split("/", 1)) for r in runs
                   if (r.dataset, r.name) in keep and r.starts_from(p.name)}
        if sources <= keep:
            return [r for r in runs if (r.dataset, r.name) in keep]
        keep |= sources


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = cli.notebook_parser(__doc__, "plan", list(PROFILES))
    parser.add_argument("--json", action="store_true", help="print the rows and totals as JSON")
    parser.add_argument("--estimate", action="store_true", help="what training costs on one H200, counted "
                        "(utils/estimate.py)")
    parser.add_argument("--measured", metavar="RATES_CSV", help="with --estimate: count with the rates "
                        "benchmarks.full_path measured (its rates.csv) instead of the assumed ones")
    parser.add_argument("--train", action="store_true", help="train every run that is not stored")
    parser.add_argument("--workers", type=cli.positive_int, help="parallel workers (default: one per GPU, "
                        "else 1; with --slurm: jobs at once)")
    parser.add_argument("--slurm", metavar="PARTITION", help="train as SLURM jobs on this partition")
    parser.add_argument("--slurm-cpus", type=cli.positive_int, metavar="N", help=f"cores per SLURM job "
                        f"(default: {SLURM_CPUS} for a GPU profile, else the cluster's default)")
    parser.add_argument("--hours", type=cli.positive_int, default=24, help="time limit per worker job "
                        "(default 24; a job killed at it resumes its run from last.pt on the next call)")
    parser.add_argument("--run", metavar="PATTERN", help="only runs whose name matches (fnmatch), and what "
                        "they start from")
    args = parser.parse_args(argv)
    only = [o.strip() for o in args.only.split(",") if o.strip()] if args.only else None
    parameters = dict(args.parameter) | ({"dataset": args.dataset} if args.dataset else {})
    try:
        profile = profile_of(args.profile)
        if args.train:
            done = train_ahead(profile, only, parameters, workers=args.workers, slurm=args.slurm,
                               pattern=args.run, timeout_min=60 * args.hours, slurm_cpus=args.slurm_cpus)
            print(done.to_string(index=False) if len(done) else "nothing to train: every run is stored")
            return 1 if (done.outcome == "failed").any() else 0
        runs = _matching(plan(profile, only, parameters), args.run, profile)
        if args.estimate:
            from . import estimate

            if args.measured:
                estimate.use_measured(args.measured)
            per_run, per_notebook = estimate.estimate(runs, profile, analyses=args.run is None)
            if args.json:
                print(estimate.as_json(per_notebook, profile.name))
                return 0
            t = per_notebook
            shown = t.assign(pflop=t.flops / 1e15, analysis_pflop=t.get("analysis_flops", 0.0) / 1e15,
                             written_gb=t.bytes_written / 1e9, disk_gb=t.disk_left / 1e9,
                             host_ram_gb=t.host_bytes / 1e9, device_gb=t.device_bytes / 1e9)
            with pd.option_context("display.width", 250, "display.max_rows", None):
                hidden = ["flops", "bytes_written", "disk_left", "analysis_flops", "host_bytes",
                          "device_bytes"]
                print(shown.drop(columns=hidden, errors="ignore")
                      .to_string(index=False, float_format=lambda v: f"{v:.4g}"))
            from .train import CHECKPOINT_EVERY_ENV, TrainConfig, checkpoint_every

            rates = "; ".join(f"{k} = {estimate.rate(k):g} {v.unit}{' (measured)' * (k in estimate.MEASURED)}"
                              for k, v in estimate.RATES.items())
            print(f"counted: training runs and (without --run) the notebooks' analysis passes, not host CPU "
                  f"work (utils/estimate.py); a last.pt every {checkpoint_every(TrainConfig()):g} s of "
                  f"training (${CHECKPOINT_EVERY_ENV}), none kept once a run is finished; rates: {rates}")
            return 0
        rows = table(runs, profile)
    except (KeyError, ValueError, TypeError, FileNotFoundError, RuntimeError) as err:
        parser.error(str(err).strip("'\""))
    sums = totals(rows)
    if args.json:
        print(json.dumps({"profile": profile.name, "runs": rows.to_dict("records"),
                          "notebooks": sums.to_dict("records")}, indent=1, default=str))
        return 0
    show = rows[["notebook", "run", "dataset", "epochs", "train_images", "images_x_epochs",
                 "gflops_per_image", "train_pflop", "status", "first"]]
    with pd.option_context("display.width", 200, "display.max_rows", None, "display.max_colwidth", 48):
        print(show.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        print(f"\nper notebook (runs counted where they are trained first; profile {profile.name}):")
        print(sums.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
