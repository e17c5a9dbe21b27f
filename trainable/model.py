"""DialogueTRM (Section 4 of the paper), modules in the order data flows through them.

utterance tokens --UtteranceEncoder (eq 1)--> F(u) --IntraModalTransformer (eq 2-3)--> r(u)
acoustic/visual --projection + IntraModalTransformer (eq 4-6)--> r(a), r(v)
r(u), r(a), r(v) --MultiGrainedFusion (eq 7-16)--> o --Discriminator (eq 17-18)--> P
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from trainable.config import DialogueTRMConfig
from trainable.context import attention_mask
from trainable.encoder import InputBuilder, build_encoder, has_segment_embeddings, load_tokenizer

PAIRS = (("u", "a"), ("u", "v"), ("a", "v"))  # the fixed order of eq 12-15
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class UtteranceEncoder(nn.Module):
    """Eq 1: f_i(u) = BERT([CLS] x_i [SEP] indi-context_i [SEP]) at [CLS], per turn."""

    def __init__(self, config: DialogueTRMConfig, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.segments = has_segment_embeddings(encoder)
        if not self.segments and config.segment_embedding and config.text_context == "dependent":
            name = getattr(encoder.config, "model_type", type(encoder).__name__)
            warnings.warn(
                f"encoder type {name!r} has no segment embeddings: utterance and context share "
                "segment 0, i.e. the 'remove segment embedding' ablation of Table 3",
                stacklevel=2,
            )
        width = encoder.config.hidden_size
        self.proj = nn.Linear(width, config.hidden_size) if width != config.hidden_size else None
        if config.gradient_checkpointing:
            enable = getattr(encoder, "activation_checkpointing_enable", None)  # transformers 5
            enable = enable or encoder.gradient_checkpointing_enable
            enable({"use_reentrant": False})
            encoder.config.use_cache = False

    def encode(self, input_ids, attention_mask, token_type_ids, turn_mask):
        """Eq 1's [CLS] vectors (B, L, He) of the given turns; padding turns get zeros. Each
        turn's input is encoded on its own, so any split of the turns gives the same vectors."""
        B, L, T = input_ids.shape  # (B, L, T): T tokens per turn
        valid = turn_mask.reshape(-1).nonzero().squeeze(1)  # (N,) turns that exist
        width = self.encoder.config.hidden_size
        f = input_ids.new_zeros(B * L, width, dtype=torch.float32)
        if valid.numel():
            am = attention_mask.reshape(B * L, T)[valid]  # (N, T)
            used = int(am.sum(1).max())  # trim padding columns shared by every turn
            out = self.encoder(
                input_ids=input_ids.reshape(B * L, T)[valid, :used],
                attention_mask=am[:, :used],
                token_type_ids=token_type_ids.reshape(B * L, T)[valid, :used]
                if self.segments
                else None,
            ).last_hidden_state[:, 0]  # (N, He) at [CLS]
            f = f.to(out.dtype).index_copy(0, valid, out)
        return f.view(B, L, width)  # (B, L, He)

    def project(self, f):  # f: (B, L, He), encoded here or a frozen encoder's cached vectors
        return self.proj(f) if self.proj is not None else f  # (B, L, H)


class IntraModalTransformer(nn.Module):
    """Eq 2-6: a Transformer over one modality's turns under mask rho-bar (eq 3) or rho-dot
    (eq 6). PyTorch's encoder layer with its defaults, as in the paper."""

    def __init__(self, config: DialogueTRMConfig, mode: str, layers: int | None = None):
        super().__init__()
        n = config.intra_layers if layers is None else layers
        self.mode, self.k = mode, config.k
        self.checkpointing = config.gradient_checkpointing
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                config.hidden_size,
                config.intra_heads,
                config.ffn_size,
                config.dropout,
                batch_first=True,
            )
            for _ in range(n)
        )

    def forward(self, x):  # x: (B, L, H)
        mask = attention_mask(x.shape[1], self.k, self.mode).to(x.device)  # (L, L), True = blocked
        for layer in self.layers:
            if self.checkpointing and self.training:
                x = checkpoint(layer, x, mask, use_reentrant=False)
            else:
                x = layer(x, src_mask=mask)
        return x  # (B, L, H)


