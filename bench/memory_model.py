"""Measure DialogueTRM's training memory on CPU and fit ``search_spaces/budget.py`` to it.

    .venv/bin/python bench/memory_model.py            # grid: estimate vs measured, fit, K table
    .venv/bin/python bench/memory_model.py --lengths  # MELD's worst-batch shapes per K
    .venv/bin/python bench/memory_model.py --peak     # whole-step peak (bench/memory_peak.py)

What is measured: the tensors autograd saves for backward during one real training step
(``trainable.engine.backward_step``), through ``torch.autograd.graph.saved_tensors_hooks``,
counted once per storage (views and tensors saved by several ops share one) and without the
parameters' own storages (they are ``static``), per stretch of forward that one backward
frees: the whole step, or with chunking the layers above the encoder (whole dialogues) and
each chunk's encoder; the step's peak is the largest. That is what grows with K, layers and
batch size; weights, gradients and AdamW state are counted from the model and the optimizer
after a real step.

Models are random-init and small (a ``tiny``-style BERT encoder, hidden 32-64) so the grid runs
in about a minute on 2 cores; the byte cost per value of each layer type does not depend on
the width, so the fitted costs carry over to BERT-base shapes.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls
from torch.autograd.graph import saved_tensors_hooks

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search_spaces import budget  # noqa: E402
from search_spaces.budget import FEATURES, MemoryProfile  # noqa: E402
from trainable.config import DialogueTRMConfig  # noqa: E402
from trainable.engine import backward_step  # noqa: E402
from trainable.model import DialogueTRM  # noqa: E402

VOCAB = 1000


@dataclasses.dataclass(frozen=True)
class Case:
    """One measured configuration: model shape and the batch's shape."""

    hidden: int = 64
    """Width of the encoder and of the Transformers above it."""
    heads: int = 2
    """Heads of the encoder and of every Transformer."""
    enc_layers: int = 1
    """Layers of the random-init BERT encoder."""
    intra: int = 1
    """Intra-modal layers."""
    inter: int = 1
    """Fusion layers."""
    ffn: int = 128
    """Feed-forward width of the intra/inter layers."""
    modalities: int = 1
    """1: text; 2: + audio; 3: + audio and visual."""
    batch: int = 2
    """Dialogues."""
    turns: int = 4
    """Turns per dialogue (all real)."""
    tokens: int = 16
    """Tokens per encoder input."""
    k: int = 2
    """Context window (masks; chunk prefix)."""
    precision: str = "fp32"
    """fp32 or bf16 autocast."""
    checkpointing: bool = False
    """Gradient checkpointing."""
    chunk: int = 0
    """Chunk size (0: none)."""

    def config(self) -> DialogueTRMConfig:
        return DialogueTRMConfig(
            encoder="tiny",
            hidden_size=self.hidden,
            intra_layers=self.intra,
            inter_layers=self.inter,
            intra_heads=self.heads,
            inter_heads=self.heads,
            ffn_size=self.ffn,
            k=self.k,
            audio_dim=16 if self.modalities >= 2 else 0,
            visual_dim=16 if self.modalities >= 3 else 0,
            precision=self.precision,
            gradient_checkpointing=self.checkpointing,
            chunk_size=self.chunk,
            tiny_layers=self.enc_layers,
        )

    def profile(self) -> MemoryProfile:
        """The estimate's view of this case: the exact batch shape, no length statistics."""
        return MemoryProfile(
            encoder="tiny",
            hidden_size=self.hidden,
            intra_layers=self.intra,
            intra_heads=self.heads,
            inter_layers=self.inter,
            inter_heads=self.heads,
            ffn_size=self.ffn,
            max_length=max(8, self.tokens),
            batch_size=self.batch,
            precision=self.precision,
            gradient_checkpointing=self.checkpointing,
            chunk_size=self.chunk,
            modalities=self.modalities,
            turns=self.turns,
            valid_turns=self.turns,
            tokens=((0, float(self.tokens)),),
            tiny_layers=self.enc_layers,
        )


