"""utils.store: load instead of retraining, retrain on a changed recipe, resume a killed run, fallbacks."""

import dataclasses
import json
import os
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest
import safetensors.torch
import torch

from utils import checkpoints, data, metrics, recipes, store, train
from utils.recipes import Recipe
from utils.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
RECIPE = Recipe(TrainConfig(epochs=2, batch_size=64, eval_batch_size=256, lr=3e-3, progress=False))


@pytest.fixture
def ck(tmp_path, monkeypatch, data_root):
    monkeypatch.setenv("MLPZOOM_CHECKPOINTS", str(tmp_path / "ck"))
    return tmp_path / "ck" / "smoke" / "synthetic"


def get(run="test_mlp", recipe=RECIPE):
    return store.get_or_train(run, "synthetic", "smoke", recipe=recipe, progress=False)


def count_epochs(monkeypatch) -> list[int]:
    """Record the epochs train_epoch is called for."""
    calls, real = [], train.train_epoch
    monkeypatch.setattr(train, "train_epoch", lambda *a: calls.append(a[-1]) or real(*a))
    return calls


def test_second_call_loads_instead_of_training(ck, monkeypatch):
    calls = count_epochs(monkeypatch)
    first = get()
    assert calls == [0, 1] and not first.training
    second = get()
    assert calls == [0, 1]  # no second training run
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    key = json.loads((ck / "test_mlp" / "store.json").read_text())
    assert key["model"] == "test_mlp" and key["train"]["lr"] == 3e-3
    splits = store.load_splits("smoke", "synthetic")
    assert key["data"]["train"]["n"] + key["data"]["val"]["n"] == 512  # the profile's subset, 10% held out
    assert key["data"]["val"] == splits.val.data_key() and key["data"]["test"] == splits.test.data_key()
    summary = store.summarize(["test_mlp"], "synthetic", "smoke")
    assert summary.loc[0, "epochs"] == 2 and summary.loc[0, "params"] == sum(
        p.numel() for p in first.parameters()
    )
    assert 0 <= summary.loc[0, "val_top1"] <= 1 and 0 <= summary.loc[0, "test_top1"] <= 1
    assert len(store.history("test_mlp", "synthetic", "smoke")) == 2
    card = store.model_card("test_mlp", "synthetic", "smoke")  # the test split scored once, at the end
    test = metrics.evaluate(first, data.make_loader(splits.test, 256, train=False))
    assert card["metrics"]["test_top1"] == pytest.approx(test["top1"])


def test_changed_recipe_retrains_and_keeps_the_old_run(ck, monkeypatch):
    get()
    calls = count_epochs(monkeypatch)
    get(recipe=recipes.with_train(RECIPE, lr=1e-3))
    assert calls == [0, 1]  # trained anew
    assert json.loads((ck / "test_mlp" / "store.json").read_text())["train"]["lr"] == 1e-3
    (old,) = ck.glob("test_mlp.replaced-*")
    assert (
        json.loads((old / "store.json").read_text())["train"]["lr"] == 3e-3
        and (old / "model.safetensors").exists()
    )


def test_a_run_stored_under_the_same_key_by_another_name_is_linked_not_trained(ck, monkeypatch, capsys):
    """04's seed-0 source is 01's model when their recipes agree: its files are linked (the same inode, no
    copy), the request is logged as not trained, and a recipe that differs in any field still trains."""
    first = get()
    calls = count_epochs(monkeypatch)
    twin = get("test_mlp@source-s0")
    assert calls == [] and "the same model, recipe and data as the stored test_mlp" in capsys.readouterr().out
    for name in checkpoints.FINAL_FILES:
        assert os.path.samefile(ck / "test_mlp" / name, ck / "test_mlp@source-s0" / name)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), twin.state_dict().values(),
                                                 strict=True))
    asked = store.requests("smoke")
    assert asked.set_index("run").trained.to_dict() == {"test_mlp": True, "test_mlp@source-s0": False}
    get("test_mlp@source-s1", recipes.with_train(RECIPE, seed=1))
    assert calls == [0, 1]
    get()  # retraining the first (here: loading it) leaves the twin's files as they were
    assert store.is_stored("test_mlp@source-s0", "synthetic", "smoke")