class MultiModalGate(nn.Module):
    """Eq 7-12, the prototype dependency: a position-wise trade-off between two modalities."""

    def __init__(self, hidden: int):
        super().__init__()
        self.w_p = nn.Linear(hidden, hidden)
        self.w_q = nn.Linear(hidden, hidden)
        self.w_z = nn.Linear(2 * hidden, hidden)

    def forward(self, r_p, r_q):  # (..., H) each
        h_p = torch.tanh(self.w_p(r_p))  # eq 7
        h_q = torch.tanh(self.w_q(r_q))  # eq 8
        z = torch.sigmoid(self.w_z(torch.cat([r_p, r_q], dim=-1)))  # eq 9
        return z * h_p, (1 - z) * h_q, z  # eq 10, eq 11


class MultiGrainedFusion(nn.Module):
    """Eq 7-16 (MGIF) and the fusion variants of Table 5. Output o_i per turn."""

    def __init__(self, config: DialogueTRMConfig):
        super().__init__()
        self.kind, self.modalities = config.fusion, config.modalities
        H, M = config.hidden_size, len(self.modalities)
        self.pairs = [p for p in PAIRS if p[0] in self.modalities and p[1] in self.modalities]
        gated = self.kind in ("mgif", "mgif-no-representation")
        self.gates = nn.ModuleDict(
            {p + q: MultiModalGate(H) for p, q in self.pairs} if gated else {}
        )
        self.transformer = None
        self.checkpointing = config.gradient_checkpointing
        if self.kind in ("mgif", "mgif-no-prototype"):
            self.e_cls = nn.Parameter(torch.randn(H) * 0.02)  # learned e_CLS of eq 15
            layer = nn.TransformerEncoderLayer(
                H, config.inter_heads, config.ffn_size, config.dropout, batch_first=True
            )
            self.transformer = nn.TransformerEncoder(
                layer, config.inter_layers, enable_nested_tensor=False
            )
        widths = {"mgif-no-representation": 2 * len(self.pairs) * H, "concat": M * H}
        self.out_dim = widths.get(self.kind, H)

    def forward(self, r: dict[str, torch.Tensor]) -> torch.Tensor:  # r[m]: (B, L, H)
        if self.kind in ("additive", "concat", "max"):
            stacked = [r[m] for m in self.modalities]
            if self.kind == "additive":
                return torch.stack(stacked).sum(0)  # (B, L, H)
            if self.kind == "max":
                return torch.stack(stacked).amax(0)  # (B, L, H)
            return torch.cat(stacked, dim=-1)  # (B, L, M*H)
        if self.gates:
            seq = []
            for p, q in self.pairs:  # eq 12-14
                h_pq, h_qp, _ = self.gates[p + q](r[p], r[q])
                seq += [h_pq, h_qp]
        else:  # w/o prototype dependency: the Transformer wraps the ungated r's
            seq = [r[m] for m in self.modalities]
        if self.transformer is None:  # w/o representation dependency: concatenate
            return torch.cat(seq, dim=-1)  # (B, L, 2P*H)
        B, L, H = seq[0].shape
        cls = self.e_cls.to(seq[0].dtype).expand(B, L, H)
        m = torch.stack([cls, *seq], dim=2).reshape(B * L, len(seq) + 1, H)  # eq 15: M_i
        # Eq 16, full mask rho_i. Layer by layer (what nn.TransformerEncoder does without a mask
        # or final norm) so that, like the intra-modal layers, each can be recomputed in
        # backward: B*L sequences of 1 + 2P tokens save as much as the intra layers do.
        for layer in self.transformer.layers:
            if self.checkpointing and self.training:
                m = checkpoint(layer, m, use_reentrant=False)
            else:
                m = layer(m)
        return m[:, 0].reshape(B, L, H)  # o_i at e_CLS


class Discriminator(nn.Module):
    """Eq 17-18: two-layer perceptron with tanh; softmax (CE) or linear (DE) read-out.
    Returns logits for CE (softmax lives in the loss) and the values for DE."""

    def __init__(self, in_dim: int, config: DialogueTRMConfig):
        super().__init__()
        self.dropout = nn.Dropout(config.dropout)
        self.w_o = nn.Linear(in_dim, config.hidden_size)
        self.w_out = nn.Linear(config.hidden_size, config.num_labels)  # W_C or W_D

    def forward(self, o):  # (B, L, D)
        return self.w_out(torch.tanh(self.w_o(self.dropout(o))))  # (B, L, C)


