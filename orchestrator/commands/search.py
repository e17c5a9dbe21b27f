"""`orch search`: a Ray Tune search over DialogueTRM configs, recorded in MLflow."""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
import uuid
from pathlib import Path

import typer
from rich.console import Console

from orchestrator.errors import USAGE, fail
from orchestrator.resources import DEFAULT_GPU_MEMORY_GB

# --quick: dialogues per split, enough for a tiny model to beat the majority class on MELD.
QUICK_DIALOGUES = 300


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


def check_space(space: str, gpu_memory_gb: float):
    """The space, bounded by the memory budget, and the constants of one throwaway draw.

    Drawing once on the driver catches what would otherwise fail every trial after Ray has
    started: bad bounds, a space function that raises, a field name no config has.
    """
    from search_spaces import bounded, describe
    from trainable.tune_trainable import MODEL_KEYS, RUN_KEYS, TRAIN_KEYS

    try:
        space_fn = bounded(space, gpu_memory_gb)
        names, constants = describe(space_fn)
    except ValueError as error:
        raise fail(str(error), USAGE) from None
    except Exception as error:  # noqa: BLE001 - a module:function space is user code
        raise fail(f"--space {space}: drawing a config failed: {error!r}", USAGE) from None
    unknown = sorted((set(names) | set(constants)) - MODEL_KEYS - TRAIN_KEYS - RUN_KEYS)
    if unknown:
        raise fail(
            f"--space {space}: unknown parameter(s) {', '.join(unknown)}; expected fields of "
            "DialogueTRMConfig or TrainConfig (see orch train --help)",
            USAGE,
        )
    return space_fn, constants


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


def cpu_warning(console: Console, splits, constants: dict, epochs: int) -> None:
    from orchestrator.cpu_estimate import human, trial_seconds
    from trainable.config import DialogueTRMConfig

    cfg = DialogueTRMConfig(**{k: v for k, v in constants.items() if hasattr(DialogueTRMConfig, k)})
    if cfg.encoder == "tiny":  # tiny trials are overhead-bound: no FLOP estimate
        console.print("[yellow]warning:[/] no GPU in the Ray cluster: trials run on CPU.")
        return
    from transformers import AutoConfig

    from trainable.encoder import resolve_encoder

    enc = AutoConfig.from_pretrained(resolve_encoder(cfg.encoder), local_files_only=True)
    hidden, layers = enc.hidden_size, enc.num_hidden_layers
    turns = [u for d in splits.train for u in d.utterances]
    words = sum(len(u.split()) for u in turns) / max(1, len(turns))
    seconds = trial_seconds(
        utterances=len(turns),
        mean_utterance_tokens=1.3 * words,  # WordPiece splits ~1.3 tokens per word
        k=constants.get("k", cfg.k),
        max_length=cfg.max_length,
        hidden=hidden,
        layers=layers,
        epochs=epochs,
    )
    console.print(
        f"[yellow]warning:[/] no GPU in the Ray cluster: trials run on CPU. One full trial "
        f"({cfg.encoder}, {epochs} epochs over {len(turns):,} training turns) would take about "
        f"{human(seconds)} here." + " Use --quick for a CPU-sized search."
    )


