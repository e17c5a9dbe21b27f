"""The cheapest memory settings that fit a config (``memory = auto``): candidate settings of
precision, gradient checkpointing and chunk size, their relative compute, and the first one,
cheapest first, whose estimate (``search_spaces.budget``) fits the budget.

Cost is a model, not a measurement: checkpointing recomputes each forward once (x 4/3); a
chunk re-encodes the turns before it that its outputs depend on. 16-bit precision costs
nothing extra on a GPU with bf16 kernels, so at equal cost the order of ``precisions``
decides (fp32 first: the numerics the paper trained with).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from search_spaces.budget import MemoryProfile, check_budget, estimate_gb

CHUNK_SIZES = (16, 8, 4, 2, 1)  # chunk sizes memory="auto" may pick, cheapest (largest) first
CHECKPOINT_COST = 4 / 3  # checkpointing recomputes each forward once: ~1/3 more compute


@dataclass(frozen=True)
class MemoryPlan:
    """Memory settings chosen for one trial (``memory = auto``) and what they cost."""

    precision: str
    """Autocast dtype: fp32 when it fits, else bf16."""
    gradient_checkpointing: bool
    """Recompute activations in backward."""
    chunk_size: int
    """Turns per backward (0: whole dialogues)."""
    relative_cost: float
    """Compute relative to fp32 without checkpointing or chunking (a model, not measured)."""

    def settings(self) -> dict:
        """The config fields this plan sets."""
        return {
            "precision": self.precision,
            "gradient_checkpointing": self.gradient_checkpointing,
            "chunk_size": self.chunk_size,
        }


def plan_cost(k: int, intra_layers: int, checkpointing: bool, chunk_size: int) -> float:
    """Relative compute of a memory setting (a model, not a measurement): checkpointing
    recomputes the forward (x 4/3); a chunk of c turns also re-encodes its chunk_prefix
    (K per intra layer) turns, x (c + prefix) / c. 16-bit precision costs nothing extra on
    a GPU with bf16 kernels."""
    prefix = k * intra_layers
    chunked = (chunk_size + prefix) / chunk_size if chunk_size else 1.0
    return (CHECKPOINT_COST if checkpointing else 1.0) * chunked


def candidate_settings(
    turns: int, precisions: tuple[str, ...] = ("fp32", "bf16")
) -> list[tuple[str, bool, int]]:
    """Every (precision, checkpointing, chunk size) ``auto`` may pick for dialogues of
    ``turns`` turns; ``precisions`` in order of preference."""
    chunks = (0, *(c for c in CHUNK_SIZES if c < turns))
    return [(p, ckpt, c) for p in precisions for ckpt in (False, True) for c in chunks]


def candidate_plans(
    k: int, profile: MemoryProfile, precisions: tuple[str, ...] = ("fp32", "bf16")
) -> list[MemoryPlan]:
    """Every memory setting ``auto`` may pick for window K, cheapest first; at equal cost the
    earlier precision (fp32: the numerics the paper trained with) goes first."""
    plans = []
    for p, ckpt, chunk in candidate_settings(profile.turns, precisions):
        cost = plan_cost(k, profile.intra_layers, ckpt, chunk)
        plans.append((cost, precisions.index(p), MemoryPlan(p, ckpt, chunk, cost)))
    return [plan for *_, plan in sorted(plans, key=lambda item: item[:2])]


def plan_memory(
    k: int,
    budget_gb: float,
    profile: MemoryProfile,
    precisions: tuple[str, ...] = ("fp32", "bf16"),
) -> MemoryPlan | None:
    """The cheapest memory settings under which window K fits ``budget_gb`` (the profile's own
    precision, checkpointing and chunking are ignored); None when none does."""
    check_budget(budget_gb)
    for plan in candidate_plans(k, profile, precisions):
        if estimate_gb(k, dataclasses.replace(profile, **plan.settings())) <= budget_gb:
            return plan
    return None


def config_profile(config, batch_size: int, modalities: int) -> MemoryProfile:
    """The memory profile of a model config (a ``trainable.config.DialogueTRMConfig``) trained
    in batches of ``batch_size`` dialogues on data with ``modalities`` modalities. Shapes
    (turns, tokens by K) stay the profile's defaults, MELD's worst batch, as in the search."""
    return MemoryProfile(
        encoder=config.encoder,
        hidden_size=config.hidden_size,
        intra_layers=config.intra_layers if config.intra_transformer else 0,
        intra_heads=config.intra_heads,
        inter_layers=config.inter_layers,
        inter_heads=config.inter_heads,
        ffn_size=config.ffn_size,
        max_length=config.max_length,
        batch_size=batch_size,
        freeze_encoder=config.freeze_encoder,
        modalities=1 if config.utterance_only else modalities,
        tiny_layers=config.tiny_layers,
    )
