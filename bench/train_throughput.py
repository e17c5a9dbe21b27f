"""Training throughput and peak memory: plain fp32 whole-dialogue training against mixed
precision + gradient checkpointing + chunked encoding, for several context windows K.

    python bench/train_throughput.py                # CPU, tiny encoder
    python bench/train_throughput.py --gpu          # CUDA, BERT-base-shaped encoder (random init)

Prints utterances per second and peak memory of each variant, and the ratio of each to the
fp32 baseline measured in the same process. On CPU, "memory" is the bytes autograd keeps for
the backward pass (summed through saved-tensor hooks, the part checkpointing and chunking
shrink); on CUDA it is torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainable.config import DialogueTRMConfig  # noqa: E402
from trainable.engine import backward_step, param_groups  # noqa: E402
from trainable.model import DialogueTRM  # noqa: E402


class SavedBytes:
    """Peak bytes autograd holds for backward, tracked with saved-tensor hooks (CPU)."""

    def __init__(self):
        self.current = self.peak = 0

    def pack(self, t):
        n = t.numel() * t.element_size()
        self.current += n
        self.peak = max(self.peak, self.current)
        return (t, n)

    def unpack(self, packed):
        return packed[0]

    def release(self):
        self.current = 0


def make_batch(batch, turns, tokens, vocab, audio_dim, device):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (batch, turns, tokens), generator=g)
    ids[:, :, 0] = 2
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "token_type_ids": (torch.arange(tokens) > tokens // 3).long().expand_as(ids).to(device),
        "turn_mask": torch.ones(batch, turns, dtype=torch.bool, device=device),
        "audio": torch.randn(batch, turns, audio_dim, generator=g).to(device),
        "labels": torch.randint(0, 7, (batch, turns), generator=g).to(device),
    }


def build(base: DialogueTRMConfig, gpu: bool, **overrides) -> DialogueTRM:
    from transformers import BertConfig, BertModel

    cfg = DialogueTRMConfig(**{**base.to_dict(), **overrides})
    if gpu:  # BERT-base shape, random init: no download
        bert = BertConfig()
    else:
        bert = BertConfig(
            vocab_size=4000,
            hidden_size=cfg.hidden_size,
            num_hidden_layers=2,
            num_attention_heads=cfg.intra_heads,
            intermediate_size=4 * cfg.hidden_size,
        )
    torch.manual_seed(0)
    return DialogueTRM(cfg, BertModel(bert, add_pooling_layer=False))


def run(model, batch, steps, device, saved: SavedBytes | None):
    model.to(device).train()
    opt = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-5)
    scaler = torch.amp.GradScaler(device.type, enabled=model.config.precision == "fp16")
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    n_turns = int(batch["turn_mask"].sum())

    def loss_of(out):
        return model.loss(out, batch["labels"], inputs["turn_mask"], "sum") / n_turns

    def backward(*args, **kwargs):
        torch.autograd.backward(*args, **kwargs)
        if saved is not None:
            saved.release()  # the saved tensors of a stretch of forward are freed by its backward

    def step():  # the engine's: chunked, the encoder's backward runs per chunk
        opt.zero_grad(set_to_none=True)
        backward_step(model, inputs, loss_of, scaler.scale, backward)
        scaler.step(opt)
        scaler.update()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    if saved is not None:
        saved.peak = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        if saved is not None:
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
                step()
        else:
            step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else saved.peak
    return steps * n_turns / seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="CUDA with a BERT-base-shaped encoder")
    parser.add_argument("--ks", default="2,5,14", help="context windows to measure")
    parser.add_argument("--turns", type=int, default=0, help="turns per dialogue (0: auto)")
    parser.add_argument("--steps", type=int, default=0, help="timed steps per variant (0: auto)")
    args = parser.parse_args()
    device = torch.device("cuda" if args.gpu else "cpu")
    if args.gpu:
        base = DialogueTRMConfig(audio_dim=300, num_labels=7, max_length=128)
        batch_size, turns, tokens, vocab, steps = 2, args.turns or 48, 96, 30000, args.steps or 5
        fast = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    else:
        torch.set_num_threads(max(1, torch.get_num_threads()))
        base = DialogueTRMConfig(
            encoder="tiny",
            hidden_size=64,
            intra_layers=2,
            intra_heads=2,
            inter_layers=2,
            inter_heads=2,
            ffn_size=256,
            audio_dim=300,
            num_labels=7,
            max_length=64,
        )
        batch_size, turns, tokens, vocab, steps = 2, args.turns or 48, 48, 4000, args.steps or 3
        fast = "bf16"
    batch = make_batch(batch_size, turns, tokens, vocab, 300, device)
    print(f"device {device}, batch {batch_size} dialogues x {turns} turns x {tokens} tokens")
    # Warm the process up (thread pools, allocator, kernels) so the first variant timed is not
    # penalised for being first.
    run(build(base, args.gpu, k=2), batch, 2, device, None if args.gpu else SavedBytes())
    print(f"{'K':>3} {'variant':<34} {'utt/s':>9} {'peak MB':>9} {'speed':>7} {'memory':>7}")
    for k in (int(x) for x in args.ks.split(",")):
        variants = {
            "fp32, whole dialogue": {},
            f"{fast} + checkpointing": {"precision": fast, "gradient_checkpointing": True},
            f"{fast} + checkpointing + chunks of 8": {
                "precision": fast,
                "gradient_checkpointing": True,
                "chunk_size": 8,
            },
        }
        baseline = None
        for name, overrides in variants.items():
            model = build(base, args.gpu, k=k, **overrides)
            saved = None if args.gpu else SavedBytes()
            speed, peak = run(model, batch, steps, device, saved)
            baseline = baseline or (speed, peak)
            print(
                f"{k:>3} {name:<34} {speed:>9.1f} {peak / 2**20:>9.1f} "
                f"{speed / baseline[0]:>6.2f}x {peak / baseline[1]:>6.2f}x"
            )
            del model
            if args.gpu:
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
