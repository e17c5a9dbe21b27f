"""A simple estimate of one trial's peak GPU memory, and the largest context window K that fits.

The paper trained DialogueTRM (BERT-base, 6 intra- / 4 inter-modal layers, hidden 768) on an
11 GB GPU and could afford K <= 14. This module turns that single fact into a budget model so a
search space can keep K inside the memory a trial is given instead of wasting trials on OOM.

The estimate, in bytes::

    peak = OVERHEAD + 16 * parameters + CALIBRATION * activations

- ``OVERHEAD``: CUDA context, cuBLAS workspaces and allocator slack (a fixed 0.75 GB).
- ``16 * parameters``: fp32 weights, gradients and AdamW's two moments (4 + 4 + 8 bytes);
  mixed precision keeps fp32 master weights, so this term does not shrink with it.
- ``activations``: what backward needs, per Korthikanti et al. 2022 ("Reducing activation
  recomputation in large transformer models"): a Transformer layer over a sequence of s tokens
  keeps about ``17 * s * h + 2.5 * heads * s**2`` values (``2 *`` that many in fp32 bytes, as
  many bytes per value in bf16/fp16). Gradient checkpointing keeps only each layer's input
  (``s * h`` values) plus one layer's full set, recomputed during backward.
  Eq 1 encodes every turn as ``[CLS] utterance [SEP] indi-context [SEP]``: with two speakers
  alternating, the indi-context holds about K/2 earlier utterances, so a sequence is about
  ``3 + utterance_tokens * (1 + K / 2)`` tokens, capped at ``max_length``. A batch holds
  ``batch_size`` dialogues of ``turns`` turns each (fewer per backward with ``chunk_size``).
  The intra-modal Transformers run over turns and the inter-modal one over 7 vectors per turn.
- ``CALIBRATION`` scales the textbook activation count to what PyTorch really holds (autograd
  saves extra copies, the allocator fragments); it is fitted so the paper's configuration
  peaks just under 11 GB at K = 14 and just over at K = 15 (see ``tests/search_spaces``).

It is an estimate for bounding a search space, not a promise: real peaks depend on the
dataset's utterance and dialogue lengths, which is why those are part of the profile.
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1024**3
OVERHEAD_BYTES = 0.75 * GB
STATE_BYTES_PER_PARAM = 16  # fp32 weight + grad + AdamW exp_avg + exp_avg_sq
# Fitted: paper profile -> 10.8 GB at K = 14, 11.25 GB at K = 15 (static part: 4.3 GB).
CALIBRATION = 1.33
K_CEILING = 64  # largest K largest_k() considers; beyond it the window covers whole dialogues


@dataclass(frozen=True)
class EncoderShape:
    """What the estimate needs to know about an utterance encoder."""

    layers: int
    hidden: int
    heads: int
    parameters: float


# Known encoders by name fragment; an unknown name is costed as BERT-base (the paper's).
ENCODERS: dict[str, EncoderShape] = {
    "bert-base": EncoderShape(12, 768, 12, 110e6),
    "bert-large": EncoderShape(24, 1024, 16, 335e6),
    "roberta-base": EncoderShape(12, 768, 12, 125e6),
    "roberta-large": EncoderShape(24, 1024, 16, 355e6),
    "minilm-l12": EncoderShape(12, 384, 12, 33.4e6),
    "minilm-l6": EncoderShape(6, 384, 12, 22.7e6),
    "minilm": EncoderShape(6, 384, 12, 22.7e6),
}


@dataclass(frozen=True)
class MemoryProfile:
    """The settings of a trial that drive its memory (defaults: the paper's, on MELD)."""

    encoder: str = "bert-base-uncased"
    hidden_size: int = 768
    intra_layers: int = 6
    intra_heads: int = 12
    inter_layers: int = 4
    inter_heads: int = 8
    ffn_size: int = 2048
    max_length: int = 256
    batch_size: int = 4
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    chunk_size: int = 0
    modalities: int = 3
    """Present modalities (u, a, v); each has its own intra-modal Transformer."""
    turns: int = 12
    """Turns of a padded dialogue in a batch (MELD: mean 9.6, batches pad to the longest)."""
    utterance_tokens: int = 16
    """Mean word pieces per utterance (MELD and IEMOCAP: about 12-18)."""
    tiny_layers: int = 2


def encoder_shape(profile: MemoryProfile) -> EncoderShape:
    """Layers, width, heads and parameter count of the profile's encoder."""
    name = profile.encoder.lower()
    if name == "tiny":
        h = profile.hidden_size
        # Random-init BERT: 4h FFN, ~4000-token vocabulary, 512 positions.
        per_layer = 4 * h * h + 2 * h * 4 * h
        return EncoderShape(profile.tiny_layers, h, profile.intra_heads, per_layer * 2 + 4512 * h)
    for fragment, shape in ENCODERS.items():
        if fragment in name:
            return shape
    return ENCODERS["bert-base"]


def sequence_length(k: int, profile: MemoryProfile) -> float:
    """Tokens of one eq-1 encoder input at window K (utterance + ~K/2 own earlier turns)."""
    return min(profile.max_length, 3 + profile.utterance_tokens * (1 + k / 2))


def _layer_values(s: float, h: int, heads: int, checkpointed: bool) -> float:
    """Values one Transformer layer keeps for backward on one sequence of s tokens."""
    if checkpointed:
        return s * h
    return 17 * s * h + 2.5 * heads * s * s


def _stack_values(s: float, h: int, heads: int, layers: int, checkpointed: bool) -> float:
    """Values kept by ``layers`` stacked layers; checkpointing adds one layer recomputed."""
    if layers <= 0:
        return 0.0
    kept = layers * _layer_values(s, h, heads, checkpointed)
    return kept + (_layer_values(s, h, heads, False) if checkpointed else 0.0)


def parameter_count(profile: MemoryProfile) -> float:
    """Encoder + intra-modal Transformers (one per modality) + inter-modal one + gates."""
    h, f = profile.hidden_size, profile.ffn_size
    layer = 4 * h * h + 2 * h * f
    transformers = layer * (profile.modalities * profile.intra_layers + profile.inter_layers)
    gates = 3 * 3 * h * h  # W_P, W_Q, W_Z per modality pair
    return encoder_shape(profile).parameters + transformers + gates


def activation_bytes(k: int, profile: MemoryProfile) -> float:
    """Uncalibrated activation bytes of one training step at window K."""
    enc = encoder_shape(profile)
    ckpt = profile.gradient_checkpointing
    bytes_per_value = 4 if profile.precision == "fp32" else 2
    turns = profile.turns
    if profile.chunk_size:
        # Backward runs per chunk; a chunk also recomputes K turns back per intra layer.
        turns = min(turns, profile.chunk_size + k * profile.intra_layers)
    sequences = profile.batch_size * turns
    s = sequence_length(k, profile)
    values = sequences * _stack_values(s, enc.hidden, enc.heads, enc.layers, ckpt)
    h = profile.hidden_size
    values += (
        profile.batch_size
        * profile.modalities
        * _stack_values(turns, h, profile.intra_heads, profile.intra_layers, ckpt)
    )
    values += sequences * _stack_values(7, h, profile.inter_heads, profile.inter_layers, ckpt)
    return values * bytes_per_value


def estimate_gb(k: int, profile: MemoryProfile | None = None) -> float:
    """Estimated peak GPU memory (GB) of one trial training at window K."""
    profile = profile or MemoryProfile()
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    static = OVERHEAD_BYTES + STATE_BYTES_PER_PARAM * parameter_count(profile)
    return (static + CALIBRATION * activation_bytes(k, profile)) / GB


def largest_k(budget_gb: float, profile: MemoryProfile | None = None) -> int | None:
    """The largest K in [0, K_CEILING] whose estimate fits ``budget_gb``; None if even K = 0
    does not fit. The estimate never decreases with K, so the first K over budget ends it."""
    if budget_gb <= 0:
        raise ValueError(f"gpu memory budget must be > 0 GB, got {budget_gb}")
    profile = profile or MemoryProfile()
    best = None
    for k in range(K_CEILING + 1):
        if estimate_gb(k, profile) > budget_gb:
            break
        best = k
    return best
