import random

import pytest
import torch

from tests.helpers import TEXTS, tiny_config
from trainable import DialogueTRM, DialogueTRMConfig
from trainable.batching import collate, model_inputs
from trainable.encoder import build_tiny_tokenizer
from trainable.model import MultiModalGate

TOKENIZER = build_tiny_tokenizer(TEXTS * 3, vocab_size=200)


def make_batch(model, lengths=(7, 4), audio_dim=0, visual_dim=0, dims=0, seed=0):
    """Random toy dialogues encoded exactly as the data pipeline does."""
    rng = random.Random(seed)
    builder = model.input_builder(TOKENIZER)
    items = []
    for n in lengths:
        speakers = [rng.choice("AB") for _ in range(n)]
        turns = builder.dialogue([rng.choice(TEXTS) for _ in range(n)], speakers)
        item = {
            "input_ids": [t.input_ids for t in turns],
            "token_type_ids": [t.token_type_ids for t in turns],
            "labels": [[rng.random() for _ in range(dims)] for _ in range(n)]
            if dims
            else [rng.randrange(model.config.num_labels) for _ in range(n)],
        }
        g = torch.Generator().manual_seed(seed + n)
        if audio_dim:
            item["audio"] = torch.randn(n, audio_dim, generator=g).numpy()
        if visual_dim:
            item["visual"] = torch.randn(n, visual_dim, generator=g).numpy()
        items.append(item)
    task = "dimensional" if dims else "categorical"
    return collate(items, pad_id=TOKENIZER.pad_token_id, task=task)


def build(**overrides):
    torch.manual_seed(0)
    model, _ = DialogueTRM.from_config(tiny_config(**overrides), texts=TEXTS * 3)
    return model


@pytest.mark.parametrize(
    "audio_dim,visual_dim,task,labels",
    [
        (0, 0, "categorical", 7),  # DialogueTRM-U, MELD text-only
        (300, 0, "categorical", 7),  # MELD T+A
        (100, 512, "categorical", 6),  # IEMOCAP T+A+V
        (100, 512, "dimensional", 4),  # AVEC
    ],
)
def test_output_shapes(audio_dim, visual_dim, task, labels):
    model = build(audio_dim=audio_dim, visual_dim=visual_dim, task=task, num_labels=labels)
    batch = make_batch(
        model, (7, 4), audio_dim, visual_dim, dims=labels if task != "categorical" else 0
    )
    out = model(**model_inputs(batch))
    assert out.shape == (2, 7, labels)
    loss = model.loss(out, batch["labels"], batch["turn_mask"])
    assert torch.isfinite(loss)
    expected_pairs = {(0, 0): 0, (300, 0): 1, (100, 512): 3}[(audio_dim, visual_dim)]
    assert (len(model.fusion.pairs) if model.fusion else 0) == expected_pairs


def test_gate_weights_are_z_and_one_minus_z():
    torch.manual_seed(0)
    gate = MultiModalGate(16)
    r_p, r_q = torch.randn(3, 16), torch.randn(3, 16)
    h_pq, h_qp, z = gate(r_p, r_q)
    h_p, h_q = torch.tanh(gate.w_p(r_p)), torch.tanh(gate.w_q(r_q))
    assert ((z > 0) & (z < 1)).all()
    torch.testing.assert_close(h_pq, z * h_p)
    torch.testing.assert_close(h_qp, (1 - z) * h_q)
    torch.testing.assert_close(h_pq / h_p + h_qp / h_q, torch.ones_like(z))  # eq 10 + eq 11


ABLATIONS = [
    {"fusion": "mgif"},
    {"fusion": "mgif-no-representation"},
    {"fusion": "mgif-no-prototype"},
    {"fusion": "additive"},
    {"fusion": "concat"},
    {"fusion": "max"},
    {"utterance_only": True},
    {"text_context": "free"},
    {"audio_context": "dependent", "visual_context": "dependent"},
    {"intra_transformer": False},
    {"segment_embedding": False},
    {"sep_tokens": False},
    {"gradient_checkpointing": True},
    {"precision": "bf16"},
    {"chunk_size": 2},
]


@pytest.mark.parametrize(
    "switch", ABLATIONS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items())
)
def test_every_ablation_runs_forward_and_backward(switch):
    model = build(audio_dim=12, visual_dim=10, **switch)
    model.train()
    batch = make_batch(model, (6, 3), 12, 10)
    loss = model.loss(model(**model_inputs(batch)), batch["labels"], batch["turn_mask"])
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert torch.isfinite(loss)


