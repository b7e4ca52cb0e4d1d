"""utils.profiles and utils.results: valid names everywhere, folders, saved config and environment."""

import json
import re
import subprocess
import sys

import pandas as pd
import pytest
import torch

from utils import data, models, profiles, report, results


@pytest.mark.parametrize("name", list(profiles.PROFILES))
def test_profiles_name_registered_things(name):
    p = profiles.PROFILES[name]
    assert p.dataset in data.list_datasets()
    assert [models.family(m) for m in p.trio] == ["mlp", "cnn", "vit"]
    assert p.batch_size > 0 and p.eval_batch_size > 0 and p.epochs > 0


def test_profile_defaults_and_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert profiles.default_profile_name() == "quick" and profiles.get_profile().name == "quick"
    assert profiles.get_profile("smoke").models["mlp"] == "test_mlp"
    with pytest.raises(KeyError, match="smoke, quick, full"):
        profiles.get_profile("medium")
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        profiles.get_profile("full")


def test_results_folders_follow_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPZOOM_RESULTS", str(tmp_path / "r"))
    monkeypatch.setenv("MLPZOOM_CHECKPOINTS", str(tmp_path / "c"))
    out = results.results_dir("smoke", "fashion-mnist", "02_adversarial_robustness")
    assert out == tmp_path / "r" / "smoke" / "fashion-mnist" / "02_adversarial_robustness" and out.is_dir()
    assert results.checkpoints_root() == tmp_path / "c"


def test_save_config_and_table(tmp_path):
    results.save_config(tmp_path, {"eps": [0, 0.5]})
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["config"] == {"eps": [0, 0.5]}
    assert saved["environment"]["torch"] == torch.__version__ and saved["environment"]["git_revision"]
    df = pd.DataFrame({"model": ["a", "b"], "top1": [0.5, 0.25]})
    results.save_table(df, tmp_path / "t.csv")
    assert pd.read_csv(tmp_path / "t.csv").equals(df)
    paths = results.save_tables({"a": df, "b": df.head(1)}, tmp_path)
    assert [p.name for p in paths] == ["a.csv", "b.csv"] and len(pd.read_csv(tmp_path / "b.csv")) == 1


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("good")

    def broken(p):
        p.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        results.atomic_write(path, broken)
    assert path.read_text() == "good" and list(tmp_path.iterdir()) == [path]


def test_start_saves_the_typed_configs_fields_flat_beside_the_given_values(tmp_path, monkeypatch):
    from utils.experiments import attacks

    monkeypatch.setenv("MLPZOOM_RESULTS", str(tmp_path))
    cfg = attacks.config("smoke", n_images=3)
    run = results.start("99_test", "smoke", cfg=cfg, seed=1)
    assert run.cfg["n_images"] == 3 and run.cfg["seed"] == 1 and run.p is profiles.PROFILES["smoke"]
    saved = json.loads((run.out / "config.json").read_text())["config"]
    assert saved["n_images"] == 3 and saved["batch_size"] == 32 and saved["seed"] == 1
    assert saved["models"] == run.models and saved["profile"] == "smoke"


def test_a_failed_run_leaves_the_last_complete_results_together(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPZOOM_RESULTS", str(tmp_path))
    good = results.start("99_test", "smoke", seed=1)
    results.save_table(pd.DataFrame({"x": [1]}), good.out / "table.csv")
    final = good.finish()
    assert final == tmp_path / "smoke" / "fashion-mnist" / "99_test" and (final / "table.csv").exists()
    failing = results.start("99_test", "smoke", seed=2)  # fails before finish(): never swapped in
    results.save_table(pd.DataFrame({"x": [2]}), failing.out / "table.csv")
    assert json.loads((final / "config.json").read_text())["config"]["seed"] == 1
    assert pd.read_csv(final / "table.csv").x.tolist() == [1]
    again = results.start("99_test", "smoke", seed=3)  # the next run starts clean
    assert list(again.out.iterdir()) == [again.out / "config.json"]
    again.finish()
    assert json.loads((final / "config.json").read_text())["config"]["seed"] == 3
    assert not (final / "table.csv").exists()  # a folder holds one run's files, never a mix


_HOLDER = """
import sys, pandas as pd
from utils import results
run = results.start("99_test", "smoke", seed=1)
results.save_table(pd.DataFrame({"x": [1]}), run.out / "table.csv")
print("ready", flush=True); sys.stdin.readline()
run.finish()
print("finished", flush=True); sys.stdin.readline()
results.start("99_test", "smoke", seed=2)
print("ready", flush=True); sys.stdin.readline()
"""


def test_one_notebook_runs_in_one_process_at_a_time_and_a_killed_run_never_blocks(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPZOOM_RESULTS", str(tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER], cwd=results.REPO, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    say = lambda: (holder.stdin.write("\n"), holder.stdin.flush())  # noqa: E731
    said = lambda word: next(line for line in holder.stdout if line.strip() == word)  # noqa: E731
    try:
        said("ready")
        running = tmp_path / "smoke" / "fashion-mnist" / "99_test.running"
        busy = (rf"99_test \(smoke, fashion-mnist\) is being run by process {holder.pid} "
                rf"\(lock {tmp_path}/smoke/fashion-mnist/\.99_test\.lock\); wait for it to finish or stop it")
        with pytest.raises(results.NotebookBusy, match=busy):
            results.start("99_test", "smoke", seed=9)
        assert pd.read_csv(running / "table.csv").x.tolist() == [1]  # the first run's work is untouched
        say()
        said("finished")  # finish() released the lock: we may run it
        results.start("99_test", "smoke", seed=3).finish()
        say()
        said("ready")  # it holds the lock again ...
        holder.kill()  # ... and dies without finishing: the OS drops its lock
        holder.wait(10)
        again = results.start("99_test", "smoke", seed=4)
        assert json.loads((again.out / "config.json").read_text())["config"]["seed"] == 4
    finally:
        holder.kill()
        holder.wait(10)


def test_dataset_names_never_become_paths(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLPZOOM_RESULTS", str(tmp_path / "results"))
    valid = "datasets: cifar10, cifar100, fashion-mnist, .*optionally with classes as <name>\\[0-4\\]"
    for bad in ("../../x", "fashion-mnist/../../x", "fashion-mnist[0-4]/..", "nope"):
        with pytest.raises(ValueError, match=f"unknown dataset '{re.escape(bad)}'; {valid}"):
            results.start("99_test", "smoke", dataset=bad)
        with pytest.raises(ValueError, match="unknown dataset"):
            results.results_dir("smoke", bad, "99_test")
        with pytest.raises(ValueError, match="unknown dataset"):
            report.write("smoke", bad)
        with pytest.raises(SystemExit) as exit_:
            report.main(["--profile", "smoke", "--dataset", bad])
        assert exit_.value.code == 2 and f"unknown dataset '{bad}'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written anywhere
    out = results.results_dir("smoke", "fashion-mnist[0-4]", "99_test")  # a class selection is a name
    assert out == tmp_path / "results" / "smoke" / "fashion-mnist[0-4]" / "99_test"


def test_one_cuda_float32_precision_for_every_notebook():
    """TF32 for float32 matmuls as for convolutions (issue 26), set by every notebook's results.start."""
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    try:
        matmul.fp32_precision = "ieee"
        results.set_cuda_fp32_precision()
        assert matmul.fp32_precision == torch.backends.cudnn.conv.fp32_precision == "tf32"
        assert results.environment()["cuda_fp32"] is None  # no CUDA here: nothing to state
    finally:
        matmul.fp32_precision = before
