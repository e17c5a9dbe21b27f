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


# The tiny model's shape, the one source for every test that builds it (tiny_config, and
# the run constants of tests that train a searched trial with it).
TINY_MODEL = dict(
    encoder="tiny",
    hidden_size=32,
    intra_heads=2,
    inter_heads=2,
    ffn_size=64,
    max_length=24,
    tiny_vocab_size=200,
)


def tiny_config(**overrides):
    from trainable.config import DialogueTRMConfig

    values = dict(TINY_MODEL, intra_layers=2, inter_layers=2, dropout=0.0, k=3, num_labels=4)
    values.update(overrides)
    return DialogueTRMConfig(**values)


def toy_splits(n_train=12, n_dev=4, n_test=4, audio_dim=0, labels=4, seed=0, dims=0):
    """A small random DatasetSplits built from TEXTS (labels carry no signal)."""
    import random

    import numpy as np

    from trainable.data_types import DatasetSplits, Dialogue

    rng = random.Random(seed)

    def dialogue(split, i):
        n = rng.randint(2, 9)
        return Dialogue(
            id=f"{split}/{i}",
            utterances=[rng.choice(TEXTS) for _ in range(n)],
            speakers=[rng.choice("AB") for _ in range(n)],
            labels=[[rng.random() for _ in range(dims)] for _ in range(n)]
            if dims
            else [rng.randrange(labels) for _ in range(n)],
            audio=np.random.default_rng(seed + i).standard_normal((n, audio_dim)).astype("float32")
            if audio_dim
            else None,
        )

    return DatasetSplits(
        name="toy",
        task="dimensional" if dims else "categorical",
        label_names=[f"d{j}" for j in range(dims)] if dims else [f"c{j}" for j in range(labels)],
        train=[dialogue("train", i) for i in range(n_train)],
        dev=[dialogue("dev", i) for i in range(n_dev)],
        test=[dialogue("test", i) for i in range(n_test)],
        audio_dim=audio_dim,
    )


def toy_trainer(tmp_path, splits=None, train=None, **model_overrides):
    """A Trainer over toy data with the tiny config, the way trainable.run.prepare builds one."""
    from trainable.encoder import build_encoder
    from trainable.engine import TrainConfig, Trainer
    from trainable.features import encode_splits
    from trainable.model import DialogueTRM
    from trainable.run import fit_to_dataset, seed_everything

    splits = splits or toy_splits()
    train = train or TrainConfig(lr=1e-3, warmup_steps=2, epochs=3, batch_size=4, seed=0)
    config = fit_to_dataset(tiny_config(**model_overrides), splits)
    data = encode_splits(splits, config, tmp_path / "cache")
    seed_everything(train.seed)
    model = DialogueTRM(config, build_encoder(config, data.tokenizer))
    return Trainer(
        model, data.tokenizer, data, train, label_names=splits.label_names, dataset="toy"
    )
