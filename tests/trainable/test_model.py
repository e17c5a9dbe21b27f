import functools
import itertools
import random

import pytest
import torch

from tests.helpers import TEXTS, TINY_MODEL, tiny_config
from trainable import DialogueTRM, DialogueTRMConfig
from trainable.batching import collate, model_inputs
from trainable.config import FUSIONS
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


def parts(model) -> set[str]:
    """The model's modules as the paper names them: parameter names cut after two levels
    (``fusion.gates``, ``fusion.e_cls``, ``intra.a``, ``projections.v``, ...)."""
    return {".".join(name.split(".")[:2]) for name, _ in model.named_parameters()}


def run_switch(**switch):
    """Same seed, same dialogues (encoded by the model's own input builder, as the data
    pipeline does): the model, its batch, its training-mode outputs, and the parameters that
    received a non-zero gradient. Once per switch (the tests below only read them)."""
    return _run_switch(tuple(sorted(switch.items())))


@functools.cache
def _run_switch(switch: tuple):
    model = build(audio_dim=12, visual_dim=10, **dict(switch)).train()
    batch = make_batch(model, (6, 3), 12, 10)
    out = model(**model_inputs(batch))
    model.loss(out, batch["labels"], batch["turn_mask"]).backward()
    learned = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.any()}
    return model, batch, out.detach(), learned


@pytest.fixture(scope="module")
def default():
    return run_switch()


H = TINY_MODEL["hidden_size"]
FUSED = {"fusion.gates", "fusion.transformer", "fusion.e_cls"}
# switch -> (the modules it drops from the default MGIF model, the discriminator's input width).
# Table 5: w/o representation dependency concatenates the six gated vectors (no e_CLS, no
# Transformer); w/o prototype dependency runs the Transformer over the ungated r's (no gates);
# additive / max / concat keep none of MGIF. Table 3: w/o intra Transformer, r = projected f.
ABLATIONS = {
    "fusion=mgif-no-representation": (
        {"fusion": "mgif-no-representation"}, {"fusion.transformer", "fusion.e_cls"}, 6 * H
    ),
    "fusion=mgif-no-prototype": ({"fusion": "mgif-no-prototype"}, {"fusion.gates"}, H),
    "fusion=additive": ({"fusion": "additive"}, FUSED, H),
    "fusion=concat": ({"fusion": "concat"}, FUSED, 3 * H),
    "fusion=max": ({"fusion": "max"}, FUSED, H),
    "utterance_only": (  # DialogueTRM-U: text alone, o_i = r_i(u)
        {"utterance_only": True}, FUSED | {"projections.a", "projections.v", "intra.a", "intra.v"},
        H,
    ),
    "intra_transformer=False": ({"intra_transformer": False}, {"intra.u", "intra.a", "intra.v"}, H),
    # Same modules and weights; what changes is a mask (Table 4) or the encoder inputs (Table 3).
    "text_context=free": ({"text_context": "free"}, set(), H),
    "audio+visual_context=dependent": (
        {"audio_context": "dependent", "visual_context": "dependent"}, set(), H
    ),
    "segment_embedding=False": ({"segment_embedding": False}, set(), H),
    "sep_tokens=False": ({"sep_tokens": False}, set(), H),
}  # fmt: skip


def test_the_default_is_mgif_over_three_modalities(default):
    model, _, _, learned = default
    assert set(model.fusion.gates) == {"ua", "uv", "av"}
    assert len(model.fusion.transformer.layers) == model.config.inter_layers == 2
    assert model.fusion.e_cls.shape == (H,) and model.discriminator.w_o.in_features == H
    assert {m: len(t.layers) for m, t in model.intra.items()} == {"u": 2, "a": 2, "v": 2}
    assert {m: t.mode for m, t in model.intra.items()} == {
        "u": "dependent", "a": "free", "v": "free"
    }  # fmt: skip
    assert learned == {n for n, _ in model.named_parameters()}  # every parameter learns


@pytest.mark.parametrize("name", ABLATIONS)
def test_each_ablation_changes_the_model_as_the_paper_defines(name, default):
    switch, dropped, width = ABLATIONS[name]
    ref_model, _, ref_out, _ = default
    model, _, out, learned = run_switch(**switch)
    assert parts(ref_model) - parts(model) == dropped and parts(model) <= parts(ref_model)
    assert model.discriminator.w_o.in_features == width
    assert learned == {n for n, _ in model.named_parameters()}  # nothing it keeps is dead
    if not dropped:  # the same weights: the difference below is the switch's alone
        ref = ref_model.state_dict()
        assert all(torch.equal(t, ref[n]) for n, t in model.state_dict().items())
    assert (out - ref_out).abs().max() > 1e-5, "the same outputs as the default MGIF model"


def test_fusion_variants_differ_from_one_another():
    # additive and max keep the same (no) fusion modules: only their outputs tell them apart.
    outs = {f: run_switch(fusion=f)[2] for f in FUSIONS}
    for a, b in itertools.combinations(FUSIONS, 2):
        assert (outs[a] - outs[b]).abs().max() > 1e-5, (a, b)


def test_switches_reach_the_masks_and_the_encoder_inputs(default):
    _, ref, _, _ = default
    sep = TOKENIZER.sep_token_id
    model, _, _, _ = run_switch(audio_context="dependent", visual_context="dependent")
    assert {m: t.mode for m, t in model.intra.items()} == {m: "dependent" for m in "uav"}
    model, batch, _, _ = run_switch(text_context="free")
    assert model.intra["u"].mode == "free"
    assert batch["token_type_ids"].max() == 0 < ref["token_type_ids"].max()  # no context
    assert ((batch["input_ids"] == sep).sum(-1) == batch["turn_mask"].long()).all()
    _, batch, _, _ = run_switch(segment_embedding=False)
    assert torch.equal(batch["input_ids"], ref["input_ids"])
    assert batch["token_type_ids"].max() == 0  # the context shares segment 0
    _, batch, _, _ = run_switch(sep_tokens=False)
    assert (batch["input_ids"] == sep).sum() == 0 < (ref["input_ids"] == sep).sum()


def test_execution_switches_keep_the_model(default):
    """Checkpointing and chunks change how the same model runs, not what it computes
    (counted in test_checkpointing_... and test_chunking.py); bf16 really rounds."""
    ref_model, _, ref_out, ref_learned = default
    ref = ref_model.state_dict()
    for switch, tolerance in (({"gradient_checkpointing": True}, 1e-6), ({"chunk_size": 2}, 1e-6)):
        model, _, out, learned = run_switch(**switch)
        assert all(torch.equal(t, ref[n]) for n, t in model.state_dict().items())
        assert learned == ref_learned and (out - ref_out).abs().max() <= tolerance, switch
    _, _, out, _ = run_switch(precision="bf16")
    assert 0 < (out - ref_out).abs().max() < 0.05


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
    with torch.device("meta"):  # shapes only: no memory, no random init (~1 GB, seconds)
        bert = BertModel(BertConfig(), add_pooling_layer=False)  # bert-base shape
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