def test_killed_run_resumes(ck, monkeypatch):
    real = train.train_epoch

    def dies_in_epoch_2(*a):
        if a[-1] == 1:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(train, "train_epoch", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        get()
    assert not store.is_stored("test_mlp", "synthetic", "smoke")
    calls = count_epochs(monkeypatch)
    monkeypatch.setattr(train, "train_epoch", lambda *a: calls.append(a[-1]) or real(*a))
    get()
    assert calls == [1]  # only the missing epoch
    assert list(store.history("test_mlp", "synthetic", "smoke")["epoch"]) == [1, 2]


@pytest.mark.parametrize("root", ["relative", "symlinked"])
def test_first_training_under_a_relative_or_symlinked_root_does_not_wait_on_itself(
        tmp_path, monkeypatch, data_root, root):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "big").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "big")
    monkeypatch.setenv("MLPZOOM_CHECKPOINTS", "ck" if root == "relative" else str(tmp_path / "link"))

    def waits(seconds):  # the lock's poll: before the fix the process waited here on its own lock forever
        raise AssertionError("waited on a lock nobody else holds")

    monkeypatch.setattr(checkpoints, "time", SimpleNamespace(sleep=waits))
    get()
    assert store.is_stored("test_mlp", "synthetic", "smoke")


def test_run_variants_and_subsets(ck):
    recipe = Recipe(RECIPE.train, train_subset=100)
    get("test_cnn@small", recipe)
    card = store.model_card("test_cnn@small", "synthetic", "smoke")
    assert card["model"] == "test_cnn" and (ck / "test_cnn@small" / "model.json").exists()
    assert json.loads((ck / "test_cnn@small" / "store.json").read_text())["data"]["train"]["n"] == 90
    assert (
        store.train_subset("smoke", Recipe(RECIPE.train, train_subset=10_000)) == 512
    )  # capped by the profile


def test_frozen_backbone_trains_only_the_head(ck):
    before = store.build("test_vit", store.load_splits("smoke", "synthetic").train.info, RECIPE)
    after = get("test_vit@head", Recipe(RECIPE.train, trainable="head"))
    for (name, a), b in zip(before.state_dict().items(), after.state_dict().values(), strict=True):
        assert torch.equal(a, b) != name.startswith("head."), name


def test_unreachable_pretrained_weights_fall_back(monkeypatch, data_root):
    offline = Recipe(RECIPE.train, pretrained=True, fallback="test_vit")
    monkeypatch.setitem(recipes.RECIPES, ("smoke", "vit_small_patch16_224"), offline)

    def no_hub(*a, **kw):
        raise store.models.WeightsUnreachable("hub unreachable")

    monkeypatch.setattr(store.models, "create_model", no_hub)
    assert store.resolve("vit_small_patch16_224", "synthetic", "smoke") == ("test_vit", None)
    assert store.resolve("test_mlp", "synthetic", "smoke") == ("test_mlp", None)  # nothing pretrained


def test_resolve_builds_a_pretrained_model_once_and_get_or_train_uses_it(monkeypatch, data_root, ck):
    reachable = Recipe(RECIPE.train, pretrained=True, fallback="test_vit")
    monkeypatch.setitem(recipes.RECIPES, ("smoke", "test_mlp@pretrained"), reachable)
    builds = []
    real = store.models.create_for

    def counting(name, info, seed=None, pretrained=False, **kw):
        builds.append(pretrained)
        return real(name, info, seed=seed, **kw)  # "downloads" nothing: test_mlp has no weights

    monkeypatch.setattr(store.models, "create_for", counting)
    run, net = store.resolve("test_mlp@pretrained", "synthetic", "smoke")
    assert run == "test_mlp@pretrained" and net is not None and builds == [True]
    trained = store.get_or_train(run, "synthetic", "smoke", net=net, progress=False)
    assert trained is net and builds == [True]  # not built (fetched) a second time


def test_train_runs_trains_fallbacks_in_place_or_skips_them(monkeypatch, ck, capsys):
    offline = Recipe(RECIPE.train, pretrained=True, fallback="test_mlp", note="fine-tunes published weights")
    monkeypatch.setitem(recipes.RECIPES, ("smoke", "vit_small_patch16_224"), offline)
    scratch = dataclasses.replace(RECIPE, note="from scratch")
    monkeypatch.setitem(recipes.RECIPES, ("smoke", "test_mlp"), scratch)

    real = store.models.create_for

    def no_hub(name, info, seed=None, pretrained=False, **kw):
        if pretrained:
            raise store.models.WeightsUnreachable("hub unreachable")
        return real(name, info, seed=seed, **kw)

    monkeypatch.setattr(store.models, "create_for", no_hub)
    calls = count_epochs(monkeypatch)
    assert store.train_runs(["vit_small_patch16_224"], "synthetic", "smoke", fallbacks=False) == []
    assert calls == [] and "skipped" in capsys.readouterr().out
    assert store.train_runs(["vit_small_patch16_224", "test_mlp"], "synthetic", "smoke") == ["test_mlp"] * 2
    assert calls == [0, 1]  # the fallback trained once, loaded the second time
    assert "test_mlp: from scratch" in capsys.readouterr().out


