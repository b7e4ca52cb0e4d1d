"""Shared package behind the numbered notebooks: data, models, training, results.

    from utils import data, models, train

`train` and `run_notebooks` are imported on demand (as above), not here: they are also run as
`python -m utils.train` / `python -m utils.run_notebooks`, which must not find them imported already.
"""

from . import data, models, profiles, results

__all__ = ["data", "models", "profiles", "results"]
