"""The feature cache key covers exactly the config fields that change the encoder inputs.

The key is built from the fields marked ``shapes_features`` in ``trainable.config``; these tests
keep that marking honest by changing every field and watching the tokenized inputs.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.helpers import tiny_config
from trainable.config import DialogueTRMConfig, feature_fields
from trainable.datasets import load_dataset
from trainable.encoder import load_tokenizer
from trainable.features import encode_splits, feature_key

# Another valid value for every DialogueTRMConfig field (from the tiny config below).
ALTERNATIVES = {
    "encoder": "minilm",  # packaged with the test dependencies: no network
    "hidden_size": 64,
    "intra_layers": 1,
    "intra_heads": 4,
    "inter_layers": 1,
    "inter_heads": 4,
    "ffn_size": 128,
    "dropout": 0.2,
    "k": 1,
    "max_length": 16,
    "audio_dim": 16,
    "visual_dim": 32,
    "task": "dimensional",
    "num_labels": 5,
    "utterance_only": True,
    "fusion": "concat",
    "text_context": "free",
    "audio_context": "dependent",
    "visual_context": "dependent",
    "intra_transformer": False,
    "segment_embedding": False,
    "sep_tokens": False,
    "freeze_encoder": True,  # tokens stay; the frozen vectors have a cache of their own
    "gradient_checkpointing": True,
    "precision": "bf16",
    "chunk_size": 2,
    "tiny_layers": 1,
    "tiny_vocab_size": 100,  # below the ~120 entries the texts would fill: fewer whole words
}
FIELDS = [f.name for f in dataclasses.fields(DialogueTRMConfig)]


@pytest.fixture(scope="module")
def splits():
    return load_dataset("synthetic", max_dialogues=4, size=0.05)


@pytest.fixture(scope="module")
def base():
    return tiny_config()


@pytest.fixture(scope="module")
def inputs(splits):
    """Encoded inputs of a config, the way ``encode_splits`` makes them but without the cache.

    Tokenizers are shared between configs that ``load_tokenizer`` would build alike: it reads
    only the encoder and, for ``tiny``, the vocabulary size.
    """
    texts = [u for d in splits.train for u in d.utterances]
    tokenizers = {}

    def encode(config: DialogueTRMConfig) -> dict:
        which = (config.encoder, config.tiny_vocab_size if config.encoder == "tiny" else None)
        if which not in tokenizers:
            tokenizers[which] = load_tokenizer(config, texts)
        data = encode_splits(splits, config, tokenizer=tokenizers[which])
        return {
            split: [(row["input_ids"], row["token_type_ids"]) for row in getattr(data, split)]
            for split in ("train", "dev", "test")
        }

    return encode


def test_every_field_has_an_alternative(base):
    # A new config field needs a value here, so the test below decides whether it is marked.
    assert set(ALTERNATIVES) == set(FIELDS)
    for name, value in ALTERNATIVES.items():
        assert getattr(base, name) != value, name


@pytest.mark.parametrize("name", FIELDS)
def test_a_field_shapes_features_exactly_when_marked(name, base, splits, inputs):
    other = dataclasses.replace(base, **{name: ALTERNATIVES[name]})  # validates the value
    changed = inputs(other) != inputs(base)
    marked = name in feature_fields()
    assert changed == marked, (
        f"{name} changes the encoder inputs: mark it shapes_features in trainable/config.py"
        if changed
        else f"{name} is marked shapes_features but does not change the encoder inputs"
    )
    if marked:
        assert feature_key(splits, other) != feature_key(splits, base), name
    else:
        assert feature_key(splits, other) == feature_key(splits, base), name


def test_tiny_vocab_size_counts_only_for_the_tiny_encoder(splits, base):
    minilm = dataclasses.replace(base, encoder="minilm")
    smaller = dataclasses.replace(minilm, tiny_vocab_size=100)
    assert feature_key(splits, smaller) == feature_key(splits, minilm)


def test_cache_hit_for_an_unmarked_field_and_miss_for_a_marked_one(splits, base, tmp_path):
    first = encode_splits(splits, base, tmp_path)
    other_dropout = encode_splits(splits, dataclasses.replace(base, dropout=0.3), tmp_path)
    no_sep = encode_splits(splits, dataclasses.replace(base, sep_tokens=False), tmp_path)
    assert not first.from_cache and other_dropout.from_cache
    assert other_dropout.path == first.path and other_dropout.train == first.train
    assert not no_sep.from_cache and no_sep.path != first.path