def tiny_model(case: Case) -> DialogueTRM:
    """A random-init DialogueTRM whose encoder is a BERT of the case's shape (no tokenizer)."""
    from transformers import BertConfig, BertModel

    bert = BertConfig(
        vocab_size=VOCAB,
        hidden_size=case.hidden,
        num_hidden_layers=case.enc_layers,
        num_attention_heads=case.heads,
        intermediate_size=4 * case.hidden,  # as trainable.encoder builds the tiny encoder
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    return DialogueTRM(case.config(), BertModel(bert, add_pooling_layer=False)).train()


def batch_inputs(case: Case) -> dict:
    """Model inputs of the case's shape: (B, L, T) tokens, every turn real."""
    g = torch.Generator().manual_seed(0)
    shape = (case.batch, case.turns, case.tokens)
    ids = torch.randint(5, VOCAB, shape, generator=g)
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones(shape, dtype=torch.long),
        "token_type_ids": torch.zeros(shape, dtype=torch.long),
        "turn_mask": torch.ones(shape[:2], dtype=torch.bool),
    }
    if case.modalities >= 2:
        inputs["audio"] = torch.randn(case.batch, case.turns, 16, generator=g)
    if case.modalities >= 3:
        inputs["visual"] = torch.randn(case.batch, case.turns, 16, generator=g)
    return inputs


def loss_of(out: torch.Tensor) -> torch.Tensor:
    return out.float().square().mean()


def measure_stretches(model: DialogueTRM, inputs: dict) -> list[int]:
    """Bytes of the unique non-parameter storages autograd saves in each stretch of forward
    between two backward calls of a real training step (the engine's ``backward_step``), in
    the order of ``budget.stretches``: the whole step; chunked, the layers above and then the
    largest chunk's encoder."""
    static = [*model.parameters(), *model.buffers()]  # buffers: BERT's position ids
    params = {p.untyped_storage().data_ptr() for p in static}
    seen: dict[int, int] = {}
    found: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params and storage.nbytes():
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    def backward(*args, **kwargs) -> None:  # closes a stretch; what backward recomputes is not
        found.append(sum(seen.values()))  # counted here (``transient_bytes``)
        torch.autograd.backward(*args, **kwargs)
        seen.clear()

    with saved_tensors_hooks(pack, lambda t: t):
        backward_step(model, inputs, loss_of, backward=backward)
    return found[:1] + ([max(found[1:])] if found[1:] else [])


def measure_saved(model: DialogueTRM, inputs: dict) -> int:
    """Saved bytes at the step's peak: its largest stretch."""
    return max(measure_stretches(model, inputs))


def measure_static(model: DialogueTRM, inputs: dict) -> int:
    """Bytes of weights + gradients + AdamW state after one real optimizer step."""
    optimizer = torch.optim.AdamW(model.parameters(), fused=True)
    backward_step(model, inputs, loss_of)
    optimizer.step()
    tensors = [p for p in model.parameters()]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    return sum(t.numel() * t.element_size() for t in tensors)


