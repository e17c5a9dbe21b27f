"""Build and run one search: Ray Tune over a trainable, Optuna picking configs, a scheduler
stopping the weak, MLflow recording everything from the driver, a live table instead of
Ray's reporter.

``run_search(trainable, settings)`` is what ``orch search`` calls; it knows nothing about
the model: the trainable (normally ``trainable.tune_trainable.train_trial``) is passed in.

Resuming (``settings.resume``): ``Tuner.restore`` reads ``<storage>/<name>``. The searcher,
scheduler and callbacks come back from ``tuner.pkl`` (pickled when the search started), then
Tune brings the searcher (Optuna study, pruned trials, ASHA's rungs: see ``optuna_pruning``),
the callbacks' state and the trial list up to the latest experiment snapshot. Finished and
failed trials stay as they are; unfinished ones continue from their last checkpoint; the
search still runs its number of trials in all (or spends its ``--budget``: see
``compute_budget``).
"""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.console import Console

from orchestrator.checkpoints import CheckpointJanitor
from orchestrator.compute_budget import EpochBudget
from orchestrator.disk import checkpoint_budget_bytes
from orchestrator.driver import quiet_driver, sigterm_as_interrupt
from orchestrator.live_view import LiveTable
from orchestrator.resources import connect_ray
from orchestrator.resume import restored_parts
from orchestrator.settings import SearchSettings, option_fields
from orchestrator.strategies import make_sampler, make_scheduler
from orchestrator.tracking import reports as search_reports
from orchestrator.tracking.callback import MlflowSearchCallback
from orchestrator.tracking.journal import settle_s
from orchestrator.tracking.runs import fidelity
from orchestrator.tracking.writer import git_commit

logger = logging.getLogger(__name__)


class SearchInterrupted(KeyboardInterrupt):
    """The search stopped with trials left to run (Ctrl-C or SIGTERM); it can be resumed.
    Its MLflow runs are closed: the parent KILLED, running trials KILLED/interrupted."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


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
    # Set when MLflow did not answer by the end: where the kept writes are, how to send them.
    unsynced: str | None = None


def run_search(
    trainable: Callable,
    settings: SearchSettings,
    console: Console | None = None,
    callbacks: Sequence = (),
) -> SearchResult:
    """Run a search with ``trainable`` (a Tune function trainable) and return its results.

    Ray is started (or joined, with ``settings.address``) if it is not running. The MLflow
    parent run is opened before the first trial, and closed FINISHED once the search's
    reports are logged, or FAILED/KILLED (with every open trial run) when ``fit`` raises or
    is interrupted. Ctrl-C or SIGTERM raise SearchInterrupted once Tune has saved the
    experiment state; ``settings.resume`` continues such a search (or one whose driver was
    killed).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "new study created" and such
    build = _restore if settings.resume else _new_tuner
    tuner, searcher, recorder, table = build(trainable, settings, console, callbacks)
    try:
        with quiet_driver(settings.live), sigterm_as_interrupt():
            results = tuner.fit()
    except KeyboardInterrupt:
        recorder.close("KILLED")
        _warn_unsynced(recorder)
        raise SearchInterrupted(settings.name) from None
    except BaseException:
        recorder.close("FAILED")
        _warn_unsynced(recorder)
        raise
    finally:
        if table is not None:
            table.stop()
    if recorder.interrupted:
        _warn_unsynced(recorder)
        raise SearchInterrupted(settings.name)
    search_reports.finish(recorder, results, searcher.study)
    trim_checkpoints(results)
    # Writes kept while MLflow was away: wait a little for it, else name them for `orch sync`.
    unsynced = recorder.writer.settle(settle_s())
    return SearchResult(
        name=settings.name,
        metric=recorder.metric,
        mode=recorder.mode,
        results=results,
        study=searcher.study,
        parent_run_id=recorder.parent_run_id,
        experiment_path=results.experiment_path,
        pruned=set(searcher.pruned_trials),
        unsynced=unsynced,
    )


def _warn_unsynced(recorder) -> None:
    note = recorder.writer.settle()
    if note:
        print(note, file=sys.stderr)


def trim_checkpoints(results) -> int:
    """Delete each ended trial's latest checkpoint when it is not among its best ones.

    Tune keeps the ``keep_checkpoints`` best checkpoints of a trial *and* its latest (to
    resume from), so a trial whose last epoch was not among its best ends with one more
    than asked. Once the search has ended nothing resumes from it. Returns how many went."""
    trimmed = 0
    for result in results:
        latest, best = result.checkpoint, result.best_checkpoints
        if latest is None or best is None or latest.path in {c.path for c, _ in best}:
            continue
        try:
            latest.filesystem.delete_dir(latest.path)
            trimmed += 1
        except FileNotFoundError:  # evicted by the disk budget already
            continue
        except OSError as error:  # a leftover checkpoint is no reason to fail a search
            logger.warning("could not delete %s: %s", latest.path, error)
    return trimmed


