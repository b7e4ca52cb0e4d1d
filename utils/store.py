"""The trained-model store: one call gives any notebook the profile's trained model.

    model = get_or_train("cnn_small", "fashion-mnist", "quick")   # eval mode, on the profile's device
    history("cnn_small", "fashion-mnist", "quick")                # per-epoch DataFrame (validation split)
    splits = load_splits("quick")                                 # .train, .val, .test of the profile's data

A run is named by its model, optionally with a variant after `@` ("mlp_b12_wi1024@in21k", a sweep point
"vit_mini_p4@lr3e-4"); its recipe comes from utils/recipes.py unless given. `checkpoints/<profile>/<dataset>/
<run>/` holds the run (see utils/train.py and utils/checkpoints.py for its files) and `store.json`, the key it
was trained under: model, recipe, and the content fingerprints of its training, validation and test images,
so a changed image folder never gets another folder's model. A finished run with the same key is loaded; a
half-finished one resumes; one with another key, an unreadable key or none (trained by `utils.train --out`
into the folder: nothing says what it was trained with) is moved aside to `<run>.replaced-<time>/` (never
deleted) and trained anew. A final file that cannot be used (unreadable, a model card of another shape, a
history cut short, NaN weights) is set aside as `<name>.corrupt`, named, and rebuilt from last.pt where the
run still has one (a finished run removes its states: then it is trained again). Run and
dataset names are plain folder names (nothing escapes the checkpoints root). One process trains a run at a
time (a lock per run, keyed by its real path); a second waits and then loads it. A run whose loss diverges
leaves `diverged.json` (its key and the error): training is seeded, so the same key is not trained again
(FloatingPointError at once; delete the file to retry). Every request is one line of
`<checkpoints>/<profile>/requests.jsonl` (notebook, dataset, run, trained or loaded): utils.plan's tests
compare it with the plan.

Three splits: the training images of the profile (a stratified subset where the profile or recipe says so)
lose a seeded, stratified VAL_FRACTION to the validation split, on which every choice (epochs, learning
rates, ablation winners) is made; the test split is scored once per run, at the end, into the model card.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import torch.nn as nn

from . import checkpoints, data, distributed, files, models, train
from .files import checkpoints_root
from .profiles import Profile, get_profile
from .recipes import Recipe, get_recipe

VAL_FRACTION = 0.1  # of each class of the training images, held out for every choice
VAL_SEED = 0  # the same validation images for every run of a profile (whatever its training seed)


class Splits(NamedTuple):
    train: data.ImageSet
    val: data.ImageSet
    test: data.ImageSet


def model_of(run: str) -> str:
    """The registered model of a run name: "mlp_b12_wi1024@in21k" -> "mlp_b12_wi1024"."""
    return run.split("@", 1)[0]


def train_subset(profile: str | Profile, recipe: Recipe | None = None) -> int | None:
    """How many training images a run uses: the recipe's subset, capped by the profile's."""
    sizes = [n for n in (get_profile(profile).train_subset, recipe and recipe.train_subset) if n]
    return min(sizes) if sizes else None


def load_data(profile: str | Profile, name: str, split: str = "train", subset: int | None = None
              ) -> data.ImageSet:
    """data.load_dataset under a profile: from the profile's data folder (the rehearsal reads its own
    CIFAR-format files from <data>/rehearsal/, never the real ones)."""
    p = get_profile(profile)
    root = data.data_dir() / p.data_subdir if p.data_subdir else None
    return data.load_dataset(name, split, root=root, subset=subset)


def load_splits(profile: str | Profile, dataset: str | None = None, recipe: Recipe | None = None) -> Splits:
    """(train, val, test) of a dataset (default: the profile's): the training split cut to the run's subset
    (stratified), VAL_FRACTION of it held out as `val`, and the test split cut to the profile's subset."""
    p = get_profile(profile)
    name = dataset or p.dataset
    full = load_data(p, name, "train", train_subset(p, recipe))
    train_ds, val_ds = data.train_val_split(full, VAL_FRACTION, VAL_SEED)
    return Splits(train_ds, val_ds, load_data(p, name, "test", p.test_subset))


def run_dir(run: str, dataset: str, profile: str) -> Path:
    """`<checkpoints>/<profile>/<dataset>/<run>/`; each part one plain folder name (nothing escapes the
    checkpoints root)."""
    return checkpoints_root() / folder_name(profile, "profile") / folder_name(dataset, "dataset") / \
        folder_name(run, "run")


def folder_name(name: str, what: str = "run") -> str:
    """`name` when it is one plain folder name, else a ValueError saying what is allowed (a run name with
    '/..' would write outside the checkpoints root)."""
    if not isinstance(name, str) or name in ("", ".") or any(c in name for c in ("/", "\\", "..", "\0")):
        raise ValueError(f"{what} name {name!r} is not a plain folder name: any characters but '/', '\\', "
                         "'..' and NUL, e.g. 'mlp_b12_wi1024@in21k', 'fashion-mnist[0-4]'")
    return name


def source_dir(recipe: Recipe, profile: str) -> Path | None:
    """The stored run a recipe starts from (recipe.init_from = "<dataset>/<run>"), or None."""
    if recipe.init_from is None:
        return None
    dataset, sep, run = recipe.init_from.partition("/")
    if not sep:
        raise ValueError(f"init_from={recipe.init_from!r}: give the stored run as '<dataset>/<run>'")
    folder = run_dir(run, dataset, profile)
    if not checkpoints.has_final(folder):
        raise FileNotFoundError(f"init_from={recipe.init_from!r}: no finished run in {folder}; "
                                "train it first")
    return folder


def store_key(run: str, recipe: Recipe, splits: Splits, source: Path | None = None) -> dict:
    """What a stored model depends on; a run trained under another key is not reused."""
    started = {} if source is None else {"init_from": {"run": str(source.relative_to(checkpoints_root())),
                                                        "weights": _file_hash(source / "model.safetensors")}}
    head = {} if recipe.head_init is None else {"head_init": recipe.head_init if recipe.head_init == "new"
                                                 else {"weights": _file_hash(Path(recipe.head_init))}}
    return {**started, **head, "model": model_of(run), "dataset": splits.train.info.name,
            "data": {k: getattr(splits, k).data_key() for k in Splits._fields}, **recipe_key(recipe)}


def recipe_key(recipe: Recipe) -> dict:
    """The recipe's part of a store key (store_key; the plan's Run.trained_as)."""
    return {"overrides": recipe.overrides, "pretrained": recipe.pretrained, "trainable": recipe.trainable,
            "train": train.resume_config(recipe.train)}


def _file_hash(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _same(a: dict, b: dict) -> bool:
    """Keys equal, JSON-wise (tuples vs lists), training configs compared without their default fields."""
    norm = lambda k: {**json.loads(json.dumps(k, default=str)), "train": train.comparable(k.get("train"))}
    return norm(a) == norm(b)


def build(model: str, info: data.DatasetInfo, recipe: Recipe, source: Path | None = None, **kw) -> nn.Module:
    """The recipe's model for a dataset, initialised from the recipe's seed, then from `source`'s weights
    when the recipe starts from a stored run (a head of another shape stays as initialised), then the head
    as recipe.head_init says ("new": as initialised; a file: its weights)."""
    net = models.create_for(model, info, seed=recipe.train.seed, **recipe.overrides, **kw)
    head = net.get_submodule(models.head_name(net, info.num_classes)) if recipe.head_init else None
    fresh = {k: v.clone() for k, v in head.state_dict().items()} if recipe.head_init == "new" else None
    if source is not None:
        with warnings.catch_warnings():  # the dropped head is the point of fine-tuning to new classes
            warnings.filterwarnings("ignore", message="checkpoint head")
            models.load_checkpoint(net, source / "model.safetensors", info.num_classes)
    if head is not None:
        head.load_state_dict(fresh or models.read_state_dict(recipe.head_init))
    return net


def freeze_except(model: nn.Module, trainable: str | None) -> None:
    """Only parameters under the module `trainable` keep requires_grad (a frozen backbone); None: all."""
    if trainable is None:
        return
    model.get_submodule(trainable)  # a clear AttributeError for a wrong name
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(trainable + "."))


def is_stored(run: str, dataset: str, profile: str) -> bool:
    return checkpoints.has_final(run_dir(run, dataset, profile))


RUN_FILES = ("last.pt", "prev.pt", *checkpoints.FINAL_FILES)  # a folder with any of these holds a run


def read_key(path: Path) -> dict | None:
    """store.json's key; None when it is missing, unreadable (bytes, JSON) or of another shape: such a key is
    not this key."""
    try:
        key = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return key if isinstance(key, dict) and isinstance(key.get("train") or {}, dict) else None


def _set_aside_if_changed(folder: Path, key: dict) -> None:
    """Move a run that was not stored under `key` to `<run>.replaced-<time>/` (never deleted). A run without
    store.json (trained by `utils.train --out` into this folder, or copied in) is one: what it was trained
    with cannot be checked."""
    if not any((folder / name).exists() for name in RUN_FILES):
        return
    stored = read_key(folder / "store.json")
    if stored is not None and _same(stored, key):
        return
    why = ("was trained with another recipe or other data" if stored is not None
           else "has an unreadable store.json" if (folder / "store.json").exists()
           else "has no store.json, so its recipe and data cannot be checked")
    moved = folder.with_name(f"{folder.name}.replaced-{datetime.now(UTC):%Y%m%dT%H%M%S}")
    folder.rename(moved)
    print(f"{folder.name}: the stored run {why}; moved to {moved}, training anew")


def _stored(folder: Path, key: dict) -> tuple[dict, dict] | None:
    """(model card, weights) of the finished run in `folder` stored under `key`; None when there is none (a
    run under another key is moved aside first) or a final file is unreadable (then set aside, so that
    train.fit rebuilds it from last.pt, or retrains without overwriting it)."""
    _set_aside_if_changed(folder, key)
    if not checkpoints.has_final(folder):
        return None
    bad = checkpoints.unreadable_finals(folder)
    for name, why in bad.items():
        checkpoints.set_aside(folder / name, f"{why}; rebuilding it")
    if bad:
        return None
    return checkpoints.read_card(folder), checkpoints.read_weights(folder)


def _built(run: str, card: dict, weights: dict, device: str) -> nn.Module:
    net = models.create_model(model_of(run), **card["model_config"])  # the card's config rebuilds it
    net.load_state_dict(weights)
    return net.to(device).eval()


def _write_key(folder: Path, key: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    checkpoints.write_json(key, folder / "store.json")


def get_or_train(
    run: str,
    dataset: str | None = None,
    profile: str | Profile | None = None,
    *,
    recipe: Recipe | None = None,
    device: str | None = None,
    progress: bool = True,
    net: nn.Module | None = None,
    splits: Splits | None = None,
) -> nn.Module:
    """The trained model of `run` (eval mode, on `device`, default the profile's): loaded when a finished
    run with the same key is stored, else trained with `recipe` (default: recipes.get_recipe(run, profile)),
    resuming a half-finished run. `net`: the freshly built model to train (from `resolve`), so pretrained
    weights are fetched once. `splits`: train/val/test to use instead of load_splits' (e.g. k images per
    class of a transfer task); they are part of the key like any other data.

    Under torchrun (`torchrun --nproc_per_node=N -m utils.store RUN ...`) every rank calls this: rank 0 reads
    and writes the run folder (utils/distributed.py), every rank trains with DDP on its device and returns
    the same model."""
    p = get_profile(profile)
    dataset, recipe = dataset or p.dataset, recipe or get_recipe(run, p.name)
    folder = run_dir(run, dataset, p.name)  # first: a name that escapes the checkpoints root is an error
    device = distributed.setup(device or p.device)  # under torchrun: the process group; cuda:LOCAL_RANK
    splits = splits or load_splits(p, dataset, recipe)
    source = source_dir(recipe, p.name)
    key = store_key(run, recipe, splits, source)
    with distributed.main_lock(folder):
        stored = distributed.on_main(_stored, folder, key)  # rank 0 reads; a copy for all
        if stored is None and distributed.on_main(_link_twin, folder, key):  # trained before by another name
            stored = distributed.on_main(_stored, folder, key)
        if stored is not None:
            distributed.on_main(_log_request, p.name, dataset, run, trained=False)
            return _built(run, *stored, device)
        if (why := distributed.on_main(diverged_before, folder, key)) is not None:
            raise FloatingPointError(f"{run}: {why}")
        if net is None:
            net = build(model_of(run), splits.train.info, recipe, source, pretrained=recipe.pretrained)
        freeze_except(net, recipe.trainable)
        distributed.on_main(_write_key, folder, key)
        cfg = replace(recipe.train, checkpoint_dir=str(folder), progress=progress)
        test = data.make_loader(splits.test, cfg.eval_batch_size, train=False, device=device)
        backend = training_backend(p)
        loaders = train.make_loaders(splits.train, splits.val, cfg, device=device, backend=backend)
        distributed.on_main(_log_request, p.name, dataset, run, trained=True)
        try:
            train.fit(net, *loaders, cfg, test_loader=test)
        except FloatingPointError as err:
            distributed.on_main(_mark_diverged, folder, key, str(err))
            raise
    return net.eval()


def _link_twin(folder: Path, key: dict) -> str | None:
    """Link into `folder` the final files of a finished run of another name stored under the same key (the
    same model, recipe and data: e.g. 04's seed-0 ViT source is 01's ViT when their recipes agree), instead of
    training it again; the twin's name, or None. Final files are replaced atomically (a new file under the
    name), so a later retraining of either never changes the other's."""
    for other in sorted(folder.parent.iterdir()) if folder.parent.is_dir() else []:
        if other == folder or not checkpoints.has_final(other):
            continue
        stored = read_key(other / "store.json")
        if stored is None or not _same(stored, key) or checkpoints.unreadable_finals(other):
            continue
        _write_key(folder, key)  # first: files linked half-way are a run without finals, trained anew
        try:
            for name in checkpoints.FINAL_FILES:
                files.link_or_copy(other / name, folder / name)
        except OSError as err:  # the twin moved away meanwhile (set aside, deleted): train this one
            print(f"{folder.name}: could not link {other.name}'s files ({err}); training it")
            return None
        print(f"{folder.name}: the same model, recipe and data as the stored {other.name}: its files linked")
        return other.name
    return None


DIVERGED = "diverged.json"  # beside store.json: this key's run diverged (deterministic: not retried)


def _mark_diverged(folder: Path, key: dict, error: str) -> None:
    checkpoints.write_json({"key": key, "error": error, "time": datetime.now(UTC).isoformat()},
                           folder / DIVERGED)


def diverged_before(folder: Path, key: dict | None = None) -> str | None:
    """Why the run in `folder` is known to diverge under `key` (None: under its stored key), or None. Training
    is seeded, so the same key diverges again: it is not retried (delete diverged.json to try anyway)."""
    try:
        marked = json.loads((folder / DIVERGED).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if key is not None and not _same(marked.get("key") or {}, key):
        return None
    return (f"diverged before under this recipe and data ({marked.get('error', '?')}); delete "
            f"{folder / DIVERGED} to train it again")


def settled(run: str, dataset: str, profile: str) -> str | None:
    """"stored" (a finished run), "diverged" (known to diverge under its stored key) or None (to train)."""
    folder = run_dir(run, dataset, profile)
    return "stored" if checkpoints.has_final(folder) else "diverged" if diverged_before(folder) else None


REQUESTS = "requests.jsonl"  # <checkpoints>/<profile>/: a line per get_or_train: who asked, trained or loaded
context: dict = {}  # what results.start sets ({"notebook": ...}): written into each request line


def _log_request(profile: str, dataset: str, run: str, trained: bool) -> None:
    """Append one line to the profile's request log: the plan's tests compare what notebooks asked for
    with what the plan lists, and count what they trained."""
    line = {**context, "dataset": dataset, "run": run, "trained": trained,
            "time": datetime.now(UTC).isoformat()}
    path = checkpoints_root() / profile / REQUESTS
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:  # one short write per line: concurrent workers append whole lines
        f.write(json.dumps(line) + "\n")


def requests(profile: str) -> pd.DataFrame:
    """The profile's request log as a table (notebook, dataset, run, trained, time); empty when none."""
    path = checkpoints_root() / profile / REQUESTS
    if not path.exists():
        return pd.DataFrame(columns=["notebook", "dataset", "run", "trained", "time"])
    return pd.DataFrame([json.loads(x) for x in path.read_text().splitlines() if x.strip()])


def training_backend(p: Profile) -> str:
    """The profile's loader backend for training; ffcv falls back to the resident loader, saying so, when
    it is not installed (it builds against system libraries: see data/README.md)."""
    if p.backend == "ffcv":
        try:
            import utils.data.ffcv  # noqa: F401
        except ImportError as err:
            print(f"profile {p.name}: the ffcv backend is unavailable, training on the resident loader "
                  f"instead ({str(err).splitlines()[0][:160]})")
            return "resident"
    return p.backend


def resolve(run: str, dataset: str | None = None, profile: str | Profile | None = None
            ) -> tuple[str, nn.Module | None]:
    """(`run`, None) when `run` is stored or starts from nothing to download; (`run`, its freshly built model)
    when its pretrained weights were fetched (pass it to get_or_train as `net=`: fetched once); its
    recipe's (fallback, None) when those weights are unreachable (offline), saying why."""
    p = get_profile(profile)
    dataset, recipe = dataset or p.dataset, get_recipe(run, p.name)
    if not recipe.pretrained or is_stored(run, dataset, p.name):
        return run, None
    try:
        info = load_data(p, dataset, "test").info
        return run, build(model_of(run), info, recipe, pretrained=recipe.pretrained)
    except models.WeightsUnreachable as err:
        if not recipe.fallback:
            raise
        print(f"{run}: pretrained weights unavailable, using {recipe.fallback} instead.\n  {err}")
        return recipe.fallback, None


def train_runs(runs: list[str], dataset: str | None = None, profile: str | Profile | None = None,
               device: str | None = None, fallbacks: bool = True) -> list[str]:
    """Train (or load) each named run with its recipe, saying what the recipe is (its note); the names that
    were trained, in order. A run whose pretrained weights are unreachable (offline) trains its recipe's
    fallback in its place, or with fallbacks=False is skipped (a pretrained zoo: a fallback trained from
    scratch is not a pretrained run), as is one without a fallback."""
    p, done = get_profile(profile), []
    for run in runs:
        try:
            name, net = resolve(run, dataset, p)
        except models.WeightsUnreachable as err:
            if fallbacks:
                raise
            print(f"{run}: skipped.\n  {err}")
            continue
        if name != run and not fallbacks:
            print(f"{run}: skipped (weights unreachable; {name} is its from-scratch counterpart)")
            continue
        print(f"{name}: {get_recipe(name, p.name).note}")
        get_or_train(name, dataset, p, device=device, net=net)
        done.append(name)
    return done


def history(run: str, dataset: str | None = None, profile: str | Profile | None = None) -> pd.DataFrame:
    """Per-epoch history of a finished stored run (val_* columns: the validation split)."""
    p = get_profile(profile)
    return pd.DataFrame(checkpoints.read_history(run_dir(run, dataset or p.dataset, p.name)))


def model_card(run: str, dataset: str | None = None, profile: str | Profile | None = None) -> dict:
    p = get_profile(profile)
    return checkpoints.read_card(run_dir(run, dataset or p.dataset, p.name))


SUMMARY_FORMAT = {"params": "{:,.0f}", "val_top1": "{:.4f}", "test_top1": "{:.4f}", "test_top5": "{:.4f}",
                  "train_min": "{:.2f}", "images_per_s": "{:,.0f}"}  # summarize's table, shown: .style.format


def summarize(runs: list[str], dataset: str | None = None, profile: str | Profile | None = None
              ) -> pd.DataFrame:
    """One row per finished stored run: family, params, epochs, the last epoch's validation top-1 (what
    choices are made on), test top-1/top-5 (scored once), training minutes and images/s (the mean over
    epochs, evaluation excluded)."""
    rows = []
    for run in runs:
        card, hist = model_card(run, dataset, profile), history(run, dataset, profile)
        m = card["metrics"]
        rows.append({"run": run, "model": card["model"], "family": models.family(card["model"]),
                     "params": card["params"], "epochs": card["epochs"], "val_top1": m.get("val_top1"),
                     "test_top1": m.get("test_top1"), "test_top5": m.get("test_top5"),
                     "train_min": card["train_seconds"] / 60, "images_per_s": hist["images_per_s"].mean(),
                     "device": card["environment"]["device"]})
    return pd.DataFrame(rows)


def histories(runs: list[str], dataset: str | None = None, profile: str | Profile | None = None
              ) -> pd.DataFrame:
    """The per-epoch histories of `runs` in one tidy table with a `run` column."""
    return pd.concat([history(r, dataset, profile).assign(run=r) for r in runs], ignore_index=True)


def sweep(points: dict[str, Recipe], dataset: str | None = None, profile: str | Profile | None = None,
          device: str | None = None) -> pd.DataFrame:
    """Train (or load) every run of `points` (run name -> recipe) and summarize them, in that order."""
    for name, recipe in points.items():
        get_or_train(name, dataset, profile, recipe=recipe, device=device)
    return summarize(list(points), dataset, profile)


def main(argv: list[str] | None = None) -> None:
    """`python -m utils.store RUN [RUN ...] [--dataset D] [--profile P]`: train (or load) stored runs with
    their recipes, so that a notebook then loads them; under `torchrun --nproc_per_node=N` with DDP."""
    import argparse

    parser = argparse.ArgumentParser(description="Train (or load) runs into the store with their recipes.")
    parser.add_argument("runs", nargs="+", help="run names, e.g. mlp_b12_wi1024@in21k resnet18_cifar")
    parser.add_argument("--dataset", help="default: the profile's")
    parser.add_argument("--profile", help="smoke, quick, full or rehearsal (default: full on CUDA, else "
                        "quick)")
    args = parser.parse_args(argv)
    try:
        for run in args.runs:
            get_or_train(run, args.dataset, args.profile)
        if distributed.is_main():
            print(summarize(args.runs, args.dataset, args.profile).to_string(index=False))
    except (ValueError, OSError, KeyError, FloatingPointError, checkpoints.RunBusy) as err:
        raise SystemExit(f"error: {err}") from None
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()
