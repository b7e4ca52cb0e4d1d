"""The run plan (utils/plan.py): counted sizes against the real data, the notebooks' choices as waiting rows,
-p overrides, dealing runs to workers, and a worker killed mid-run whose run resumes to the same weights.
That the plan lists exactly what the notebooks ask for, and that the notebooks train nothing after
`--train`, is checked on the smoke notebooks themselves (tests/test_notebooks.py)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from utils import plan, store
from utils.data.cache import info_of
from utils.experiments import transfer
from utils.profiles import PROFILES

ROOT = Path(__file__).resolve().parents[1]
SMOKE, QUICK, FULL = PROFILES["smoke"], PROFILES["quick"], PROFILES["full"]


@pytest.fixture
def roots(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPZOOM_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("MLPZOOM_RESULTS", str(tmp_path / "results"))
    return tmp_path


def test_split_sizes_are_counted_from_the_published_splits():
    assert plan.split_size(FULL, "cifar10") == 50_000 and plan.split_size(FULL, "cifar10", "test") == 10_000
    assert plan.split_size(FULL, "cifar100[0-9]") == 5_000  # 10 of 100 classes
    assert plan.split_size(QUICK, "fashion-mnist[0-4]") == 30_000
    assert plan.split_size(SMOKE, "fashion-mnist") == 512  # the profile's training subset
    assert plan.split_size(SMOKE, "fashion-mnist", capped=False) == 60_000


def test_counted_training_images_equal_what_the_store_loads():
    """The store's split (subset, then the validation share out) and 04's k-per-class sets: counted = read."""
    (run,) = [r for r in plan.notebook_runs("02_adversarial_robustness", "smoke") if r.name == "test_mlp"]
    assert plan.train_images(run, SMOKE) == len(store.load_splits(SMOKE, "fashion-mnist").train) == 461
    cfg = transfer.config("smoke")
    pool, _, _ = transfer.target_splits(SMOKE, "fashion-mnist[5-9]", info_of(cfg.source), cfg.n_val)
    for k in (2, 10, None):
        task = transfer.TransferTask(cfg, "test_mlp", "fashion-mnist[5-9]", "scratch", k, 1.0, 0)
        assert task.n_train(SMOKE) == len(transfer.per_class(pool, k)) == {2: 10, 10: 50, None: 29_950}[k]


def test_forward_flops_are_the_cost_counters_on_the_meta_device():
    (mlp,) = [r for r in plan.notebook_runs("02_adversarial_robustness", "full") if r.name.startswith("mlp")
              and "@" not in r.name]
    flops, params = plan.forward_flops(mlp, FULL)
    # B-12/Wi-1024 on 64x64x3: the 12288 -> 1024 embedding, 12 blocks of 1024 -> 4096 -> 1024, the head
    assert flops == 2 * (12288 * 1024 + 12 * 2 * 1024 * 4096 + 1024 * 10)
    assert params > 100e6


def test_choices_wait_until_the_runs_they_are_made_from_are_stored(roots):
    rows = plan.table(plan.plan(SMOKE, ["01", "04", "06"]), SMOKE)
    waiting = rows[rows.status == "waiting"]
    assert set(waiting.notebook) == {"01_vit_finetuning", "04_feature_generalizability", "06_improving_mlp"}
    assert waiting.run.str.contains("@lr\\?-bs").sum() == 2  # 01's batch sweep, at the lr not yet chosen
    assert not waiting.waits_for.eq("").any() and rows[rows.status != "waiting"].waits_for.eq("").all()
    # 04: every fine-tune / LP-FT at k=10 waits for its lr; scratch does not (its recipe's lr)
    k10 = rows[rows.run.str.contains("-k10")]
    assert set(k10[k10.status == "waiting"].run.str.split("@").str[1].str[:2]) == {"ft", "lp"}
    assert (k10[k10.run.str.contains("scratch")].status == "to train").all()
    # at k = lr_per_class (2) the chosen lr's run is one of its lr trials: no run of its own (issue 26)
    assert not rows.run.str.contains("-k2-lr\\?").any() and rows.run.str.contains("@ft-k2-lr0.1").any()
    sums = plan.totals(rows).set_index("notebook")
    trainings = rows[rows.twin_of == ""].drop_duplicates(["dataset", "run"])  # 06: its baselines, twice
    assert sums.loc["all", "runs"] == len(trainings) == rows.drop_duplicates(["dataset", "run"]).shape[0] - 6
    twins = rows[rows.twin_of != ""]
    pairs = {frozenset(p) for p in zip(twins.run, twins.twin_of, strict=True)}
    assert {frozenset({"mlp_plain@abl-lr-baseline-s0", "mlp_plain@abl-plain-baseline-s0"}),
            frozenset({"test_mlp@abl-adv-baseline-s0", "test_mlp@abl-tricks-baseline-s0"})} <= pairs


def test_overrides_reach_the_plan_and_a_bad_knob_lists_the_valid_ones():
    runs = plan.plan(SMOKE, ["06"], {"epochs": 3})
    assert {r.recipe.train.epochs for r in runs if "@abl-lr-" in r.name} == {3}
    with pytest.raises(KeyError, match="no selected notebook has the knob 'epoch'.*epochs"):
        plan.plan(SMOKE, ["06"], {"epoch": 3})
    with pytest.raises(TypeError, match="epochs='3' is not a int"):
        plan.plan(SMOKE, ["06"], {"epochs": "3"})


def test_runs_are_dealt_longest_first_to_the_least_loaded_worker():
    runs = [r for r in plan.plan(FULL, ["02"]) if "@" not in r.name]  # mlp 12 blocks, resnet18, vit-s/16
    shares = plan.shares(runs, 2, FULL)
    epochs = lambda r: r.recipe_under("full").train.epochs
    cost = lambda r: plan.forward_flops(r, FULL)[0] * plan.train_images(r, FULL) * epochs(r)
    biggest = max(runs, key=cost)
    assert shares[0] == [biggest] and sorted(r.name for r in shares[1]) == sorted(r.name for r in runs
                                                                                   if r is not biggest)
    assert len(plan.shares(runs, 8, FULL)) == 3  # no empty worker


def test_twins_are_trained_and_counted_once_and_dealt_to_one_worker():
    """full's 04 ViT sources have 01's ViT recipe (04 changes the MLP's and the CNN's epochs only): seed 0 is
    01's ViT, seed 1 its seed twin (01's error-consistency ceiling): one training each, counted and trained
    under 01, linked for 04 (store._link_twin); other sources are no twins."""
    from utils import estimate

    runs = plan.plan(FULL, ["01", "04"])
    rows = plan.table(runs, FULL).set_index(["notebook", "run"])
    vit = "vit_small_patch16_224"
    assert rows.loc[("04_feature_generalizability", f"{vit}@source-s0"), "twin_of"] == vit
    assert rows.loc[("04_feature_generalizability", f"{vit}@source-s1"), "twin_of"] == f"{vit}@seed1"
    assert rows.loc[("04_feature_generalizability", "resnet18_cifar@source-s0"), "twin_of"] == ""
    per_run, _ = estimate.estimate(runs, FULL)
    counted = set(per_run.run)
    assert not {f"{vit}@source-s0", f"{vit}@source-s1"} & counted and f"{vit}@seed1" in counted
    own = rows[rows.twin_of == ""].reset_index().drop_duplicates(["dataset", "run"])
    assert plan.totals(rows.reset_index()).set_index("notebook").loc["all", "runs"] == len(own)
    pair = list({r.name: r for r in runs if r.name in (vit, f"{vit}@source-s0")}.values())  # 01 asks twice
    others = [r for r in runs if r.notebook.startswith("04") and "@source" in r.name and vit not in r.name]
    many = pair + others
    shares = plan.shares(many, 8, FULL)
    (together,) = [s for s in shares if any(r.name == vit for r in s)]
    assert [r.name for r in together] == [vit, f"{vit}@source-s0"] and len(shares) == 5


def test_two_local_workers_train_a_plan_and_in_process_trains_the_rest(roots):
    """submitit's local jobs (what `--train --workers 2` starts), each with its share; then workers=0 (this
    process, as tests/test_notebooks.py's smoke fixture trains 04 and 06) finds nothing left, and trains a
    new notebook's runs itself."""
    done = plan.train_ahead("smoke", ["02"], workers=2)  # the smoke trio, its seed twins, the aligned control
    assert len(done) == 3 + 3 + 6 + 6  # the control: 2 lrs x 3 models, then 2 more seeds at the chosen lr
    assert (done.outcome == "stored").all() and set(done.worker) == {0, 1}
    assert done.run.str.contains("@aligned-lr?-", regex=False).sum() == 0  # the lr was chosen before those
    assert plan.train_ahead("smoke", ["02", "03"], workers=0).empty  # 03 asks for the same runs
    more = plan.train_ahead("smoke", ["06"], workers=0, pattern="mlp_plain@abl-lr-*-s0")
    assert len(more) == 2 and more.run.str.startswith("mlp_plain@abl-lr-").all()  # the lr study, seed 0
    assert (more.outcome == "stored").all() and set(more.worker) == {0}


