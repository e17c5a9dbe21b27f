import json

import pytest
import torch

from tests.helpers import TEXTS, toy_splits, toy_trainer
from trainable.checkpoint import CheckpointError
from trainable.engine import TrainConfig, length_batches, linear_schedule, param_groups
from trainable.features import encode_splits
from trainable.run import load_model


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_equals_uninterrupted(tmp_path):
    full = toy_trainer(tmp_path)
    full.fit()

    first = toy_trainer(tmp_path)
    first.cfg.epochs = 3
    first.fit(on_epoch=lambda row, t: t.save(tmp_path / "ckpt") if row["epoch"] == 1 else None)
    # A fresh process: new trainer, resumed from the epoch-1 checkpoint.
    torch.manual_seed(1234)  # whatever the global RNG holds now must not matter
    resumed = toy_trainer(tmp_path)
    resumed.resume(tmp_path / "ckpt")
    assert resumed.epoch == 1
    resumed.fit()

    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    assert resumed.history[-1]["dev_weighted_f1"] == full.history[-1]["dev_weighted_f1"]
    a, b = _weights(full.model), _weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_loss_falls_and_best_epoch_carries_test_metrics(tmp_path):
    splits = toy_splits(n_train=16)
    # Make the label a function of the utterance so there is something to learn.
    for split in (splits.train, splits.dev, splits.test):
        for d in split:
            d.labels = [TEXTS.index(u) % 4 for u in d.utterances]
    trainer = toy_trainer(
        tmp_path, splits, TrainConfig(lr=3e-3, warmup_steps=0, epochs=8, batch_size=2)
    )
    best = trainer.fit()
    losses = [r["train_loss"] for r in trainer.history]
    assert losses[-1] < 0.5 * losses[0]
    assert best["dev_weighted_f1"] > 80  # the utterance decides the label here
    assert "test_weighted_f1" in best and best["epoch"] == trainer.history[-1]["best_epoch"]
    dev = [r["dev_weighted_f1"] for r in trainer.history]
    assert best["dev_weighted_f1"] == max(dev)


def test_chunked_training_step_equals_the_whole_dialogue_step(tmp_path):
    # Backward per chunk (bounded memory) must give the same loss and update as one backward.
    whole = toy_trainer(tmp_path, k=1, intra_layers=2)  # dropout is 0 in the tiny config
    chunked = toy_trainer(tmp_path, k=1, intra_layers=2, chunk_size=2)
    chunked.model.load_state_dict(whole.model.state_dict())
    batch = whole._batch(whole.data.train[:4])
    assert batch["turn_mask"].sum(1).max() > 4  # several chunks per dialogue
    losses = [t._step(batch) for t in (whole, chunked)]
    assert abs(losses[0] - losses[1]) < 1e-5
    for (name, p), q in zip(
        whole.model.named_parameters(), chunked.model.parameters(), strict=True
    ):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name


def test_checkpoint_reloads_to_the_same_predictions(tmp_path):
    trainer = toy_trainer(tmp_path, audio_dim=6, splits=toy_splits(audio_dim=6))
    trainer.cfg.epochs = 1
    trainer.fit()
    before = trainer.evaluate("dev")
    trainer.save(tmp_path / "best", resumable=False)
    assert not (tmp_path / "best" / "trainer.pt").exists()
    model, tokenizer, meta = load_model(tmp_path / "best")
    assert meta["dataset"] == "toy" and meta["model"]["audio_dim"] == 6
    trainer.model = model
    assert trainer.evaluate("dev") == before


def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        load_model(tmp_path)
    trainer = toy_trainer(tmp_path)
    trainer.save(tmp_path / "c")
    (tmp_path / "c" / "model.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_model(tmp_path / "c")
    (tmp_path / "c" / "config.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(tmp_path / "c")


def test_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    trainer = toy_trainer(tmp_path)
    trainer.save(tmp_path / "c")
    before = json.loads((tmp_path / "c" / "state.json").read_text())
    trainer.epoch = 7

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(trainer.tokenizer, "save_pretrained", boom)
    with pytest.raises(OSError):
        trainer.save(tmp_path / "c")
    assert json.loads((tmp_path / "c" / "state.json").read_text()) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".c")] == []


def test_feature_cache_is_reused_and_keyed(tmp_path):
    from tests.helpers import tiny_config

    splits = toy_splits()
    first = encode_splits(splits, tiny_config(), tmp_path)
    again = encode_splits(splits, tiny_config(), tmp_path)
    assert not first.from_cache and again.from_cache
    assert again.train == first.train
    assert again.tokenizer.get_vocab() == first.tokenizer.get_vocab()
    other_k = encode_splits(splits, tiny_config(k=1), tmp_path)
    assert not other_k.from_cache and other_k.path != first.path


def test_optimizer_groups_and_schedule():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    groups = param_groups(model, 0.01)
    assert [len(g["params"]) for g in groups] == [1, 3]  # weight decays; biases and norm don't
    opt = torch.optim.AdamW(groups, lr=1.0)
    sched = linear_schedule(opt, warmup_steps=4, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:5] == sorted(lrs[:5]) and lrs[4] == 1.0  # rises to the peak after warmup
    assert lrs[4:] == sorted(lrs[4:], reverse=True) and lrs[-1] < 0.2  # then decays linearly


def test_length_batches_are_seeded_and_cover_everything():
    items = [{"input_ids": [[1] * (i % 7 + 1)] * (i % 5 + 1)} for i in range(30)]
    a = length_batches(items, 4, seed=1, epoch=0)
    assert sorted(i for b in a for i in b) == list(range(30))
    assert a == length_batches(items, 4, seed=1, epoch=0)
    assert a != length_batches(items, 4, seed=1, epoch=1)


def test_encoder_lr_gets_its_own_groups_and_follows_the_schedule():
    model = torch.nn.Module()
    model.utterance = torch.nn.Module()
    model.utterance.encoder = torch.nn.Linear(4, 4)
    model.head = torch.nn.Linear(4, 2)
    groups = param_groups(model, 0.01, encoder_lr=0.1)
    opt = torch.optim.AdamW(groups, lr=1.0)

    def ids_at(lr: float) -> set[int]:
        return {id(p) for g in opt.param_groups if g["lr"] == lr for p in g["params"]}

    assert ids_at(0.1) == {id(p) for p in model.utterance.encoder.parameters()}
    assert ids_at(1.0) == {id(p) for p in model.head.parameters()}
    sched = linear_schedule(opt, warmup_steps=0, total_steps=4)
    opt.step()
    sched.step()
    assert sorted(sched.get_last_lr()) == pytest.approx([0.075, 0.075, 0.75, 0.75])
    assert [len(g["params"]) for g in param_groups(model, 0.01)] == [2, 2]  # no split without


def test_encoder_lr_must_be_positive():
    with pytest.raises(ValueError, match="encoder_lr"):
        TrainConfig(encoder_lr=0.0)
