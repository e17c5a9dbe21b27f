"""How much disk a search's checkpoints take, before it starts: the estimate, the budget.

A checkpoint is the weights at the training precision (``model.pt``: 4 bytes per stored
parameter in fp32, 2 in bf16/fp16; a frozen pretrained encoder is not stored) plus, while its
trial may still resume, ``trainer.pt``: AdamW's two fp32 moments per trained parameter and,
for a 16-bit run, the fp32 masters. What is kept (``orchestrator.checkpoints``): each ended
trial's ``--keep-checkpoints`` best, weights only; each running trial its kept ones plus its
latest whole, and a new one being written beside them.

Parameter counts come from the memory model's ``parameter_count`` over configs drawn from
the search space (the largest draw counts), so nothing is built or loaded.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

GB = 1e9
PROTECTED_TRIALS = 3
"""The best few trials whose best checkpoint the disk budget never evicts."""
DEFAULT_BUDGET_SHARE = 0.9
"""--max-checkpoint-gb's default: this share of the storage's free space at the start."""
EXTRA_BYTES = 2_000_000
"""Per checkpoint besides the tensors: tokenizer files (BERT's ~1 MB), config and history."""
DRAWS = 32
"""Configs drawn from the space for the largest parameter count."""


def free_bytes(storage: str) -> int | None:
    """Free bytes where a local storage folder is (or would be created); None for a URI."""
    if "://" in storage:
        return None
    path = Path(storage)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def checkpoint_budget_bytes(settings) -> float | None:
    """``--max-checkpoint-gb`` in bytes; default: DEFAULT_BUDGET_SHARE of the storage's free
    space now (the rest is left to MLflow, logs and other programs); None for a URI storage
    (no free space to read: no budget unless one is given)."""
    if settings.max_checkpoint_gb is not None:
        return settings.max_checkpoint_gb * GB
    free = free_bytes(settings.storage)
    return None if free is None else DEFAULT_BUDGET_SHARE * free


@dataclass
class DiskEstimate:
    parameters: int
    """Of the largest config drawn (encoder included)."""
    stored_parameters: int
    """In ``model.pt`` (a frozen pretrained encoder's are not)."""
    precision: str
    weights_bytes: int
    """One checkpoint, weights only."""
    resume_bytes: int
    """One checkpoint's ``trainer.pt`` (optimizer state, masters of a 16-bit run)."""
    trials: int
    concurrent: int
    keep: int
    total_bytes: int
    """At most on disk: ended trials' kept weights plus running trials' checkpoints."""
    floor_bytes: int
    """What the budget can never evict: the best trials' best, running trials' latest."""
    budget_bytes: float | None
    free_bytes: int | None

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        """The estimate in words, for ``--dry-run``'s plan."""
        gb = lambda b: f"{b / GB:.3g} GB"  # noqa: E731
        out = [
            f"checkpoints: {self.parameters / 1e6:.1f} M parameters ({self.stored_parameters / 1e6:.1f} M "
            f"stored, {self.precision}): {gb(self.weights_bytes)} of weights per checkpoint, "
            f"{gb(self.resume_bytes)} more of optimizer state while a trial can resume",
            f"checkpoints: up to {gb(self.total_bytes)} for {self.trials} trials "
            f"({self.keep} kept per ended trial, {self.concurrent} running at once); "
            f"at least {gb(self.floor_bytes)} that the budget never evicts",
        ]
        budget = "none" if self.budget_bytes is None else gb(self.budget_bytes)
        free = "unknown (remote storage)" if self.free_bytes is None else gb(self.free_bytes)
        note = ""
        if self.budget_bytes is not None and self.total_bytes > self.budget_bytes:
            note = "; the worst ended trials' checkpoints will be evicted to stay under it"
        out.append(f"checkpoints: budget {budget} (--max-checkpoint-gb), {free} free{note}")
        return out

    def problem(self) -> str | None:
        """Why the storage cannot hold the search, in one line naming the option; or None."""
        gb = lambda b: f"{b / GB:.3g} GB"  # noqa: E731
        need = (
            f"{gb(self.floor_bytes)} ({self.concurrent} running trials' latest checkpoints "
            f"with optimizer state, written twice while saving, and the best "
            f"{PROTECTED_TRIALS} trials' weights)"
        )
        if self.budget_bytes is not None and self.floor_bytes > self.budget_bytes:
            return (
                f"--max-checkpoint-gb {self.budget_bytes / GB:.3g} cannot hold what this search "
                f"never evicts: {need}; raise it, free space, or lower --max-concurrent"
            )
        if self.free_bytes is None:
            return None
        wanted = min(self.total_bytes, self.budget_bytes or self.total_bytes)
        if wanted > self.free_bytes:
            return (
                f"--storage has {gb(self.free_bytes)} free but this search would write up to "
                f"{gb(wanted)} of checkpoints (--max-checkpoint-gb caps it, at least {need}); "
                "free space or lower --max-checkpoint-gb"
            )
        return None


def checkpoint_sizes(config: dict, modalities: int) -> tuple[int, int, int, int, str]:
    """``(parameters, stored, weights_bytes, resume_bytes, precision)`` of one trial config
    (a flat dict of model and train fields, as the space returns them)."""
    from search_spaces.budget import parameter_count
    from search_spaces.memory_plan import config_profile
    from trainable.config import DialogueTRMConfig

    fields = {k: v for k, v in config.items() if k in DialogueTRMConfig.__dataclass_fields__}
    cfg = DialogueTRMConfig(**fields)
    total, above = parameter_count(config_profile(cfg, 1, modalities))
    outside = cfg.freeze_encoder and cfg.encoder != "tiny"  # the trainer's encoder_outside
    stored = above if outside else total
    trained = above if cfg.freeze_encoder else total
    width = 4 if cfg.precision == "fp32" else 2
    weights = int(stored * width) + EXTRA_BYTES
    resume = int(trained * 8 + (stored * 4 if width < 4 else 0))
    return int(total), int(stored), weights, resume, cfg.precision


def draw_configs(space, draws: int = DRAWS) -> list[dict]:
    """``draws`` configs of a define-by-run space (random, seeded): params + constants."""
    from search_spaces.spaces import sample

    return [{**params, **constants} for params, _, constants in sample(space, draws)]


def estimate_checkpoint_disk(settings, space, concurrent: int | None = None) -> DiskEstimate:
    """What ``settings``' search would keep on disk at most (see the module docstring).

    ``concurrent``: trials at once [default: --max-concurrent, else this machine's CPUs
    over --cpus-per-trial]."""
    modalities = len(settings.modalities or ()) or 1
    largest = max(
        (checkpoint_sizes(c, modalities) for c in draw_configs(space)),
        key=lambda s: s[2] + s[3],
    )
    parameters, stored, weights, resume, precision = largest
    trials = settings.budget if settings.budget is not None else settings.trials
    if concurrent is None:
        cpus = os.cpu_count() or 1
        concurrent = settings.max_concurrent or max(1, int(cpus // settings.cpus_per_trial))
    concurrent = max(1, min(concurrent, trials))
    keep = settings.keep_checkpoints
    running = concurrent * ((keep + 1) * weights + resume + (weights + resume))
    total = max(0, trials - concurrent) * keep * weights + running
    floor = min(PROTECTED_TRIALS, trials) * weights + concurrent * 2 * (weights + resume)
    return DiskEstimate(
        parameters=parameters,
        stored_parameters=stored,
        precision=precision,
        weights_bytes=weights,
        resume_bytes=resume,
        trials=trials,
        concurrent=concurrent,
        keep=keep,
        total_bytes=total,
        floor_bytes=floor,
        budget_bytes=checkpoint_budget_bytes(settings),
        free_bytes=free_bytes(settings.storage),
    )
