"""How long would one trial take on this CPU? An estimate for the no-GPU warning.

Training costs about 6 FLOPs per parameter per token (forward 2, backward 4). The encoder
dominates: every turn is one ``[CLS] utterance [SEP] indi-context [SEP]`` input. The CPU's
speed is measured with a short fp32 matmul; training reaches about half of that.
"""

from __future__ import annotations

import time

import torch

TRAIN_EFFICIENCY = 0.5  # fraction of matmul throughput a training step achieves


def matmul_flops(seconds: float = 0.2, n: int = 384) -> float:
    """Measured fp32 matmul throughput of this process (FLOP/s)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return count * 2 * n**3 / (time.perf_counter() - start)


def encoder_parameters(hidden: int, layers: int) -> float:
    """Non-embedding parameters of a BERT-style encoder (12 h^2 per layer)."""
    return 12.0 * layers * hidden**2


def trial_seconds(
    *,
    utterances: int,
    mean_utterance_tokens: float,
    k: int,
    max_length: int,
    hidden: int,
    layers: int,
    epochs: int,
    flops_per_second: float | None = None,
) -> float:
    """Seconds for ``epochs`` of training over ``utterances`` turns (plus dev/test passes)."""
    tokens = min(max_length, 3 + mean_utterance_tokens * (1 + k / 2))  # indi-context ~ K/2 turns
    params = encoder_parameters(hidden, layers)
    flops = 6 * params * tokens * utterances * epochs * 1.2  # +20 %: evaluation passes
    speed = (flops_per_second or matmul_flops()) * TRAIN_EFFICIENCY
    return flops / speed


def human(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
