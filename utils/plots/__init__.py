"""Every figure as a function of a saved table (see `base` for the registry, `draw`, `redraw`).

    plots.draw(run.out, "trio_curves.png", "zoo_curves.png")   # in a notebook: each figure from its tables
    plots.redraw(results_root() / "quick" / "fashion-mnist")   # 07: the stale ones (force: all), figures.json

One module per question: training (01), ablations (06), robustness (02), texture (03, 08's tile shuffle),
cost (05), similarity (04), features (08, 09). Colours follow the family (FAMILY_COLORS).
"""

from . import ablations, cost, features, robustness, similarity, texture, training  # noqa: F401  (register them)
from .base import (
    FAMILY_COLORS,
    FIGURES,
    annotated_heatmap,
    color,
    draw,
    figure,
    grouped_bars,
    image_grid,
    redraw,
    render,
    save,
)

__all__ = ["FAMILY_COLORS", "FIGURES", "ablations", "annotated_heatmap", "color", "cost", "draw", "features",
           "figure", "grouped_bars", "image_grid", "redraw", "render", "robustness", "save", "similarity",
           "texture", "training"]
