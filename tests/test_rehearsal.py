"""The rehearsal: the `full` profile's code path on a CPU at toy counts, so that `full` never fails first on a
user's GPU. Every numbered notebook executes under it on CIFAR-format files of synthetic pixels, with the
pretrained paths fed weights files written here in the formats the hub and the authors serve (random
values: no hub is reachable). The last tests show what it catches that smoke does not."""

import dataclasses
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
import timm
import torch
from once import once
from safetensors.torch import save_file

from utils import config, data, models, profiles, recipes, run_notebooks, store, train
from utils.data import fake
from utils.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = [p.name for p in run_notebooks.find_notebooks(ROOT)]
REHEARSAL = profiles.PROFILES["rehearsal"]
TRIO = REHEARSAL.trio


def per_profile_knobs(notebook: str) -> dict[str, dict]:
    """{knob: {profile: value}} of the notebook's typed config (utils.config; 07 has none)."""
    stem = Path(notebook).stem
    if stem not in config.CONFIGS:
        return {}
    values = {p: dataclasses.asdict(config.for_notebook(stem, p)) for p in profiles.PROFILES}
    return {k: {p: v[k] for p, v in values.items()} for k in values["full"]}


def test_the_rehearsal_profile_is_full_at_toy_counts():
    full = profiles.PROFILES["full"]
    assert REHEARSAL.code_path == "full" and REHEARSAL.device == "cpu" and REHEARSAL.cpu_autocast
    same = ("dataset", "models", "backend")
    assert [getattr(REHEARSAL, k) for k in same] == [getattr(full, k) for k in same]
    for (profile, run), r in recipes.RECIPES.items():
        if profile != "full":
            continue
        ours = recipes.get_recipe(run, "rehearsal")
        assert (ours.train.epochs, ours.train.batch_size) == (1, 8)
        changed = {f.name for f in dataclasses.fields(TrainConfig)
                   if getattr(ours.train, f.name) != getattr(r.train, f.name)}
        assert changed <= {"epochs", "warmup_epochs", "batch_size", "eval_batch_size"}, (run, changed)
        assert (ours.pretrained, ours.trainable, ours.fallback, ours.overrides) == (
            r.pretrained, r.trainable, r.fallback, r.overrides)


# The knobs whose rehearsal value is not full's, and why: a CPU cannot take full's branch there anyway.
NOT_FULLS = {("05_inference_time", "compile_backend"): "inductor builds C++ on a CPU, triton on full's GPU"}


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_every_notebook_takes_fulls_branches_at_smaller_counts(notebook):
    """Each per-profile knob has a rehearsal value: full's names (models, datasets, modes), at most full's
    counts. So the rehearsal runs the branches full runs, only smaller."""
    knobs = per_profile_knobs(notebook)
    for knob, by_profile in knobs.items():
        assert "rehearsal" in by_profile, f"{notebook}: {knob} has no rehearsal value"
        full, ours = by_profile["full"], by_profile["rehearsal"]
        if (Path(notebook).stem, knob) in NOT_FULLS:
            assert ours != full, f"{notebook}: {knob} is full's again: drop it from NOT_FULLS"
        elif isinstance(full, str):
            assert ours == full, (notebook, knob)
        elif isinstance(full, list) and full and all(isinstance(v, str) for v in full):
            assert ours and set(ours) <= set(full), (notebook, knob, ours)
        elif isinstance(full, int | float) and not isinstance(full, bool) and ours is not None:
            assert ours <= full, (notebook, knob, ours, full)


# ---------------------------------------------------------------------------------------------- the files


def write_timm_weights(arch: str, mirror: Path) -> Path:
    """A random `model.safetensors` of a timm architecture (1000-class head) where the hub would put it."""
    path = mirror / timm.models.get_pretrained_cfg(arch).hf_hub_id / "model.safetensors"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        save_file(timm.create_model(arch, pretrained=False).state_dict(), str(path))
    return path


def write_paper_checkpoint(model: str, tag: str, checkpoints: Path, classes: int = 11_230) -> Path:
    """Random weights under the Scaling-MLPs authors' key layout (linear_in, blocks.i.block.0/2, layernorms.i,
    linear_out), saved with torch.save as their `<name>_weights` files are; an ImageNet-21k-sized head."""
    net = models.create_model(model, num_classes=classes)
    sd = {"linear_in.weight": net.stem.weight, "linear_in.bias": net.stem.bias,
          "linear_out.weight": net.head.weight, "linear_out.bias": net.head.bias}
    for i, b in enumerate(net.blocks):
        sd |= {f"blocks.{i}.block.0.weight": b.fc1.weight, f"blocks.{i}.block.0.bias": b.fc1.bias,
               f"blocks.{i}.block.2.weight": b.fc2.weight, f"blocks.{i}.block.2.bias": b.fc2.bias,
               f"layernorms.{i}.weight": b.norm.weight, f"layernorms.{i}.bias": b.norm.bias}
    path = checkpoints / "paper" / f"{models.mlp.PAPER_CHECKPOINTS[model, tag][0]}_weights"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({f"module.{k}": v.detach().clone() for k, v in sd.items()}, path)  # DataParallel prefix
    return path


