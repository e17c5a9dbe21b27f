"""The lifecycle of a search's MLflow runs, written from the Ray driver by one Tune callback.

One parent run per search; one nested child run per trial (run name = trial id, tags from
``orchestrator.tracking.runs``); params once; metrics per epoch (step = ``training_iteration``); the
end of each trial as a tag (``orch.state`` = completed / pruned / failed / interrupted) and as
the run's status (FINISHED for completed and pruned, FAILED, KILLED for interrupted only). Metrics reported within ``flush_s`` of the last write
wait for the next write (at most ``flush_s`` later, always before a run ends, and as soon as
Tune registers a checkpoint: a resumed trial never reports a checkpointed epoch again, so a
killed driver must not hold its metrics): one sqlite commit per result cost the driver
~25 ms, which a search of short epochs without checkpoints (a replayed one,
``bench/search_overhead.py --per-report``) paid on every report. What happens after the last trial (best checkpoint,
study, plots, closing the parent) is ``tracking.reports``; picking runs up again after a resume
is ``tracking.resume``.

Why the driver and not the trials: the embedded sqlite store breaks under concurrent writers
(a migration race, "database is locked"), Ray's ``MLflowLoggerCallback`` makes flat runs and
duplicates resumed trials, and ``setup_mlflow`` leaves stopped trials RUNNING.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from ray.tune import Callback

from orchestrator.tracking import notes
from orchestrator.tracking import resume as mlflow_resume
from orchestrator.tracking.journal import journal_path, quick_requests, unreachable
from orchestrator.tracking.runs import (
    BEST_EPOCH_TAG,
    BEST_VALUE_TAG,
    DEFAULT_EXPERIMENT,
    DRIVER_TAG,
    ERROR_TAG,
    FAILURE_TAG,
    FIDELITY_TAG,
    KIND_TAG,
    NODE_TAG,
    PARENT_TAG,
    RESTARTS_TAG,
    RESUMES_TAG,
    SEARCH_TAG,
    STATE_TAG,
    TRIAL_TAG,
    better,
    failure_reason,
    fidelity,
    trial_count,
    trial_runs,
)
from orchestrator.tracking.writer import MAX_TAG, MlflowWriter, metrics_at

# Ray's bookkeeping numbers: not metrics of the model.
RAY_KEYS = {
    "training_iteration",
    "timestamp",
    "pid",
    "iterations_since_restore",
    "time_since_restore",
    "time_total_s",
}
# Results that come faster than this are written together: real epochs (minutes) are each
# written at once; a killed driver loses at most this much of the metrics.
FLUSH_S = 1.0


def error_text(trial) -> str:
    """The trial's last failure: Ray appends every failure to an error file in the driver's
    staging folder (the copy in storage may not be synced yet)."""
    text = None
    try:
        if trial.error_file and Path(trial.error_file).is_file():
            text = Path(trial.error_file).read_text()
        else:
            text = trial.get_error()
    except Exception:  # reading an error must not raise another one
        text = None
    if not text:
        return "unknown error (see the trial's error.txt)"
    return str(text).rsplit("Failure # ", 1)[-1].strip()


class MlflowSearchCallback(Callback):
    """Writes one search (parent run) and its trials (child runs) to MLflow.

    Args:
        search_name: the search's name (parent run name and ``orch.search`` tag).
        metric, mode: what "best" means, for the parent's summary.
        tracking_uri: MLflow store; None: ``$MLFLOW_TRACKING_URI`` or sqlite under ./mlruns.
        experiment: MLflow experiment holding the searches.
        parent_params: logged once on the parent (dataset, space, sampler, command, ...).
        is_pruned: tells whether the scheduler stopped a trial early (then FINISHED with
            ``orch.state`` pruned: a healthy early stop, not an interruption).
        flush_s: metrics reported within this many seconds of the last write are batched
            (None: ``FLUSH_S``; 0 writes every result at once).
    """

    flush_s = FLUSH_S  # the default for callbacks pickled by an older orch

    def __init__(
        self,
        search_name: str,
        metric: str,
        mode: str,
        tracking_uri: str | None = None,
        experiment: str = DEFAULT_EXPERIMENT,
        parent_params: dict | None = None,
        is_pruned: Callable[[str], bool] | None = None,
        flush_s: float | None = None,
    ):
        self.search_name = search_name
        self.metric, self.mode = metric, mode
        # A server that goes away is no reason to fail a search: writes wait in a journal.
        self.writer = MlflowWriter(tracking_uri, journal=journal_path(search_name))
        self.experiment = experiment
        self.parent_params = dict(parent_params or {})
        self.is_pruned = is_pruned or (lambda trial_id: False)
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None
        self.children: dict[str, str] = {}  # trial id -> child run id
        self.closed: set[str] = set()  # trial ids whose child run is terminated
        self.nodes: dict[str, str] = {}  # trial id -> node id last tagged
        self.logged_step: dict[str, int] = {}  # trial id -> last step an earlier driver logged
        self.known_runs: dict[str, str] = {}  # trial id -> run id, from the saved state
        self.total: int | None = None  # trials the search runs (from Tune's setup)
        self.interrupted = False  # the search ended with trials left to run (Ctrl-C, SIGTERM)
        self.running: set[str] = set()  # trials started by this driver and not ended yet
        self.resumed = False  # this driver continues an earlier one's search
        self._dropped_lost = False  # runs of trials lost with a killed driver: deleted once
        self.flush_s = FLUSH_S if flush_s is None else flush_s
        self.best: dict[str, tuple[float, int]] = {}  # trial id -> (best value, its step)
        self.pending: dict[str, list] = {}  # run id -> metrics not written yet
        self._flushed_at = 0.0  # time.monotonic() of the last write

    @property
    def client(self):
        return self.writer.client

    @property
    def tracking_uri(self) -> str:
        return self.writer.tracking_uri

    def __setstate__(self, state: dict) -> None:
        # Unpickled (a resumed search): metrics not written then were never saved either.
        self.__dict__.update(state)
        self.pending, self._flushed_at = {}, 0.0
        self.__dict__.setdefault("best", {})  # pickled by an older orch

    # -- Tune's callback state: saved with each experiment snapshot, given back on restore --

    def get_state(self) -> dict:
        # Tune asks while it writes an experiment snapshot, the point a resumed driver starts
        # from: every epoch up to it is in MLflow before the snapshot is. (A resumed trial
        # reports the epochs after its snapshot's checkpoint again; ``adopt`` drops those
        # MLflow already holds.)
        self.flush()
        return {"children": dict(self.children), "nodes": dict(self.nodes)}

    def set_state(self, state: dict) -> None:
        """The runs the search had at its last snapshot; their steps are read back from
        MLflow when a trial first reports again (``mlflow_resume.adopt``)."""
        self.known_runs.update(state.get("children", {}))
        self.nodes.update(state.get("nodes", {}))

    # -- parent run -------------------------------------------------------------------------

    def open(self) -> str:
        """Open the store and the parent run (idempotent); returns the parent run id.

        Called by the driver before the Tuner starts, so the sqlite store is created (and
        migrated) by one process, once."""
        if self.experiment_id is None:
            self.experiment_id = self.writer.experiment(self.experiment)
        driver = f"{socket.gethostname()}:{os.getpid()}"
        if self.parent_run_id is not None:
            self.writer.reopen(self.parent_run_id)
            self.writer.set_tags(self.parent_run_id, {DRIVER_TAG: driver})
            return self.parent_run_id
        tags = {
            SEARCH_TAG: self.search_name,
            KIND_TAG: "search",
            DRIVER_TAG: driver,
            FIDELITY_TAG: self.parent_params.get("fidelity", "finetune"),
        }
        self.parent_run_id = self.writer.start_run(
            self.experiment_id, self.search_name, tags, self.parent_params
        )
        notes.describe_start(self)  # what is searched, how: the run page's description
        return self.parent_run_id

    def resume(self, tracking_uri: str | None = None) -> None:
        """Continue the search as a new driver (``Tuner.restore`` unpickled this callback):
        reopen the parent, count the resume, and settle runs once Tune has its trials."""
        if tracking_uri:  # the same store, maybe under another address now
            self.writer.tracking_uri = tracking_uri
        self.resumed = True
        self.running, self.interrupted, self.logged_step = set(), False, {}
        self.pending, self._flushed_at = {}, 0.0
        self._dropped_lost = False
        self.open()
        run = self.client.get_run(self.parent_run_id)
        resumes = int(run.data.tags.get(RESUMES_TAG, "0")) + 1
        self.writer.set_tags(self.parent_run_id, {RESUMES_TAG: resumes})

    def close(self, status: str = "FINISHED") -> None:
        """Terminate every child still open as KILLED and the parent with ``status``."""
        if self.parent_run_id is None:
            return
        self.flush()
        for trial_id, run_id in self.children.items():
            if trial_id not in self.closed:
                self.writer.end_run(run_id, "KILLED", {STATE_TAG: "interrupted"})
                self.closed.add(trial_id)
        # Unknown (None) while writes are kept: the journal holds whether it ended already.
        if self.writer.run_status(self.parent_run_id) in ("RUNNING", None):
            self.writer.end_run(self.parent_run_id, status)

    def trial_run_ids(self) -> dict[str, str]:
        """Trial id -> run id of every trial run of the search: from MLflow, or while its
        server is away from what this driver knows (runs made offline have placeholders)."""
        if not self.writer.offline:
            try:
                with quick_requests():  # a server gone just now: seconds, not minutes
                    runs = trial_runs(self.client, self.experiment_id, self.parent_run_id)
                return {r.data.tags.get(TRIAL_TAG): r.info.run_id for r in runs}
            except Exception as error:
                if not unreachable(error):
                    raise
        return {**self.known_runs, **self.children}

    # -- child runs -------------------------------------------------------------------------

    def child_run(self, trial) -> str:
        """The trial's child run: created at its first start, reused when it restarts or
        when the search is resumed."""
        trial_id = trial.trial_id
        if trial_id in self.children:
            return self.children[trial_id]
        adopted = mlflow_resume.adopt(self, trial_id) if self.resumed else None
        if adopted is not None:
            run_id = adopted
        else:
            tags = {
                PARENT_TAG: self.parent_run_id,
                TRIAL_TAG: trial_id,
                SEARCH_TAG: self.search_name,
                KIND_TAG: "trial",
                FIDELITY_TAG: fidelity(trial.config),
                "orch.trial_path": str(trial.path),
            }
            run_id = self.writer.start_run(self.experiment_id, trial_id, tags, trial.config)
        self.children[trial_id] = run_id
        return run_id

    def flush(self) -> None:
        """Write every metric waiting in ``pending`` (one batch per run)."""
        pending, self.pending = self.pending, {}
        for run_id, metrics in pending.items():
            self.writer.log_metric_list(run_id, metrics)
        self._flushed_at = time.monotonic()

    def _flush_if_due(self) -> None:
        if self.pending and time.monotonic() - self._flushed_at >= self.flush_s:
            self.flush()

    def _finish(self, trial, state: str, status: str, error: str | None = None) -> None:
        self.flush()  # a run's metrics are all in before it ends
        tags = {STATE_TAG: state}
        if trial.trial_id in self.best:
            value, step = self.best[trial.trial_id]
            tags.update({BEST_VALUE_TAG: repr(value), BEST_EPOCH_TAG: str(step)})
        if error:
            tags[ERROR_TAG] = error[-MAX_TAG:]
            tags[FAILURE_TAG] = failure_reason(error)
        self.writer.end_run(self.child_run(trial), status, tags)
        self.closed.add(trial.trial_id)

    # -- Tune hooks -------------------------------------------------------------------------

    def setup(self, **info) -> None:
        self.total = trial_count(info) or self.total
        self.open()

    def on_step_begin(self, iteration, trials, **info) -> None:
        if self.resumed and not self._dropped_lost:
            self._dropped_lost = True  # once per resumed driver, when Tune has its trials
            mlflow_resume.drop_lost(self, {t.trial_id for t in trials})

    def on_step_end(self, iteration, trials, **info) -> None:
        self._flush_if_due()  # what waits is written even when no other result comes
        self.writer.poll()  # writes kept while the server was away go once it answers

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.running.add(trial.trial_id)
        run_id = self.child_run(trial)
        if trial.trial_id in self.closed:  # a resumed search continues an interrupted trial
            self.closed.discard(trial.trial_id)
            self.writer.reopen(run_id)
            if self.client.get_run(run_id).data.tags.get(STATE_TAG) == "interrupted":
                self.writer.delete_tag(run_id, STATE_TAG)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        # Ray will restart the trial from its last checkpoint; keep its run open and say so.
        self.writer.set_tags(self.child_run(trial), {RESTARTS_TAG: trial.num_failures})

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        run_id = self.child_run(trial)
        step = int(result.get("training_iteration", 0))
        if step <= self.logged_step.get(trial.trial_id, 0):
            return  # an epoch repeated after a resume: logged once, by the earlier driver
        metrics = {k: v for k, v in result.items() if k not in RAY_KEYS}
        self.note_best(trial.trial_id, metrics.get(self.metric), step)
        self.pending.setdefault(run_id, []).extend(metrics_at(metrics, step))
        self._flush_if_due()
        node = result.get("node_id")
        if isinstance(node, str) and self.nodes.get(trial.trial_id) != node:
            # Tagged once, and again only when a retry lands on another node.
            self.writer.set_tags(run_id, {NODE_TAG: node})
            self.nodes[trial.trial_id] = node

    def note_best(self, trial_id: str, value, step: int) -> None:
        """Keep the trial's best value of the metric (its earliest step on ties)."""
        if not isinstance(value, int | float) or math.isnan(value):
            return
        known = self.best.get(trial_id)
        if better(float(value), known[0] if known else None, self.mode):
            self.best[trial_id] = (float(value), step)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.running.discard(trial.trial_id)
        if self.is_pruned(trial.trial_id):
            # FINISHED, not KILLED: the UI marks KILLED runs like failures, and an early stop
            # is a search working as meant. KILLED stays for interruptions.
            self._finish(trial, "pruned", "FINISHED")
        else:
            self._finish(trial, "completed", "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.running.discard(trial.trial_id)
        self._finish(trial, "failed", "FAILED", error=error_text(trial))

    def on_experiment_end(self, trials, **info) -> None:
        """Tune ends the loop early on Ctrl-C (SIGINT; orch turns SIGTERM into one too) and
        still calls this, after marking the running trials TERMINATED (their state saved as
        RUNNING): a trial that started here and never completed or failed, one never
        started, or fewer trials than asked mean the search was interrupted. A search that
        ran to its end stays open for ``search_reports.finish``."""
        self.flush()
        unfinished = [t for t in trials if not t.is_finished()]
        short = self.total is not None and len(trials) < self.total
        if self.running or unfinished or short:
            self.interrupted = True
            if self.parent_run_id is not None:
                self.writer.set_tags(self.parent_run_id, {STATE_TAG: "interrupted"})
            self.close("KILLED")
            return
        mlflow_resume.settle(self, trials)
