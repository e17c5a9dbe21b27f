"""Chunked encoding (``chunk_size``): eq 1 runs per chunk of turns, and a training step
re-encodes each chunk in backward (``trainable.engine.backward_step``). It must give the
gradients of one ordinary backward, encoder included.

With dropout, a chunk draws its own dropout masks (one random call per chunk instead of one per
dialogue), so the exact reference for a chunk size is one ordinary backward through the same
chunked forward, from the same RNG state: the masks are the same only if every chunk's
re-encoding replays them. Without dropout the chunk size changes nothing at all.
"""

from __future__ import annotations

import pytest
import torch

import trainable.engine
from tests.helpers import TEXTS, tiny_config
from tests.trainable.test_model import make_batch
from trainable import DialogueTRM
from trainable.batching import model_inputs
from trainable.engine import backward_step

SEED = 7  # the RNG state every compared step starts from


def build(**overrides) -> DialogueTRM:
    torch.manual_seed(0)
    values = dict(audio_dim=12, k=2, dropout=0.2) | overrides
    model, _ = DialogueTRM.from_config(tiny_config(**values), texts=TEXTS * 3)
    return model.train()


def batch_of(model):
    batch = make_batch(model, (9, 5, 7), audio_dim=12, seed=1)  # padding turns in chunks too
    return batch, model_inputs(batch)


def loss_fn(model, batch):
    return lambda out: model.loss(out, batch["labels"], batch["turn_mask"])


def one_backward(model, batch, inputs) -> tuple[float, dict, torch.Tensor]:
    """The reference: forward (the encoder per chunk, under grad) and one backward."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(SEED)
    loss = loss_fn(model, batch)(model(**inputs))
    loss.backward()
    return float(loss.detach()), grads(model), torch.get_rng_state()


def chunked_step(model, batch, inputs) -> tuple[float, dict, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(SEED)
    loss = backward_step(model, inputs, loss_fn(model, batch))
    return loss, grads(model), torch.get_rng_state()


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(a: dict, b: dict, atol: float, rtol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=rtol, msg=name)


@pytest.mark.parametrize("size", [1, 2, 3])
def test_chunked_step_equals_one_backward_with_dropout(size):
    model = build(chunk_size=size)
    batch, inputs = batch_of(model)
    loss, step_grads, rng = chunked_step(model, batch, inputs)
    ref_loss, ref_grads, ref_rng = one_backward(model, batch, inputs)
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    assert len(step_grads) == len(list(model.parameters()))  # every one, the encoder's too
    assert_same(step_grads, ref_grads, atol=1e-6, rtol=1e-5)
    assert torch.equal(rng, ref_rng)  # later dropout draws continue as after one backward


def test_without_replaying_the_rng_the_encoder_gradients_are_wrong(monkeypatch):
    # What the test above guards: re-encoding a chunk with fresh dropout masks gives gradients
    # of activations other than those the layers above saw.
    model = build(chunk_size=2)
    batch, inputs = batch_of(model)
    _, ref_grads, _ = one_backward(model, batch, inputs)
    monkeypatch.setattr(trainable.engine, "set_rng_state", lambda state, device: None)
    _, step_grads, _ = chunked_step(model, batch, inputs)
    encoder = [n for n in ref_grads if n.startswith("utterance.encoder.")]
    worst = max((step_grads[n] - ref_grads[n]).abs().max() for n in encoder)
    scale = max(ref_grads[n].abs().max() for n in encoder)
    assert worst > 0.05 * scale


@pytest.mark.parametrize("size", [1, 2, 3])
def test_without_dropout_the_chunk_size_changes_nothing(size):
    whole = build(dropout=0.0)
    batch, inputs = batch_of(whole)
    ref_loss, ref_grads, _ = chunked_step(whole, batch, inputs)  # chunk_size 0: one backward
    model = build(dropout=0.0, chunk_size=size)
    loss, step_grads, _ = chunked_step(model, batch, inputs)
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    assert_same(step_grads, ref_grads, atol=1e-6, rtol=1e-5)


def test_checkpointing_inside_the_chunks_changes_nothing():
    # Checkpointing (encoder, intra and fusion layers) replays its own RNG state: the step
    # equals one backward without it, dropout on.
    plain = build(chunk_size=2, visual_dim=10)
    batch = make_batch(plain, (9, 5, 7), audio_dim=12, visual_dim=10, seed=1)
    inputs = model_inputs(batch)
    ref_loss, ref_grads, _ = one_backward(plain, batch, inputs)
    model = build(chunk_size=2, visual_dim=10, gradient_checkpointing=True)
    loss, step_grads, _ = chunked_step(model, batch, inputs)
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    assert_same(step_grads, ref_grads, atol=1e-6, rtol=1e-5)


def test_bf16_chunked_step_matches():
    model = build(chunk_size=2, precision="bf16")
    batch, inputs = batch_of(model)
    loss, step_grads, _ = chunked_step(model, batch, inputs)
    ref_loss, ref_grads, _ = one_backward(model, batch, inputs)
    assert loss == pytest.approx(ref_loss, rel=1e-3)
    assert_same(step_grads, ref_grads, atol=1e-3, rtol=2e-2)
    # And against fp32 without chunks or dropout: bf16's rounding, no more.
    quiet = build(chunk_size=2, precision="bf16", dropout=0.0)
    loss, step_grads, _ = chunked_step(quiet, batch, inputs)
    ref_loss, ref_grads, _ = chunked_step(build(dropout=0.0), batch, inputs)
    assert loss == pytest.approx(ref_loss, rel=2e-2)
    floor = 1e-3 * max(g.norm() for g in ref_grads.values())  # key biases get ~0 gradient
    for name, ref in ref_grads.items():
        assert (step_grads[name] - ref).norm() <= 0.1 * ref.norm() + floor, name


def test_turns_that_are_padding_in_every_dialogue_are_skipped(monkeypatch):
    model = build(chunk_size=2)
    batch, inputs = batch_of(model)
    batch["turn_mask"][:, 6:] = False  # turns 6-8: no dialogue has them
    calls = []
    encode = model.encode_turns
    monkeypatch.setattr(model, "encode_turns", lambda *a: calls.append(a[-2:]) or encode(*a))
    loss, step_grads, _ = chunked_step(model, batch, inputs)
    # Phase 1 encodes every chunk; phase 3 re-encodes only chunks with a real turn (a padding
    # chunk's backward would give zero gradients: the same result, for one encoder pass more).
    forward = [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]
    assert calls == forward + [(0, 2), (2, 4), (4, 6)]
    ref_loss, ref_grads, _ = one_backward(model, batch, inputs)
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    assert_same(step_grads, ref_grads, atol=1e-6, rtol=1e-5)


def test_a_frozen_encoder_is_not_chunked_in_backward(monkeypatch):
    model = build(chunk_size=2)
    model.utterance.encoder.requires_grad_(False)
    batch, inputs = batch_of(model)
    calls = []
    encode = model.encode_turns
    monkeypatch.setattr(model, "encode_turns", lambda *a: calls.append(a[-2:]) or encode(*a))
    loss, step_grads, _ = chunked_step(model, batch, inputs)
    assert calls == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]  # the forward's chunks, once
    ref_loss, ref_grads, _ = one_backward(model, batch, inputs)
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    assert not any(n.startswith("utterance.encoder.") for n in step_grads)
    assert_same(step_grads, ref_grads, atol=1e-6, rtol=1e-5)