def pretrained_runs() -> set[str]:
    """Every rehearsal run that starts from published weights (the trio's ViT, 01's pretrained zoo)."""
    return {run for (profile, run), r in recipes.RECIPES.items() if profile == "rehearsal" and r.pretrained}


@pytest.fixture(scope="session")
def rehearsal_dirs(shared_tmp):
    """The rehearsal's folders for the session, shared by every pytest-xdist worker; removed after the session
    (conftest.pytest_sessionfinish): full-size checkpoints are large (a B-12/Wi-1024 run's final weights are
    0.4 GB, its last.pt 1.1 GB while it trains)."""
    base = shared_tmp / "rehearsal"
    dirs = {"MLPZOOM_DATA": base / "data", "MLPZOOM_RESULTS": base / "results",
            "MLPZOOM_CHECKPOINTS": base / "checkpoints", "MLPZOOM_WEIGHTS": base / "weights"}

    def write_files():
        fake.write_rehearsal(dirs["MLPZOOM_DATA"] / "rehearsal")
        for run in pretrained_runs():
            model = store.model_of(run)
            if model.startswith("mlp_"):
                write_paper_checkpoint(model, "in21k", dirs["MLPZOOM_CHECKPOINTS"])
            else:
                write_timm_weights(model, dirs["MLPZOOM_WEIGHTS"])

    once(base, "files", write_files)
    return dirs


@pytest.fixture
def rehearsal_env(rehearsal_dirs, monkeypatch):
    """The rehearsal's folders, and full's checkpoint policy (utils.train.CHECKPOINT_EVERY_S: no training
    state is written by a run shorter than it) instead of the tests' state every epoch (conftest.py)."""
    for key, path in rehearsal_dirs.items():
        monkeypatch.setenv(key, str(path))
    monkeypatch.delenv(train.CHECKPOINT_EVERY_ENV)
    return rehearsal_dirs


def test_the_fake_files_are_cifar_in_its_own_format(rehearsal_env):
    train, test = (store.load_data("rehearsal", "cifar10", s) for s in ("train", "test"))
    assert (len(train), len(test)) == (60, 20) and tuple(train.images.shape[1:]) == (3, 32, 32)
    assert torch.bincount(train.labels).tolist() == [6] * 10 and train.info.classes[0] == "airplane"
    c100 = store.load_data("rehearsal", "cifar100[0-9]", "train")
    assert len(c100) == 30 and c100.info.num_classes == 10
    stl = store.load_data("rehearsal", "stl10", "train")
    assert tuple(stl.images.shape) == (30, 3, 96, 96) and torch.bincount(stl.labels).tolist() == [3] * 10
    with pytest.raises(FileNotFoundError):  # the real CIFAR-10 is never replaced by the fake one
        data.load_dataset("cifar10", "train", root=rehearsal_env["MLPZOOM_DATA"] / "elsewhere")


def test_the_pretrained_paths_read_the_written_files(rehearsal_env):
    vit = models.create_model("vit_small_patch16_224", num_classes=10, pretrained=True)
    mirror = write_timm_weights("vit_small_patch16_224", rehearsal_env["MLPZOOM_WEIGHTS"])
    from safetensors.torch import load_file

    weights = load_file(str(mirror))
    assert torch.equal(vit.blocks[3].attn.qkv.weight, weights["blocks.3.attn.qkv.weight"])
    assert vit.head.weight.shape == (10, 384)  # the 1000-class head is dropped
    mlp = models.create_model("mlp_b12_wi1024", num_classes=10, pretrained=True)
    paper = torch.load(next((rehearsal_env["MLPZOOM_CHECKPOINTS"] / "paper").glob("*_weights")))
    assert torch.equal(mlp.blocks[11].norm.weight, paper["module.layernorms.11.weight"])
    assert torch.equal(mlp.stem.weight, paper["module.linear_in.weight"])
    assert mlp.head.weight.shape == (10, 1024)
    for arch in ("swin_tiny_patch4_window7_224", "tnt_s_patch16_224", "mixer_b16_224"):  # 01's other timm zoo
        net = models.create_model(arch, num_classes=10, pretrained=True)
        written = load_file(str(write_timm_weights(arch, rehearsal_env["MLPZOOM_WEIGHTS"])))
        state = net.state_dict()
        shared = [k for k in written if k in state and state[k].shape == written[k].shape]
        assert len(shared) >= len(written) - 2, arch  # everything but the 1000-class head
        assert all(torch.equal(state[k], written[k]) for k in shared), arch


