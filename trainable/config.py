"""DialogueTRM configuration: every field carries the paper's default (Section 5.2).

Fields that change the tokenized encoder inputs carry ``metadata={SHAPES_FEATURES: True}``;
the feature cache is keyed by exactly those (``feature_fields``), so marking a new such field
here is all it takes to keep the cache correct (tests/trainable/test_features.py checks it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

FUSIONS = ("mgif", "mgif-no-representation", "mgif-no-prototype", "additive", "concat", "max")
TASKS = ("categorical", "dimensional")
PRECISIONS = ("fp32", "bf16", "fp16")
CONTEXT_MODES = ("dependent", "free")  # Table 4: context-dependent (eq 3) or -free (eq 6)
SHAPES_FEATURES = "shapes_features"
_SHAPES = {SHAPES_FEATURES: True}  # metadata of a field that changes the tokenized inputs


@dataclass
class DialogueTRMConfig:
    encoder: str = field(default="bert-base-uncased", metadata=_SHAPES)
    """Utterance encoder (eq 1): a Hugging Face id, a local model folder, or ``tiny`` (a small
    random-init BERT with a WordPiece vocabulary trained on the dataset's text, for CPU runs)."""
    hidden_size: int = 768
    """Hidden size of the intra- and inter-modal Transformers (paper: 768, BERT-base's width).
    Encoder features of another width are linearly projected to it."""
    intra_layers: int = 6
    """Layers of each intra-modal Transformer (eq 2-6; paper: 6)."""
    intra_heads: int = 12
    """Attention heads of each intra-modal Transformer (paper: 12)."""
    inter_layers: int = 4
    """Layers of the representation-dependency Transformer (eq 16; paper: 4)."""
    inter_heads: int = 8
    """Attention heads of the representation-dependency Transformer (paper: 8)."""
    ffn_size: int = 2048
    """Feed-forward width of every Transformer layer (paper: PyTorch's default, 2048)."""
    dropout: float = 0.1
    """Dropout in the Transformers and the discriminator (paper: PyTorch's default, 0.1)."""
    k: int = field(default=14, metadata=_SHAPES)
    """Context window K (Section 3): turns i-K..i-1 form the context of turn i. The paper's
    11 GB GPU afforded K <= 14."""
    max_length: int = field(default=256, metadata=_SHAPES)
    """Token budget of one encoder input ``[CLS] utterance [SEP] indi-context [SEP]``; the
    oldest context tokens are dropped first, never the utterance."""
    audio_dim: int = 0
    """Width of the acoustic features (paper: 100 IEMOCAP, 300 MELD); 0 when absent."""
    visual_dim: int = 0
    """Width of the visual features (paper: 512 IEMOCAP; MELD unused); 0 when absent."""
    task: str = "categorical"
    """``categorical`` (softmax over classes, eq 17 CE) or ``dimensional`` (real values, eq 17 DE)."""
    num_labels: int = 6
    """Number of emotion classes (IEMOCAP 6, MELD 7) or dimensions (AVEC 4)."""
    utterance_only: bool = False
    """DialogueTRM-U: ignore acoustic/visual input, no fusion, o_i = r_i(u)."""
    fusion: str = "mgif"
    """Inter-modal fusion (Table 5): mgif, mgif-no-representation (concat the gated vectors),
    mgif-no-prototype (Transformer over ungated r's), additive, concat or max."""
    text_context: str = field(default="dependent", metadata=_SHAPES)
    """Utterance context mode (Table 4): ``dependent`` (indi-context in BERT, mask eq 3) or
    ``free`` (utterance alone, diagonal mask eq 6)."""
    audio_context: str = "free"
    """Acoustic context mode (Table 4; paper: free, mask eq 6)."""
    visual_context: str = "free"
    """Visual context mode (Table 4; paper: free, mask eq 6)."""
    intra_transformer: bool = True
    """Table 3 ablation: False removes the intra-modal Transformers (r = projected f)."""
    segment_embedding: bool = field(default=True, metadata=_SHAPES)
    """Table 3 ablation: False gives the context tokens segment id 0 like the utterance."""
    sep_tokens: bool = field(default=True, metadata=_SHAPES)
    """Table 3 ablation: False drops the [SEP] tokens around the indi-context."""
    freeze_encoder: bool = False
    """Screening fidelity: the utterance encoder never trains; its [CLS] vectors (eq 1) are
    computed once per input and cached, and only the layers above it train."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (encoder and Transformers) to save memory."""
    precision: str = "fp32"
    """Autocast dtype for the forward pass: fp32, bf16 or fp16 (fp16 needs a grad scaler)."""
    chunk_size: int = 0
    """Turns per utterance-encoder call (0: whole dialogues at once). Training re-encodes
    each chunk in backward, so the encoder's activations are held for one chunk at a time;
    exact, as eq 1 encodes every turn on its own (``trainable.engine.backward_step``)."""
    tiny_layers: int = 2
    """Layers of the ``tiny`` random-init BERT encoder."""
    tiny_vocab_size: int = field(default=4000, metadata=_SHAPES)
    """WordPiece vocabulary size trained for the ``tiny`` encoder."""

    def __post_init__(self) -> None:
        positive = ("hidden_size", "intra_heads", "inter_heads", "ffn_size", "num_labels")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("intra_layers", "inter_layers", "k", "audio_dim", "visual_dim", "chunk_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.tiny_layers < 1 or self.tiny_vocab_size < 100:
            raise ValueError("tiny_layers must be >= 1 and tiny_vocab_size >= 100")
        for name, heads in (("intra_heads", self.intra_heads), ("inter_heads", self.inter_heads)):
            if self.hidden_size % heads:
                raise ValueError(
                    f"hidden_size {self.hidden_size} is not divisible by {name} {heads}"
                )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {self.max_length}")
        choices = (
            ("task", TASKS),
            ("fusion", FUSIONS),
            ("precision", PRECISIONS),
            ("text_context", CONTEXT_MODES),
            ("audio_context", CONTEXT_MODES),
            ("visual_context", CONTEXT_MODES),
        )
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not self.encoder:
            raise ValueError("encoder must name a Hugging Face model, a folder, or 'tiny'")

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities the model reads: u always; a and v when their features exist."""
        if self.utterance_only:
            return ("u",)
        return ("u",) + (("a",) if self.audio_dim else ()) + (("v",) if self.visual_dim else ())

    @property
    def context_modes(self) -> dict[str, str]:
        return {"u": self.text_context, "a": self.audio_context, "v": self.visual_context}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> DialogueTRMConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown DialogueTRMConfig field(s): {', '.join(unknown)}")
        return cls(**values)


def feature_fields() -> tuple[str, ...]:
    """Names of the fields that shape the tokenized features (the feature cache's key)."""
    return tuple(f.name for f in fields(DialogueTRMConfig) if f.metadata.get(SHAPES_FEATURES))


@dataclass
class TrainConfig:
    lr: float = 6e-6
    """Peak learning rate of AdamW (paper: 6e-6)."""
    encoder_lr: float | None = None
    """Peak learning rate of the utterance encoder when it trains (None: ``lr``). Lets a frozen
    screen's winner be fine-tuned with its searched ``lr`` above the encoder and a fine-tuning
    rate inside it (discriminative learning rates)."""
    warmup_steps: int = 1200
    """Linear warmup steps before the linear decay to zero (paper: 1,200)."""
    epochs: int = 10
    """Passes over the training dialogues."""
    batch_size: int = 4
    """Dialogues per optimizer step (each turn of each dialogue is one encoder input)."""
    weight_decay: float = 0.01
    """AdamW weight decay (paper: 0.01), not applied to biases, norms and e_CLS."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm (0 disables)."""
    seed: int = 0
    """Seed of initialisation, dropout and batch order."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.encoder_lr is not None and not self.encoder_lr > 0:
            raise ValueError(f"encoder_lr must be > 0 (or unset), got {self.encoder_lr}")
        for name in ("warmup_steps", "weight_decay", "max_grad_norm"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
