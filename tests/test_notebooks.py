"""Every numbered notebook: committed clean, executes top to bottom under the smoke profile, and leaves its
key tables with the expected columns and one row per model x setting."""

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from once import once

from utils import plan, profiles, recipes, run_notebooks, store
from utils.experiments import zoo

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = [p.name for p in run_notebooks.find_notebooks(ROOT)]
TRIO = profiles.PROFILES["smoke"].trio
TWINS = recipes.seed_twins(TRIO, "smoke", zoo.config("smoke").ceiling_seed)
TOUCHED = "02_adversarial_robustness/transfer.csv"  # 07 must redraw its figure (its test makes it newer)

# notebook -> {table: (columns it must have, the columns that identify a row, the column naming the model)}
KEY_TABLES = {
    "01_vit_finetuning": {
        "summary.csv": ({"run", "model", "family", "params", "val_top1", "test_top1", "test_top5",
                         "train_min"},
                        ["run"], "model"),
        "histories.csv": ({"run", "epoch", "train_loss", "val_top1"}, ["run", "epoch"], "run"),
        "predictions.csv": ({"model", "setting", "image", "label", "pred", "correct"}, ["model", "image"],
                            "model+twins"),
        "error_consistency.csv": ({"setting", "model_a", "model_b", "n", "kappa", "kappa_lo", "kappa_hi"},
                                  ["setting", "model_a", "model_b"], None),
        "aligned_differences.csv": ({"setting", "metric", "reference", "other", "own", "own_lo", "own_hi",
                                     "aligned", "aligned_lo", "aligned_hi", "n_seeds", "verdict"},
                                    ["setting", "other"], None),
        "aligned_consistency.csv": ({"setting", "model_a", "model_b", "kind", "kappa", "kappa_lo", "kappa_hi",
                                     "n_pairs"}, ["setting", "model_a", "model_b"], None),
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
        "predictions.csv": ({"model", "setting", "image", "label", "pred", "correct"},
                            ["model", "setting", "image"], "model+twins"),
        "error_consistency.csv": ({"setting", "model_a", "model_b", "n", "kappa", "kappa_lo", "kappa_hi"},
                                  ["setting", "model_a", "model_b"], None),
        "aligned_differences.csv": ({"setting", "metric", "reference", "other", "own", "own_lo", "own_hi",
                                     "aligned", "aligned_lo", "aligned_hi", "n_seeds", "verdict"},
                                    ["setting", "other"], None),
        "aligned_consistency.csv": ({"setting", "model_a", "model_b", "kind", "kappa", "kappa_lo", "kappa_hi",
                                     "n_pairs"}, ["setting", "model_a", "model_b"], None),
        "transfer.csv": ({"source", "target", "setting", "transfer_rate"}, ["source", "target", "setting"],
                         "source"),
    },
    "03_texture_vs_shape_bias": {
        "modification_accuracy.csv": ({"modification", "model", "top1", "n"}, ["modification", "model"],
                                      "model"),
        "modification_accuracy_per_class.csv": ({"modification", "model", "class_index", "class", "top1"},
                                                ["modification", "model", "class_index"], "model"),
        "shape_bias.csv": ({"model", "shape_bias", "shape_acc", "texture_acc"}, ["model"], "model"),
        "predictions.csv": ({"model", "setting", "image", "label", "pred", "correct"},
                            ["model", "setting", "image"], "model+twins"),
        "error_consistency.csv": ({"setting", "model_a", "model_b", "n", "kappa", "kappa_lo", "kappa_hi"},
                                  ["setting", "model_a", "model_b"], None),
        "aligned_differences.csv": ({"setting", "metric", "reference", "other", "own", "own_lo", "own_hi",
                                     "aligned", "aligned_lo", "aligned_hi", "n_seeds", "verdict"},
                                    ["setting", "other"], None),
        "aligned_consistency.csv": ({"setting", "model_a", "model_b", "kind", "kappa", "kappa_lo", "kappa_hi",
                                     "n_pairs"}, ["setting", "model_a", "model_b"], None),
    },
    "04_feature_generalizability": {
        "aligned_similarity.csv": ({"model_a", "model_b", "kind", "value", "lo", "hi", "n_pairs"},
                                   ["model_a", "model_b"], None),
        "similarity_summary.csv": ({"measure", "pair", "cross", "ceiling", "floor", "gap_closed", "null_q95",
                                    "above_null"}, ["measure", "pair"], None),
        "similarity_agreement.csv": ({"measure_a", "measure_b", "pairs", "spearman", "same_order"},
                                     ["measure_a", "measure_b"], None),
    },
    "05_inference_time": {
        "cost.csv": ({"model", "mode", "params", "flops_per_image", "latency_ms", "best_throughput", "top1",
                      "ece", "on_front"}, ["model", "mode"], "model"),
        "throughput.csv": ({"model", "mode", "batch_size", "latency_ms", "throughput"},
                           ["model", "mode", "batch_size"], "model"),
        "reliability.csv": ({"model", "bin_lo", "count", "accuracy"}, ["model", "bin_lo"], "model"),
    },
    "06_improving_mlp": {
        "ablations.csv": ({"study", "ablation", "change", "model", "run", "seed", "params", "val_top1",
                           "test_top1", "robust_top1", "train_min", "train_images", "epochs", "steps"},
                          ["study", "ablation", "seed"], None),
        "ablation_summary.csv": ({"study", "change", "seeds", "top1_mean", "top1_std", "delta_top1",
                                  "delta_top1_se", "within_spread", "robust_mean", "delta_robust", "params"},
                                 ["study", "ablation"], None),
        "gradients.csv": ({"ablation", "step", "layer", "depth", "grad_norm"}, ["ablation", "step", "depth"],
                          None),
        "adversarial.csv": ({"model", "ablation", "method", "train_eps", "test_top1", "robust_top1"},
                            ["model", "ablation", "seed"], None),
        "autoattack.csv": ({"run", "stage", "attack", "top1", "pgd_top1"}, ["run", "stage"], None),
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

    @pytest.fixture(scope="session")
    def smoke_dirs(shared_tmp):
        """One results and one checkpoints folder for every notebook of the session (and every pytest-xdist
        worker): later notebooks load the models 01 trained (as `make reproduce` does), and 07 finds every
        notebook's tables. 04's and 06's runs are trained ahead by the plan (README: plan + notebooks on one
        box) in this process (workers=0: the local workers' jobs are tests/test_plan.py's; here they cost a
        process start per wave and worker, 75 s alone and 200-270 s beside the other test worker for 60 s
        of training), so those two notebooks must train nothing
        (test_the_plan_is_what_the_notebooks_asked_for)."""
        dirs = shared_tmp / "smoke" / "results", shared_tmp / "smoke" / "checkpoints"

        def train_ahead():
            with smoke_env(dirs):
                return plan.train_ahead("smoke", ["04", "06"], workers=0)

        done = once(dirs[0].parent, "plan", train_ahead)
        assert len(done) and (done.outcome == "stored").all()
        return dirs

    @contextmanager
    def smoke_env(dirs):
        with pytest.MonkeyPatch.context() as env:
            env.setenv("MLPZOOM_RESULTS", str(dirs[0]))
            env.setenv("MLPZOOM_CHECKPOINTS", str(dirs[1]))
            yield

    def smoke_run(name: str, dirs) -> run_notebooks.Executed:
        """The notebook's smoke run, once per session, in whichever worker asks first. 07 runs after every
        other notebook, with one figure of each notebook deleted and one table made newer than its figures:
        it must draw exactly those again, from the tables alone, byte for byte, and leave the rest (up to
        date). It returns the notebooks' figures' digests and the figures made stale beside its result."""
        def work():
            if not name.startswith("07"):
                with smoke_env(dirs):
                    return run_notebooks.run("smoke", only=[name[:2]], root=ROOT, stream=False)[0]
            for other in NOTEBOOKS:
                if not other.startswith("07"):
                    smoke_run(other, dirs)
            root = dirs[0] / "smoke" / "fashion-mnist"
            drawn = {str(png.relative_to(root)): digest(png) for png in root.rglob("*.png")}
            deleted = [min(d.glob("*.png")) for d in root.iterdir() if d.is_dir() and any(d.glob("*.png"))]
            for png in deleted:
                png.unlink()
            os.utime(root / TOUCHED)
            with smoke_env(dirs):
                result = run_notebooks.run("smoke", only=["07"], root=ROOT, stream=False)[0]
            return result, drawn, {str(png.relative_to(root)) for png in deleted}
        return once(dirs[0].parent, Path(name).stem, work)

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    @pytest.mark.parametrize("name", NOTEBOOKS)
    def test_notebook_runs_under_smoke(name, smoke_dirs):
        result = smoke_run(name, smoke_dirs)
        result = result[0] if name.startswith("07") else result
        assert result.ok, result
        out = smoke_dirs[0] / "smoke" / "fashion-mnist" / Path(name).stem
        if out.name == "07_plots":  # it writes beside the notebooks' folders: the manifest and the report
            assert (out.parent / "figures.json").exists() and (out.parent / "REPORT.html").exists()
            return
        assert (out / "config.json").exists() and not out.with_name(out.name + ".running").exists()
        for table, (columns, keys, model_column) in KEY_TABLES.get(Path(name).stem, {}).items():
            df = pd.read_csv(out / table)
            assert columns <= set(df.columns), f"{table}: missing {columns - set(df.columns)}"
            assert len(df) > 0 and not df.duplicated(keys).any(), f"{table}: more than one row per {keys}"
            if model_column == "model" and "model" in df:
                assert set(df.model) == set(TRIO), f"{table}: models {set(df.model)}"
            if model_column == "model+twins":  # and each from a second seed: the error-consistency ceiling,
                # and the aligned control's runs, every seed at the one lr chosen on validation
                control = {m for m in df.model if "@aligned-" in m}
                assert control in [set(recipes.aligned_runs(TRIO, "smoke", lr))
                                   for lr in recipes.ALIGNED["smoke"].lrs], f"{table}: {control}"
                assert set(df.model) - control == {*TRIO, *(t for t, _ in TWINS.values())}, table

    def every_smoke_run(dirs) -> None:
        for name in NOTEBOOKS:
            smoke_run(name, dirs)

    def test_07_redraws_the_stale_figures_from_the_tables_alone(smoke_dirs):
        """07 draws again each figure whose PNG was deleted or whose table changed, byte for byte as its
        notebook drew it, and leaves every other figure as it was."""
        result, before, deleted = smoke_run("07_plots.ipynb", smoke_dirs)
        assert result.ok, result
        root = smoke_dirs[0] / "smoke" / "fashion-mnist"
        manifest = json.loads((root / "figures.json").read_text())
        status = {m["figure"]: m["status"] for m in manifest}
        stale = set(deleted) | {m["figure"] for m in manifest if TOUCHED in m["tables"]}
        assert len(deleted) == len(NOTEBOOKS) - 1 and len(stale) == len(deleted) + 1
        drawn = {f for f, s in status.items() if s == "drawn"}
        # and little else: a table a notebook rewrites after drawing from it makes that figure stale too
        # (08 adds the unit images to images.npz after its class figures), redrawn to the same bytes
        assert stale <= drawn and len(drawn - stale) <= 2, (drawn - stale, stale - drawn)
        assert sum(s == "up to date" for s in status.values()) >= 25
        for m in manifest:  # every table a figure names is a file 07 found
            assert m["status"].startswith("skipped") or all((root / t).exists() for t in m["tables"]), m
        assert len(before) >= 30 and set(before) <= {f for f, s in status.items() if not s.startswith("skip")}
        changed = [f for f, sha in before.items() if digest(root / f) != sha]
        assert not changed, f"figures not byte-identical when 07 redraws them: {changed}"

    def test_the_report_states_the_tables_numbers_and_embeds_every_figure(smoke_dirs, monkeypatch):
        from html.parser import HTMLParser

        from utils import report

        every_smoke_run(smoke_dirs)
        monkeypatch.setenv("MLPZOOM_RESULTS", str(smoke_dirs[0]))
        root = smoke_dirs[0] / "smoke" / "fashion-mnist"
        html_path = report.write("smoke")
        markdown = (root / "REPORT.md").read_text()

        class Images(HTMLParser):
            sources: list = []

            def handle_starttag(self, tag, attrs):
                if tag == "img":
                    self.sources.append(dict(attrs)["src"])

        parser = Images()
        parser.feed(html_path.read_text())
        linked = markdown.count("![")
        assert linked >= 10 and len(parser.sources) == linked
        assert all(src.startswith("data:image/png;base64,") and len(src) > 1000 for src in parser.sources)
        for notebook in [p.stem for p in map(Path, NOTEBOOKS) if p.stem != "07_plots"]:
            assert (root / notebook / "config.json").exists()
            assert f"`{notebook}.ipynb` has no results" not in markdown
        table = root / "02_adversarial_robustness" / "standard_settings.csv"
        df = pd.read_csv(table)
        row = (df.setting == "PGD-10") & (df.model == TRIO[0])
        df.loc[row, "top1"] = 0.123456
        df.to_csv(table, index=False)
        report.write("smoke")
        markdown = (root / "REPORT.md").read_text()
        assert f"{TRIO[0]} 0.123" in markdown  # the sentence follows the table, and the leaderboard
        board = pd.read_csv(root / "leaderboard.csv").set_index("model")
        assert list(board.index) == TRIO and board.pgd10_top1[TRIO[0]] == 0.123456
        answer = markdown.split("## The answer, measure by measure")[1].split("## 1.")[0]
        assert "Top-1 under PGD-10 (L-inf 8/255): the MLP sits" in answer and "MLP 0.123 [" in answer
        assert "th.addEventListener('click'" in html_path.read_text()  # the tables sort

    def test_the_plan_is_what_the_notebooks_asked_for(smoke_dirs, monkeypatch):
        """Every notebook asked the store for exactly the runs the plan lists for it (the store's request
        log), nothing waits any more, and 04 and 06, trained ahead by the plan, trained nothing themselves."""
        monkeypatch.setenv("MLPZOOM_CHECKPOINTS", str(smoke_dirs[1]))
        asked = store.requests("smoke")
        planned = plan.plan("smoke")
        assert not [r.name for r in planned if r.waits_for]
        for notebook in [Path(n).stem for n in NOTEBOOKS]:
            mine = asked[asked.notebook == notebook]
            listed = {(r.dataset, r.name) for r in planned if r.notebook == notebook}
            assert set(zip(mine.dataset, mine.run, strict=True)) == listed, notebook
        ahead = asked[asked.notebook.isin(["04_feature_generalizability", "06_improving_mlp"])]
        assert len(ahead) > 100 and not ahead.trained.any()
        assert asked[asked.notebook == "plan"].trained.sum() == len(  # a twin is linked, not trained
            {r.trained_as("smoke") for r in planned if r.notebook[:2] in ("04", "06")})