def search(
    ctx: typer.Context,
    dataset: str | None = typer.Option(None, help="meld, iemocap, avec or synthetic."),
    trials: int = typer.Option(40, help="Number of trials (configs) to run."),
    space: str | None = typer.Option(
        None,
        help="Search space: paper, quick, module:function or a .toml/.json ranges file "
        "\\[default: the dataset's preset].",
    ),  # fmt: skip
    quick: bool = typer.Option(
        False,
        help=f"Tiny encoder, {QUICK_DIALOGUES} dialogues per split, 2 epochs: a CPU smoke search.",
    ),
    sampler: str = typer.Option("tpe", help="Optuna sampler: tpe, random or gp."),
    seed: int = typer.Option(0, help="Seed of the sampler."),
    scheduler: str = typer.Option("asha", help="asha (stop weak trials early) or none."),
    metric: str | None = typer.Option(None, help="Metric to optimise \\[default: the preset's]."),
    epochs: int | None = typer.Option(None, help="Epochs per trial \\[default: the space's]."),
    gpu_memory_gb: float = typer.Option(
        DEFAULT_GPU_MEMORY_GB, help="GPU memory budget per trial (bounds K; shares big cards)."
    ),
    cpus_per_trial: float = typer.Option(1.0, help="CPUs per trial."),
    max_concurrent: int | None = typer.Option(None, help="Trials running at once at most."),
    max_failures: int = typer.Option(2, help="Retries of a failed trial from its checkpoint."),
    address: str | None = typer.Option(
        None, help="Join a Ray cluster: 'auto' or host:port \\[default: start a local Ray]."
    ),
    storage: str | None = typer.Option(
        None, help="Where trial checkpoints live: absolute path or URI \\[default: ~/ray_results]."
    ),
    name: str | None = typer.Option(None, help="Name of the search \\[default: dataset-time]."),
    tracking_uri: str | None = typer.Option(
        None, help="MLflow tracking URI \\[default: sqlite store under ./mlruns]."
    ),
    data_dir: Path | None = typer.Option(None, help="Folder with the dataset's files."),
    max_dialogues: int | None = typer.Option(None, help="Dialogues per split (subset)."),
    json_out: bool = typer.Option(False, "--json", help="Print the best trial as one JSON line."),
    resume: str | None = typer.Option(
        None,
        help="Continue search NAME (or 'latest') where it stopped (Ctrl-C, SIGTERM, a killed "
        "driver), with its own settings; only --storage, --tracking-uri and --address may be "
        "given.",
        show_default=False,
    ),
) -> None:
    """Search DialogueTRM hyperparameters with Ray Tune, Optuna and ASHA; track it in MLflow."""
    if resume is not None:
        return _resume(ctx, resume, storage, tracking_uri, address, json_out)
    if dataset is None:
        raise fail("--dataset is required (or --resume NAME to continue a search)", USAGE)
    from orchestrator.optuna_pruning import SAMPLERS
    from orchestrator.tuner import SCHEDULERS, SearchSettings, resolve_storage
    from search_spaces import PRESETS

    if dataset not in PRESETS:
        raise fail(f"--dataset {dataset!r} is unknown; expected one of {', '.join(PRESETS)}", USAGE)
    for option, value in (("--trials", trials), ("--max-concurrent", max_concurrent)):
        if value is not None and value < 1:
            raise fail(f"{option} must be >= 1, got {value}", USAGE)
    checks = (
        (sampler in SAMPLERS, f"--sampler {sampler!r} is unknown; expected one of {', '.join(SAMPLERS)}"),
        (scheduler in SCHEDULERS, f"--scheduler {scheduler!r} is unknown; expected asha or none"),
        (epochs is None or epochs >= 1, f"--epochs must be >= 1, got {epochs}"),
        (max_dialogues is None or max_dialogues >= 1, f"--max-dialogues must be >= 1, got {max_dialogues}"),
        (gpu_memory_gb > 0, f"--gpu-memory-gb must be > 0, got {gpu_memory_gb}"),
        (cpus_per_trial > 0, f"--cpus-per-trial must be > 0, got {cpus_per_trial}"),
        (max_failures >= 0, f"--max-failures must be >= 0, got {max_failures}"),
    )  # fmt: skip
    for ok, message in checks:
        if not ok:
            raise fail(message, USAGE)
    preset = PRESETS[dataset]
    space_fn, constants = check_space(space or ("quick" if quick else preset.space), gpu_memory_gb)
    if quick and max_dialogues is None:
        max_dialogues = QUICK_DIALOGUES
    trial_epochs = epochs or int(constants.get("epochs", 10))

    from trainable.datasets import DataError, load_dataset
    from trainable.features import default_cache_dir

    try:  # fail here, once, rather than in every trial
        splits = load_dataset(dataset, data_dir, max_dialogues=max_dialogues)
    except DataError as error:
        raise fail(str(error)) from None
    check_encoder(constants.get("encoder", "bert-base-uncased"))
    storage_path = resolve_storage(storage)
    check_storage(storage_path)

    from orchestrator.resources import (
        check_ray_address,
        cluster_gpus,
        connect_ray,
        gpu_share,
        probe_gpu_memory_gb,
    )
    from orchestrator.tracking import check_tracking_uri

    try:  # dead services fail in seconds here, not minutes later with half a search created
        check_tracking_uri(tracking_uri)
        check_ray_address(address)
    except ValueError as error:
        raise fail(str(error), USAGE) from None
    except ConnectionError as error:
        raise fail(str(error)) from None
    name = _new_name(name, dataset, tracking_uri, storage_path)
    try:
        connect_ray(address)
    except Exception as error:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError...
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise fail(f"--address {address}: cannot join the Ray cluster: {first}") from None
    err = Console(stderr=True)
    gpus = cluster_gpus()
    gpus_per_trial = gpu_share(gpu_memory_gb, probe_gpu_memory_gb()) if gpus > 0 else 0.0
    if gpus == 0:
        cpu_warning(err, splits, constants, trial_epochs)

    run_constants = {
        "dataset": dataset,
        "data_dir": str(Path(data_dir).resolve()) if data_dir else None,
        "max_dialogues": max_dialogues,
        "cache_dir": str(default_cache_dir().resolve()),
    }
    if epochs:
        run_constants["epochs"] = epochs
    settings = SearchSettings(
        space=space_fn,
        metric=metric or preset.metric,
        mode=preset.mode if metric is None else ("min" if "loss" in metric else "max"),
        num_samples=trials,
        sampler=sampler,
        seed=seed,
        scheduler=scheduler,
        max_t=trial_epochs,
        max_concurrent=max_concurrent,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        gpu_memory_gb=gpu_memory_gb if gpus_per_trial else None,
        storage_path=storage_path,
        name=name,
        max_failures=max_failures,
        tracking_uri=tracking_uri,
        dataset=dataset,
        constants={k: v for k, v in run_constants.items() if v is not None},
        address=address,
        command_line=shlex.join(["orch", *sys.argv[1:]]),
        # A fresh actor per trial costs ~2 s of process start (bench/search_overhead.py:
        # 2.15 s -> 0.36 s of overhead per trial with reuse); train_trial keeps no state.
        reuse_actors=True,
    )
    from trainable.tune_trainable import train_trial

    _run(train_trial, settings, err, json_out)


