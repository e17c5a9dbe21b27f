"""Optuna define-by-run search spaces, per-dataset presets and the GPU memory budget.

Pure: nothing here imports Ray or MLflow, and a space only samples and returns constants.
"""

from search_spaces.budget import MemoryProfile, estimate_gb, largest_k
from search_spaces.custom import space_from_dict, space_from_ranges
from search_spaces.presets import PRESETS, Preset
from search_spaces.spaces import SPACES, bounded, describe, get_space, paper, quick, sample

__all__ = [
    "PRESETS",
    "SPACES",
    "MemoryProfile",
    "Preset",
    "bounded",
    "describe",
    "estimate_gb",
    "get_space",
    "largest_k",
    "paper",
    "quick",
    "sample",
    "space_from_dict",
    "space_from_ranges",
]
