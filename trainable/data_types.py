"""Plain containers shared by the dataset loaders, the feature cache and the engine."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Dialogue:
    """One conversation, turns in time order."""

    id: str
    utterances: list[str]
    speakers: list[str]
    """Speaker of every turn (names or ids; only equality matters, Section 3)."""
    labels: list[int] | list[list[float]]
    """Class index per turn (categorical) or a vector of real values per turn (dimensional)."""
    audio: np.ndarray | None = None
    """(L, audio_dim) float32 acoustic features, or None."""
    visual: np.ndarray | None = None
    """(L, visual_dim) float32 visual features, or None."""

    def __len__(self) -> int:
        return len(self.utterances)


@dataclass
class DatasetSplits:
    """A dataset's train/dev/test dialogues and what a model needs to know about them."""

    name: str
    task: str
    """``categorical`` or ``dimensional``."""
    label_names: list[str]
    """Class names in index order (categorical) or dimension names (dimensional)."""
    train: list[Dialogue]
    dev: list[Dialogue]
    test: list[Dialogue]
    audio_dim: int = 0
    visual_dim: int = 0
    source: dict = field(default_factory=dict)
    """Where the data came from (files, checksums), for logging."""

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def modalities(self) -> tuple[str, ...]:
        """What the data holds: u (text) always, a and v when their features are there."""
        return ("u",) + (("a",) if self.audio_dim else ()) + (("v",) if self.visual_dim else ())

    def splits(self) -> dict[str, list[Dialogue]]:
        return {"train": self.train, "dev": self.dev, "test": self.test}
