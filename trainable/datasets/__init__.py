"""Dataset loaders. Each returns a ``DatasetSplits`` (train/dev/test lists of ``Dialogue``).

- ``meld``: the official CSVs, read with Hugging Face ``datasets``; 7 emotions (or 3 sentiments
  with ``label="sentiment"``); 300-d audio when conv-emotion's ``MELD_features_raw.pkl`` is there.
- ``iemocap``, ``avec``: conv-emotion's feature pickles (text + audio + visual).
- ``synthetic``: generated, deterministic, for offline demos and smoke runs.

The table of datasets (loader, files, metric, ...) is ``trainable.datasets.registry``. Where the
files are looked for: ``trainable.datasets.locate``. Every bad-data case raises ``DataError``
with one line naming the file and the row or key; the CLI prints it as is.
"""

from __future__ import annotations

from pathlib import Path

from trainable.data_types import DatasetSplits
from trainable.datasets.common import DataError
from trainable.datasets.locate import find_data_dir
from trainable.datasets.registry import DATASETS, LABEL_KINDS, DatasetSpec, dataset_help

__all__ = [
    "DATASETS",
    "LABEL_KINDS",
    "DataError",
    "DatasetSpec",
    "dataset_help",
    "find_data_dir",
    "load_dataset",
]


def _check_options(name: str, max_dialogues, label: str, size: float) -> None:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if max_dialogues is not None and (
        isinstance(max_dialogues, bool) or not isinstance(max_dialogues, int) or max_dialogues < 1
    ):
        raise DataError(f"max_dialogues must be an integer >= 1, got {max_dialogues!r}")
    spec = DATASETS[name]
    if label not in LABEL_KINDS:
        raise DataError(f"label must be one of {', '.join(LABEL_KINDS)}, got {label!r}")
    if label not in spec.label_kinds:
        having = ", ".join(n for n, s in DATASETS.items() if label in s.label_kinds)
        raise DataError(f"label {label!r} exists only for {having}, not {name}")
    if size != 1.0 and "size" not in spec.loader_options:
        having = ", ".join(n for n, s in DATASETS.items() if "size" in s.loader_options)
        raise DataError(f"size applies to the {having} dataset only, not {name}")
    if not size > 0:
        raise DataError(f"size must be > 0, got {size!r}")


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    max_dialogues: int | None = None,
    seed: int = 0,
    label: str = "emotion",
    size: float = 1.0,
) -> DatasetSplits:
    """Load dataset ``name`` (a key of ``DATASETS``).

    ``max_dialogues`` keeps the first N dialogues of each split (smoke runs). ``seed`` draws the
    IEMOCAP/AVEC dev split and generates the synthetic data; MELD's splits are official.
    ``size`` scales the synthetic dataset (default 600/80/80 dialogues). ``data_dir`` is ignored
    for a dataset that needs no files (synthetic).
    """
    _check_options(name, max_dialogues, label, size)
    spec = DATASETS[name]
    given = {"seed": seed, "label": label, "size": size}
    options = {k: v for k, v in given.items() if k in spec.loader_options}
    if not spec.needs_files:
        return spec.load_function()(max_dialogues=max_dialogues, **options)
    directory = find_data_dir(name, data_dir)  # before the import: a missing folder fails fast
    return spec.load_function()(directory, max_dialogues=max_dialogues, **options)
