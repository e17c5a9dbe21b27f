"""The cheapest memory settings that fit a config (``memory = auto``): candidate settings of
precision, gradient checkpointing and chunk size, their relative compute, and the first one,
cheapest first, whose estimate (``search_spaces.budget``) fits the budget.

Cost is a model, not a measurement: a step is ~3 forward passes of work (forward, and
backward at twice that); checkpointing recomputes each forward once (+1/3); chunking runs
the encoder, nearly all of the model's compute, once more without a graph (+1/3), whatever
the chunk size. 16-bit precision costs nothing extra on a GPU with bf16 kernels, so at equal
cost the order of ``precisions`` decides (fp32 first: the numerics the paper trained with),
then the larger chunk (fewer, fuller encoder calls).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from search_spaces.budget import MemoryProfile, check_budget, estimate_gb

CHUNK_SIZES = (16, 8, 4, 2, 1)  # chunk sizes memory="auto" may pick, cheapest (largest) first
CHECKPOINT_COST = 4 / 3  # checkpointing recomputes each forward once: ~1/3 more compute
CHUNK_COST = 4 / 3  # chunking encodes every turn once more (without a graph): ~1/3 more


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


def plan_cost(checkpointing: bool, chunk_size: int) -> float:
    """Relative compute of a memory setting (a model, not a measurement): 1/3 more for the
    forward checkpointing recomputes, 1/3 more for the encoder forward chunking adds (both:
    5/3). 16-bit precision costs nothing extra on a GPU with bf16 kernels."""
    extra = (CHECKPOINT_COST - 1) * checkpointing + (CHUNK_COST - 1) * bool(chunk_size)
    return 1.0 + extra


def candidate_settings(
    turns: int, precisions: tuple[str, ...] = ("fp32", "bf16")
) -> list[tuple[str, bool, int]]:
    """Every (precision, checkpointing, chunk size) ``auto`` may pick for dialogues of
    ``turns`` turns; ``precisions`` in order of preference."""
    chunks = (0, *(c for c in CHUNK_SIZES if c < turns))
    return [(p, ckpt, c) for p in precisions for ckpt in (False, True) for c in chunks]


def candidate_plans(
    profile: MemoryProfile, precisions: tuple[str, ...] = ("fp32", "bf16")
) -> list[MemoryPlan]:
    """Every memory setting ``auto`` may pick, cheapest first; at equal cost the earlier
    precision (fp32: the numerics the paper trained with) goes first, then the order of
    ``candidate_settings`` (no chunks, then larger chunks first)."""
    plans = []
    for p, ckpt, chunk in candidate_settings(profile.turns, precisions):
        cost = plan_cost(ckpt, chunk)
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
    for plan in candidate_plans(profile, precisions):
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
