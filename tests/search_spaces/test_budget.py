"""The memory estimate: the paper's calibration point and monotonicity."""

from __future__ import annotations

from dataclasses import replace

import pytest

from search_spaces.budget import MemoryProfile, estimate_gb, largest_k

PAPER = MemoryProfile()


def test_paper_calibration_11gb_gives_k14():
    assert estimate_gb(14, PAPER) <= 11.0 < estimate_gb(15, PAPER)
    assert largest_k(11, PAPER) == 14


def test_estimate_grows_with_k_until_max_length_caps_it():
    values = [estimate_gb(k, PAPER) for k in range(0, 40)]
    assert all(a <= b for a, b in zip(values, values[1:], strict=False))
    assert values[20] > values[10] > values[1]


@pytest.mark.parametrize(
    "field, small, large",
    [
        ("batch_size", 2, 8),
        ("intra_layers", 2, 6),
        ("inter_layers", 1, 4),
        ("max_length", 64, 256),
        ("hidden_size", 256, 768),
        ("turns", 6, 24),
    ],
)
def test_estimate_grows_with_size(field, small, large):
    lo, hi = replace(PAPER, **{field: small}), replace(PAPER, **{field: large})
    assert estimate_gb(14, lo) < estimate_gb(14, hi)
    assert largest_k(11, lo) >= largest_k(11, hi)


def test_largest_k_is_monotone_in_budget():
    ks = [largest_k(b, PAPER) or 0 for b in (6, 8, 10, 11, 12, 16, 24)]
    assert all(a <= b for a, b in zip(ks, ks[1:], strict=False))
    assert largest_k(4, PAPER) is None  # the static part alone exceeds 4 GB


def test_savings_raise_the_affordable_k():
    assert largest_k(11, replace(PAPER, precision="bf16")) > 14
    assert largest_k(11, replace(PAPER, gradient_checkpointing=True)) > 14
    assert estimate_gb(14, replace(PAPER, encoder="bert-large")) > estimate_gb(14, PAPER)
    assert estimate_gb(14, replace(PAPER, encoder="minilm")) < estimate_gb(14, PAPER)


def test_bad_inputs():
    with pytest.raises(ValueError, match="budget"):
        largest_k(0, PAPER)
    with pytest.raises(ValueError, match="k must be"):
        estimate_gb(-1, PAPER)


def test_memory_profile_defaults_are_the_model_and_train_defaults():
    # MemoryProfile restates a subset of the config defaults; keep them from drifting apart.
    from dataclasses import fields

    from search_spaces.budget import MemoryProfile
    from trainable.config import DialogueTRMConfig
    from trainable.engine import TrainConfig

    defaults = {f.name: f.default for cls in (DialogueTRMConfig, TrainConfig) for f in fields(cls)}
    shared = [f.name for f in fields(MemoryProfile) if f.name in defaults]
    assert len(shared) >= 10
    for name in shared:
        assert getattr(MemoryProfile(), name) == defaults[name], name
