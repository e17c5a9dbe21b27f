"""How many trials share a card: each budget plus its own CUDA context must fit."""

from __future__ import annotations

import pytest

from orchestrator.resources import CUDA_CONTEXT_GB, gpu_share


@pytest.mark.parametrize(
    "budget, card, context, trials",
    [
        (11, 80, 0.0, 7),  # 77 GB of budgets
        (11, 80, 0.5, 6),  # 7 x 11.5 = 80.5 GB would not fit: one trial fewer
        (11, 79.2, 0.3, 7),  # an H100 reports 79.2 GiB: 7 x 11.3 = 79.1
        (11, 24, 0.5, 2),
        (11, 23, 0.5, 2),  # 2 x 11.5 = 23: exactly fits
        (11, 22.9, 0.5, 1),
        (16, 11, 0.5, 1),  # budget larger than the card: a whole GPU
        (4, 141, 0.6, 30),  # H200
    ],
)
def test_trials_per_card_leave_room_for_each_context(budget, card, context, trials):
    share = gpu_share(budget, card, context)
    assert share == pytest.approx(1 / trials)
    n = round(1 / share)  # a whole number of trials: Ray packs exactly n
    assert share == 1 / n
    assert n == 1 or n * (budget + context) <= card  # each with its context fits
    assert (n + 1) * (budget + context) > card  # and not one more


def test_default_context_and_unknown_card():
    assert 0.2 <= CUDA_CONTEXT_GB <= 1.0
    assert gpu_share(11, 80) == gpu_share(11, 80, CUDA_CONTEXT_GB)
    assert gpu_share(11, None) == 1.0


@pytest.mark.parametrize("budget, context, field", [(0, 0.5, "gpu-memory-gb"), (11, -1, "context")])
def test_bad_inputs_name_the_setting(budget, context, field):
    with pytest.raises(ValueError, match=field):
        gpu_share(budget, 80, context)
