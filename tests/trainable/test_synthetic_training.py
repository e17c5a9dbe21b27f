"""On the synthetic conversations the loss falls, and the indi-context of eq 1 measurably helps."""

import pytest

from trainable.config import DialogueTRMConfig
from trainable.engine import TrainConfig
from trainable.presets import TRAIN_PRESETS
from trainable.run import prepare

TINY = {
    k: v for k, v in TRAIN_PRESETS["tiny"].items() if k in DialogueTRMConfig.__dataclass_fields__
}


def train_text_only(tmp_path, **overrides):
    config = DialogueTRMConfig(**{**TINY, "k": 4, "utterance_only": True, **overrides})
    train = TrainConfig(lr=2e-3, warmup_steps=10, epochs=6, batch_size=8, seed=0)
    trainer = prepare("synthetic", config, train, max_dialogues=200, cache_dir=tmp_path)
    best = trainer.fit()
    return trainer.history, best


@pytest.mark.timeout(180)
def test_loss_falls_and_context_beats_no_context(tmp_path):
    with_context, best_with = train_text_only(tmp_path)
    without, best_without = train_text_only(tmp_path, text_context="free")
    losses = [row["train_loss"] for row in with_context]
    assert losses[-1] < 0.6 * losses[0]
    # The label of a reaction turn lives in the speaker's earlier turn: only context sees it.
    assert best_with["dev_weighted_f1"] > best_without["dev_weighted_f1"] + 10
    assert best_with["test_weighted_f1"] > best_without["test_weighted_f1"] + 5
