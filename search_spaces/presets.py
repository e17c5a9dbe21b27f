"""Per-dataset search presets: which space, which metric to optimise and in which direction.

``orch search --dataset X`` starts from ``PRESETS[X]``; ``--space`` and ``--metric`` override.
Categorical datasets (MELD, IEMOCAP) are judged by dev weighted F1, the paper's headline
metric; AVEC's four real-valued dimensions by their mean Pearson r on dev.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    space: str
    """Name in ``search_spaces.SPACES``."""
    metric: str
    """Reported metric the search optimises (and ASHA compares)."""
    mode: str
    """``max`` or ``min``."""


PRESETS: dict[str, Preset] = {
    "meld": Preset(space="paper", metric="dev_weighted_f1", mode="max"),
    "iemocap": Preset(space="paper", metric="dev_weighted_f1", mode="max"),
    "avec": Preset(space="paper", metric="dev_mean_pearson", mode="max"),
    # The synthetic dataset exists for smoke runs: small model, CPU-friendly.
    "synthetic": Preset(space="quick", metric="dev_weighted_f1", mode="max"),
}
