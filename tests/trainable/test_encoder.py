import pytest

from tests.helpers import TEXTS, tiny_config
from trainable.encoder import (
    EncoderNotFoundError,
    InputBuilder,
    _from_pretrained,
    build_tiny_tokenizer,
    hub_reachable,
    load_tokenizer,
)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer(TEXTS * 3, vocab_size=200)


def _split(inputs, tok):
    """Return (utterance ids, context ids) of a turn built with [SEP] tokens."""
    ids = inputs.input_ids
    assert ids[0] == tok.cls_token_id
    first_sep = ids.index(tok.sep_token_id)
    return ids[1:first_sep], ids[first_sep + 1 : -1] if len(ids) > first_sep + 1 else []


def test_layout_and_segments(tokenizer):
    builder = InputBuilder(tokenizer, tiny_config(k=5, max_length=64))
    speakers = ["A", "B", "A", "B", "A"]
    turns = builder.dialogue(TEXTS[:5], speakers)
    tokens = builder.tokenize(TEXTS[:5])
    # Turn 4 (speaker A): indi-context = turns 0 and 2, in time order.
    utt, ctx = _split(turns[4], tokenizer)
    assert utt == tokens[4]
    assert ctx == tokens[0] + tokens[2]
    head = len(utt) + 2  # [CLS] u [SEP]
    assert turns[4].token_type_ids == [0] * head + [1] * (len(ctx) + 1)
    assert turns[4].input_ids[-1] == tokenizer.sep_token_id
    # Turn 0 has no context: [CLS] u [SEP], all segment 0.
    assert turns[0].input_ids == [tokenizer.cls_token_id, *tokens[0], tokenizer.sep_token_id]
    assert set(turns[0].token_type_ids) == {0}


def test_truncation_drops_oldest_context_never_the_utterance(tokenizer):
    cfg = tiny_config(k=10, max_length=16)
    builder = InputBuilder(tokenizer, cfg)
    texts = [f"{TEXTS[i % 8]} {TEXTS[(i + 3) % 8]}" for i in range(8)]
    turns = builder.dialogue(texts, ["A"] * 8)
    tokens = builder.tokenize(texts)
    for i, turn in enumerate(turns):
        assert len(turn.input_ids) <= cfg.max_length
        utt, ctx = _split(turn, tokenizer)
        assert utt == tokens[i][: cfg.max_length - 3]  # the utterance is intact when it fits
        full_context = [t for j in range(max(0, i - cfg.k), i) for t in tokens[j]]
        assert ctx == full_context[len(full_context) - len(ctx) :]  # a suffix: newest kept
        if len(full_context) > len(ctx):
            assert len(turn.input_ids) == cfg.max_length  # cut only when the budget is full


def test_ablation_switches(tokenizer):
    speakers = ["A", "A", "A"]
    no_segment = InputBuilder(tokenizer, tiny_config(segment_embedding=False))
    assert set(no_segment.dialogue(TEXTS[:3], speakers)[2].token_type_ids) == {0}
    no_sep = InputBuilder(tokenizer, tiny_config(sep_tokens=False)).dialogue(TEXTS[:3], speakers)
    assert tokenizer.sep_token_id not in no_sep[2].input_ids
    tokens = InputBuilder(tokenizer, tiny_config()).tokenize(TEXTS[:3])
    assert no_sep[2].input_ids == [tokenizer.cls_token_id, *tokens[2], *tokens[0], *tokens[1]]
    free = InputBuilder(tokenizer, tiny_config(text_context="free")).dialogue(TEXTS[:3], speakers)
    assert free[2].input_ids == [tokenizer.cls_token_id, *tokens[2], tokenizer.sep_token_id]


def test_missing_encoder_is_a_clear_error(tmp_path):
    with pytest.raises(EncoderNotFoundError, match="encoder"):
        load_tokenizer(tiny_config(encoder=str(tmp_path / "no-such-model")))
    with pytest.raises(EncoderNotFoundError, match="neither a local model folder"):
        load_tokenizer(tiny_config(encoder="some-org/not-cached-model"))


def test_tiny_vocabulary_is_deterministic_and_covers_every_character():
    texts = [t + " " + u for t in TEXTS for u in reversed(TEXTS)]
    a, b = build_tiny_tokenizer(texts, 60), build_tiny_tokenizer(list(reversed(texts)), 60)
    assert a.get_vocab() == b.get_vocab()  # same text, same vocabulary, whatever the order
    assert len(a) == 60
    # A word outside the vocabulary falls back to characters, never to [UNK].
    pieces = a.tokenize("sandwiches")
    assert "[UNK]" not in pieces and "".join(p.removeprefix("##") for p in pieces) == "sandwiches"


class _Loader:
    """A ``from_pretrained`` that is not in the local cache and records every call."""

    calls: list[dict] = []

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        cls.calls.append(kwargs)
        raise OSError(f"{path} is not in the local cache")


def test_an_unreachable_hub_fails_at_once_without_download_retries(monkeypatch):
    import socket

    with socket.socket() as closed:  # a port nothing listens on: connect is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    hub_reachable.cache_clear()
    _Loader.calls = []
    try:
        assert not hub_reachable()
        with pytest.raises(EncoderNotFoundError, match="could not be downloaded"):
            _from_pretrained(_Loader, "someone/some-model")
    finally:
        hub_reachable.cache_clear()
    # Only the local-cache lookup: the hub client's download (and its retries) never ran.
    assert _Loader.calls == [{"local_files_only": True}]


def test_a_reachable_hub_is_asked(monkeypatch):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        hub_reachable.cache_clear()
        _Loader.calls = []
        try:
            with pytest.raises(EncoderNotFoundError):
                _from_pretrained(_Loader, "someone/some-model")
        finally:
            hub_reachable.cache_clear()
    assert _Loader.calls == [{"local_files_only": True}, {}]
