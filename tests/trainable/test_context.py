import random

import pytest
import torch

from trainable.context import allowed_positions, attention_mask, conv_context, indi_context


def test_table1_example():
    # Table 1: X = {x1^1, x2^1, x3^2, x4^1, x5^3, x6^2, x7^1, x8^2}, K = 5, target x7.
    speakers = [1, 1, 2, 1, 3, 2, 1, 2]
    i = 6  # x7, 0-based
    assert indi_context(speakers, i, 5) == [1, 3]  # {x2, x4}
    assert conv_context(speakers, i, 5) == [1, 2, 3, 4, 5]  # {x2, x3, x4, x5, x6}


def _paper_contexts(speakers, i1, k):
    """Section 3 literally, 1-based: tau in [max(1, i - K), i)."""
    conv = [tau for tau in range(1, i1) if tau >= max(1, i1 - k)]
    indi = [tau for tau in conv if speakers[tau - 1] == speakers[i1 - 1]]
    return [t - 1 for t in indi], [t - 1 for t in conv]


def _paper_rho_bar(length, i1, k):
    """Eq 3 literally, 1-based: zeros(i-K-1) ones(K) 1 zeros(L-i), clipped at the start."""
    row = [0] * max(0, i1 - k - 1) + [1] * min(k, i1 - 1) + [1] + [0] * (length - i1)
    assert len(row) == length
    return row


@pytest.mark.parametrize("seed", range(25))
def test_contexts_and_masks_match_brute_force(seed):
    rng = random.Random(seed)
    length, k = rng.randint(1, 30), rng.randint(0, 16)
    speakers = [rng.choice("ABCD"[: rng.randint(1, 4)]) for _ in range(length)]
    dependent = allowed_positions(length, k, "dependent")
    free = allowed_positions(length, k, "free")
    for i in range(length):
        indi, conv = _paper_contexts(speakers, i + 1, k)
        assert indi_context(speakers, i, k) == indi
        assert conv_context(speakers, i, k) == conv
        assert dependent[i].int().tolist() == _paper_rho_bar(length, i + 1, k)
        assert [j for j in range(length) if dependent[i, j]] == conv + [i]
        assert free[i].int().tolist() == [int(j == i) for j in range(length)]  # eq 6
    assert torch.equal(attention_mask(length, k), ~dependent)


def test_bad_arguments():
    with pytest.raises(ValueError, match="K must be >= 0"):
        conv_context([1, 2], 1, -1)
    with pytest.raises(IndexError):
        indi_context([1, 2], 2, 3)
    with pytest.raises(ValueError, match="context mode"):
        allowed_positions(3, 1, "sideways")
