"""utils.store: load instead of retraining, retrain on a changed recipe, resume a killed run, fallbacks."""

import json

import pytest
import torch

from utils import recipes, store, train
from utils.recipes import Recipe
from utils.train import TrainConfig

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
    assert key["model"] == "test_mlp" and key["train_subset"] == 512 and key["train"]["lr"] == 3e-3
    summary = store.summarize(["test_mlp"], "synthetic", "smoke")
    assert summary.loc[0, "epochs"] == 2 and summary.loc[0, "params"] == sum(
        p.numel() for p in first.parameters()
    )
    assert 0 <= summary.loc[0, "top1"] <= 1 and len(store.history("test_mlp", "synthetic", "smoke")) == 2


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


def test_run_variants_and_subsets(ck):
    recipe = Recipe(RECIPE.train, train_subset=100)
    get("test_cnn@small", recipe)
    card = store.model_card("test_cnn@small", "synthetic", "smoke")
    assert card["model"] == "test_cnn" and (ck / "test_cnn@small" / "model.json").exists()
    assert json.loads((ck / "test_cnn@small" / "store.json").read_text())["train_subset"] == 100
    assert (
        store.train_subset("smoke", Recipe(RECIPE.train, train_subset=10_000)) == 512
    )  # capped by the profile


def test_frozen_backbone_trains_only_the_head(ck):
    before = store.build("test_vit", store.load_splits("smoke", "synthetic")[0].info, RECIPE)
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


def test_other_build_errors_are_not_taken_for_offline(monkeypatch, data_root):
    monkeypatch.setitem(recipes.RECIPES, ("smoke", "vit_small_patch16_224"),
                        Recipe(RECIPE.train, pretrained=True, fallback="test_vit"))

    def out_of_memory(*a, **kw):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(store.models, "create_model", out_of_memory)
    with pytest.raises(RuntimeError, match="out of memory"):
        store.resolve("vit_small_patch16_224", "synthetic", "smoke")
