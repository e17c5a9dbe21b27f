"""Build and run one search: Ray Tune over a trainable, Optuna picking configs, ASHA stopping
the weak, MLflow recording everything from the driver, a live table instead of Ray's reporter.

``run_search(trainable, settings)`` is what ``orch search`` calls; it knows nothing about the
model: the trainable (normally ``trainable.tune_trainable.train_trial``) is passed in.

Resuming (``settings.resume``): ``Tuner.restore`` reads ``<storage_path>/<name>``. The
searcher, scheduler and callbacks come back from ``tuner.pkl`` (pickled when the search
started), then Tune brings the searcher (Optuna study, pruned trials, ASHA's rungs: see
``optuna_pruning``) and the trial list up to its latest experiment snapshot. Finished and
failed trials stay as they are; unfinished ones continue from their last checkpoint; the
search still runs ``num_samples`` trials in all. The MLflow callback reuses the parent run and
each trial's child run (found by tag), logs each epoch once and deletes runs of trials that
the snapshot does not know (see ``mlflow_logging``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import sys
import threading
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
    """Continue the search ``name`` saved under ``storage_path`` (``Tuner.restore``): the
    space, sampler, scheduler and trial count are the saved ones, not these settings."""

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


class SearchInterrupted(KeyboardInterrupt):
    """The search stopped with trials left to run (Ctrl-C or SIGTERM); it can be resumed.
    Its MLflow runs are closed: the parent KILLED, running trials KILLED/interrupted."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def experiment_path(storage_path: str, name: str) -> str:
    """Where Tune keeps search ``name``: ``<storage_path>/<name>`` (a path or a URI)."""
    return f"{storage_path.rstrip('/')}/{name}"


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM stops the search the way Ctrl-C does (Tune's SIGINT handler: the loop ends,
    the experiment state is saved, trials stop), instead of ``ray.init``'s ``sys.exit``.
    A second signal interrupts at once. Only the main thread can set signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum, frame):
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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


class _DropTuneAdvice(logging.Filter):
    """Tune's own end-of-run advice that orch says better: how to resume (``Tuner.restore``
    in Python; orch prints the ``orch search --resume`` command) and "Trials did not
    complete" for failed trials (the summary and ``orch best`` list them with reasons)."""

    DROPPED = ("Experiment has been interrupted", "Trials did not complete")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.DROPPED)


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
    advice, drop = logging.getLogger("ray.tune.tune"), _DropTuneAdvice()
    advice.addFilter(drop)
    try:
        yield
    finally:
        tune_logger.setLevel(level)
        advice.removeFilter(drop)


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
    Ctrl-C or SIGTERM raise SearchInterrupted once Tune has saved the experiment state;
    ``settings.resume`` continues such a search (or one whose driver was killed).
    """
    settings.check()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "new study created" and such
    if settings.resume:
        tuner, searcher, recorder, table = _restore(trainable, settings, console, callbacks)
    else:
        tuner, searcher, recorder, table = _new_tuner(trainable, settings, console, callbacks)
    try:
        with quiet_driver(settings.live), sigterm_as_interrupt():
            results = tuner.fit()
    except KeyboardInterrupt:
        recorder.close("KILLED")
        raise SearchInterrupted(settings.name) from None
    except BaseException:
        recorder.close("FAILED")
        raise
    finally:
        if table is not None:
            table.stop()
    if recorder.interrupted:
        raise SearchInterrupted(settings.name)
    trim_checkpoints(results)
    return SearchResult(
        name=settings.name,
        metric=recorder.metric,
        mode=recorder.mode,
        results=results,
        study=searcher.study,
        parent_run_id=recorder.parent_run_id,
        experiment_path=results.experiment_path,
        pruned=set(searcher.pruned_trials),
    )


def trim_checkpoints(results) -> int:
    """Delete each ended trial's latest checkpoint when it is not among its best ones.

    Tune keeps the ``num_to_keep`` best checkpoints of a trial *and* its latest (to resume
    from), so a trial whose last epoch was not among its best ends with one checkpoint more
    than asked. Once the search has ended nothing resumes from it. Returns how many went."""
    trimmed = 0
    for result in results:
        latest, best = result.checkpoint, result.best_checkpoints
        if latest is None or best is None or latest.path in {c.path for c, _ in best}:
            continue
        try:
            latest.filesystem.delete_dir(latest.path)
            trimmed += 1
        except OSError as error:  # a leftover checkpoint is no reason to fail a search
            logging.getLogger(__name__).warning("could not delete %s: %s", latest.path, error)
    return trimmed


def _restore(trainable, settings: SearchSettings, console, callbacks):
    """The Tuner of a saved search, and its searcher, MLflow callback and live table."""
    path = experiment_path(settings.storage_path, settings.name)
    if not tune.Tuner.can_restore(path):
        raise LookupError(f"no saved search {settings.name!r} under {settings.storage_path}")
    connect_ray(settings.address)
    resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
    tuner = tune.Tuner.restore(
        path,
        tune.with_resources(trainable, resources),
        resume_unfinished=True,
        resume_errored=False,  # a failed trial used up its retries (or ran out of memory)
    )
    # Tune re-creates these from tuner.pkl; the driver needs them (results, live output).
    internal = tuner._local_tuner  # noqa: SLF001 - Tuner.restore takes no callbacks
    run_config = internal.get_run_config()
    searcher = internal._tune_config.search_alg  # noqa: SLF001
    recorder = next(c for c in run_config.callbacks if isinstance(c, MlflowSearchCallback))
    table = next((c for c in run_config.callbacks if isinstance(c, LiveTable)), None)
    if settings.tracking_uri:  # the same store, maybe under another address now
        recorder.tracking_uri, recorder._client = settings.tracking_uri, None
    if table is not None:
        if settings.live:
            table.console = console
        else:
            run_config.callbacks.remove(table)
            table = None
    run_config.callbacks.extend(callbacks)
    recorder.open()
    run = recorder.client.get_run(recorder.parent_run_id)
    resumes = int(run.data.tags.get("orch.resumes", "0")) + 1
    recorder.client.set_tag(recorder.parent_run_id, "orch.resumes", str(resumes))
    return tuner, searcher, recorder, table


def _new_tuner(trainable, settings: SearchSettings, console, callbacks):
    """A fresh Tuner for ``settings``, its searcher, MLflow callback and live table."""
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
        searcher.keep_state_of(scheduler)  # ASHA's rungs are saved with the searcher
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
    return tuner, searcher, recorder, table


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
