"""The memory settings ``memory = auto`` picks: the cheapest candidate whose estimate fits."""

from __future__ import annotations

from dataclasses import replace

import pytest

from search_spaces.budget import MemoryProfile, estimate_gb
from search_spaces.memory_plan import (
    CHECKPOINT_COST,
    CHUNK_COST,
    candidate_plans,
    candidate_settings,
    plan_cost,
    plan_memory,
)

PAPER = MemoryProfile()


def test_plan_memory_picks_the_cheapest_setting_that_fits():
    roomy = plan_memory(14, 80, PAPER)
    assert roomy.settings() == {
        "precision": "fp32",
        "gradient_checkpointing": False,
        "chunk_size": 0,
    }
    tight = plan_memory(14, 11, PAPER)
    assert tight is not None and tight.relative_cost > 1
    assert estimate_gb(14, replace(PAPER, **tight.settings())) <= 11
    # fp32 only: the plan must not use a 16-bit precision it was not offered.
    assert plan_memory(14, 11, PAPER, precisions=("fp32",)).precision == "fp32"
    assert plan_memory(14, 2, PAPER) is None  # nothing fits under the static part


@pytest.mark.parametrize("k, budget", [(14, 11), (32, 11), (56, 16), (8, 6)])
def test_no_cheaper_candidate_fits(k, budget):
    chosen = plan_memory(k, budget, PAPER)
    assert chosen is not None
    for plan in candidate_plans(PAPER):
        fits = estimate_gb(k, replace(PAPER, **plan.settings())) <= budget
        if plan.relative_cost < chosen.relative_cost:
            assert not fits, plan


def test_costs_order_the_candidates():
    assert plan_cost(False, 0) == 1.0
    assert plan_cost(True, 0) == CHECKPOINT_COST
    # Chunking encodes every turn once more, whatever the chunk size; with checkpointing the
    # encoder runs forward three times and backward once.
    assert plan_cost(False, 8) == plan_cost(False, 1) == CHUNK_COST
    assert plan_cost(True, 8) == pytest.approx(5 / 3)
    plans = candidate_plans(PAPER)
    assert [p.relative_cost for p in plans] == sorted(p.relative_cost for p in plans)
    assert [p.precision for p in plans[:2]] == ["fp32", "bf16"]  # equal cost: fp32 first
    chunked = [p.chunk_size for p in plans if p.precision == "fp32" and p.chunk_size]
    assert chunked[:5] == [16, 8, 4, 2, 1]  # equal cost: fuller encoder calls first


def test_chunks_shorter_than_the_dialogue_only():
    chunks = {c for _, _, c in candidate_settings(10)}
    assert chunks == {0, 8, 4, 2, 1}
    assert len(candidate_settings(10, ("bf16",))) == 2 * 5


def test_bad_budget_names_it():
    with pytest.raises(ValueError, match="budget"):
        plan_memory(14, 0, PAPER)
