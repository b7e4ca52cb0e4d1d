"""The study's answer in one document, generated from `results/<profile>/<dataset>/` alone.

    python -m utils.report --profile quick [--dataset fashion-mnist]   # -> REPORT.md and REPORT.html there

One section per question: its findings (utils.findings: sentences whose numbers are read from the saved
tables), its key table and its figures; then this run beside the original study's CIFAR-10 numbers, the
environment the tables were made in, and the profile's caveats. A notebook that has not run is named, not
papered over. REPORT.html is self-contained (figures embedded), to open in any browser.
"""

from __future__ import annotations

import argparse
import base64
import html
import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from . import findings, leaderboard
from .data.registry import check_dataset_name
from .files import atomic_write, read_json, results_root
from .profiles import PROFILES, default_profile_name

# (title, notebook, key table (file, columns or None for all), figures)
SECTIONS = [
    ("Accuracy for the cost", "01_vit_finetuning",
     ("summary.csv", ["model", "family", "params", "epochs", "val_top1", "test_top1", "train_min"]),
     ["trio_curves.png", "trio_acc_vs_params.png"]),
    ("Adversarial robustness and transfer", "02_adversarial_robustness", ("compact.csv", None),
     ["curves.png", "transfer.png"]),
    ("Shape vs texture", "03_texture_vs_shape_bias",
     ("shape_bias.csv", ["model", "shape_bias", "shape_acc", "texture_acc", "n"]),
     ["modification_accuracy.png", "shape_bias.png"]),
    ("Feature transfer and similarity", "04_feature_generalizability",
     ("cka_summary.csv", ["pair", "cross", "floor", "ceiling", "gap_closed", "peak"]),
     ["cka_cross.png", "similarity_suite.png", "probes.png", "transfer.png"]),
    ("Cost", "05_inference_time",
     ("cost.csv", ["model", "mode", "params", "flops_per_image", "latency_ms", "best_throughput", "top1",
                   "ece"]),
     ["accuracy_vs_cost.png", "reliability.png"]),
    ("Improving the MLP", "06_improving_mlp",
     ("ablation_summary.csv", ["study", "change", "seeds", "top1_mean", "top1_std", "delta_top1",
                               "delta_top1_se", "within_spread", "robust_mean", "delta_robust", "params",
                               "train_min"]),
     ["ablation_deltas.png", "ladder.png", "depth_gradients.png", "adversarial_training.png"]),
    ("What units respond to", "08_activation_maximization",
     ("recurrence.csv", ["family", "target", "trained", "random_weights", "noise", "blurred", "recurs"]),
     ["class_images.png", "periodicity.png", "tile_shuffle.png"]),
    ("Dictionaries", "09_dictionary_learning",
     ("prediction2.csv", ["pair", "cross", "floor", "ceiling", "gap_closed", "l0", "holds"]),
     ["matching_histograms.png"]),
]
CAVEATS = {
    "smoke": "smoke: a few hundred Fashion-MNIST images and tiny `test_*` models trained for seconds. "
             "Models are near chance; the report shows that every step runs, not what MLPs do.",
    "quick": "quick: CPU-sized members of each family (a 2.3M-parameter bottleneck MLP, a 0.15M-parameter "
             "CNN, a 0.46M-parameter ViT) trained for minutes on Fashion-MNIST (1x28x28, 10 classes), "
             "attacks and analyses on subsets of the test set. Real numbers, but not the paper's models or "
             "CIFAR-10: compare families within this report, and with the original study only in kind.",
    "full": "full: the paper's models on CIFAR-10 (B-12/Wi-1024, ResNet-18, ViT-S/16), sized for one "
            "GPU.",
    "rehearsal": "rehearsal: the full code path on a CPU at toy counts, on synthetic pixels in CIFAR-10's "
                 "files; no number here means anything.",
}


LEADERBOARD_COLUMNS = ["model", "family", "params", "flops_per_image", "clean_top1", "clean_top1_seed1",
                       "pgd10_top1", "autoattack_top1", "shape_bias", "ece", "kappa_mlp", "kappa_cnn",
                       "kappa_vit", "cka_mlp", "cka_cnn", "cka_vit", "clean_top1_aligned",
                       "pgd10_top1_aligned", "shape_bias_aligned"]
# the recipe-aligned control's verdicts in the report's answer: notebook -> {setting: how a sentence names it}
RECIPE_CONTROL = {"01_vit_finetuning": {"clean": "on the clean test set"},
                  "02_adversarial_robustness": {"PGD-10": "under PGD-10"},
                  "03_texture_vs_shape_bias": {"cue conflict": "on the cue-conflict images"}}


