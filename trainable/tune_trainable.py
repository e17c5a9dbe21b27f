"""The Ray Tune function trainable: one search trial = one engine run.

``run_trial`` is a plain function (tests call it without Ray); ``train_trial`` adapts it to
Ray: it resumes from ``tune.get_checkpoint()`` and reports once per epoch with a checkpoint.
Running out of memory (CUDA or CPU) raises ``TrialOutOfMemory`` naming the cause and the
config; Ray's retries of such a trial fail at once (``OOM_MARKER``) rather than train again.
A checkpoint that cannot be written for lack of space raises ``CheckpointWriteFailed``
(``disk full: ...``) after removing what was half-written.
"""

from __future__ import annotations

import errno
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import torch

from trainable.config import DialogueTRMConfig
from trainable.engine import TrainConfig
from trainable.run import prepare

MODEL_KEYS = {f.name for f in fields(DialogueTRMConfig)}
TRAIN_KEYS = {f.name for f in fields(TrainConfig)}
# ``memory`` and ``memory_estimate_gb`` record a ``memory=auto`` choice
# (search_spaces.memory_plan): the chosen precision, checkpointing and chunk size are model
# fields the trial trains with.
RUN_KEYS = {
    "dataset", "data_dir", "max_dialogues", "label", "cache_dir", "gpu_memory_gb",
    "memory", "memory_estimate_gb",
}  # fmt: skip
MEMORY_MODES = ("manual", "auto")


def split_config(config: dict) -> tuple[DialogueTRMConfig, TrainConfig, dict]:
    """A trial's flat dict -> model config, train config and run settings."""
    unknown = sorted(set(config) - MODEL_KEYS - TRAIN_KEYS - RUN_KEYS)
    if unknown:
        raise ValueError(f"unknown trial parameter(s): {', '.join(unknown)}")
    memory = config.get("memory", "manual")
    if memory not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {MEMORY_MODES}, got {memory!r}")
    chosen = {"precision", "gradient_checkpointing", "chunk_size"}
    if memory == "auto" and not chosen <= set(config):
        # trainable cannot import the budget model (layering): the space resolves ``auto``.
        raise ValueError(
            "memory=auto needs the precision, gradient_checkpointing and chunk_size its space "
            "chose (search_spaces.memory_plan.plan_memory); got a config without them"
        )
    model = DialogueTRMConfig(**{k: v for k, v in config.items() if k in MODEL_KEYS})
    train = TrainConfig(**{k: v for k, v in config.items() if k in TRAIN_KEYS})
    return model, train, {k: v for k, v in config.items() if k in RUN_KEYS}


def cap_gpu_memory(budget_gb: float | None) -> float | None:
    """Keep this process inside its share of the GPU; returns the fraction set."""
    if not budget_gb or not torch.cuda.is_available():
        return None
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**30
    fraction = min(1.0, budget_gb / total)
    torch.cuda.set_per_process_memory_fraction(fraction)
    return fraction


class TrialOutOfMemory(RuntimeError):
    """The trial ran out of memory (GPU or CPU). Its message names the cause and the config:
    the same config would run out again, so a retry only repeats the failure."""


OOM_MARKER = "out_of_memory.txt"
"""Written in the trial's folder when it runs out of memory; a retry finds it and fails at
once instead of training up to the same point again (Ray retries every error alike)."""


def out_of_memory(error: BaseException) -> str | None:
    """``"CUDA: ..."`` / ``"CPU: ..."`` when ``error`` means memory ran out, else None.

    CUDA raises ``torch.OutOfMemoryError``; torch's CPU allocator raises a RuntimeError
    ("DefaultCPUAllocator: can't allocate memory"); Python raises MemoryError."""
    text = " ".join(str(error).split())[:300]
    if isinstance(error, torch.OutOfMemoryError):
        return f"CUDA: {text}"
    if isinstance(error, MemoryError):
        return f"CPU: MemoryError {text}".strip()
    if isinstance(error, RuntimeError):
        lower = text.lower()
        if "can't allocate memory" in lower or "cannot allocate memory" in lower:
            return f"CPU: {text.split('. ', 1)[-1] if 'enforce fail' in text else text}"
        if "out of memory" in lower:
            return f"{'CUDA' if 'cuda' in lower else 'device'}: {text}"
    return None


class CheckpointWriteFailed(RuntimeError):
    """A checkpoint could not be written because its storage is full. The message starts
    with ``DISK_FULL``: the driver keeps such a trial resumable (``orch search --resume``
    continues it from its last checkpoint once space is freed)."""


