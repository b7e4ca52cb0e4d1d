"""How figures look, where they go, and the figure registry that lets 07 redraw every figure from results/.

    @figure("01_vit_finetuning", "trio_curves.png", "histories.csv")
    def _trio_curves(t, cfg): return learning_curves(t["histories.csv"], title=...)

    draw(run.out, "trio_curves.png")     # a notebook: read the saved tables, draw, save the PNG beside them
    render(folder, "trio_curves.png")    # the Figure only (tests)
    redraw(results/<profile>/<dataset>)  # 07: every registered figure whose tables exist and changed

A figure is a function of the tables a notebook saved (CSV -> DataFrame, NPZ -> dict of arrays, JSON ->
dict) and of that notebook's config.json, nothing else, so a figure drawn in a notebook and one redrawn by
07 are the same drawing of the same numbers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FixedLocator, MaxNLocator, NullFormatter, NullLocator

from ..files import atomic_write, read_json
from ..registry import Registry

FAMILY_COLORS = {"mlp": "tab:blue", "cnn": "tab:orange", "vit": "tab:green", "mixer": "tab:purple",
                 "perceiver": "tab:brown"}
# Column names -> axis labels a reader understands.
LABELS = {"top1": "top-1 accuracy", "top5": "top-5 accuracy", "params": "parameters", "epoch": "epoch",
          "lr": "peak learning rate", "batch_size": "batch size", "train_min": "training time (min)",
          "images_per_s": "training images/s", "eps": "eps (pixels in [0, 1])",
          "val_top1": "validation top-1", "test_top1": "test top-1",
          "flops_per_image": "FLOPs per image (multiply-add = 2)", "best_throughput": "throughput (images/s)"}


def label(column: str) -> str:
    return LABELS.get(column, column.replace("_", " "))


def family_of(model: str) -> str | None:
    """The registered family of a model or run name ("mlp_b4_wi256@lr0.002" -> "mlp"); None if unknown."""
    from .. import models  # the registry (timm is imported with it): only when a figure is drawn

    name = str(model).split("@", 1)[0]
    return models.family(name) if name in models.list_models() else None


def color(model: str) -> str:
    """The family's colour for a model or run name (grey for anything else, e.g. a control)."""
    return FAMILY_COLORS.get(family_of(model), "tab:gray")


def save(fig: plt.Figure, path: str | Path, dpi: int = 150) -> Path:
    """Write `fig` as PNG (atomically, no timestamp: the same figure gives the same bytes)."""
    write = lambda p: fig.savefig(p, dpi=dpi, bbox_inches="tight", format="png", metadata={"Software": None})
    return atomic_write(Path(path), write)


def log_ticks(ax, values: Sequence[float], axis: str = "x", fmt: Callable[[float], str] | None = None
              ) -> None:
    """Ticks exactly at `values` on a log axis, labelled with them, no minor labels (they overlap). Values
    within 10% of the previous tick share its tick (their labels would print over each other)."""
    kept: list[float] = []
    for v in sorted(set(float(v) for v in values)):
        if not kept or v > kept[-1] * 1.1:
            kept.append(v)
    values = kept
    fmt = fmt or (lambda v: f"{v:g}")
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(FixedLocator(values))
    target.set_ticklabels([fmt(v) for v in values])
    target.set_minor_locator(NullLocator())
    target.set_minor_formatter(NullFormatter())


def compact_number(v: float) -> str:
    """1500 -> 1.5k, 2310000 -> 2.31M."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:g}"


def integer_axis(ax, axis: str = "x") -> None:
    """Whole-number ticks only (epochs, steps, grid sizes)."""
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))


def grouped_bars(ax, table: pd.DataFrame, labels: Sequence[str], chance: float | None = None,
                 colors: Sequence[str] | None = None, ylim=(0, 1)) -> None:
    """table: rows = groups along x, columns = series (models), one bar per cell."""
    width = 0.8 / max(len(table.columns), 1)
    for k, col in enumerate(table.columns):
        c = colors[k] if colors is not None else color(col)
        ax.bar(np.arange(len(table)) + (k - (len(table.columns) - 1) / 2) * width, table[col], width,
               label=str(col), color=c)
    if chance is not None:
        ax.axhline(chance, color="k", ls=":", lw=1, label="chance")
    ax.set_xticks(np.arange(len(table)), labels, rotation=45 if len(table) > 4 else 0,
                  ha="right" if len(table) > 4 else "center")
    ax.set_ylim(*ylim)


def annotated_heatmap(ax, grid: pd.DataFrame, vmin=0.0, vmax=1.0, cmap="viridis", fmt="{:.2f}",
                      xlabel: str = "", ylabel: str = "", title: str = "", rotate: int = 20):
    """A matrix with its values written in the cells and its index/columns as tick labels."""
    values = grid.to_numpy(dtype=float)
    im = ax.imshow(values, vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            shade = (v - vmin) / (vmax - vmin) if vmax > vmin else 0.5
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7,
                    color="w" if shade < 0.6 else "k")
    ax.set_xticks(range(len(grid.columns)), [str(c) for c in grid.columns], rotation=rotate,
                  ha="right" if rotate else "center", fontsize=7)
    ax.set_yticks(range(len(grid.index)), [str(i) for i in grid.index], fontsize=7)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    return im


def image_grid(rows: dict[str, np.ndarray], titles: Sequence[str], size: float = 1.0,
               title: str = "") -> plt.Figure:
    """rows: label -> (K, C, H, W) in [0, 1], one row of K images each (grey or RGB)."""
    n_cols = max(len(titles), 1)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(size * n_cols + 1, size * len(rows) + 0.3),
                             squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([]), ax.set_yticks([])
            if c < len(images):
                ax.imshow(to_hwc(images[c]), cmap="gray", vmin=0, vmax=1)
            ax.set_title(titles[c] if r == 0 and c < len(titles) else "", fontsize=7)
        axes[r, 0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def to_hwc(image: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 or [0, 1] floats -> (H, W) for grey, (H, W, 3) for RGB, in [0, 1]."""
    image = np.asarray(image)
    image = image / 255.0 if image.dtype == np.uint8 else np.clip(image.astype(float), 0, 1)
    return image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)


