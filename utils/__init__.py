"""The shared package behind the numbered notebooks.

Infrastructure (this folder): `data`, `models`, `train`, `metrics`, `hooks`, `store`, `recipes`, `profiles`,
`results`, `plots`, `files`, `registry`, `timing`, `run_notebooks`, `report`, `distributed`. Experiments, one
module per question: `utils.experiments.<topic>` (they import infrastructure, never each other).

    from utils import data, models, train, metrics, store
    from utils.experiments import attacks, texture_shape, cka

Nothing is imported eagerly here: `python -m utils.data` must not pay for timm, and `python -m utils.train`
must not find itself imported already. `import utils; utils.models` still works (imported on first use).
"""

import importlib

_SUBMODULES = {"data", "models", "train", "metrics", "hooks", "store", "recipes", "profiles", "results",
               "plots", "files", "registry", "timing", "run_notebooks", "report", "experiments",
               "distributed"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
