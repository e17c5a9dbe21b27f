"""Optuna define-by-run search spaces, per-dataset presets and the GPU memory budget.

Pure: nothing here imports Ray or MLflow, and a space only samples and returns constants.
"""

from search_spaces.budget import MemoryProfile, estimate_gb, largest_k
from search_spaces.custom import space_from_dict, space_from_ranges
from search_spaces.memory_plan import MemoryPlan, plan_memory
from search_spaces.presets import SEARCH_PRESETS, Preset, search_preset
from search_spaces.spaces import SPACES, bounded, describe, get_space, paper, quick

__all__ = [
    "SEARCH_PRESETS",
    "SPACES",
    "MemoryPlan",
    "MemoryProfile",
    "Preset",
    "bounded",
    "describe",
    "estimate_gb",
    "get_space",
    "largest_k",
    "paper",
    "plan_memory",
    "quick",
    "search_preset",
    "space_from_dict",
    "space_from_ranges",
]