def model_order(cfg: dict, present: Sequence[str]) -> list[str]:
    """The notebook's models in its order (config.json), then any other name present."""
    listed = [m for m in cfg.get("models", []) if m in set(present)]
    return listed + [m for m in dict.fromkeys(present) if m not in listed]


# ---------------------------------------------------------------- the figure registry


@dataclass(frozen=True)
class FigureSpec:
    notebook: str  # the notebook whose results folder holds the tables and the figure
    file: str  # the PNG's name in that folder
    tables: tuple[str, ...]  # the files it is drawn from (CSV, NPZ, JSON), all required
    fn: Callable[[dict, dict], plt.Figure]  # fn(tables by file name, the notebook's config) -> Figure


FIGURES: Registry[FigureSpec] = Registry("figure")


def figure(notebook: str, file: str, *tables: str) -> Callable:
    """Register `fn(tables, cfg) -> Figure` as the drawing of `file` in `notebook`'s results."""
    def wrap(fn):
        FIGURES.add(f"{notebook}/{file}", FigureSpec(notebook, file, tables, fn))
        return fn
    return wrap


def load_file(path: Path):
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as blob:
            return {k: blob[k] for k in blob.files}
    if path.suffix == ".json":
        return read_json(path)
    raise ValueError(f"{path}: figures are drawn from .csv, .npz or .json files")


def notebook_of(folder: Path) -> str:
    return Path(folder).name.removesuffix(".running")


def spec_for(folder: Path, file: str) -> FigureSpec:
    return FIGURES[f"{notebook_of(folder)}/{file}"]


def missing_tables(folder: Path, spec: FigureSpec) -> list[str]:
    return [t for t in spec.tables if not (Path(folder) / t).exists()]


def render(folder: str | Path, file: str) -> plt.Figure:
    """The registered figure `file` of the notebook whose results are in `folder`, drawn from its tables."""
    folder = Path(folder)
    spec = spec_for(folder, file)
    missing = missing_tables(folder, spec)
    if missing:
        raise FileNotFoundError(f"{file}: {', '.join(missing)} missing in {folder}; "
                                f"run {spec.notebook} first")
    cfg = read_json(folder / "config.json", "a notebook's config")["config"]
    return spec.fn({t: load_file(folder / t) for t in spec.tables}, cfg)


def draw(folder: str | Path, *files: str) -> list[Path]:
    """render() and save each PNG beside the tables (the notebook shows them inline); returns the paths."""
    return [save(render(folder, file), Path(folder) / file) for file in files]


def stale(folder: Path, spec: FigureSpec) -> bool:
    """Whether the figure's PNG is missing or older than any of its inputs: its tables, the notebook's
    config.json, and the plotting code (any module of this package: a figure's function calls shared ones)."""
    png = Path(folder) / spec.file
    if not png.exists():
        return True
    inputs = [Path(folder) / t for t in spec.tables] + [Path(folder) / "config.json",
                                                          *Path(__file__).parent.glob("*.py")]
    return png.stat().st_mtime_ns < max(p.stat().st_mtime_ns for p in inputs)


def redraw(root: str | Path, close: bool = True, force: bool = False) -> pd.DataFrame:
    """Every registered figure under `root` (= <results>/<profile>/<dataset>) that is stale (its PNG missing
    or older than its tables, config or plotting code; every figure with `force`), from the saved tables
    alone: one manifest row per figure (notebook, figure, tables, status: drawn, up to date, skipped). A
    figure whose tables are missing is skipped with a line naming the notebook that writes them. Writes
    `root/figures.json`. A redrawn figure is byte-identical to the one its notebook drew from the same tables
    (save() writes no timestamp), so skipping an up-to-date one changes nothing."""
    root, rows = Path(root), []
    for key in FIGURES:
        spec = FIGURES[key]
        folder = root / spec.notebook
        missing = missing_tables(folder, spec) if (folder / "config.json").exists() else ["config.json"]
        if missing:
            print(f"skipped {spec.notebook}/{spec.file}: {', '.join(missing)} missing; run {spec.notebook}")
            status = "skipped: missing " + ", ".join(missing)
        elif force or stale(folder, spec):
            fig = render(folder, spec.file)
            save(fig, folder / spec.file)
            if close:
                plt.close(fig)
            status = "drawn"
        else:
            status = "up to date"
        rows.append({"notebook": spec.notebook, "figure": f"{spec.notebook}/{spec.file}",
                     "tables": [f"{spec.notebook}/{t}" for t in spec.tables], "status": status})
    atomic_write(root / "figures.json", lambda p: p.write_text(json.dumps(rows, indent=2) + "\n"))
    return pd.DataFrame(rows)
