"""Peak memory of one DialogueTRM training step and the largest K that fits a budget (the
cheapest memory settings that fit a config: ``search_spaces.memory_plan``).

The estimate, in bytes, of the memory a trial's allocator holds at its peak::

    peak = static + SLACK * max over stretches (saved + transient)

- ``static``: fp32 weights (4 B per parameter) plus, for every parameter that trains, its
  gradient (4 B) and AdamW's two moments (8 B). A frozen encoder costs its weights only.
- ``saved``: the tensors autograd keeps for backward at the end of a stretch of forward that
  one backward frees (``stretches``): the whole step; with chunking (the encoder's backward
  per chunk, ``trainable.engine.backward_step``), the layers above the encoder over whole
  dialogues, or one chunk's encoder, never both at once. Each is the sum over ``FEATURES``
  of a count (values of one kind, from the shapes) times a fitted byte cost per value
  (``COEFFICIENTS``, by precision and gradient checkpointing). The costs were fitted by
  ``bench/memory_model.py`` to saved-tensor bytes measured on CPU with
  ``torch.autograd.graph.saved_tensors_hooks`` (unique storages, parameters and buffers
  excluded) on a grid of small random-init models, chunked steps included; its worst error
  on that grid is ``FIT_ERROR``, and ``tests/search_spaces/test_budget.py`` re-measures a
  few configs against the estimate.
- ``transient``: backward's working set in the encoder's stretch (the largest activation's
  gradient; with checkpointing, one encoder layer recomputed; with chunking, the [CLS]
  vectors and their gradient). ``SLACK``: GPU allocator fragmentation, an assumption (1.1)
  until measured on a GPU (none was available for the fit).

The CUDA context (~0.3-0.6 GB per process) lives outside the allocator and outside this
budget: ``orchestrator.resources.gpu_share`` leaves room for it on a shared card.

Shapes come from the data's worst batch (the encoder pads every turn to the batch's longest
input): ``MemoryProfile``'s defaults are MELD's, by ``bench/memory_model.py --lengths``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

GB = 1024**3
K_CEILING = 64  # largest K largest_k() considers; beyond it the window covers whole dialogues
SLACK = 1.1
VOCAB_TINY = 4000  # the tiny encoder's default vocabulary (DialogueTRMConfig.tiny_vocab_size)

FEATURES = (
    "enc_tokens",  # encoder layers x sequences x tokens x encoder width
    "enc_scores",  # encoder layers x sequences x heads x tokens^2 (attention probabilities)
    "embed_tokens",  # sequences x tokens x encoder width (embeddings, layer-0 input)
    "intra_rows",  # intra layers x modalities x dialogues x turns x hidden
    "intra_ffn",  # intra layers x modalities x dialogues x turns x ffn width
    "intra_scores",  # intra layers x modalities x dialogues x heads x turns^2
    "inter_rows",  # inter layers x turns x fusion tokens x hidden (fusion tokens: 1 + 2 pairs)
    "inter_ffn",  # inter layers x turns x fusion tokens x ffn width
    "inter_scores",  # inter layers x turns x heads x fusion tokens^2
    "head_rows",  # dialogues x turns x hidden x (modalities + 3 per gated pair): gates, heads
    "cast_params",  # matmul weights: autocast keeps a 16-bit copy of each for backward
)

# Bytes per counted value, fitted by bench/memory_model.py (see its printed table); keys:
# (precision class, gradient checkpointing). fp16 costs what bf16 does (both 2-byte).
# The encoder's fp32 costs match Korthikanti et al. 2022: 71.5 B = ~17.9 fp32 values per token
# and width per layer, ~12 B per attention score (probabilities, dropout output and mask).
# CPU autocast keeps layer norms and softmax in fp32, so bf16 saves only ~30 %; on a GPU the
# fused attention kernels save no scores at all (unmeasured here: no GPU).
# With checkpointing, encoder, intra-modal and fusion layers keep only their inputs.
COEFFICIENTS: dict[tuple[str, bool], dict[str, float]] = {
    ("fp32", False): {
        "enc_tokens": 72.087, "enc_scores": 12.046, "embed_tokens": 12.96,
        "intra_rows": 47.143, "intra_ffn": 12.194, "intra_scores": 16.197,
        "inter_rows": 48.355, "inter_ffn": 12.059, "inter_scores": 9.999,
        "head_rows": 8.105, "cast_params": 0.0,
    },
    ("fp32", True): {
        "enc_tokens": 3.936, "enc_scores": 0.027, "embed_tokens": 12.586,
        "intra_rows": 5.496, "intra_ffn": 0.037, "intra_scores": 0.241,
        "inter_rows": 2.742, "inter_ffn": 0.032, "inter_scores": 0.556,
        "head_rows": 8.999, "cast_params": 0.0,
    },
    ("half", False): {
        "enc_tokens": 50.982, "enc_scores": 11.972, "embed_tokens": 12.305,
        "intra_rows": 27.995, "intra_ffn": 5.191, "intra_scores": 21.74,
        "inter_rows": 28.449, "inter_ffn": 6.695, "inter_scores": 0.0,
        "head_rows": 1.492, "cast_params": 1.934,
    },
    ("half", True): {
        "enc_tokens": 4.053, "enc_scores": 0.0, "embed_tokens": 12.449,
        "intra_rows": 4.99, "intra_ffn": 0.0, "intra_scores": 0.514,
        "inter_rows": 0.137, "inter_ffn": 0.004, "inter_scores": 0.993,
        "head_rows": 4.613, "cast_params": 1.513,
    },
}  # fmt: skip
FIT_ERROR = 0.053  # worst |estimate / measured - 1| of the saved bytes' peak, bench's 144 configs


# MELD train, worst batch of 4 (bench/memory_model.py --lengths): padded word pieces of the
# encoder inputs by K, made non-decreasing (the worst batch changes with K). Multi-party
# dialogues keep the indi-context short: it saturates near 158 tokens from K = 10.
MELD_TOKENS = ((0, 53.0), (1, 99.0), (2, 124.0), (3, 131.0), (4, 140.0), (8, 141.0), (10, 158.0))


@dataclass(frozen=True)
class EncoderShape:
    """What the estimate needs to know about an utterance encoder."""

    layers: int
    """Transformer layers."""
    hidden: int
    """Width of its hidden states."""
    heads: int
    """Attention heads per layer."""
    parameters: float
    """All parameters, embeddings included."""
    embedding_parameters: float
    """Parameters of the embedding tables (looked up, never cast by autocast)."""


# Known encoders by name fragment; an unknown name is costed as BERT-base (the paper's).
ENCODERS: dict[str, EncoderShape] = {
    "bert-base": EncoderShape(12, 768, 12, 109.5e6, 23.8e6),
    "bert-large": EncoderShape(24, 1024, 16, 335e6, 31.8e6),
    "roberta-base": EncoderShape(12, 768, 12, 124.6e6, 39.0e6),
    "roberta-large": EncoderShape(24, 1024, 16, 355e6, 52.0e6),
    "minilm-l12": EncoderShape(12, 384, 12, 33.4e6, 11.9e6),
    "minilm-l6": EncoderShape(6, 384, 12, 22.7e6, 11.9e6),
    "minilm": EncoderShape(6, 384, 12, 22.7e6, 11.9e6),
}


@dataclass(frozen=True)
class MemoryProfile:
    """The settings of a trial that drive its memory (defaults: the paper's, on MELD)."""

    encoder: str = "bert-base-uncased"
    """Utterance encoder: a name fragment of ``ENCODERS``, ``tiny``, or anything else (costed
    as BERT-base)."""
    hidden_size: int = 768
    """Width of the intra- and inter-modal Transformers."""
    intra_layers: int = 6
    """Layers of each intra-modal Transformer."""
    intra_heads: int = 12
    """Heads of the intra-modal Transformers (and of the tiny encoder)."""
    inter_layers: int = 4
    """Layers of the fusion Transformer."""
    inter_heads: int = 8
    """Heads of the fusion Transformer."""
    ffn_size: int = 2048
    """Feed-forward width of the intra- and inter-modal layers."""
    max_length: int = 256
    """Cap on one encoder input's tokens."""
    batch_size: int = 4
    """Dialogues per step."""
    precision: str = "fp32"
    """fp32, bf16 or fp16 autocast."""
    gradient_checkpointing: bool = False
    """Recompute each layer in backward (encoder, intra-modal and fusion layers)."""
    chunk_size: int = 0
    """Turns per backward (0: the whole dialogue)."""
    freeze_encoder: bool = False
    """The encoder does not train: no encoder activations, gradients or AdamW state."""
    modalities: int = 3
    """Present modalities (u, a, v); each has its own intra-modal Transformer."""
    turns: int = 24
    """Padded turns of the worst batch (MELD train: its longest dialogues have 24)."""
    valid_turns: float = 22.8
    """Real turns per dialogue in that batch (the rest is padding the encoder skips)."""
    tokens: tuple[tuple[int, float], ...] = MELD_TOKENS
    """Padded encoder input length of the worst batch at some K, as (K, tokens) points:
    linear between points, the last value beyond them, never above ``max_length``."""
    tiny_layers: int = 2
    """Layers of the ``tiny`` encoder."""

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        for name in ("hidden_size", "intra_heads", "inter_heads", "ffn_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.modalities <= 3:
            raise ValueError(f"modalities must be 1, 2 or 3, got {self.modalities}")
        for name in ("intra_layers", "inter_layers", "chunk_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.valid_turns <= self.turns:
            raise ValueError(f"valid_turns must be in (0, turns={self.turns}]")
        points = list(self.tokens)
        if not points or points[0][0] != 0 or any(t < 1 for _, t in points):
            raise ValueError("tokens must start at K = 0 and give >= 1 token per point")
        if any(b[0] <= a[0] or b[1] < a[1] for a, b in zip(points, points[1:], strict=False)):
            raise ValueError("tokens must be (K, tokens) points with K and tokens increasing")


def encoder_shape(profile: MemoryProfile) -> EncoderShape:
    """Layers, width, heads and parameter counts of the profile's encoder."""
    name = profile.encoder.lower()
    if name == "tiny":
        h = profile.hidden_size
        # Random-init BERT (trainable.encoder): 4h FFN, ~4000-token vocabulary, 512 positions.
        per_layer = 4 * h * h + 2 * h * 4 * h
        embeddings = (VOCAB_TINY + 512 + 2) * h
        return EncoderShape(
            profile.tiny_layers,
            h,
            profile.intra_heads,
            per_layer * profile.tiny_layers + embeddings,
            embeddings,
        )
    for fragment, shape in ENCODERS.items():
        if fragment in name:
            return shape
    return ENCODERS["bert-base"]


def sequence_length(k: int, profile: MemoryProfile) -> float:
    """Padded tokens of the worst batch's encoder inputs at window K."""
    points = profile.tokens
    for (k0, t0), (k1, t1) in zip(points, points[1:], strict=False):
        if k <= k1:
            return min(profile.max_length, t0 + (t1 - t0) * (k - k0) / (k1 - k0))
    return min(profile.max_length, points[-1][1])


def _pairs(profile: MemoryProfile) -> int:
    """Gated modality pairs of MGIF (eq 12-14): 0, 1 or 3."""
    return profile.modalities * (profile.modalities - 1) // 2


def parameter_count(profile: MemoryProfile) -> tuple[float, float]:
    """(all parameters, those outside the encoder): encoder + one intra-modal Transformer per
    modality + the fusion Transformer and gates + the discriminator."""
    h, f = profile.hidden_size, profile.ffn_size
    layer = 4 * h * h + 2 * h * f
    fusion = profile.modalities > 1
    above = layer * (profile.modalities * profile.intra_layers)
    above += (layer * profile.inter_layers + 5 * h * h * _pairs(profile)) if fusion else 0
    above += 2 * h * h  # discriminator W_o (and the projection of a narrower encoder)
    return encoder_shape(profile).parameters + above, above


def static_bytes(profile: MemoryProfile) -> float:
    """Weights, gradients and AdamW moments: 4 B per weight, 12 B more per trained one."""
    total, above = parameter_count(profile)
    trained = above if profile.freeze_encoder else total
    return 4 * total + 12 * trained


def chunked(profile: MemoryProfile) -> bool:
    """Whether a step encodes in chunks that backward re-encodes one at a time (a frozen
    encoder has no backward: its chunks change nothing)."""
    return bool(profile.chunk_size) and not profile.freeze_encoder


def features(
    k: int, profile: MemoryProfile, encoded: float | None = None, above: bool = True
) -> dict[str, float]:
    """Counts of values of each kind in ``FEATURES`` saved by one stretch of forward at
    window K: the encoder over ``encoded`` real turns per dialogue (default: all of them; 0
    with a frozen encoder) and, with ``above``, the layers above it over whole dialogues."""
    enc = encoder_shape(profile)
    B, h, f = profile.batch_size, profile.hidden_size, profile.ffn_size
    if profile.freeze_encoder:
        encoded = 0.0
    N = B * (profile.valid_turns if encoded is None else encoded)  # sequences the encoder runs
    L = float(profile.turns) if above else 0.0  # turns the layers above run over
    s = sequence_length(k, profile)
    q = 1 + 2 * _pairs(profile) if profile.modalities > 1 else 0  # fusion tokens per turn
    inter = profile.inter_layers if q else 0
    intra = profile.intra_layers * profile.modalities
    _, params_above = parameter_count(profile)
    # Autocast's 16-bit weight copies saved for backward; layers run under checkpointing save
    # none (they recast when recomputed): then only the gates and heads count.
    if profile.gradient_checkpointing:
        cast = params_above - (intra + inter) * (4 * h * h + 2 * h * f) if above else 0.0
    else:
        cast = (params_above if above else 0.0) + (
            enc.parameters - enc.embedding_parameters if N else 0.0
        )
    return {
        "enc_tokens": enc.layers * N * s * enc.hidden,
        "enc_scores": enc.layers * N * enc.heads * s * s,
        "embed_tokens": N * s * enc.hidden,
        "intra_rows": intra * B * L * h,
        "intra_ffn": intra * B * L * f,
        "intra_scores": intra * B * profile.intra_heads * L * L,
        "inter_rows": inter * B * L * q * h,
        "inter_ffn": inter * B * L * q * f,
        "inter_scores": inter * B * L * profile.inter_heads * q * q,
        "head_rows": B * L * h * (profile.modalities + 3 * _pairs(profile)),
        "cast_params": cast if profile.precision != "fp32" else 0.0,
    }


def stretches(k: int, profile: MemoryProfile) -> list[dict[str, float]]:
    """``features`` of each stretch of forward whose saved tensors one backward frees: the
    whole step; with chunking (``trainable.engine.backward_step``), the layers above over
    whole dialogues (their backward gives dL/de), then the encoder over one chunk of turns
    (re-encoded and backpropagated alone). The last one is the encoder's."""
    if not chunked(profile):
        return [features(k, profile)]
    chunk = min(float(profile.chunk_size), profile.valid_turns)  # the first chunk is full
    return [features(k, profile, encoded=0.0), features(k, profile, encoded=chunk, above=False)]


def coefficients(profile: MemoryProfile) -> dict[str, float]:
    """The fitted bytes per value for the profile's precision and checkpointing."""
    kind = "fp32" if profile.precision == "fp32" else "half"
    return COEFFICIENTS[(kind, profile.gradient_checkpointing)]


def _bytes(values: dict[str, float], coef: dict[str, float]) -> float:
    return sum(coef.get(name, 0.0) * value for name, value in values.items())


def stretch_bytes(k: int, profile: MemoryProfile) -> list[float]:
    """Estimated bytes autograd saves in each of ``stretches`` (parameters excluded)."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    coef = coefficients(profile)
    return [_bytes(values, coef) for values in stretches(k, profile)]


def saved_bytes(k: int, profile: MemoryProfile) -> float:
    """Estimated bytes autograd holds for backward at the step's peak: the largest stretch
    (with chunking, the layers above or one chunk's encoder, never both)."""
    return max(stretch_bytes(k, profile))


def transient_bytes(k: int, profile: MemoryProfile) -> float:
    """Backward's working set beyond the saved tensors while the encoder backpropagates: the
    gradient of its largest activation (the FFN's, fp32) and, with checkpointing, one encoder
    layer's full saved set, recomputed; with chunking, per chunk, plus the [CLS] vectors e and
    dL/de of whole dialogues (fp32)."""
    if profile.freeze_encoder:
        return 0.0
    enc = encoder_shape(profile)
    one = dataclasses.replace(profile, gradient_checkpointing=False)
    values = stretches(k, one)[-1]
    coef = coefficients(one)
    largest = 4 * 4 * values["embed_tokens"]  # the FFN's 4h-wide activation, fp32
    if chunked(profile):
        largest += 2 * 4 * profile.batch_size * profile.turns * enc.hidden  # e and dL/de
    if not profile.gradient_checkpointing:
        return largest
    per_layer = sum(coef[n] * values[n] for n in ("enc_tokens", "enc_scores")) / enc.layers
    return largest + per_layer


def active_bytes(k: int, profile: MemoryProfile) -> float:
    """Saved plus transient bytes at the step's peak: the encoder's stretch with its working
    set, or (chunked) the stretch of the layers above if that is larger."""
    *above, encoder = stretch_bytes(k, profile)
    return max([*above, encoder + transient_bytes(k, profile)])


def estimate_bytes(k: int, profile: MemoryProfile) -> float:
    """Estimated peak bytes of one training step at window K."""
    return static_bytes(profile) + SLACK * active_bytes(k, profile)


def estimate_gb(k: int, profile: MemoryProfile | None = None) -> float:
    """Estimated peak memory (GB) of one trial training at window K."""
    return estimate_bytes(k, profile or MemoryProfile()) / GB


def check_budget(budget_gb: float) -> None:
    """Raise ValueError naming the budget unless it is positive."""
    if not budget_gb > 0:
        raise ValueError(f"gpu memory budget must be > 0 GB, got {budget_gb}")


def largest_k(budget_gb: float, profile: MemoryProfile | None = None) -> int | None:
    """The largest K in [0, K_CEILING] whose estimate fits ``budget_gb``; None if even K = 0
    does not fit. The estimate never decreases with K, so the first K over budget ends it."""
    check_budget(budget_gb)
    profile = profile or MemoryProfile()
    if estimate_gb(0, profile) > budget_gb:
        return None
    low, high = 0, K_CEILING  # estimate(low) fits; bisect for the last K that fits
    if estimate_gb(high, profile) <= budget_gb:
        return high
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if estimate_gb(mid, profile) <= budget_gb else (low, mid)
    return low
