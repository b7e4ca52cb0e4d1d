"""How figures look and where they go: one colour per family, PNGs saved beside the tables.

fig, ax = plt.subplots(); ax.plot(..., color=color("cnn_small")); save(fig, out / "curves.png")
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from . import models
from .results import atomic_write

FAMILY_COLORS = {"mlp": "tab:blue", "cnn": "tab:orange", "vit": "tab:green"}


def color(model: str) -> str:
    """The family's colour for a registered model name (grey for anything else, e.g. a control)."""
    try:
        return FAMILY_COLORS[models.family(model)]
    except KeyError:
        return "tab:gray"


def save(fig: plt.Figure, path: str | Path, dpi: int = 150) -> Path:
    """Write `fig` as PNG (atomically) and leave it open for inline display."""
    return atomic_write(Path(path), lambda p: fig.savefig(p, dpi=dpi, bbox_inches="tight", format="png"))
