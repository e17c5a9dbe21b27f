"""Search settings, resources per trial, the space a search runs, and what must pickle."""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import pytest

from orchestrator.resources import gpu_share, trial_resources
from orchestrator.tuner import SearchSettings, WithConstants, build_space, resolve_storage


def test_gpu_share_packs_whole_budgets_per_card():
    assert gpu_share(11, 80) == pytest.approx(1 / 7)
    assert gpu_share(11, 24) == pytest.approx(1 / 2)
    assert gpu_share(11, 11) == 1.0 and gpu_share(16, 11) == 1.0
    assert gpu_share(11, None) == 1.0  # unknown card: a whole GPU
    with pytest.raises(ValueError, match="gpu-memory-gb"):
        gpu_share(0, 80)


def test_trial_resources():
    assert trial_resources(2, 11, gpus_available=0) == {"cpu": 2.0, "gpu": 0.0}
    assert trial_resources(1, 11, gpus_available=1, card_gb=40) == {"cpu": 1.0, "gpu": 1 / 3}
    with pytest.raises(ValueError, match="cpus-per-trial"):
        trial_resources(0)


def test_storage_is_absolute_or_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_storage("runs") == str(tmp_path / "runs")
    assert resolve_storage("s3://bucket/runs") == "s3://bucket/runs"
    assert Path(resolve_storage(None)).is_absolute()


def test_check_fills_defaults_and_rejects_bad_choices():
    settings = SearchSettings(dataset="meld", storage_path="/tmp/x").check()
    assert settings.name.startswith("meld-")
    for bad in (
        dict(sampler="cmaes"),
        dict(scheduler="pbt"),
        dict(mode="up"),
        dict(num_samples=0),
        dict(max_concurrent=0),
    ):
        with pytest.raises(ValueError):
            SearchSettings(**bad).check()


def test_build_space_bounds_k_and_adds_run_constants():
    settings = SearchSettings(
        space="paper",
        dataset="meld",
        gpu_memory_gb=11,
        gpus_per_trial=0.5,
        constants={"data_dir": "/data/meld"},
    )
    space = build_space(settings)
    assert isinstance(space.space, functools.partial) and space.space.keywords == {"k_max": 14}
    assert space.constants == {"data_dir": "/data/meld", "dataset": "meld", "gpu_memory_gb": 11}
    # CPU trials: no GPU cap in the trial config.
    cpu = build_space(SearchSettings(space="quick", dataset="synthetic", gpu_memory_gb=11))
    assert "gpu_memory_gb" not in cpu.constants


def test_spaces_pickle_for_ray(tmp_path):
    # Ray saves the searcher (space included) with plain pickle.
    ranges = tmp_path / "mine.toml"
    ranges.write_text("[ranges]\nlr = { low = 1e-4, high = 1e-2, log = true }\n")
    for name in ("paper", "quick", str(ranges)):
        space = build_space(SearchSettings(space=name, gpu_memory_gb=11, dataset="meld"))
        assert isinstance(pickle.loads(pickle.dumps(space)), WithConstants)