def _markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-style table without extra dependencies (numbers to 4 significant digits)."""
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def key_table(folder: Path, file: str, columns: list[str] | None) -> str:
    df = pd.read_csv(folder / file)
    return _markdown_table(df[[c for c in columns if c in df.columns]] if columns else df)


def original_side_by_side(root: Path) -> str | None:
    """This run beside the original study's CIFAR-10 numbers, where both exist."""
    from .references import ORIGINAL_TILE_SHUFFLE_CIFAR10, ORIGINAL_TRANSFER_CIFAR100

    rows = []
    attacks = root / "02_adversarial_robustness" / "original_vs_ours.csv"
    if attacks.exists():
        t = pd.read_csv(attacks)
        ours = [c for c in t.columns if c.startswith("top1_")][0]
        rows += [{"measure": f"{r.attack.upper()} top-1 at eps {r.eps:.4f}", "model": r.model,
                  "original (CIFAR-10)": r.original_top1_cifar10, "this run": r[ours]}
                 for _, r in t.iterrows()]
    tiles = root / "08_activation_maximization" / "tile_shuffle.csv"
    if tiles.exists():
        t = pd.read_csv(tiles)
        mlp = t[t.model == t.model.iloc[0]].set_index("grid")
        if 4 in mlp.index:
            rows.append({"measure": "MLP top-1, original -> 4x4 shuffled tiles", "model": t.model.iloc[0],
                         "original (CIFAR-10)": f"{ORIGINAL_TILE_SHUFFLE_CIFAR10['original']:.3f} -> "
                                                f"{ORIGINAL_TILE_SHUFFLE_CIFAR10['4x4 tiles']:.3f}",
                         "this run": f"{mlp.loc[1, 'top1']:.3f} -> {mlp.loc[4, 'top1']:.3f}"})
    transfer = root / "04_feature_generalizability" / "transfer.csv"
    if transfer.exists():
        t = pd.read_csv(transfer)
        ft = t[(t.method == "fine-tune") & (t.family == "mlp")]
        if len(ft):
            r = ft.loc[ft.per_class.idxmax()]
            rows.append({"measure": "MLP fine-tuned on a new 10-class task", "model": r.model,
                         "original (CIFAR-10)": f"{ORIGINAL_TRANSFER_CIFAR100:.3f} (CIFAR-100 0-9, 1 epoch)",
                         "this run": f"{r.top1:.3f} ({r.target}, {int(r.per_class)} per class)"})
    return _markdown_table(pd.DataFrame(rows)) if rows else None


def environment(root: Path) -> str:
    envs = {}
    for config in sorted(root.glob("*/config.json")):
        env = read_json(config, "a notebook's config")["environment"]
        envs[config.parent.name] = env
    if not envs:
        return "(no notebook has run)"
    rows = [{"notebook": k, "git revision": e.get("git_revision"), "device": e.get("device"),
             "torch": e.get("torch"), "time (UTC)": e.get("time_utc")} for k, e in envs.items()]
    cuda = {e.get("cuda_fp32") for e in envs.values()} - {None}
    precision = ("" if not cuda else "\n\nFloat32 work on CUDA (attacks, features, analyses; training is "
                 f"bf16 autocast): {', '.join(sorted(cuda))} (utils.results.CUDA_FP32_PRECISION).")
    return _markdown_table(pd.DataFrame(rows)) + precision


def full_cost() -> str:
    """The estimate of full's training (counted from the code and configs, not read from results: it is what
    the run was expected to cost; utils/estimate.py)."""
    from . import estimate, plan

    return estimate.caveat(estimate.estimate(plan.plan("full"), "full")[1])