# ------------------------------------------------------------------ every recipe field reaches the trainer

_READ: set[str] = set()


@dataclasses.dataclass(frozen=True)
class ReadTracked(TrainConfig):
    """A TrainConfig recording the fields that anything but dataclasses' own generic code reads (asdict and
    replace in dataclasses.py; the generated __eq__, __repr__ and __hash__, compiled from "<string>")."""

    def __getattribute__(self, name):
        generic = (dataclasses.__file__, "<string>")
        if not name.startswith("_") and sys._getframe(1).f_code.co_filename not in generic:
            _READ.add(name)
        return object.__getattribute__(self, name)


def unread_fields(recipe: recipes.Recipe, run: str, profile: str, **kw) -> set[str]:
    """Train `run` with `recipe` and return the fields it sets away from TrainConfig's defaults that the
    training path never read: a recipe field the trainer ignores."""
    tracked = type(recipe.train) if isinstance(recipe.train, ReadTracked) else ReadTracked
    cfg = tracked(**{f.name: getattr(recipe.train, f.name) for f in dataclasses.fields(recipe.train)})
    _READ.clear()
    recipe = dataclasses.replace(recipe, train=cfg)
    store.get_or_train(run, profile=profile, recipe=recipe, progress=False, **kw)
    read, defaults = set(_READ), tracked()
    changed = {f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(defaults, f.name)}
    return changed - read


TRACKED = TRIO + ["mlp_b12_wi1024@in21k"]


def trained_trio(env: dict) -> dict[str, set[str]]:
    """The trio (and 01's paper MLP) trained once per session through a recipe that records what the trainer
    reads, before any notebook asks for them: {run: the fields it never read}."""
    return once(env["MLPZOOM_CHECKPOINTS"].parent, "trio", lambda: {
        run: unread_fields(recipes.get_recipe(run, "rehearsal"), run, "rehearsal") for run in TRACKED})


@pytest.mark.parametrize("run", TRACKED)
def test_every_field_of_a_full_recipe_is_read_by_the_training_path(run, rehearsal_env):
    unread = trained_trio(rehearsal_env)[run]
    assert not unread, f"{run}: recipe fields the trainer never read: {unread}"
    card = store.model_card(run, REHEARSAL.dataset, "rehearsal")
    assert card["epochs"] == 1 and card["data"]["train"]["n"] == 50 and 0 <= card["metrics"]["test_top1"] <= 1


def test_the_trio_trains_through_ffcvs_compiled_pipeline(rehearsal_env):
    """What the kernels skip (KERNEL_ENV) is done here: full's backend is FFCV, and numba compiles its
    pipeline in the process that trains the trio."""
    import numba

    trained_trio(rehearsal_env)
    assert store.training_backend(REHEARSAL) == "ffcv" and not numba.config.DISABLE_JIT
    assert "NUMBA_DISABLE_JIT" not in os.environ


# ------------------------------------------------ every notebook, once per session, on whichever worker


# The notebooks' kernels run FFCV's pipeline as plain Python (numba's JIT off): numba compiled it afresh for
# every loader, 7 s to import ffcv and about 5 s per training run (06's three adversarial runs: 26 s compiled,
# 8 s not; its rehearsal trains 34), a few minutes of CI over the rehearsal. The trio's runs go through the
# compiled pipeline in the test process (test_the_trio_trains_through_ffcvs_compiled_pipeline), as do
# tests/test_loaders.py's and tests/test_ddp.py's.
KERNEL_ENV = {"NUMBA_DISABLE_JIT": "1"}


