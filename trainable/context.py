"""Turn contexts (Section 3, Table 1) and the attention masks built from them (eq 3, eq 6).

Turns are 0-based here; the paper counts from 1. For turn i and window K:
- conv-context(i) = every earlier turn in [max(0, i - K), i)
- indi-context(i) = the turns of conv-context(i) spoken by the speaker of turn i
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

from trainable.config import CONTEXT_MODES


def _check(n: int, i: int, k: int) -> None:
    if not 0 <= i < n:
        raise IndexError(f"turn {i} is outside a dialogue of {n} turns")
    if k < 0:
        raise ValueError(f"context window K must be >= 0, got {k}")


def conv_context(speakers: Sequence[Hashable], i: int, k: int) -> list[int]:
    """Indices of the conversational context of turn ``i``: all turns in [max(0, i-K), i)."""
    _check(len(speakers), i, k)
    return list(range(max(0, i - k), i))


def indi_context(speakers: Sequence[Hashable], i: int, k: int) -> list[int]:
    """Indices of the individual context of turn ``i``: its speaker's turns in the window."""
    return [t for t in conv_context(speakers, i, k) if speakers[t] == speakers[i]]


def allowed_positions(length: int, k: int, mode: str = "dependent") -> torch.Tensor:
    """(L, L) bool matrix, ``[i, j]`` True where position i may attend to position j.

    ``dependent`` is rho-bar of eq 3 (j in conv-context(i) or j == i); ``free`` is rho-dot of
    eq 6 (j == i only).
    """
    if mode not in CONTEXT_MODES:
        raise ValueError(f"context mode must be one of {CONTEXT_MODES}, got {mode!r}")
    if k < 0:
        raise ValueError(f"context window K must be >= 0, got {k}")
    i = torch.arange(length).unsqueeze(1)  # (L, 1)
    j = torch.arange(length).unsqueeze(0)  # (1, L)
    if mode == "free":
        return i == j
    return (j <= i) & (j >= i - k)


def attention_mask(length: int, k: int, mode: str = "dependent") -> torch.Tensor:
    """(L, L) bool mask in PyTorch's convention: True where attention is *blocked*."""
    return ~allowed_positions(length, k, mode)
