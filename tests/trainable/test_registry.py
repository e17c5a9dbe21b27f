"""The dataset registry: complete entries that agree with the loaders, and a light import."""

from __future__ import annotations

import pytest

from trainable.datasets import DATASETS, DataError, dataset_help, find_data_dir, locate
from trainable.datasets.meld import SPLIT_FILES
from trainable.metrics import metric_mode


def test_dataset_help_lists_every_dataset():
    assert dataset_help() == "meld, iemocap, avec or synthetic"


@pytest.mark.parametrize("name", list(DATASETS))
def test_registry_entries_are_complete(name):
    spec = DATASETS[name]
    assert spec.name == name and spec.help and "\n" not in spec.help
    assert callable(spec.load_function())
    assert set(spec.loader_options) <= {"seed", "label", "size"}
    assert spec.label_kinds[0] == "emotion"
    assert ("label" in spec.loader_options) == (len(spec.label_kinds) > 1)
    assert spec.modalities[0] == "text" and set(spec.modalities) <= {"text", "audio", "visual"}
    assert bool(spec.where_to_get) == spec.needs_files
    assert metric_mode(spec.metric) == "max"


def test_registry_matches_the_loaders():
    assert (
        DATASETS["meld"].required_files == tuple(SPLIT_FILES.values()) == tuple(locate.MELD_SHA256)
    )
    assert DATASETS["meld"].label_kinds == ("emotion", "sentiment")
    assert [n for n, s in DATASETS.items() if not s.needs_files] == ["synthetic"]
    assert DATASETS["avec"].metric == "dev_mean_pearson"
    with pytest.raises(DataError, match="no data folder; expected one of meld, iemocap, avec"):
        find_data_dir("synthetic")


def test_importing_the_registry_stays_light():
    import subprocess
    import sys

    heavy = {"torch", "transformers", "datasets", "pandas", "sklearn"}
    code = f"import sys, trainable.datasets; print(sorted({heavy!r} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