def build(profile: str, dataset: str) -> tuple[str, list[Path]]:
    """(the report as markdown, the figures it links to)."""
    root = results_root() / profile / dataset
    lines = [f"# Zooming in on MLPs: do MLPs trained on images behave like CNNs and ViTs? "
             f"({profile}, {dataset})",
             "", f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python -m utils.report` "
             f"from `{root}`. "
             "Every number is read from a table saved there; the figures are drawn from the same tables.", "",
             "## Caveats", "", CAVEATS.get(profile, profile), ""]
    if profile == "full":
        lines += [full_cost(), ""]
    board = leaderboard.table(root)
    lines += ["## The answer, measure by measure", "",
              "Where the MLP sits beside the CNN and the ViT on each notebook's headline number (95% "
              "intervals: Wilson over the test images, the bootstrap for kappa), from the leaderboard below.",
              ""]
    lines += [f"- {s}" for s in leaderboard.answer(board)] + [""]
    control = [s for nb, settings in RECIPE_CONTROL.items() for s in findings.aligned(root / nb, settings)]
    if control:
        lines += ["Family or recipe? Each family trains with its own recipe; the control trains the trio "
                  "again under one shared recipe (`utils/aligned.py`), and a difference *holds* when its "
                  "interval excludes 0 under both:", ""] + [f"- {s}" for s in control] + [""]
    if len(board):
        shown = board[[c for c in LEADERBOARD_COLUMNS if c in board]]
        lines += ["Leaderboard (`leaderboard.csv`: every column with its `_lo` / `_hi` interval; click a "
                  "header of the HTML report to sort):", "", _markdown_table(shown), ""]
    figures = []
    for i, (title, notebook, (table, columns), figs) in enumerate(SECTIONS, 1):
        folder = root / notebook
        lines += [f"## {i}. {title}", ""]
        if not (folder / "config.json").exists():
            lines += [f"Not run: `{notebook}.ipynb` has no results under this profile yet "
                      f"(`python -m utils.run_notebooks --profile {profile} --only {notebook[:2]}`).", ""]
            continue
        lines += [f"- {s}" for s in findings.sentences(folder)] + [""]
        if (folder / table).exists():
            lines += [f"`{notebook}/{table}`:", "", key_table(folder, table, columns), ""]
        for fig in figs:
            if (folder / fig).exists():
                lines += [f"![{notebook}/{fig}]({notebook}/{fig})", ""]
                figures.append(folder / fig)
    side = original_side_by_side(root)
    lines += ["## Against the original study (CIFAR-10)", "",
              side or "No comparable tables yet.", "",
              "Only the `full` profile (CIFAR-10, the paper's models) is comparable number for number.", "",
              "## Environment", "", environment(root), ""]
    return "\n".join(lines), figures


def to_html(markdown: str, root: Path) -> str:
    """Self-contained HTML: the markdown rendered (mistune, tables), every figure embedded as base64."""
    import mistune

    body = mistune.create_markdown(plugins=["table"])(markdown)

    def embed(match: re.Match) -> str:
        path = root / html.unescape(match.group(1))
        data = base64.b64encode(path.read_bytes()).decode() if path.exists() else ""
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^"]+\.png)"', embed, body)
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.45}"
             "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ccc;padding:2px 6px}"
             "img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>Zooming in on MLPs</title>" \
           f"<style>{style}</style></head><body>{body}<script>{SORT_TABLES}</script></body></html>\n"


# Every table of the HTML report sorts by a column when its header is clicked (numbers as numbers; again:
# descending). A dozen lines of inline script: the report is one self-contained file, opened offline, so a
# table library from a CDN is not an option.
SORT_TABLES = """
document.querySelectorAll('table').forEach(table => {
  table.querySelectorAll('th').forEach((th, col) => {
    th.style.cursor = 'pointer';
    th.addEventListener('click', () => {
      const body = table.tBodies[0], rows = Array.from(body.rows), asc = th.dataset.order !== 'asc';
      const key = r => { const t = r.cells[col].textContent.trim(), v = parseFloat(t);
                         return isNaN(v) ? t : v; };
      rows.sort((a, b) => { const x = key(a), y = key(b);
                            return (x > y ? 1 : x < y ? -1 : 0) * (asc ? 1 : -1); });
      th.dataset.order = asc ? 'asc' : 'desc';
      rows.forEach(r => body.appendChild(r));
    });
  });
});
"""


def write(profile: str, dataset: str | None = None) -> Path:
    """Write REPORT.md and REPORT.html under results/<profile>/<dataset>/; returns the HTML's path."""
    dataset = check_dataset_name(dataset or PROFILES[profile].dataset)  # a folder name, never a path
    root = results_root() / profile / dataset
    root.mkdir(parents=True, exist_ok=True)
    markdown, _ = build(profile, dataset)
    board = leaderboard.table(root)
    atomic_write(root / "leaderboard.csv", lambda p: board.to_csv(p, index=False))
    atomic_write(root / "REPORT.md", lambda p: p.write_text(markdown))
    atomic_write(root / "REPORT.html", lambda p: p.write_text(to_html(markdown, root)))
    return root / "REPORT.html"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=None, help=f"{' | '.join(PROFILES)} (default: full with CUDA, "
                        "else quick)")
    parser.add_argument("--dataset", help="default: the profile's")
    args = parser.parse_args(argv)
    profile = args.profile or default_profile_name()
    if profile not in PROFILES:
        parser.error(f"unknown profile {profile!r}; profiles: {', '.join(PROFILES)}")
    try:
        dataset = check_dataset_name(args.dataset or PROFILES[profile].dataset)
    except ValueError as err:  # one line listing the valid names
        parser.error(str(err))
    path = write(profile, dataset)
    print(f"report: {path.with_suffix('.md')} and {path}")


if __name__ == "__main__":
    main()
