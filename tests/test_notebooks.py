"""Every numbered notebook: committed clean, executes top to bottom under the smoke profile, and leaves its
key tables with the expected columns and one row per model x setting."""

import json
from pathlib import Path

import pandas as pd
import pytest

from utils import profiles, run_notebooks

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = [p.name for p in run_notebooks.find_notebooks(ROOT)]
TRIO = profiles.PROFILES["smoke"].trio

# notebook -> {table: (columns it must have, the columns that identify a row, the column naming the model)}
KEY_TABLES = {
    "01_vit_finetuning": {
        "summary.csv": ({"run", "model", "family", "params", "val_top1", "test_top1", "test_top5", "train_min"},
                        ["run"], "model"),
        "histories.csv": ({"run", "epoch", "train_loss", "val_top1"}, ["run", "epoch"], "run"),
        "lr_sweep.csv": ({"run", "lr", "val_top1", "test_top1"}, ["run"], None),
        "batch_sweep.csv": ({"run", "batch_size", "lr", "val_top1"}, ["run"], None),
        "tnt_sweep.csv": ({"run", "model", "patch", "pixel", "words_per_patch", "params", "val_top1",
                           "test_top1", "images_per_s"}, ["run"], None),
        "perceiver_ladder.csv": ({"run", "rung", "latent_dim", "setting", "params", "val_top1", "test_top1",
                                  "change_vs_rung", "dataset", "source"}, ["run"], None),
    },
    "02_adversarial_robustness": {
        "curves.csv": ({"model", "attack", "eps", "top1", "top5", "n"}, ["model", "attack", "eps"], "model"),
        "standard_settings.csv": ({"model", "setting", "eps", "top1"}, ["model", "setting"], "model"),
        "autoattack.csv": ({"model", "stage", "attack", "top1"}, ["model", "stage"], "model"),
        "transfer.csv": ({"source", "target", "setting", "transfer_rate"}, ["source", "target", "setting"],
                         "source"),
    },
    "03_texture_vs_shape_bias": {
        "modification_accuracy.csv": ({"modification", "model", "top1", "n"}, ["modification", "model"],
                                      "model"),
        "modification_accuracy_per_class.csv": ({"modification", "model", "class_index", "class", "top1"},
                                                ["modification", "model", "class_index"], "model"),
        "shape_bias.csv": ({"model", "shape_bias", "shape_acc", "texture_acc"}, ["model"], "model"),
    },
    "05_inference_time": {
        "cost.csv": ({"model", "mode", "params", "flops_per_image", "latency_ms", "best_throughput", "top1",
                      "ece", "on_front"}, ["model", "mode"], "model"),
        "throughput.csv": ({"model", "mode", "batch_size", "latency_ms", "throughput"},
                           ["model", "mode", "batch_size"], "model"),
        "reliability.csv": ({"model", "bin_lo", "count", "accuracy"}, ["model", "bin_lo"], "model"),
    },
    "08_activation_maximization": {
        "periodicity.csv": ({"target", "model", "kind", "periodicity_mean"}, ["target", "model", "kind"],
                            None),
        "recurrence.csv": ({"family", "target", "trained", "random_weights", "noise", "recurs"},
                           ["family", "target"], "model"),
        "tile_shuffle.csv": ({"model", "grid", "top1", "drop"}, ["model", "grid"], "model"),
        "inversion.csv": ({"model", "kind", "layer", "relative_depth", "image", "feature_distance",
                           "pixel_error"}, ["model", "kind", "image"], "model"),
    },
    "09_dictionary_learning": {
        "sae_metrics.csv": ({"model", "network", "seed", "l0", "fve", "dead_fraction", "accuracy_kept"},
                            ["model", "network", "seed"], "model"),
        "matching.csv": ({"source", "target", "kind", "mean"}, ["source", "target", "kind"], None),
        "prediction2.csv": ({"pair", "cross", "ceiling", "floor", "gap_closed", "holds"}, ["pair"], None),
        "steering.csv": ({"model", "feature", "feature_class", "value", "raw_value", "class_index", "share"},
                         ["model", "feature", "value", "class_index"], "model"),
        "steering_majority.csv": ({"model", "feature", "feature_class", "majority", "majority_positive",
                                   "share_at_0"}, ["model", "feature"], "model"),
    },
}


if NOTEBOOKS:

    @pytest.mark.parametrize("name", NOTEBOOKS)
    def test_notebook_is_committed_clean(name):
        cells = json.loads((ROOT / name).read_text())["cells"]
        assert not any(c.get("outputs") for c in cells if c["cell_type"] == "code"), "strip outputs"
        params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(params) == 1 and "profile" in "".join(params[0]["source"])

    @pytest.mark.parametrize("name", NOTEBOOKS)
    def test_notebook_runs_under_smoke(name, tmp_path, monkeypatch):
        monkeypatch.setenv("MLPZOOM_RESULTS", str(tmp_path / "results"))
        monkeypatch.setenv("MLPZOOM_CHECKPOINTS", str(tmp_path / "checkpoints"))
        (result,) = run_notebooks.run("smoke", only=[name[:2]], root=ROOT)
        assert result.ok, result
        out = tmp_path / "results" / "smoke" / "fashion-mnist" / Path(name).stem
        assert (out / "config.json").exists() and not out.with_name(out.name + ".running").exists()
        for table, (columns, keys, model_column) in KEY_TABLES.get(Path(name).stem, {}).items():
            df = pd.read_csv(out / table)
            assert columns <= set(df.columns), f"{table}: missing {columns - set(df.columns)}"
            assert len(df) > 0 and not df.duplicated(keys).any(), f"{table}: more than one row per {keys}"
            if model_column == "model" and "model" in df:
                assert set(df.model) == set(TRIO), f"{table}: models {set(df.model)}"