DISK_FULL = "disk full"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` means the storage ran out of space (or quota). pyarrow's copy raises
    an OSError whose errno may be unset, with the system's text in its message."""
    if not isinstance(error, OSError):
        return False
    text = str(error).lower()
    return error.errno in _NO_SPACE or "no space left" in text or "quota exceeded" in text


def _remove_partial(filesystem, path: str | None) -> None:
    """Delete a checkpoint folder a failed write left half-copied (best effort)."""
    if filesystem is None or not path:
        return
    try:
        filesystem.delete_dir(path)
    except (OSError, FileNotFoundError):
        pass


def config_text(config: dict) -> str:
    """The model and training settings of a trial, ``k=v`` sorted (no paths)."""
    keys = sorted(k for k in config if k in MODEL_KEYS or k in TRAIN_KEYS)
    return ", ".join(f"{k}={config[k]}" for k in keys)


def run_trial(
    config: dict,
    report: Callable[[dict, Path], None],
    resume_from: Path | None = None,
) -> dict:
    """Train with ``config``; after each epoch call ``report(metrics, checkpoint_dir)``.

    Running out of memory raises TrialOutOfMemory naming the cause and the config."""
    try:
        return _run_trial(config, report, resume_from)
    except (MemoryError, RuntimeError) as error:  # torch.OutOfMemoryError is a RuntimeError
        reason = out_of_memory(error)
        if reason is None:
            raise
    # Raised outside the except block, so the traceback (and the tensors its frames hold)
    # is released before the trial reports its failure.
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    raise TrialOutOfMemory(f"out of memory ({reason}) with config {config_text(config)}")


def _run_trial(config: dict, report: Callable[[dict, Path], None], resume_from: Path | None):
    model_cfg, train_cfg, run = split_config(config)
    cap_gpu_memory(run.get("gpu_memory_gb"))
    cache = Path(run["cache_dir"]) if run.get("cache_dir") else None
    trainer = prepare(
        run["dataset"],
        model_cfg,
        train_cfg,
        data_dir=run.get("data_dir"),
        max_dialogues=run.get("max_dialogues"),
        label=run.get("label", "emotion"),
        cache_dir=cache,
    )
    if resume_from is not None:
        trainer.resume(resume_from)

    def on_epoch(row: dict, t) -> None:
        metrics = {k: v for k, v in row.items() if isinstance(v, int | float)}
        metrics["num_parameters"] = t.model.num_parameters()
        try:
            with tempfile.TemporaryDirectory(prefix="orch-ckpt-") as tmp:
                report(metrics, t.save(Path(tmp) / "checkpoint"))
        except OSError as error:
            if not disk_full(error):
                raise
            detail = " ".join(str(error).split())[:300]
            raise CheckpointWriteFailed(
                f"{DISK_FULL}: the checkpoint of epoch {t.epoch} could not be written ({detail}); "
                "free space, then orch search --resume continues the trial"
            ) from None

    return trainer.fit(on_epoch=on_epoch)


def train_trial(config: dict) -> None:
    """Ray Tune entry point.

    Every report carries ``node_id``, the Ray node running the trial (a string: the driver's
    MLflow callback tags the trial's run with it and logs only numbers as metrics), so a
    multi-node search shows where each trial, and each retry of it, ran."""
    import ray
    from ray import tune

    node_id = ray.get_runtime_context().get_node_id()

    def report(metrics: dict, checkpoint_dir: Path) -> None:
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir))
        try:
            tune.report({**metrics, "node_id": node_id}, checkpoint=checkpoint)
        except OSError as error:
            if disk_full(error):
                # Tune copies the folder into storage file by file: a failed copy leaves a
                # checkpoint_NNNNNN folder that would look like a checkpoint to resume from.
                # Ray exposes where only through its session's storage context.
                from ray.train._internal.session import get_session

                storage = getattr(get_session(), "storage", None)
                _remove_partial(
                    getattr(storage, "storage_filesystem", None),
                    getattr(storage, "checkpoint_fs_path", None),
                )
            raise

    marker = Path(tune.get_context().get_trial_dir()) / OOM_MARKER
    if marker.is_file():  # a retry of a trial that ran out of memory: it would again
        raise TrialOutOfMemory(marker.read_text())
    try:
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            run_trial(config, report)
            return
        with tempfile.TemporaryDirectory(prefix="orch-resume-") as local:
            with checkpoint.as_directory() as folder:
                shutil.copytree(folder, Path(local) / "checkpoint")  # folder may vanish after
            run_trial(config, report, resume_from=Path(local) / "checkpoint")
    except TrialOutOfMemory as error:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(error))
        raise