def _run(trainable, settings, console: Console, json_out: bool) -> None:
    """Run (or resume) the search; on Ctrl-C or SIGTERM say how to resume it, exit 130."""
    from orchestrator.resume import resume_command
    from orchestrator.tuner import run_search

    try:
        result = run_search(trainable, settings, console=console)
    except KeyboardInterrupt:
        again = resume_command(settings.name, settings.tracking_uri, settings.address)
        error = fail(f"search {settings.name} interrupted; its MLflow runs are closed", 130)
        print(f"resume with: {again}", file=sys.stderr)
        raise error from None
    _report(result, settings, json_out)


def _new_name(name: str | None, dataset: str, tracking_uri: str | None, storage: str) -> str:
    """``--name``, unless a search of that name exists (MLflow, or Tune's folder in
    ``storage``): then an error, nothing created. Without ``--name``: ``dataset-time``."""
    from ray.tune import Tuner

    from orchestrator.resume import fresh_name, search_exists
    from orchestrator.tuner import experiment_path

    def taken(candidate: str) -> bool:
        return search_exists(tracking_uri, candidate) or Tuner.can_restore(
            experiment_path(storage, candidate)
        )

    if name is None:
        return fresh_name(dataset, taken)
    if search_exists(tracking_uri, name):
        raise fail(
            f"a search named {name} exists; resume it with --resume {name} or pick another --name",
            USAGE,
        )
    if Tuner.can_restore(experiment_path(storage, name)):
        raise fail(
            f"--storage {storage} already holds a search named {name}; resume it with "
            f"--resume {name} or pick another --name",
            USAGE,
        )
    return name