def grid(n_per_mode: int, seed: int = 0) -> list[Case]:
    """A seeded random sample of a factorial grid, per (precision, checkpointing) mode, then a
    half as many chunked cases per mode (dialogues longer than their chunks)."""
    axes = {
        "hidden": (32, 64),
        "heads": (2, 4),
        "enc_layers": (1, 2),
        "intra": (1, 2),
        "inter": (1, 2),
        "ffn": (64, 256),
        "modalities": (1, 2, 3),
        "batch": (1, 3),
        "turns": (4, 12),
        "tokens": (12, 40),
    }
    modes = list(itertools.product(("fp32", "bf16"), (False, True)))
    rng = random.Random(seed)
    cases = []
    for precision, ckpt in modes:
        for _ in range(n_per_mode):
            values = {name: rng.choice(choices) for name, choices in axes.items()}
            cases.append(Case(**values, precision=precision, checkpointing=ckpt))
    rng = random.Random(seed + 1)
    axes |= {"turns": (8, 12), "chunk": (1, 2, 3, 5)}
    for precision, ckpt in modes:
        for _ in range(n_per_mode // 2):
            values = {name: rng.choice(choices) for name, choices in axes.items()}
            cases.append(Case(**values, precision=precision, checkpointing=ckpt))
    return cases


def fit(rows: list[tuple[Case, list[int]]]) -> dict:
    """Non-negative bytes per value of each feature, per mode, minimising relative error over
    every measured stretch (a chunked step gives two: the layers above, one chunk's encoder)."""
    out = {}
    for kind, ckpt in itertools.product(("fp32", "half"), (False, True)):
        X, y = [], []
        for case, measured in rows:
            if ("fp32" if case.precision == "fp32" else "half") != kind:
                continue
            if case.checkpointing != ckpt:
                continue
            for values, m in zip(budget.stretches(case.k, case.profile()), measured, strict=True):
                X.append([values[f] for f in FEATURES])
                y.append(m)
        X, y = np.array(X), np.array(y, dtype=float)
        scale = X.max(0)
        scale[scale == 0] = 1.0
        coef, _ = nnls((X / scale) / y[:, None], np.ones(len(y)))
        out[(kind, ckpt)] = {
            f: round(float(c), 3) for f, c in zip(FEATURES, coef / scale, strict=True)
        }
    return out


def run_grid(n_per_mode: int, refit: bool) -> None:
    t0 = time.perf_counter()
    rows = []
    for case in grid(n_per_mode):
        rows.append((case, measure_stretches(tiny_model(case), batch_inputs(case))))
    print(f"measured {len(rows)} configs in {time.perf_counter() - t0:.1f} s")
    if refit or not budget.COEFFICIENTS:
        budget.COEFFICIENTS.update(fit(rows))
        print("fitted COEFFICIENTS =", budget.COEFFICIENTS)
    errors = {}
    print(
        "\nprecision ckpt chunk enc intra inter mod B  L  T  h  heads ffn | measured KiB "
        "estimated KiB  est/meas  (chunked: above, encoder chunk est/meas)"
    )
    for case, measured in rows:
        stretches = budget.stretch_bytes(case.k, case.profile())
        ratio = max(stretches) / max(measured)  # the step's peak
        errors.setdefault((case.precision, case.checkpointing, bool(case.chunk)), []).append(ratio)
        parts = "  ".join(f"{e / m:.3f}" for e, m in zip(stretches, measured, strict=True))
        print(
            f"{case.precision:9} {case.checkpointing!s:5} {case.chunk:5} {case.enc_layers:3} "
            f"{case.intra:5} {case.inter:5} {case.modalities:3} {case.batch:2} {case.turns:2} "
            f"{case.tokens:2} {case.hidden:2} {case.heads:5} {case.ffn:3} | "
            f"{max(measured) / 1024:12.1f} {max(stretches) / 1024:13.1f}  {ratio:8.3f}"
            + (f"  ({parts})" if case.chunk else "")
        )
    print("\nmode                     n  mean est/meas  worst |est/meas - 1|")
    worst = 0.0
    for (precision, ckpt, chunk), ratios in errors.items():
        r = np.array(ratios)
        worst = max(worst, float(np.abs(r - 1).max()))
        print(
            f"{precision:5} ckpt={ckpt!s:5} chunked={chunk!s:5} {len(r):3}  {r.mean():13.3f}  "
            f"{np.abs(r - 1).max():.3f}"
        )
    print(f"FIT_ERROR = {worst:.3f}  ({len(rows)} configs)")


def static_check() -> None:
    """Weights + grads + AdamW state: counted after a real step vs ``static_bytes``."""
    for case in (Case(), Case(hidden=32, intra=2, inter=2, modalities=3, enc_layers=2)):
        model, inputs = tiny_model(case), batch_inputs(case)
        measured = measure_static(model, inputs)
        # The estimate's tiny encoder has a 4000-token vocabulary; this one has VOCAB tokens.
        extra_vocab = (budget.VOCAB_TINY - VOCAB) * case.hidden * 16
        estimated = budget.static_bytes(case.profile()) - extra_vocab
        print(f"static: measured {measured / 1024:.1f} KiB, estimated {estimated / 1024:.1f} KiB")


REACH_SETTINGS = {  # name: (precision, gradient checkpointing, chunk size)
    "fp32": ("fp32", False, 0),
    "bf16": ("bf16", False, 0),
    "bf16+ckpt": ("bf16", True, 0),
    "bf16+ckpt+chunks of 8": ("bf16", True, 8),
    "bf16+ckpt+chunks of 1": ("bf16", True, 1),
    "bf16+chunks of 1": ("bf16", False, 1),
}


def k_table(budget_gb: float = 11.0) -> None:
    """Largest K (estimated) of the paper's model (BERT-base, 6/4 layers, batch 4) per memory
    setting: MELD's worst batch (24 turns, T+A) and IEMOCAP-like dialogues (64 turns, T+A+V,
    16-token utterances, inputs up to 512 tokens: the context is not cut before K ~ 61)."""
    from bench.gpu_report import build_profile

    profiles = {
        "MELD": MemoryProfile(modalities=2),
        "IEMOCAP-like": build_profile("iemocap", None, 16, 512, 4),
    }
    print(f"\nlargest K in {budget_gb:g} GB (estimate; {budget.K_CEILING} = the ceiling checked):")
    print(f"  {'setting':22} " + "  ".join(f"{name:>26}" for name in profiles))
    for name, (precision, ckpt, chunk) in REACH_SETTINGS.items():
        cells = []
        for profile in profiles.values():
            p = dataclasses.replace(
                profile, precision=precision, gradient_checkpointing=ckpt, chunk_size=chunk
            )
            k = budget.largest_k(budget_gb, p)
            cells.append(f"K <= {k!s:>3} ({budget.estimate_gb(56, p):5.1f} GB at 56)")
        print(f"  {name:22} " + "  ".join(f"{c:>26}" for c in cells))


def meld_lengths(data_dir: str, batch_size: int = 4, max_length: int = 256) -> None:
    """MELD train's worst-batch shapes per K, with BERT-uncased word pieces (the ``minilm``
    package ships that vocabulary) and the engine's length-sorted batches (3 epochs' orders)."""
    from trainable.datasets import load_dataset
    from trainable.encoder import InputBuilder, load_tokenizer
    from trainable.engine import length_batches

    splits = load_dataset("meld", data_dir)
    print(f"\nMELD train: {len(splits.train)} dialogues; batches of {batch_size}")
    print("  K  worst batch: padded turns  real turns/dialogue  padded tokens")
    for k in (0, 1, 2, 3, 4, 6, 8, 10, 12, 14, 16, 20, 24, 32, 48, 64):
        config = DialogueTRMConfig(encoder="minilm", k=k, max_length=max_length)
        builder = InputBuilder(load_tokenizer(config), config)
        items = [
            {"input_ids": [t.input_ids for t in builder.dialogue(d.utterances, d.speakers)]}
            for d in splits.train
        ]
        worst = (0.0, 0, 0.0, 0)
        for epoch in range(3):
            for idx in length_batches(items, batch_size, 0, epoch):
                turns = [len(items[i]["input_ids"]) for i in idx]
                tokens = max(len(t) for i in idx for t in items[i]["input_ids"])
                n = sum(turns)
                size = n * tokens * (17 * 768 + 2.5 * 12 * tokens)  # encoder's saved values
                if size > worst[0]:
                    worst = (size, max(turns), n / len(idx), tokens)
        _, turns, valid, tokens = worst
        print(f"{k:3}  {turns:26}  {valid:19.1f}  {tokens:13}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-mode", type=int, default=24, help="configs per memory mode")
    parser.add_argument("--refit", action="store_true", help="fit instead of budget.py's costs")
    parser.add_argument("--lengths", action="store_true", help="MELD worst-batch shapes per K")
    parser.add_argument("--peak", action="store_true", help="whole-step peak (slow)")
    parser.add_argument(
        "--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/meld")
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # two cores, and a search may be running beside this bench
    start = time.perf_counter()
    if args.lengths:
        meld_lengths(args.data_dir)
    elif args.peak:
        from bench.memory_peak import peak_check  # the slow check lives beside this file

        peak_check()
    else:
        run_grid(args.per_mode, args.refit)
        static_check()
        k_table()
    print(f"\nwall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
