"""Shared package behind the numbered notebooks: data, models, training, results.

    from utils import data, models, train
"""

from . import data, models, profiles, results, run_notebooks, train

__all__ = ["data", "models", "profiles", "results", "run_notebooks", "train"]
