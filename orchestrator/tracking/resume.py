"""Picking a search's MLflow runs up again when a new driver continues it.

A resumed driver (``orch search --resume``) knows the runs of the search's last experiment
snapshot (the callback's saved state) but MLflow knows more: runs of trials started after
that snapshot, and epochs logged after it. MLflow is the record; these functions make the
new driver agree with it, so each trial keeps one run and each epoch is logged once.
"""

from __future__ import annotations

import logging

from orchestrator.tracking.journal import quick_requests, unreachable
from orchestrator.tracking.runs import PARENT_TAG, STATE_TAG, TRIAL_TAG, trial_runs

logger = logging.getLogger(__name__)


def adopt(callback, trial_id: str) -> str | None:
    """The run an earlier driver made for ``trial_id`` (None when there is none), with the
    last step it logged: the snapshot this driver restored may predate that step, and the
    trial then repeats epochs the run already holds."""
    client = callback.client
    run = None
    known = callback.known_runs.get(trial_id)
    if known is not None:
        run = client.get_run(callback.writer.resolve(known))  # made offline: its real id
    else:
        found = client.search_runs(
            [callback.experiment_id],
            filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' "
            f"and tags.`{PARENT_TAG}` = '{callback.parent_run_id}'",
            max_results=1,
        )
        run = found[0] if found else None
    if run is None:
        return None
    run_id = run.info.run_id
    history = client.get_metric_history(run_id, callback.metric)
    callback.logged_step[trial_id] = max((m.step for m in history), default=0)
    for point in sorted(history, key=lambda m: m.step):  # the best so far, for its end tags
        callback.note_best(trial_id, point.value, point.step)
    if run.info.status != "RUNNING":  # ended, or closed as interrupted
        callback.closed.add(trial_id)
    return run_id


def drop_lost(callback, known: set[str]) -> None:
    """Delete child runs of trials the restored experiment does not know.

    A trial started after the last experiment snapshot of a killed driver is lost with it:
    Tune and Optuna never saw it, its slot goes to a new trial. Its run would be one run too
    many (and might even look best), so it is deleted (MLflow keeps deleted runs until
    ``mlflow gc``), tagged ``orch.state = lost``."""
    for run in trial_runs(callback.client, callback.experiment_id, callback.parent_run_id):
        trial_id = run.data.tags.get(TRIAL_TAG)
        if trial_id in known:
            continue
        run_id = run.info.run_id
        callback.writer.set_tags(run_id, {STATE_TAG: "lost"})
        if run.info.status == "RUNNING":
            callback.writer.end_run(run_id, "KILLED")
        callback.writer.delete_run(run_id)
        callback.known_runs.pop(trial_id, None)
        logger.warning(
            "trial %s started after the last saved state of the search: its run %s is "
            "deleted and a new trial takes its place",
            trial_id,
            run_id,
        )


def settle(callback, trials) -> None:
    """Close the runs an earlier (killed) driver left RUNNING for trials that have ended.

    Needs MLflow's answer; while its server is away (writes kept in the journal) the runs
    stay as they are, and a later ``--resume`` settles them."""
    by_id = {t.trial_id: t for t in trials}
    if callback.writer.offline:
        return
    try:
        with quick_requests():  # a server gone just now: seconds, not minutes of retries
            runs = trial_runs(callback.client, callback.experiment_id, callback.parent_run_id)
    except Exception as error:
        if not unreachable(error):
            raise
        logger.warning("MLflow unreachable: runs of an earlier driver not settled (%s)", error)
        return
    for run in runs:
        trial = by_id.get(run.data.tags.get(TRIAL_TAG))
        if run.info.status != "RUNNING" or trial is None or trial.trial_id in callback.closed:
            continue
        if trial.status == "ERROR":
            callback.on_trial_error(0, trials, trial)
        else:
            callback.on_trial_complete(0, trials, trial)