# What shapes a search: fixed when it starts, so --resume takes none of them.
FIXED_ON_RESUME = (
    "dataset", "trials", "space", "quick", "sampler", "seed", "scheduler", "metric", "epochs",
    "gpu_memory_gb", "cpus_per_trial", "max_concurrent", "max_failures", "name", "data_dir",
    "max_dialogues",
)  # fmt: skip


def _resume(ctx, wanted: str, storage, tracking_uri, address, json_out: bool) -> None:
    """``orch search --resume NAME|latest``: continue a stopped search where it stopped."""
    from ray.tune import Tuner

    from orchestrator.best import NoSearchError
    from orchestrator.resources import check_ray_address, connect_ray
    from orchestrator.resume import find_parent, live_driver, search_name
    from orchestrator.tracking import check_tracking_uri
    from orchestrator.tuner import SearchSettings, experiment_path, resolve_storage

    given = []
    for key in FIXED_ON_RESUME:
        source = ctx.get_parameter_source(key)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            given.append("--" + key.replace("_", "-"))
    try:  # dead services fail in seconds
        check_tracking_uri(tracking_uri)
        check_ray_address(address)
    except ValueError as error:
        raise fail(str(error), USAGE) from None
    except ConnectionError as error:
        raise fail(str(error)) from None
    try:
        parent = find_parent(tracking_uri, wanted)
    except NoSearchError as error:
        raise fail(f"--resume {wanted}: {error}", USAGE) from None
    name, params = search_name(parent), parent.data.params
    if given:
        raise fail(
            f"--resume {wanted} continues search {name} with the settings it started with; "
            f"drop {', '.join(given)}",
            USAGE,
        )
    if parent.info.status == "FINISHED":
        print(f"search {name} finished already; details: orch best --name {name}", file=sys.stderr)
        if json_out:
            from orchestrator.best import best_trial

            try:
                print(json.dumps(best_trial(tracking_uri, name=name).to_dict()))
            except NoSearchError as error:
                raise fail(str(error)) from None
        return
    pid = live_driver(parent)
    if pid is not None:
        raise fail(f"search {name} is still running (driver pid {pid}); stop it first", USAGE)
    storage_path = resolve_storage(storage) if storage else params.get("storage_path")
    if not storage_path or not Tuner.can_restore(experiment_path(storage_path, name)):
        raise fail(
            f"search {name}: no saved state under {storage_path} (Tune's folder {name} moved? "
            "pass --storage WHERE)"
        )
    try:
        connect_ray(address)
    except Exception as error:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError...
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise fail(f"--address {address}: cannot join the Ray cluster: {first}") from None
    settings = SearchSettings(
        name=name,
        storage_path=storage_path,
        tracking_uri=tracking_uri,
        address=address,
        metric=params.get("metric", "dev_weighted_f1"),
        mode=params.get("mode", "max"),
        num_samples=int(params.get("num_samples", 1)),
        cpus_per_trial=float(params.get("cpus_per_trial", 1.0)),
        gpus_per_trial=float(params.get("gpus_per_trial", 0.0)),
        dataset=params.get("dataset"),
        resume=True,
    )
    from trainable.tune_trainable import train_trial

    _run(train_trial, settings, Console(stderr=True), json_out)


def _report(result, settings, json_out: bool) -> None:
    from orchestrator.best import NoSearchError, best_trial, failure_summary

    out = Console(stderr=json_out)
    states = {}
    for r in result.results:
        state = (
            "failed"
            if r.error
            else ("pruned" if r.metrics.get("trial_id") in result.pruned else "completed")
        )
        states[state] = states.get(state, 0) + 1
    counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    out.print(f"search [bold]{settings.name}[/] finished: {counts}")
    try:
        best = best_trial(settings.tracking_uri, name=settings.name)
    except NoSearchError as error:
        raise fail(str(error)) from None
    if best.failed:
        out.print(failure_summary(best.failed), highlight=False, markup=False)
    out.print(
        f"best trial {best.trial_id}: {best.metric} {best.value:.4g} at epoch {best.epoch}\n"
        f"details: orch best --name {settings.name}"
    )
    if json_out:
        print(json.dumps(best.to_dict()))
