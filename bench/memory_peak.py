"""The whole-step peak of tensor memory on CPU against the budget model's estimate.

    .venv/bin/python bench/memory_peak.py     (or bench/memory_model.py --peak)

``bench/memory_model.py`` fits the saved-for-backward bytes; this checks the rest of the
decomposition the budget model makes (static + saved + transient): every tensor storage an
op creates counts from its creation until it is freed (``LivePeak``), weights, gradients,
AdamW state and activations alike, chunked steps included.
"""

from __future__ import annotations

import sys
import time
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.memory_model import VOCAB, Case, batch_inputs, loss_of, tiny_model  # noqa: E402
from search_spaces import budget  # noqa: E402
from trainable.engine import backward_step  # noqa: E402


class LivePeak(TorchDispatchMode):
    """The peak of live tensor storages: every storage an op creates counts from then until
    it is freed. (torch's MemTracker cannot follow a module called several times per step
    outside a parent module, as the chunked step calls the encoder.)"""

    def __init__(self, tensors=()):
        super().__init__()
        self.live: dict[int, weakref.ref] = {}
        self.now = self.peak = 0
        for t in tensors:
            self.track(t)

    def track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        ptr, n = storage.data_ptr(), storage.nbytes()
        if not n or ptr in self.live:
            return

        def free(_, ptr=ptr, n=n) -> None:
            self.live.pop(ptr, None)
            self.now -= n

        self.live[ptr] = weakref.ref(storage, free)
        self.now += n
        self.peak = max(self.peak, self.now)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out


def peak_check() -> None:
    """Whole-step peak of tensor memory on CPU (weights, AdamW state, gradients and every
    activation, ``LivePeak``) vs ``estimate_bytes`` without the GPU allocator slack: checks
    the static + saved + transient decomposition, chunked steps included."""
    print("\nprecision ckpt  chunk  peak measured KiB  estimated KiB (no slack)  est/meas")
    for case in (
        Case(hidden=64, enc_layers=2, intra=2, modalities=2, batch=3, turns=12, tokens=40),
        Case(hidden=64, enc_layers=2, intra=2, modalities=2, batch=3, turns=12, tokens=40,
             checkpointing=True),
        Case(hidden=64, enc_layers=2, intra=2, modalities=2, batch=3, turns=12, tokens=40,
             precision="bf16"),
        Case(hidden=64, enc_layers=2, intra=2, modalities=2, batch=3, turns=12, tokens=40,
             chunk=3),
        Case(hidden=64, enc_layers=2, intra=2, modalities=2, batch=3, turns=12, tokens=40,
             checkpointing=True, precision="bf16", chunk=3),
    ):  # fmt: skip
        model, inputs = tiny_model(case), batch_inputs(case)
        optimizer = torch.optim.AdamW(model.parameters(), fused=True)
        for _ in range(2):  # the second step has AdamW's state from the start
            state = [t for s in optimizer.state.values() for t in s.values() if t.ndim]
            with LivePeak([*model.parameters(), *model.buffers(), *state]) as tracker:
                backward_step(model, inputs, loss_of)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        profile = case.profile()
        extra_vocab = (budget.VOCAB_TINY - VOCAB) * case.hidden * 16
        estimated = (
            budget.static_bytes(profile) - extra_vocab + budget.active_bytes(case.k, profile)
        )
        print(
            f"{case.precision:9} {case.checkpointing!s:5} {case.chunk:5}  "
            f"{tracker.peak / 1024:17.1f}  {estimated / 1024:24.1f}  {estimated / tracker.peak:8.3f}"
        )


if __name__ == "__main__":
    torch.set_num_threads(1)
    start = time.perf_counter()
    peak_check()
    print(f"\nwall time {time.perf_counter() - start:.1f} s")