class DialogueTRM(nn.Module):
    def __init__(self, config: DialogueTRMConfig, encoder: nn.Module):
        super().__init__()
        self.config = config
        H = config.hidden_size
        self.utterance = UtteranceEncoder(config, encoder)
        modes = config.context_modes
        self.projections = nn.ModuleDict()
        if "a" in config.modalities:
            self.projections["a"] = nn.Linear(config.audio_dim, H)  # eq 4 input: 100/300 -> H
        if "v" in config.modalities:
            self.projections["v"] = nn.Linear(config.visual_dim, H)  # eq 5 input: 512 -> H
        n = config.intra_layers if config.intra_transformer else 0
        self.intra = nn.ModuleDict(
            {m: IntraModalTransformer(config, modes[m], n) for m in config.modalities}
        )
        single = len(config.modalities) == 1  # DialogueTRM-U: o_i = r_i(u)
        self.fusion = None if single else MultiGrainedFusion(config)
        self.discriminator = Discriminator(H if single else self.fusion.out_dim, config)

    @classmethod
    def from_config(cls, config: DialogueTRMConfig, texts=None):
        """Build the model and its tokenizer (``texts`` train the tiny encoder's vocabulary)."""
        tokenizer = load_tokenizer(config, texts)
        return cls(config, build_encoder(config, tokenizer)), tokenizer

    def input_builder(self, tokenizer) -> InputBuilder:
        return InputBuilder(tokenizer, self.config, segment_ids=self.utterance.segments)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def autocast(self, device_type: str):
        """The forward's autocast context (``precision``); a no-op for fp32."""
        dtype = DTYPES[self.config.precision]
        return torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32)

    def chunks(self, turns: int) -> list[tuple[int, int]]:
        """Turn ranges [start, end) of ``chunk_size`` turns (one range without chunking)."""
        size = self.config.chunk_size or turns
        return [(start, min(start + size, turns)) for start in range(0, turns, size)]

    def encode_turns(self, input_ids, attention_mask, token_type_ids, turn_mask, start, end):
        """Eq 1 for turns [start, end) of every dialogue: (B, end - start, He). The layers
        above the encoder mix turns; the encoder never does, which is what makes encoding in
        chunks exact."""
        with self.autocast(turn_mask.device.type):
            return self.utterance.encode(
                input_ids[:, start:end],
                attention_mask[:, start:end],
                token_type_ids[:, start:end],
                turn_mask[:, start:end],
            )

    def encode_dialogue(self, input_ids, attention_mask, token_type_ids, turn_mask):
        """Eq 1 for every turn, ``chunk_size`` turns per encoder call: (B, L, He)."""
        parts = [
            self.encode_turns(input_ids, attention_mask, token_type_ids, turn_mask, a, b)
            for a, b in self.chunks(turn_mask.shape[1])
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def forward_encoded(self, encoded, audio=None, visual=None):
        """Eq 2-17 over whole dialogues from eq 1's [CLS] vectors ``encoded`` (B, L, He):
        everything above the utterance encoder. Logits (CE) or values (DE), (B, L, C)."""
        with self.autocast(encoded.device.type):
            r = {"u": self.utterance.project(encoded)}  # (B, L, H)
            features = {"a": audio, "v": visual}
            for m in self.projections:
                if features[m] is None:
                    raise ValueError(f"the config expects {m!r} features but none were given")
                r[m] = self.projections[m](features[m])  # (B, L, H)
            r = {m: self.intra[m](x) for m, x in r.items()}  # eq 2-6
            o = r["u"] if self.fusion is None else self.fusion(r)  # eq 7-16
            return self.discriminator(o).float()  # eq 17, (B, L, C)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        turn_mask=None,
        audio=None,
        visual=None,
        features=None,
    ):
        """Logits (CE) or values (DE) for every turn: (B, L, num_labels). ``features``
        (B, L, He), a frozen encoder's cached [CLS] vectors, replace the token inputs.

        With ``chunk_size`` the encoder runs per chunk of turns; the outputs are the same.
        Training that bounds memory by one chunk needs backward per chunk as well:
        ``trainable.engine.backward_step``."""
        if features is None:
            features = self.encode_dialogue(input_ids, attention_mask, token_type_ids, turn_mask)
        return self.forward_encoded(features, audio, visual)

    def loss(self, outputs, labels, turn_mask, reduction: str = "mean"):
        """Cross-entropy (CE) or squared error summed over dimensions (DE), over the turns that
        exist; ``reduction`` is ``mean`` or ``sum`` over those turns."""
        valid = turn_mask.bool()
        if self.config.task == "categorical":
            return F.cross_entropy(outputs[valid], labels[valid], reduction=reduction)
        per_turn = ((outputs[valid] - labels[valid].to(outputs.dtype)) ** 2).sum(-1)
        return per_turn.sum() if reduction == "sum" else per_turn.mean()

    @staticmethod
    def predict(outputs, task: str = "categorical"):
        """Eq 18: argmax for CE, the values themselves for DE."""
        return outputs.argmax(-1) if task == "categorical" else outputs