def test_a_killed_worker_resumes_to_the_same_weights(roots):
    """plan --train killed (the whole process group) after some epochs of a run, then run again: the run
    resumes from last.pt and ends with the weights of a run that was never interrupted."""
    run, args = "mlp_plain@abl-lr-baseline-s0", ["--profile", "smoke", "--only", "06", "-p", "epochs=12"]
    command = [sys.executable, "-m", "utils.plan", *args, "--run", run, "--train", "--workers", "1"]
    folder = store.run_dir(run, "fashion-mnist", "smoke")
    driver = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (folder / "last.pt").exists() and time.time() < deadline and driver.poll() is None:
        time.sleep(0.01)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert (folder / "last.pt").exists() and not (folder / "model.safetensors").exists(), "not killed mid-run"
    epochs_done = torch.load(folder / "last.pt", weights_only=False)["epoch"]
    assert 0 < epochs_done < 12
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    resumed = load_file(folder / "model.safetensors")
    assert len(store.history(run, "fashion-mnist", "smoke")) == 12
    os.environ["MLPZOOM_CHECKPOINTS"] = str(roots / "uninterrupted")  # monkeypatch restores it
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    whole = load_file(store.run_dir(run, "fashion-mnist", "smoke") / "model.safetensors")
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)


def test_local_cpu_workers_split_this_processs_thread_budget(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # e.g. a test worker's share of the cores
    assert plan.cpu_budget() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    assert plan.cpu_budget() == (os.cpu_count() or 1)