def test_other_build_errors_are_not_taken_for_offline(monkeypatch, data_root):
    monkeypatch.setitem(recipes.RECIPES, ("smoke", "vit_small_patch16_224"),
                        Recipe(RECIPE.train, pretrained=True, fallback="test_vit"))

    def out_of_memory(*a, **kw):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(store.models, "create_model", out_of_memory)
    with pytest.raises(RuntimeError, match="out of memory"):
        store.resolve("vit_small_patch16_224", "synthetic", "smoke")


# ------------------------------------------------------------ the data behind a name, fragile finished runs


def write_image_folder(root, classes: int, gray: bool, seed: int, n: int = 40):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c in range(classes):
            (root / split / f"class{c}").mkdir(parents=True, exist_ok=True)
            for k in range(n if split == "train" else 4):
                shape = (8, 8) if gray else (8, 8, 3)
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
                    root / split / f"class{c}" / f"{k}.png")


def test_another_image_folder_behind_the_same_name_gets_its_own_model(ck, data_root):
    import shutil

    small = Recipe(RECIPE.train, train_subset=None)
    write_image_folder(data_root, classes=3, gray=False, seed=0)
    first = store.get_or_train("test_mlp", "image-folder", "smoke", recipe=small, progress=False)
    assert first.head.out_features == 3 and first.input.expect == (3, 8)
    for split in ("train", "test"):
        shutil.rmtree(data_root / split)
    write_image_folder(data_root, classes=5, gray=True, seed=1)
    second = store.get_or_train("test_mlp", "image-folder", "smoke", recipe=small, progress=False)
    assert second.head.out_features == 5 and second.input.expect == (1, 8)  # retrained on the new folder
    assert len(list((ck.parent / "image-folder").glob("test_mlp.replaced-*"))) == 1  # the old run kept aside


@pytest.fixture
def crash_window(monkeypatch):
    """A run killed after its final files were written and before its states were removed (the only time a
    finished run has a last.pt to rebuild a damaged final file from; otherwise it is retrained)."""
    monkeypatch.setattr(checkpoints, "drop_states", lambda folder: None)


def finished(ck):
    model = get()
    return model, {k: v.clone() for k, v in model.state_dict().items()}, ck / "test_mlp"


def same_weights(model, reference) -> bool:
    return all(torch.equal(a, reference[k]) for k, a in model.state_dict().items())


@pytest.mark.parametrize("broken", [("last.pt",), ("last.pt", "prev.pt")])
def test_a_finished_run_with_unreadable_checkpoints_is_loaded_not_retrained(ck, monkeypatch, broken):
    _, weights, folder = finished(ck)
    for name in broken:  # last.pt alone: prev.pt (epoch 1 of 2) must not be resumed from
        (folder / name).write_bytes(b"broken")
    finals = {name: (folder / name).read_bytes() for name in checkpoints.FINAL_FILES}
    calls = count_epochs(monkeypatch)
    again = get()
    cfg = dataclasses.replace(RECIPE.train, checkpoint_dir=str(folder))
    hist = train.fit(again, *train.make_loaders(*store.load_splits("smoke", "synthetic")[:2], cfg), cfg)
    assert calls == [] and same_weights(again, weights) and list(hist["epoch"]) == [1, 2]
    assert {name: (folder / name).read_bytes() for name in finals} == finals  # never trained over


@pytest.mark.parametrize("damage", ["corrupt weights", "corrupt card", "deleted weights"])
def test_a_damaged_final_file_is_rebuilt_from_last_pt_without_training(ck, crash_window, monkeypatch, damage):
    _, weights, folder = finished(ck)
    target = folder / ("model.json" if damage == "corrupt card" else "model.safetensors")
    if damage.startswith("corrupt"):
        target.write_bytes(b"\x00garbage")
    else:
        target.unlink()
    calls = count_epochs(monkeypatch)
    with pytest.warns(UserWarning, match="unreadable") if damage.startswith("corrupt") else nullcontext():
        again = get()
    assert calls == [] and same_weights(again, weights) and target.exists()
    if damage.startswith("corrupt"):
        assert (folder / f"{target.name}.corrupt").read_bytes() == b"\x00garbage"  # kept, named


