"""Shared fixtures: a tiny DialogueTRM config and a few toy dialogues (CPU, fast)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing in the tests may reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("ORCH_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
MELD_DIR = REPO.parent / "shared" / "data" / "meld"


@pytest.fixture
def meld_dir() -> Path:
    if not (MELD_DIR / "train_sent_emo.csv").exists():
        pytest.skip(f"real MELD CSVs not found at {MELD_DIR}")
    return MELD_DIR


@pytest.fixture(autouse=True, scope="session")
def _feature_cache(tmp_path_factory):
    """Keep the tokenized-feature cache of the whole session out of ~/.cache."""
    os.environ["ORCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("orch-cache"))
