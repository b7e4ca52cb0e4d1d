"""Progress for long work: tqdm bars in a terminal, plain lines inside notebooks.

Inside a Jupyter kernel a tqdm bar is a widget that a saved notebook shows as "0%" (or nothing, offline),
so there `bar` draws nothing and long loops print one plain line per epoch or stage instead (`say`);
papermill streams those lines to the terminal that runs `make reproduce`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm.std import tqdm


def in_notebook() -> bool:
    """True inside a Jupyter kernel (papermill included)."""
    shell = sys.modules.get("IPython") and getattr(sys.modules["IPython"], "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


def bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", leave: bool = False,
        disable: bool = False, initial: int = 0) -> tqdm:
    """A text tqdm bar in a terminal; disabled inside notebooks (use `say` for one line per stage)."""
    return tqdm(iterable, total=total, desc=desc, leave=leave, initial=initial,
                disable=disable or in_notebook(), file=sys.stderr, dynamic_ncols=True)


def say(message: str) -> None:
    """One plain progress line (flushed, so papermill and pipes show it at once)."""
    print(message, flush=True)
