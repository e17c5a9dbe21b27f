"""Every dataset orch knows, one ``DatasetSpec`` each: adding a dataset means one entry here.

Loading, locating files, CLI help and the search presets (``search_spaces.presets``) all read
this table. Importing it stays cheap (no pandas, ``datasets`` or torch): a loader is named as
``"module:function"`` and imported only when the dataset is loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    loader: str
    """``"module:function"``. Called as ``fn(data_dir, max_dialogues=..., **options)``, without
    ``data_dir`` when ``required_files`` is empty; ``options`` are those in ``loader_options``."""
    help: str
    """One line for ``orch ... --help`` and listings."""
    metric: str
    """Reported metric a search on this dataset optimises (its direction: ``metric_mode``)."""
    space: str
    """Default search space (a name in ``search_spaces.SPACES``)."""
    required_files: tuple[str, ...] = ()
    """Files the data folder must hold; empty for a generated dataset (no folder at all)."""
    where_to_get: str = ""
    """Where those files come from, for the "no data found" error."""
    label_kinds: tuple[str, ...] = ("emotion",)
    """Values ``load_dataset(label=...)`` accepts; the first is the default."""
    modalities: tuple[str, ...] = ("text",)
    """Modalities the dataset can provide (audio/visual only when its feature files exist)."""
    loader_options: tuple[str, ...] = ()
    """Which of ``seed``, ``label``, ``size`` the loader takes besides ``max_dialogues``."""

    @property
    def needs_files(self) -> bool:
        return bool(self.required_files)

    def load_function(self) -> Callable:
        """The loader, imported now (its module may import pandas, ``datasets``, ...)."""
        module, _, attr = self.loader.partition(":")
        return getattr(importlib.import_module(module), attr)


_SPECS = (
    DatasetSpec(
        name="meld",
        loader="trainable.datasets.meld:load_meld",
        help="MELD (Friends TV dialogues): 7 emotions or 3 sentiments; official CSVs",
        metric="dev_weighted_f1",
        space="paper",
        required_files=("train_sent_emo.csv", "dev_sent_emo.csv", "test_sent_emo.csv"),
        where_to_get="the official MELD CSVs from github.com/declare-lab/MELD, data/MELD/",
        label_kinds=("emotion", "sentiment"),
        modalities=("text", "audio"),
        loader_options=("label",),
    ),
    DatasetSpec(
        name="iemocap",
        loader="trainable.datasets.conv_emotion:load_iemocap",
        help="IEMOCAP (acted dyadic sessions): 6 emotions; conv-emotion's feature pickle",
        metric="dev_weighted_f1",
        space="paper",
        required_files=("IEMOCAP_features_raw.pkl",),
        where_to_get="conv-emotion's IEMOCAP pickle",
        modalities=("text", "audio", "visual"),
        loader_options=("seed",),
    ),
    DatasetSpec(
        name="avec",
        loader="trainable.datasets.conv_emotion:load_avec",
        help="AVEC: 4 real-valued dimensions (valence, arousal, ...); conv-emotion's pickles",
        metric="dev_mean_pearson",
        space="paper",
        required_files=tuple(f"AVEC_features_{i}.pkl" for i in range(1, 5)),
        where_to_get="conv-emotion's AVEC pickles",
        modalities=("text", "audio", "visual"),
        loader_options=("seed",),
    ),
    DatasetSpec(
        name="synthetic",
        loader="trainable.datasets.synthetic:load_synthetic",
        help="generated offline (no files): 5 emotions, for demos and smoke runs",
        metric="dev_weighted_f1",
        # Smoke runs: the small CPU-friendly space.
        space="quick",
        modalities=("text", "audio", "visual"),
        loader_options=("seed", "size"),
    ),
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in _SPECS}

# Every label kind some dataset accepts, in first-seen order.
LABEL_KINDS: tuple[str, ...] = tuple(dict.fromkeys(k for s in _SPECS for k in s.label_kinds))


def dataset_help() -> str:
    """The dataset names as prose for CLI help: ``"meld, iemocap, avec or synthetic"``."""
    names = list(DATASETS)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