def rehearsal_run(name: str, env: dict) -> run_notebooks.Executed:
    """The notebook's rehearsal run, once per session, in whichever worker asks first; after the trio, and for
    07 after every other notebook (it redraws their tables)."""
    def work():
        trained_trio(env)
        if name.startswith("07"):
            for other in NOTEBOOKS:
                if not other.startswith("07"):
                    rehearsal_run(other, env)
        with pytest.MonkeyPatch.context() as kernel:
            for key, value in KERNEL_ENV.items():
                kernel.setenv(key, value)
            return run_notebooks.run("rehearsal", only=[name[:2]], root=ROOT, stream=False)[0]
    return once(env["MLPZOOM_CHECKPOINTS"].parent, Path(name).stem, work)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_under_the_rehearsal(name, rehearsal_env):
    result = rehearsal_run(name, rehearsal_env)
    assert result.ok, result
    out = rehearsal_env["MLPZOOM_RESULTS"] / "rehearsal" / "cifar10" / Path(name).stem
    if out.name == "07_plots":
        manifest = json.loads((out.parent / "figures.json").read_text())
        status = [m["status"] for m in manifest]  # each notebook drew its figures: 07 redraws none (but
        # where a notebook rewrote a table after drawing from it: 08's images.npz)
        assert status.count("up to date") >= 30 and status.count("drawn") <= 2, status
        return
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["profile"], config["dataset"], config["models"]) == ("rehearsal", "cifar10", TRIO)


def test_the_frozen_backbone_stayed_the_written_weights_and_the_head_trained(rehearsal_env):
    from safetensors.torch import load_file

    trained_trio(rehearsal_env)
    net = store.get_or_train("vit_small_patch16_224", profile="rehearsal")
    hub = load_file(str(write_timm_weights("vit_small_patch16_224", rehearsal_env["MLPZOOM_WEIGHTS"])))
    assert torch.equal(net.blocks[11].mlp.fc2.weight, hub["blocks.11.mlp.fc2.weight"])
    fresh = models.create_model("vit_small_patch16_224", num_classes=10, pretrained=True)
    assert not torch.equal(net.head.weight, fresh.head.weight)  # the new head trained


# ------------------------------------------------------------------------------------ what it catches


def test_it_catches_a_shape_error_only_the_full_models_hit(rehearsal_env, monkeypatch):
    """A resize that stops resizing breaks B-12/Wi-1024 (64x64) and ViT-S/16 (224x224), never smoke's trio."""
    monkeypatch.setattr(models.common.F, "interpolate", lambda x, **kw: x)
    smoke_info = store.load_splits("smoke").test.info
    for m in profiles.PROFILES["smoke"].trio:
        net = models.create_model(m, num_classes=smoke_info.num_classes, in_chans=smoke_info.channels,
                                 img_size=smoke_info.image_size)
        net(torch.rand(2, smoke_info.channels, smoke_info.image_size, smoke_info.image_size))
    info = store.load_data("rehearsal", "cifar10", "test").info
    for m in ("mlp_b12_wi1024", "vit_small_patch16_224"):
        net = models.create_model(m, num_classes=info.num_classes, in_chans=info.channels,
                                  img_size=info.image_size)
        with pytest.raises((RuntimeError, AssertionError)):
            net(torch.rand(2, 3, 32, 32))


def test_it_catches_a_recipe_field_the_trainer_ignores(rehearsal_env):
    """A field a recipe sets that the training path never reads (a new `ema_decay` nobody wired in)."""

    @dataclasses.dataclass(frozen=True)
    class WithEma(ReadTracked):
        ema_decay: float = 0.0

    base = recipes.get_recipe("resnet18_cifar", "rehearsal")
    recipe = dataclasses.replace(base, train=WithEma(**dataclasses.asdict(base.train), ema_decay=0.999))
    assert unread_fields(recipe, "resnet18_cifar@ema", "rehearsal") == {"ema_decay"}


def test_it_catches_a_notebook_branch_only_full_takes(tmp_path, rehearsal_env):
    """The same notebook with an error in its full-only branch: smoke passes, the rehearsal fails."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("profile = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "from utils import results\n"
        "run = results.start('98_branch', profile)\n"
        "if run.p.code_path == 'full':\n"
        "    pretrained_zoo_loop_with_a_typo\n"
        "run.finish()")]
    nbformat.write(nb, tmp_path / "98_branch.ipynb")
    (tmp_path / "utils").symlink_to(ROOT / "utils")
    assert run_notebooks.run("smoke", only=["98"], root=tmp_path, stream=False)[0].ok
    assert not run_notebooks.run("rehearsal", only=["98"], root=tmp_path, stream=False)[0].ok


def test_make_data_writes_the_rehearsal_files(tmp_path, capsys):
    """`make data PROFILE=rehearsal` (python -m utils.data --profile rehearsal) writes and decodes them."""
    from utils.data.__main__ import main

    main(["--profile", "rehearsal", "--root", str(tmp_path)])
    out = capsys.readouterr().out
    assert "cifar10/train: 60 images of (3, 32, 32), 10 classes (6-6 per class)" in out
    assert (tmp_path / "rehearsal" / "cifar-100-python" / "train").is_file()
    assert (tmp_path / "rehearsal" / "stl10_binary" / "test_X.bin").stat().st_size == 20 * 3 * 96 * 96
