"""Per-dataset search presets: which space, which metric to optimise and in which direction.

``orch search --dataset X`` starts from ``search_preset(X)``; ``--space`` and ``--metric``
override. The space and metric come from the dataset registry (``trainable.datasets.registry``)
and the direction from ``trainable.metrics.metric_mode``, so a new dataset gets its preset from
its registry entry alone. Categorical datasets (MELD, IEMOCAP) are judged by dev weighted F1,
the paper's headline metric; AVEC's four real-valued dimensions by their mean Pearson r on dev.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainable.datasets.registry import DATASETS
from trainable.metrics import metric_mode


@dataclass(frozen=True)
class Preset:
    space: str
    """Name in ``search_spaces.SPACES``."""
    metric: str
    """Reported metric the search optimises (and ASHA compares)."""
    mode: str
    """``max`` or ``min``."""


SEARCH_PRESETS: dict[str, Preset] = {
    name: Preset(space=spec.space, metric=spec.metric, mode=metric_mode(spec.metric))
    for name, spec in DATASETS.items()
}


def search_preset(dataset: str) -> Preset:
    """The preset of ``dataset``; ValueError naming the known datasets for any other name."""
    if dataset not in SEARCH_PRESETS:
        raise ValueError(
            f"--dataset {dataset!r} is unknown; expected one of {', '.join(SEARCH_PRESETS)}"
        )
    return SEARCH_PRESETS[dataset]
