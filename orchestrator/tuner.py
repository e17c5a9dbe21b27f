"""Build and run one search: Ray Tune over a trainable, Optuna picking configs, ASHA stopping
the weak, MLflow recording everything from the driver, a live table instead of Ray's reporter.

``run_search(trainable, settings)`` is what ``orch search`` calls; it knows nothing about the
model: the trainable (normally ``trainable.tune_trainable.train_trial``) is passed in.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import optuna
from ray import tune
from ray.tune import CheckpointConfig, FailureConfig, RunConfig
from ray.tune.schedulers import FIFOScheduler
from rich.console import Console

from orchestrator.live_view import LiveTable
from orchestrator.mlflow_logging import DEFAULT_EXPERIMENT, MlflowSearchCallback, git_commit
from orchestrator.optuna_pruning import SAMPLERS, PruningASHA, PruningOptunaSearch, make_sampler
from orchestrator.resources import connect_ray
from search_spaces import bounded, describe, get_space
from search_spaces.spaces import space_name

SCHEDULERS = ("asha", "none")
DEFAULT_EPOCHS = 10  # TrainConfig's default, for max_t when the space does not fix epochs


@dataclass
class SearchSettings:
    """Everything one search needs besides the trainable (validated by ``check``)."""

    space: str | Callable = "quick"
    """Registry name, ``module:function``, a .toml/.json ranges file, or a space function."""
    metric: str = "dev_weighted_f1"
    mode: str = "max"
    num_samples: int = 40
    sampler: str = "tpe"
    seed: int = 0
    scheduler: str = "asha"
    max_t: int | None = None
    """ASHA's last rung: the trial's epochs (default: the space's ``epochs`` constant)."""
    grace_period: int = 1
    reduction_factor: float = 3
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    """GPU (fraction) per trial; see ``orchestrator.resources.trial_resources``."""
    gpu_memory_gb: float | None = None
    """Per-trial GPU budget: bounds K in a registry space, and caps memory inside the trial."""
    storage_path: str | None = None
    """Where trial checkpoints live: absolute path or URI (default ~/ray_results)."""
    name: str | None = None
    num_to_keep: int = 2
    max_failures: int = 1
    tracking_uri: str | None = None
    experiment: str = DEFAULT_EXPERIMENT
    dataset: str | None = None
    constants: dict = field(default_factory=dict)
    """Added to every trial's config (dataset, data_dir, max_dialogues, ...)."""
    points_to_evaluate: list[dict] | None = None
    """Configs (sampled keys only) to try first, e.g. the paper's recipe."""
    address: str | None = None
    command_line: str | None = None
    reuse_actors: bool | None = None
    live: bool = True
    resume: bool = False
    """Reuse the MLflow parent run of an earlier search with the same name."""

    def check(self) -> SearchSettings:
        """Validate and fill defaults (name, absolute storage path); returns self."""
        if self.mode not in ("max", "min"):
            raise ValueError(f"--mode must be max or min, got {self.mode!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"--sampler {self.sampler!r} is unknown; expected one of {SAMPLERS}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"--scheduler {self.scheduler!r} is unknown; expected {SCHEDULERS}")
        for name in ("num_samples", "num_to_keep", "grace_period"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError("--max-concurrent must be >= 1")
        if self.max_failures < 0:
            raise ValueError("--max-failures must be >= 0")
        self.storage_path = resolve_storage(self.storage_path)
        if not self.name:
            self.name = f"{self.dataset or 'search'}-{time.strftime('%Y%m%d-%H%M%S')}"
        return self


def resolve_storage(storage: str | None) -> str:
    """An absolute path or a URI: Ray's pyarrow filesystem rejects relative paths."""
    if storage and "://" in storage:
        return storage
    return str(Path(storage or "~/ray_results").expanduser().resolve())


class WithConstants:
    """A space whose returned constants are extended with run settings (dataset, paths).

    A class, not a closure: Ray pickles the searcher, space included, with plain pickle."""

    def __init__(self, space: Callable, constants: dict):
        self.space, self.constants = space, dict(constants)
        self.__name__ = space_name(space)

    def __call__(self, trial) -> dict:
        return {**(self.space(trial) or {}), **self.constants}


@contextlib.contextmanager
def quiet_driver(live: bool):
    """Ray's own reporting off, so the live table is the only view of the search.

    ``verbose=0`` alone still prints an experiment banner through Ray's new output engine;
    the legacy path (``RAY_AIR_NEW_OUTPUT=0``) honours it. The excessive-checkpoint warning
    fires when short epochs checkpoint often (tests, smoke runs), which is expected here."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    tune_logger = logging.getLogger("ray.tune")
    level = tune_logger.level
    if live:
        tune_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        tune_logger.setLevel(level)


def _trial_dirname(trial) -> str:
    # Ray's default folder name packs every param in; with ~15 params it nears path limits.
    return trial.trial_id


@dataclass
class SearchResult:
    name: str
    metric: str
    mode: str
    results: object  # ray.tune.ResultGrid
    study: object  # optuna.Study
    parent_run_id: str | None
    experiment_path: str
    pruned: set[str]

    def best(self):
        """Ray's best Result by the search metric, over each trial's best epoch (its
        checkpoint: ``.get_best_checkpoint(metric, mode)``)."""
        return self.results.get_best_result(self.metric, self.mode, scope="all")


def build_space(settings: SearchSettings) -> WithConstants:
    """The settings' space, K bounded by the GPU budget, run constants appended."""
    if callable(settings.space):
        space = settings.space
    elif settings.gpu_memory_gb:
        space = bounded(settings.space, settings.gpu_memory_gb)
    else:
        space = get_space(settings.space)
    constants = dict(settings.constants)
    if settings.dataset:
        constants.setdefault("dataset", settings.dataset)
    if settings.gpus_per_trial > 0 and settings.gpu_memory_gb:
        constants.setdefault("gpu_memory_gb", settings.gpu_memory_gb)
    return WithConstants(space, constants)


def run_search(
    trainable: Callable,
    settings: SearchSettings,
    console: Console | None = None,
    callbacks: Sequence = (),
) -> SearchResult:
    """Run a search with ``trainable`` (a Tune function trainable) and return its results.

    Ray is started (or joined, with ``settings.address``) if it is not running. The MLflow
    parent run is opened before the first trial, and closed FINISHED when the search ends,
    or FAILED/KILLED (with every open trial run) when ``fit`` raises or is interrupted.
    """
    settings.check()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "new study created" and such
    space = build_space(settings)
    sampled, constants = describe(space)
    max_t = settings.max_t or int(constants.get("epochs", DEFAULT_EPOCHS))

    searcher = PruningOptunaSearch(
        space=space,
        metric=settings.metric,
        mode=settings.mode,
        sampler=make_sampler(settings.sampler, settings.seed),
        points_to_evaluate=settings.points_to_evaluate,
    )
    if settings.scheduler == "asha":
        scheduler = PruningASHA(
            metric=settings.metric,
            mode=settings.mode,
            max_t=max_t,
            grace_period=min(settings.grace_period, max_t),
            reduction_factor=settings.reduction_factor,
            on_prune=searcher.mark_pruned,
        )
    else:
        scheduler = FIFOScheduler()

    params = {
        "dataset": settings.dataset,
        "space": space_name(space.space),
        "sampler": settings.sampler,
        "scheduler": settings.scheduler,
        "command": settings.command_line or shlex.join(sys.argv),
        "git_commit": git_commit(),
        **{k: v for k, v in asdict(settings).items() if k in PARENT_SETTINGS},
        "max_t": max_t,
    }
    recorder = MlflowSearchCallback(
        search_name=settings.name,
        metric=settings.metric,
        mode=settings.mode,
        tracking_uri=settings.tracking_uri,
        experiment=settings.experiment,
        parent_params=params,
        is_pruned=searcher.is_pruned,
        study=searcher.get_study,
        resume=settings.resume,
    )
    recorder.open()  # one process creates/migrates the store, before any trial
    all_callbacks = [recorder, *callbacks]
    table = None
    if settings.live:
        table = LiveTable(
            settings.metric,
            settings.mode,
            sampled,
            total=settings.num_samples,
            console=console,
            is_pruned=searcher.is_pruned,
            title=settings.name,
        )
        all_callbacks.append(table)

    connect_ray(settings.address)
    resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=settings.num_samples,
            max_concurrent_trials=settings.max_concurrent,
            reuse_actors=settings.reuse_actors,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=RunConfig(
            name=settings.name,
            storage_path=settings.storage_path,
            verbose=0,
            callbacks=all_callbacks,
            checkpoint_config=CheckpointConfig(
                num_to_keep=settings.num_to_keep,
                checkpoint_score_attribute=settings.metric,
                checkpoint_score_order=settings.mode,
            ),
            failure_config=FailureConfig(max_failures=settings.max_failures),
        ),
    )
    try:
        with quiet_driver(settings.live):
            results = tuner.fit()
    except KeyboardInterrupt:
        recorder.close("KILLED")
        raise
    except BaseException:
        recorder.close("FAILED")
        raise
    finally:
        if table is not None:
            table.stop()
    return SearchResult(
        name=settings.name,
        metric=settings.metric,
        mode=settings.mode,
        results=results,
        study=searcher.study,
        parent_run_id=recorder.parent_run_id,
        experiment_path=results.experiment_path,
        pruned=set(searcher.pruned_trials),
    )


# Settings worth seeing on the parent run beside dataset/space/sampler/scheduler/command.
PARENT_SETTINGS = (
    "metric",
    "mode",
    "num_samples",
    "seed",
    "max_concurrent",
    "cpus_per_trial",
    "gpus_per_trial",
    "gpu_memory_gb",
    "storage_path",
    "name",
    "grace_period",
    "reduction_factor",
    "num_to_keep",
    "max_failures",
)
