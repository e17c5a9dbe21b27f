"""Checks `orch search` runs on the driver before anything is created.

Each catches, once and in seconds, what would otherwise fail every trial after Ray started,
or leave half a search behind: a storage folder that cannot be written, a missing encoder,
a dead Ray or MLflow address, a name already taken. Each raises ``typer.Exit`` through
``errors.fail`` with one line naming the option.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

from orchestrator.errors import RUNTIME, USAGE, fail


def check_storage(storage: str) -> None:
    """A local storage folder must be creatable and writable before any trial starts.

    The folders the probe creates are removed again: a search that fails after this check
    (Ray, MLflow) must leave nothing behind, and Ray creates the folder when trials start.
    """
    if "://" in storage:
        return
    path = Path(storage)
    created = [p for p in (path, *path.parents) if not p.exists()]  # deepest first
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".orch-write-test-{uuid.uuid4().hex}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise fail(f"--storage {storage} is not writable: {error.strerror or error}") from None
    finally:
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()


def check_disk(settings, space) -> None:
    """The storage must hold what the search keeps (``orchestrator.disk``): refused here,
    with the estimate, rather than trials failing on a full disk hours in."""
    from orchestrator.disk import estimate_checkpoint_disk

    problem = estimate_checkpoint_disk(settings, space).problem()
    if problem:
        raise fail(problem, USAGE if problem.startswith("--max-checkpoint-gb") else RUNTIME)


def check_encoder(encoder: str) -> None:
    """Every trial would fail on a missing encoder: find out once, on the driver."""
    from trainable.config import DialogueTRMConfig
    from trainable.encoder import EncoderNotFoundError, encoder_has_segments

    if encoder == "tiny":
        return
    try:
        encoder_has_segments(DialogueTRMConfig(encoder=encoder))
    except EncoderNotFoundError as error:
        raise fail(str(error)) from None


def check_services(tracking_uri: str | None, address: str | None) -> None:
    """Dead services fail in seconds here, not minutes later with half a search created."""
    from orchestrator.resources import check_ray_address
    from orchestrator.tracking.journal import settle_s
    from orchestrator.tracking.store import check_tracking_uri

    try:
        settle_s()  # a bad ORCH_MLFLOW_SETTLE_S fails now, not after the search
        check_tracking_uri(tracking_uri)
        check_ray_address(address)
    except ValueError as error:
        raise fail(str(error), USAGE) from None
    except ConnectionError as error:
        raise fail(str(error)) from None
    from orchestrator.tracking.sync import replay_pending

    replay_pending(tracking_uri)  # it answers: first what earlier searches kept for it


def join_ray(address: str | None) -> None:
    from orchestrator.resources import connect_ray

    try:
        connect_ray(address)
    except Exception as error:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError...
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise fail(f"--address {address}: cannot join the Ray cluster: {first}") from None


def pick_name(settings, given_name: str | None) -> str:
    """``--name``, unless a search of that name exists (MLflow, or Tune's folder in the
    storage): then an error, nothing created. Without ``--name``: a free ``dataset-time``."""
    from ray.tune import Tuner

    from orchestrator.resume import fresh_name
    from orchestrator.settings import experiment_path
    from orchestrator.tracking.runs import search_exists

    def in_storage(candidate: str) -> bool:
        return Tuner.can_restore(experiment_path(settings.storage, candidate))

    if given_name is None:
        return fresh_name(
            settings.dataset or "search",
            lambda c: search_exists(settings.tracking_uri, c) or in_storage(c),
        )
    if search_exists(settings.tracking_uri, given_name):
        raise fail(
            f"a search named {given_name} exists; resume it with --resume {given_name} or pick "
            "another --name",
            USAGE,
        )
    if in_storage(given_name):
        raise fail(
            f"--storage {settings.storage} already holds a search named {given_name}; resume it "
            f"with --resume {given_name} or pick another --name",
            USAGE,
        )
    return given_name


def cpu_warning(console, splits, constants: dict, epochs: int) -> None:
    """No GPU: say so, and how long one full trial of a real encoder would take here."""
    estimate = cpu_trial_time(splits, constants, epochs)
    text = f" {estimate[0].upper()}{estimate[1:]}." if estimate else ""
    frozen = bool(constants.get("freeze_encoder"))
    tip = " Use --quick for a CPU-sized search." if estimate and not frozen else ""
    console.print(f"[yellow]warning:[/] no GPU in the Ray cluster: trials run on CPU.{text}{tip}")


def cpu_trial_time(splits, constants: dict, epochs: int) -> str | None:
    """How long one trial of a real encoder takes on this CPU, in words (None for tiny)."""
    from orchestrator.cpu_estimate import human, trial_seconds
    from trainable.config import DialogueTRMConfig

    cfg = DialogueTRMConfig(**{k: v for k, v in constants.items() if hasattr(DialogueTRMConfig, k)})
    if cfg.encoder == "tiny":  # tiny trials are overhead-bound: no FLOP estimate
        return None
    from transformers import AutoConfig

    from trainable.encoder import resolve_encoder

    enc = AutoConfig.from_pretrained(resolve_encoder(cfg.encoder), local_files_only=True)
    turns = [u for d in splits.train for u in d.utterances]
    words = sum(len(u.split()) for u in turns) / max(1, len(turns))
    frozen = bool(constants.get("freeze_encoder"))
    seconds = trial_seconds(
        utterances=len(turns),
        mean_utterance_tokens=1.3 * words,  # WordPiece splits ~1.3 tokens per word
        k=constants.get("k", cfg.k),
        max_length=cfg.max_length,
        hidden=enc.hidden_size,
        layers=enc.num_hidden_layers,
        epochs=1 if frozen else epochs,
    )
    if frozen:  # one forward pass (a third of a training step) over train, dev and test
        turns_all = turns + [u for d in (*splits.dev, *splits.test) for u in d.utterances]
        seconds *= len(turns_all) / max(1, len(turns)) / 3
        return (
            f"the frozen {cfg.encoder} encodes every input once per K (about {human(seconds)} "
            "on this CPU, then cached); trials train only the layers above it"
        )
    return (
        f"one full trial ({cfg.encoder}, {epochs} epochs over {len(turns):,} training turns) "
        f"would take about {human(seconds)} on this CPU"
    )
