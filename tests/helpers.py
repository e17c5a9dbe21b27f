"""Helpers shared by the tests: a tiny DialogueTRM config and toy texts."""

from __future__ import annotations

TEXTS = [
    "you ate my sandwich",
    "i did not eat anything",
    "my sandwich",
    "yeah",
    "really? that is great news",
    "oh no, i am so sorry",
    "get out of here",
    "whatever you say",
]


def tiny_config(**overrides):
    from trainable.config import DialogueTRMConfig

    values = dict(
        encoder="tiny",
        hidden_size=32,
        intra_layers=2,
        intra_heads=2,
        inter_layers=2,
        inter_heads=2,
        ffn_size=64,
        dropout=0.0,
        k=3,
        max_length=24,
        tiny_vocab_size=200,
        num_labels=4,
    )
    values.update(overrides)
    return DialogueTRMConfig(**values)