def test_chunked_equals_whole_dialogue():
    # Eq 1 encodes each turn on its own: encoding the turns in chunks changes no output.
    model = build(audio_dim=12, k=2, intra_layers=2).eval()
    batch = make_batch(model, (23, 9, 15), audio_dim=12, seed=3)
    with torch.no_grad():
        whole = model(**model_inputs(batch))
        for size in (1, 4, 7):
            model.config.chunk_size = size
            chunked = model(**model_inputs(batch))
            valid = batch["turn_mask"]
            assert (chunked[valid] - whole[valid]).abs().max() < 1e-5


def test_checkpointing_recomputes_every_intra_and_fusion_layer_exactly(monkeypatch):
    import trainable.model

    calls = []

    def counting(function, *args, **kwargs):
        calls.append(type(function).__name__)
        return torch.utils.checkpoint.checkpoint(function, *args, **kwargs)

    monkeypatch.setattr(trainable.model, "checkpoint", counting)
    grads = []
    for checkpointing in (False, True):
        model = build(audio_dim=12, visual_dim=10, gradient_checkpointing=checkpointing).train()
        batch = make_batch(model, (6, 3), 12, 10)
        loss = model.loss(model(**model_inputs(batch)), batch["labels"], batch["turn_mask"])
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    # 3 modalities x 2 intra layers + 2 fusion layers, each once in the forward pass.
    assert calls == ["TransformerEncoderLayer"] * (3 * 2 + 2)
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], atol=1e-6), name


def test_gradients_reach_the_encoder():
    model = build(audio_dim=12)
    batch = make_batch(model, (5, 5), 12)
    model.loss(model(**model_inputs(batch)), batch["labels"], batch["turn_mask"]).backward()
    emb = model.utterance.encoder.embeddings.word_embeddings.weight.grad
    assert emb is not None and emb.abs().sum() > 0
    first_layer = model.utterance.encoder.encoder.layer[0].attention.self.query.weight.grad
    assert first_layer.abs().sum() > 0


def test_encoder_without_segment_embeddings_warns_and_runs():
    from transformers import RobertaConfig, RobertaModel

    cfg = tiny_config()
    roberta = RobertaModel(
        RobertaConfig(
            vocab_size=len(TOKENIZER),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            type_vocab_size=1,
            pad_token_id=TOKENIZER.pad_token_id,
        ),
        add_pooling_layer=False,
    )
    with pytest.warns(UserWarning, match="no segment embeddings"):
        model = DialogueTRM(cfg, roberta)
    batch = make_batch(model, (4,))
    assert set(batch["token_type_ids"].unique().tolist()) == {0}  # builder follows the encoder
    assert model(**model_inputs(batch)).shape == (1, 4, cfg.num_labels)


def _transformer_layer_params(h, ffn):
    return (3 * h * h + 3 * h) + (h * h + h) + (h * ffn + ffn) + (ffn * h + h) + 4 * h


def test_full_size_paper_config_builds_and_counts_parameters(capsys):
    from transformers import BertConfig, BertModel

    cfg = DialogueTRMConfig(audio_dim=100, visual_dim=512, num_labels=6)  # IEMOCAP T+A+V
    assert (cfg.hidden_size, cfg.intra_layers, cfg.intra_heads) == (768, 6, 12)
    assert (cfg.inter_layers, cfg.inter_heads, cfg.encoder) == (4, 8, "bert-base-uncased")
    bert = BertModel(BertConfig(), add_pooling_layer=False)  # bert-base shape, random init
    model = DialogueTRM(cfg, bert)
    h, f = 768, 2048
    layer = _transformer_layer_params(h, f)
    gate = 2 * (h * h + h) + (2 * h * h + h)
    expected = (
        sum(p.numel() for p in bert.parameters())
        + (100 * h + h)
        + (512 * h + h)  # projections
        + 3 * 6 * layer  # three intra-modal Transformers
        + 3 * gate
        + h
        + 4 * layer  # MGIF: three gates, e_CLS, representation Transformer
        + (h * h + h)
        + (h * 6 + 6)  # discriminator
    )
    assert model.num_parameters() == expected
    print(f"full-size DialogueTRM-M (IEMOCAP T+A+V): {model.num_parameters():,} parameters")
    assert 200e6 < model.num_parameters() < 260e6