def test_an_unreadable_final_file_without_checkpoints_is_kept_aside_and_the_run_retrained(ck, monkeypatch):
    _, weights, folder = finished(ck)
    assert not any((folder / name).exists() for name in ("last.pt", "prev.pt"))  # a finished run drops them
    (folder / "model.safetensors").write_bytes(b"garbage")
    calls = count_epochs(monkeypatch)
    with pytest.warns(UserWarning, match="unreadable"):
        get()
    assert calls == [0, 1] and (folder / "model.safetensors.corrupt").read_bytes() == b"garbage"


def test_unreadable_files_are_named_with_what_to_do(tmp_path):
    (tmp_path / "model.json").write_text("{not json")
    (tmp_path / "model.safetensors").write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"model.json is unreadable .*delete it and rerun"):
        checkpoints.read_card(tmp_path)
    with pytest.raises(ValueError, match=r"model.safetensors is unreadable .*rebuilt from last.pt"):
        checkpoints.read_weights(tmp_path)


TRAIN_ONE = ("import sys\nfrom utils import store\nfrom utils.recipes import Recipe\nfrom utils.train import "
             "TrainConfig\nr = Recipe(TrainConfig(epochs=3, batch_size=16, eval_batch_size=256, lr=3e-3))\n"
             "m = store.get_or_train('test_mlp', 'synthetic', 'smoke', recipe=r)\n"
             "print('sum', float(sum(p.sum() for p in m.parameters())))\n")


def test_two_processes_on_one_run_train_it_once(ck, data_root, tmp_path):
    """Both start while this process holds the run's lock (so they overlap however busy the machine is: on two
    pytest-xdist workers one could finish before the other started), then one trains and the other loads."""
    env = {**os.environ, "MLPZOOM_CHECKPOINTS": str(tmp_path / "ck"), "MLPZOOM_DATA": str(data_root)}
    logs = [tmp_path / f"out{i}.txt" for i in range(2)]
    waiting = "another process is training this run"
    with checkpoints.run_lock(ck / "test_mlp"):
        procs = []
        for log in logs:
            with log.open("w") as out:  # the child keeps its own descriptor
                procs.append(subprocess.Popen([sys.executable, "-c", TRAIN_ONE], cwd=ROOT, env=env,
                                              stdout=out, stderr=subprocess.STDOUT, text=True))
        deadline = time.time() + 240
        while not all(waiting in log.read_text() for log in logs) and time.time() < deadline:
            time.sleep(0.2)
    for proc in procs:
        proc.wait(timeout=300)
    outs = [log.read_text() for log in logs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all(waiting in out for out in outs), outs
    epochs = [line for out in outs for line in out.splitlines() if ": epoch " in line]
    assert len(epochs) == 3, epochs  # one process trained 3 epochs, the other waited and loaded
    sums = {line for out in outs for line in out.splitlines() if line.startswith("sum ")}
    assert len(sums) == 1  # both have the same model


# ------------------------------------------------------------ issue 28: stale, damaged and escaping runs


def test_a_run_without_store_json_is_set_aside_not_served(ck, monkeypatch, capsys):
    """A run trained by `utils.train --out` into the store's folder (here with another lr) has no key."""
    cfg = dataclasses.replace(RECIPE.train, lr=1e-2, checkpoint_dir=str(ck / "test_mlp"))
    splits = store.load_splits("smoke", "synthetic")
    train.fit(store.build("test_mlp", splits.train.info, RECIPE), *train.make_loaders(*splits[:2], cfg), cfg)
    calls = count_epochs(monkeypatch)
    get()
    assert calls == [0, 1]  # trained with the recipe's lr, not served the other run
    assert "has no store.json, so its recipe and data cannot be checked" in capsys.readouterr().out
    (old,) = ck.glob("test_mlp.replaced-*")
    assert json.loads((old / "model.json").read_text())["train_config"]["lr"] == 1e-2  # kept, not deleted
    assert json.loads((ck / "test_mlp" / "store.json").read_text())["train"]["lr"] == 3e-3


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b"[1, 2]", b'{"model": "test_mlp", "train": 5}'])
def test_a_store_json_of_other_bytes_or_shape_is_not_this_key(ck, monkeypatch, capsys, content):
    finished(ck)
    (ck / "test_mlp" / "store.json").write_bytes(content)
    calls = count_epochs(monkeypatch)
    get()
    assert calls == [0, 1] and "has an unreadable store.json" in capsys.readouterr().out
    (old,) = ck.glob("test_mlp.replaced-*")
    assert (old / "store.json").read_bytes() == content


