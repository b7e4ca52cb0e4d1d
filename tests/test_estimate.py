"""The cost estimate (utils/estimate.py) against a real smoke run: optimizer steps exactly, bytes written to
within the per-file overheads; every rate named with its source; the JSON's total."""

import io
import json
from contextlib import redirect_stdout
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from utils import checkpoints, estimate, plan, train


@pytest.fixture
def roots(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPZOOM_CHECKPOINTS", str(tmp_path / "checkpoints"))
    return tmp_path


def test_the_counted_steps_and_bytes_are_what_a_smoke_run_does(roots, monkeypatch):
    """The smoke trio trained through the store, every optimizer step and every file write recorded."""
    written, steps = [], []
    save, final, epoch = checkpoints._torch_save, checkpoints.write_final, train.train_epoch

    def recorded_save(obj, path):
        save(obj, path)
        written.append(Path(path).stat().st_size)

    def recorded_final(folder, *args):
        final(folder, *args)
        written.append((Path(folder) / "model.safetensors").stat().st_size)

    monkeypatch.setattr(checkpoints, "_torch_save", recorded_save)
    monkeypatch.setattr(checkpoints, "write_final", recorded_final)
    monkeypatch.setattr(train, "train_epoch", lambda *a: steps.append(len(a[2])) or epoch(*a))
    for run in plan.notebook_runs("02_adversarial_robustness", "smoke"):
        written.clear()
        steps.clear()
        assert plan.train_run(run, "smoke") == "stored"
        cost = estimate.run_cost(run, "smoke")
        # 2 epochs of 461 // 64 batches; the aligned control's runs: 2 epochs of 230 // 64 (256 images, a
        # tenth held out for validation)
        assert cost["steps"] == sum(steps) == (6 if "@aligned-" in run.name else 14), run.name
        assert cost["checkpoint_saves"] == len(written) - 1 == 2
        assert abs(cost["bytes_written"] - sum(written)) <= 8192 + 0.01 * sum(written), run.name


def test_every_rate_is_named_with_its_unit_and_source():
    assert {"H200_BF16_FLOPS", "STEP_OVERHEAD_S", "CHECKPOINT_WRITE_BYTES_S"} <= set(estimate.RATES)
    assert all(r.value > 0 and r.unit and len(r.source) > 10 for r in estimate.RATES.values())


def test_the_json_total_holds_the_minutes_and_the_disk(capsys):
    assert plan.main(["--profile", "full", "--only", "02", "--estimate", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    total = out["total"]
    assert out["profile"] == "full" and total["minutes_h200"] > 0 and total["disk_gb"] > 0
    # 02's full trio: B-12/Wi-1024, ResNet-18 and ViT-S/16 (head only) on CIFAR-10 at their recipes' epochs
    assert total["steps"] == sum(estimate.run_cost(r, "full")["steps"] for r in plan.plan("full", ["02"]))


def test_checkpoint_saves_follow_the_wall_time_policy():
    """utils.train writes a state at the first epoch end >= every_s after the last one (tests/test_train.py
    checks the training side with a faked clock): 10 epochs of 60 s."""
    assert estimate.checkpoint_saves(10, 600.0, 0.0) == 10  # every epoch
    assert estimate.checkpoint_saves(10, 600.0, 60.0) == 10
    assert estimate.checkpoint_saves(10, 600.0, 150.0) == 3  # after epochs 3, 6, 9
    assert estimate.checkpoint_saves(10, 600.0, 600.0) == 1
    assert estimate.checkpoint_saves(10, 599.0, 600.0) == 0  # a run shorter than the interval: none


def test_a_finished_run_leaves_only_its_final_weights(monkeypatch):
    monkeypatch.delenv(train.CHECKPOINT_EVERY_ENV)  # the default policy, as on a GPU box
    (run, *_) = plan.notebook_runs("02_adversarial_robustness", "smoke")
    cost = estimate.run_cost(run, "smoke")
    assert cost["checkpoint_saves"] == 0 and cost["disk_left"] == cost["bytes_written"]


def test_the_reports_caveat_states_the_counted_minutes_and_disk(monkeypatch, tmp_path):
    from utils import report

    table = pd.DataFrame({"notebook": ["01_vit_finetuning", "04_feature_generalizability", "all"],
                          "minutes_h200": [30.4, 20.0, 50.4], "bytes_written": [1e9, 2e9, 3e9],
                          "disk_left": [1e9, 1e9, 2e9]})
    line = estimate.caveat(table)
    assert "50 minutes on one H200 (01: 30, 04: 20), 3 GB written, 2 GB left on disk" in line
    monkeypatch.setattr(estimate, "estimate", lambda runs, profile: (None, table))
    monkeypatch.setenv("MLPZOOM_RESULTS", str(tmp_path))
    markdown, _ = report.build("full", "cifar10")
    assert line in markdown.split("## 1.")[0]  # among the caveats


def test_the_counted_sae_steps_are_the_steps_fit_sae_takes(monkeypatch):
    """09's analysis count (estimate.analysis_passes): each SAE's launches are fit_sae's optimizer steps, and
    there is one SAE per seed, the untrained control and each sweep point, per network."""
    import torch

    from utils import config
    from utils.experiments import dictionary

    cfg = config.for_notebook("09_dictionary_learning", "smoke")
    saes = [a for a in estimate.analysis_passes("09_dictionary_learning", "smoke") if a.model == "sae"]
    assert len(saes) == 3 * (len(cfg.seeds) + 1 + len(cfg.sweep))
    steps, step = [], torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda opt, *a, **k: steps.append(1) or step(opt, *a, **k))
    sae_cfg = replace(dictionary.ORIGINAL, **cfg.sae, progress=False)
    dictionary.fit_sae(torch.randn(cfg.n_fit, 8), sae_cfg)
    assert len(steps) == saes[0].launches == 20 * 16  # 20 epochs of 512 / 32 batches
    assert saes[0].images == len(steps) * sae_cfg.batch_size


@pytest.fixture(scope="module")
def full_estimate():
    """`python -m utils.plan --profile full --estimate --json`, once (about a minute: every model of full's
    plan is built on the meta device), under the default checkpoint policy (conftest sets every epoch)."""
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, redirect_stdout(out):
        mp.delenv(train.CHECKPOINT_EVERY_ENV, raising=False)
        assert plan.main(["--profile", "full", "--estimate", "--json"]) == 0
    return json.loads(out.getvalue())


def test_the_analysis_passes_are_counted_beside_the_training(full_estimate):
    """Under full, each notebook that scores models counts its analysis, and the total is the sum of training
    and analysis minutes; 05 compiles once per model and compile batch size."""
    analysed = {r["notebook"][:2]: r["analysis_minutes"] for r in full_estimate["notebooks"]}
    assert {k for k, v in analysed.items() if v > 0.5} == {"02", "05", "08", "09"}
    assert {k for k, v in analysed.items() if v > 0} == {"02", "03", "04", "05", "08", "09"}
    total = full_estimate["total"]
    assert total["minutes_h200"] == pytest.approx(total["training_minutes"] + total["analysis_minutes"])
    compiles = [a for a in estimate.analysis_passes("05_inference_time", "full") if a.seconds > 0]
    assert len(compiles) == 3 * 2 and all(a.seconds == estimate.rate("COMPILE_S") for a in compiles)


def test_memory_is_counted_from_the_model_run_on_the_meta_device():
    """The activation count behind device memory: every leaf module's output, as a real forward gives it."""
    import torch

    from utils import models

    (run, *_) = plan.notebook_runs("02_adversarial_robustness", "smoke")
    params, trainable, buffers, _, _, act_sum, act_max = estimate._sizes(run, plan.profile_of("smoke"))
    net = models.create_model(run.model, num_classes=10, in_chans=1, img_size=28).eval()
    outputs = []
    for m in net.modules():
        if not any(m.children()):
            m.register_forward_hook(lambda _m, _i, o: outputs.append(o.numel()))
    net(torch.rand(1, 1, 28, 28))
    assert params == sum(p.numel() for p in net.parameters())
    assert (act_sum, act_max) == (sum(outputs), max(outputs))
    cost = estimate.run_cost(run, "smoke")
    cfg = run.recipe_under("smoke").train
    weights = (params + buffers + (1 + estimate.OPTIMIZER_STATES[cfg.optimizer]) * trainable) * 4
    data = (60_000 + 10_000) * 28 * 28  # Fashion-MNIST's uint8 images, both splits
    assert cost["device_bytes"] == weights + cfg.batch_size * act_sum * (2 if cfg.amp else 4) + data


def test_full_fits_the_time_memory_and_disk_budgets(full_estimate):
    """Issue 26's budgets for full, counted at estimate.RATES: 60 minutes on one H200 (training and the
    analysis passes), 64 GB of host RAM, 50 GB of disk, and an H200's 141 GB."""
    total = full_estimate["total"]
    assert total["minutes_h200"] <= 60
    assert total["host_ram_gb"] <= 64 and total["disk_gb"] <= 50 and total["device_gb"] <= 141