def _restore(trainable, settings: SearchSettings, console, callbacks):
    """The Tuner of a saved search, and its searcher, MLflow callback and live table."""
    from ray import tune

    if not tune.Tuner.can_restore(settings.experiment_path):
        raise LookupError(f"no saved search {settings.name!r} under {settings.storage}")
    connect_ray(settings.address)
    resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
    tuner = tune.Tuner.restore(
        settings.experiment_path,
        tune.with_resources(trainable, resources),
        resume_unfinished=True,
        # A failed trial used up its retries (or ran out of memory), unless its checkpoint
        # found the disk full: that one continues once space is freed. Tune resumes failed
        # trials all or none, so when one did, the others get their retry too.
        resume_errored=settings.resume_failed,
    )
    saved_callbacks, searcher = restored_parts(tuner)
    recorder = next(c for c in saved_callbacks if isinstance(c, MlflowSearchCallback))
    table = next((c for c in saved_callbacks if isinstance(c, LiveTable)), None)
    if table is not None:
        table.console = console
        table.enabled = settings.live
    saved_callbacks.extend(callbacks)
    saved_callbacks.extend(missing_loggers(saved_callbacks))  # a search saved by an older orch
    recorder.resume(settings.tracking_uri)
    return tuner, searcher, recorder, table if settings.live else None


def parent_params(settings: SearchSettings, space, max_t: int, constants: dict) -> dict:
    """What the parent run records: every option as typed (so ``--resume`` can compare),
    and what was derived from them."""
    params = {f.name: getattr(settings, f.name) for f in option_fields()}
    if callable(settings.space):
        params["space"] = space.__name__
    return {
        **params,
        "space_bounded": space.__name__,
        "mode": settings.mode,
        "max_t": max_t,
        "fidelity": fidelity(constants),  # from what trials get: the option or the space
        "gpus_per_trial": settings.gpus_per_trial,
        "command": settings.command_line or shlex.join(sys.argv),
        "git_commit": git_commit(),
    }


def _new_tuner(trainable, settings: SearchSettings, console, callbacks):
    """A fresh Tuner for ``settings``, its searcher, MLflow callback and live table."""
    from ray import tune
    from ray.tune import CheckpointConfig, FailureConfig, RunConfig

    from orchestrator.optuna_pruning import PruningOptunaSearch
    from orchestrator.warm_start import prior
    from search_spaces import describe

    space = settings.build_space()
    sampled, constants = describe(space)
    max_t = settings.max_t(constants)
    start = prior(settings, space)  # --warm-start, --enqueue: before anything is opened
    for note in start.notes:
        print(note, file=sys.stderr)
    searcher = PruningOptunaSearch(
        space=space,
        metric=settings.metric,
        mode=settings.mode,
        sampler=make_sampler(settings.sampler, settings.seed, settings.startup_trials),
        points_to_evaluate=[*start.points, *(settings.points_to_evaluate or [])] or None,
        tell_pruned=settings.asha_tells == "pruned",
        budget=settings.budget,
    )
    searcher.study.add_trials(start.trials)  # told before the first draw
    scheduler = make_scheduler(settings.scheduler, settings, searcher, max_t)
    budgeted = settings.budget is not None
    recorder = MlflowSearchCallback(
        search_name=settings.name,
        metric=settings.metric,
        mode=settings.mode,
        tracking_uri=settings.tracking_uri,
        experiment=settings.experiment,
        parent_params={**parent_params(settings, space, max_t, constants), **start.params()},
        is_pruned=searcher.is_pruned,
    )
    recorder.open()  # one process creates/migrates the store, before any trial
    table = LiveTable(
        settings.metric,
        settings.mode,
        sampled,
        total=None if budgeted else settings.trials,
        console=console,
        is_pruned=searcher.is_pruned,
        title=settings.name,
        enabled=settings.live,
    )
    janitor = CheckpointJanitor(
        settings.metric,
        settings.mode,
        checkpoint_budget_bytes(settings),
        recorder=recorder,
        keep=settings.keep_checkpoints,
    )
    # The recorder first: Tune gives callback state back by position on restore.
    all_callbacks = [recorder, table, janitor, *callbacks]
    all_callbacks += missing_loggers(all_callbacks)
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
            storage_path=settings.storage,
            stop=EpochBudget(settings.budget, searcher, max_t) if budgeted else None,
            verbose=0,
            callbacks=all_callbacks,
            # num_to_keep stays unset: the janitor keeps --keep-checkpoints per trial. Tune's
            # own would force a full experiment snapshot every N checkpoints of any trial.
            checkpoint_config=CheckpointConfig(
                checkpoint_score_attribute=settings.metric,
                checkpoint_score_order=settings.mode,
            ),
            failure_config=FailureConfig(max_failures=settings.max_failures),
        ),
    )
    return tuner, searcher, recorder, table if settings.live else None


def missing_loggers(callbacks) -> list:
    """Tune's JSON and CSV loggers (each trial's result.json and progress.csv) where
    ``callbacks`` lacks them. Tune adds them itself, and a TensorBoard logger with them,
    unless ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1``, which ``quiet_driver`` sets: the
    TensorBoard event files repeat what MLflow shows and cost the driver ~30 ms per
    reported epoch (profiled on a replayed search). ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=0``
    brings them back."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    wanted = (JsonLoggerCallback, CSVLoggerCallback)
    return [kind() for kind in wanted if not any(isinstance(c, kind) for c in callbacks)]


def _trial_dirname(trial) -> str:
    # Ray's default folder name packs every param in; with ~15 params it nears path limits.
    return trial.trial_id