@pytest.mark.parametrize("content", ["[1, 2]", '{"model": "test_mlp"}',
                                     '{"model": "m", "model_config": 3, "train_config": {}, "epochs": 2}'])
def test_a_model_json_of_another_shape_is_set_aside_and_rebuilt(ck, crash_window, monkeypatch, content):
    _, weights, folder = finished(ck)
    (folder / "model.json").write_text(content)
    calls = count_epochs(monkeypatch)
    with pytest.warns(UserWarning, match=r"model.json is unreadable \(not a model card: no valid"):
        again = get()
    assert calls == [] and same_weights(again, weights)
    assert (folder / "model.json.corrupt").read_text() == content
    assert store.model_card("test_mlp", "synthetic", "smoke")["epochs"] == 2


@pytest.mark.parametrize("cut", ["one row of two", "mid-row"])
def test_a_half_written_history_is_set_aside_and_rebuilt(ck, crash_window, monkeypatch, cut):
    _, weights, folder = finished(ck)
    text = (folder / "history.csv").read_text()
    short = "".join(text.splitlines(keepends=True)[:2]) if cut == "one row of two" else text.rsplit(",", 3)[0]
    (folder / "history.csv").write_text(short)
    calls = count_epochs(monkeypatch)
    with pytest.warns(UserWarning, match=r"history.csv is unreadable \(cut short: 1 complete rows of the "
                                         r"card's 2 epochs"):
        again = get()
    assert calls == [] and same_weights(again, weights)
    assert list(store.history("test_mlp", "synthetic", "smoke")["epoch"]) == [1, 2]
    assert (folder / "history.csv.corrupt").read_text() == short


def test_weights_full_of_nan_are_not_served(ck, crash_window, monkeypatch):
    _, weights, folder = finished(ck)
    nan = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in weights.items()}
    safetensors.torch.save_file(nan, str(folder / "model.safetensors"))
    calls = count_epochs(monkeypatch)
    with pytest.warns(UserWarning, match=r"model.safetensors is unreadable \(NaN or inf in \d+ tensors"):
        again = get()
    assert calls == [] and same_weights(again, weights)  # rebuilt from last.pt
    assert torch.isnan(safetensors.torch.load_file(folder / "model.safetensors.corrupt")["head.weight"]).all()


@pytest.mark.parametrize("run, dataset", [("test_mlp@v/../../../../escaped", "synthetic"),
                                          ("..", "synthetic"), ("test_mlp", "../../escaped"),
                                          ("a\\b", "synthetic"), ("", "synthetic")])
def test_run_and_dataset_names_cannot_escape_the_checkpoints_root(ck, tmp_path, run, dataset):
    with pytest.raises(ValueError, match=r"name .* is not a plain folder name: any characters but '/', "
                                         r"'\\', '\.\.' and NUL"):
        store.get_or_train(run, dataset, "smoke", recipe=RECIPE, progress=False)
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "ck").exists()  # nothing written
    assert store.run_dir("test_mlp@lr3e-4", "fashion-mnist[0-4]", "quick").name == "test_mlp@lr3e-4"


def test_a_run_that_diverged_is_marked_and_not_trained_again(ck, monkeypatch):
    """SGD at lr 1e30: the loss turns NaN in the first epoch. The store marks the run (diverged.json with its
    key), a second call raises at once without training, the plan sees it as settled, and another recipe
    under the same name trains."""
    calls = count_epochs(monkeypatch)
    bad = recipes.with_train(RECIPE, optimizer="sgd", lr=1e30)
    with pytest.raises(FloatingPointError, match="loss became nan"):
        get(recipe=bad)
    assert calls == [0] and (ck / "test_mlp" / store.DIVERGED).exists()
    assert store.settled("test_mlp", "synthetic", "smoke") == "diverged"
    with pytest.raises(FloatingPointError, match="diverged before under this recipe.*delete"):
        get(recipe=bad)
    assert calls == [0]  # not trained again
    get()  # another recipe: trained (the mark is another key's)
    assert calls == [0, 0, 1] and store.settled("test_mlp", "synthetic", "smoke") == "stored"
    log = store.requests("smoke")
    assert log.run.tolist() == ["test_mlp"] * 2 and log.trained.tolist() == [True, True]
