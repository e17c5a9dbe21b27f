"""MLflow records of a search, written from the Ray driver by one Tune callback.

One parent run per search; one nested child run per trial (run name = trial id, tags
``mlflow.parentRunId``, ``orch.trial_id`` and ``orch.node_id``, the Ray node that ran it);
params once; metrics per epoch (step = ``training_iteration``); final state as a tag
(``orch.state`` = completed / pruned / failed) and as the run status (FINISHED / KILLED /
FAILED); at the end the best trial's best checkpoint as an artifact on the parent and on that
child, and plots of the Optuna study on the parent.

Why the driver and not the trials: the embedded sqlite store breaks under concurrent writers,
Ray's ``MLflowLoggerCallback`` makes flat runs and duplicates resumed trials, and
``setup_mlflow`` leaves stopped trials RUNNING (DESIGN.md). Everything goes through an
``MlflowClient`` with explicit run ids, so no fluent "active run" leaks between runs.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from ray.tune import Callback

from orchestrator.tracking import client_for, experiment_id, resolve_tracking_uri

logger = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "orch.trial_id"
SEARCH_TAG = "orch.search"
KIND_TAG = "orch.kind"
STATE_TAG = "orch.state"
CHECKPOINT_TAG = "orch.best_checkpoint"
NODE_TAG = "orch.node_id"  # the Ray node that ran the trial (its latest attempt)
ERROR_TAG = "orch.error"  # a failed trial's error, traceback included
FAILURE_TAG = "orch.failure"  # ... and its reason in one line (``failure_reason``)
DRIVER_TAG = "orch.driver"  # host:pid of the driver that last ran the search
DEFAULT_EXPERIMENT = "orch-search"
# Ray's bookkeeping numbers: not metrics of the model.
RAY_KEYS = {
    "training_iteration",
    "timestamp",
    "pid",
    "iterations_since_restore",
    "time_since_restore",
    "time_total_s",
}
MAX_PARAM = 6000  # MLflow's limit on a param value
MAX_TAG = 8000


def git_commit(cwd: str | Path | None = None) -> str | None:
    """HEAD of the repository at ``cwd`` (``-dirty`` when there are local changes), or None."""
    try:
        run = lambda *a: subprocess.run(  # noqa: E731
            ["git", *a], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        commit = run("rev-parse", "HEAD")
        return commit + ("-dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _numeric(result: dict) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in result.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in RAY_KEYS
    }


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


_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?:\([\w.]+\))?: (.*\S)")


def failure_reason(text: str) -> str:
    """One line saying why a trial failed, from Ray's error text (a traceback, or a message
    about a dead worker): the exception's line without its module path, ``out of memory
    (...) with config ...`` for TrialOutOfMemory, else the text's first line."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    found = [m for m in map(_EXCEPTION_LINE.match, lines) if m]
    if found:
        name, message = found[-1].group(1).rsplit(".", 1)[-1], found[-1].group(2)
        if name == "TrialOutOfMemory":
            reason = message
        elif name == "OutOfMemoryError" and "low on memory" in message:
            reason = f"out of memory (Ray's memory monitor killed the worker: {message})"
        else:
            reason = f"{name}: {message}"
    else:
        reason = lines[0].strip() if lines else "unknown error"
    return reason[:500]


def best_kept_checkpoint(trial, metric: str, mode: str):
    """(value, checkpoint) of the trial's best checkpoint still kept by Ray, or None."""
    manager = trial.run_metadata.checkpoint_manager
    best = None
    for kept in manager.best_checkpoint_results:
        value = kept.metrics.get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if best is None or (value > best[0] if mode == "max" else value < best[0]):
            best = (value, kept.checkpoint)
    return best


class MlflowSearchCallback(Callback):
    """Writes one search (parent run) and its trials (child runs) to MLflow.

    Args:
        search_name: the search's name (parent run name and ``orch.search`` tag).
        metric, mode: what "best" means, for the best checkpoint and the parent's summary.
        tracking_uri: MLflow store; None: ``$MLFLOW_TRACKING_URI`` or sqlite under ./mlruns.
        experiment: MLflow experiment holding the searches.
        parent_params: logged once on the parent (dataset, space, sampler, command, ...).
        is_pruned: tells whether the scheduler stopped a trial early (then KILLED/pruned).
        study: returns the Optuna study, for the plots (None: no plots).
        resume: reuse the latest parent run of ``search_name`` instead of opening another.
    """

    def __init__(
        self,
        search_name: str,
        metric: str,
        mode: str,
        tracking_uri: str | None = None,
        experiment: str = DEFAULT_EXPERIMENT,
        parent_params: dict | None = None,
        is_pruned: Callable[[str], bool] | None = None,
        study: Callable[[], object] | None = None,
        resume: bool = False,
    ):
        self.search_name = search_name
        self.metric, self.mode = metric, mode
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.experiment = experiment
        self.parent_params = dict(parent_params or {})
        self.is_pruned = is_pruned or (lambda trial_id: False)
        self.study = study
        self.resume = resume
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None
        self.children: dict[str, str] = {}  # trial id -> child run id
        self.closed: set[str] = set()  # trial ids whose child run is terminated
        self.nodes: dict[str, str] = {}  # trial id -> node id last tagged
        self.logged_step: dict[str, int] = {}  # trial id -> last step an earlier driver logged
        self.total: int | None = None  # trials the search runs (from Tune's setup)
        self.interrupted = False  # the search ended with trials left to run (Ctrl-C, SIGTERM)
        self.running: set[str] = set()  # trials started by this driver and not ended yet
        self._restored = False  # unpickled from tuner.pkl: a resumed search's driver
        self._client = None

    # The Tuner pickles its callbacks (tuner.pkl, for Tuner.restore); a client holding an
    # SQLAlchemy engine cannot be pickled, and a restored callback must reconnect anyway.
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_client"] = None
        return state

    def __setstate__(self, state):
        """Whatever unpickles a callback is the driver of a resumed search."""
        defaults = {"logged_step": {}, "total": None, "interrupted": False, "running": set()}
        self.__dict__.update({**defaults, **state, "_restored": True})

    @property
    def client(self):
        if self._client is None:
            self._client = client_for(self.tracking_uri)
        return self._client

    # -- parent run -------------------------------------------------------------------------

    def open(self) -> str:
        """Open the store and the parent run (idempotent); returns the parent run id.

        Called by the driver before the Tuner starts, so the sqlite store is created (and
        migrated) by one process, once."""
        if self.experiment_id is None:
            self.experiment_id = experiment_id(self.client, self.tracking_uri, self.experiment)
        if self.parent_run_id is None and self.resume:
            self.parent_run_id = self._find_parent()
        driver = f"{socket.gethostname()}:{os.getpid()}"
        if self.parent_run_id is not None:
            self.client.update_run(self.parent_run_id, status="RUNNING")
            self.client.set_tag(self.parent_run_id, DRIVER_TAG, driver)
            return self.parent_run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.search_name,
            tags={SEARCH_TAG: self.search_name, KIND_TAG: "search", DRIVER_TAG: driver},
        )
        self.parent_run_id = run.info.run_id
        params = {k: v for k, v in self.parent_params.items() if v is not None}
        self._log_params(self.parent_run_id, params)
        return self.parent_run_id

    def _find_parent(self) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{SEARCH_TAG}` = '{self.search_name}' "
            f"and tags.`{KIND_TAG}` = 'search'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def close(self, status: str = "FINISHED") -> None:
        """Terminate every child still open as KILLED and the parent with ``status``."""
        if self.parent_run_id is None:
            return
        for trial_id, run_id in self.children.items():
            if trial_id not in self.closed:
                self.client.set_tag(run_id, STATE_TAG, "interrupted")
                self.client.set_terminated(run_id, "KILLED")
                self.closed.add(trial_id)
        run = self.client.get_run(self.parent_run_id)
        if run.info.status == "RUNNING":
            self.client.set_terminated(self.parent_run_id, status)

    # -- child runs -------------------------------------------------------------------------

    def child_run(self, trial) -> str:
        """The trial's child run: created at its first start, reused when it restarts."""
        trial_id = trial.trial_id
        if trial_id in self.children:
            return self.children[trial_id]
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' "
            f"and tags.`{PARENT_TAG}` = '{self.parent_run_id}'",
            max_results=1,
        )
        if found:  # a restored search: the trial had a run before the driver restarted
            run_id = found[0].info.run_id
            # The experiment state an earlier driver left may predate its last results: the
            # trial then repeats epochs that run already logged. Log each step once.
            steps = [m.step for m in self.client.get_metric_history(run_id, self.metric)]
            self.logged_step[trial_id] = max(steps, default=0)
            if found[0].info.status != "RUNNING":  # ended, or closed as interrupted
                self.closed.add(trial_id)
        else:
            run = self.client.create_run(
                self.experiment_id,
                run_name=trial_id,
                tags={
                    PARENT_TAG: self.parent_run_id,
                    TRIAL_TAG: trial_id,
                    SEARCH_TAG: self.search_name,
                    KIND_TAG: "trial",
                    "orch.trial_path": str(trial.path),
                },
            )
            run_id = run.info.run_id
            self._log_params(run_id, trial.config)
        self.children[trial_id] = run_id
        return run_id

    def _log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), str(v)[:MAX_PARAM]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(run_id, params=items[start : start + 100])

    def _finish(self, trial, state: str, status: str, error: str | None = None) -> None:
        run_id = self.child_run(trial)
        tags = {STATE_TAG: state}
        if error:
            tags[ERROR_TAG] = error[-MAX_TAG:]
            tags[FAILURE_TAG] = failure_reason(error)
        best = best_kept_checkpoint(trial, self.metric, self.mode)
        if best is not None:
            tags[CHECKPOINT_TAG] = best[1].path
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)
        self.client.set_terminated(run_id, status)
        self.closed.add(trial.trial_id)

    # -- Tune hooks -------------------------------------------------------------------------

    def setup(self, **info) -> None:
        self.total = info.get("total_num_samples") or self.total
        self.open()

    def on_step_begin(self, iteration, trials, **info) -> None:
        if self._restored:  # once per resumed driver, when Tune has restored its trials
            self._restored = False
            self._drop_lost(trials)

    def _drop_lost(self, trials) -> None:
        """Delete child runs of trials the restored experiment does not know.

        A trial started after the last experiment snapshot of a killed driver is lost with
        it: Tune and Optuna never saw it, its slot goes to a new trial. Its run would be
        one run too many (and might even look best), so it is deleted (MLflow keeps deleted
        runs until ``mlflow gc``), tagged ``orch.state = lost``."""
        from orchestrator.best import trial_runs

        known = {t.trial_id for t in trials}
        for run in trial_runs(self.client, self.experiment_id, self.parent_run_id):
            if run.data.tags.get(TRIAL_TAG) not in known:
                self.client.set_tag(run.info.run_id, STATE_TAG, "lost")
                if run.info.status == "RUNNING":
                    self.client.set_terminated(run.info.run_id, "KILLED")
                self.client.delete_run(run.info.run_id)
                logger.warning(
                    "trial %s started after the last saved state of the search: its run "
                    "%s is deleted and a new trial takes its place",
                    run.data.tags.get(TRIAL_TAG),
                    run.info.run_id,
                )

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.running.add(trial.trial_id)
        run_id = self.child_run(trial)
        if trial.trial_id in self.closed:  # restarted after its run was closed: a resumed
            self.closed.discard(trial.trial_id)  # search continues an interrupted trial
            self.client.update_run(run_id, status="RUNNING")
            if self.client.get_run(run_id).data.tags.get(STATE_TAG) == "interrupted":
                self.client.delete_tag(run_id, STATE_TAG)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        # Ray will restart the trial from its last checkpoint; keep its run open and say so.
        run_id = self.child_run(trial)
        self.client.set_tag(run_id, "orch.restarts", str(trial.run_metadata.num_failures))

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        from mlflow.entities import Metric

        run_id = self.child_run(trial)
        step = int(result.get("training_iteration", 0))
        if step <= self.logged_step.get(trial.trial_id, 0):
            return  # an epoch repeated after a resume: logged once, by the earlier driver
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in _numeric(result).items()]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[start : start + 1000])
        node = result.get("node_id")
        if isinstance(node, str) and self.nodes.get(trial.trial_id) != node:
            # Tagged once, and again only when a retry lands on another node.
            self.client.set_tag(run_id, NODE_TAG, node)
            self.nodes[trial.trial_id] = node

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.running.discard(trial.trial_id)
        if self.is_pruned(trial.trial_id):
            self._finish(trial, "pruned", "KILLED")
        else:
            self._finish(trial, "completed", "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.running.discard(trial.trial_id)
        self._finish(trial, "failed", "FAILED", error=error_text(trial))

    def on_experiment_end(self, trials, **info) -> None:
        # Tune ends the loop early on Ctrl-C (SIGINT; orch turns SIGTERM into one too) and
        # still calls this, after marking the running trials TERMINATED (their state saved
        # as RUNNING): a trial that started here and never completed or failed, one never
        # started, or fewer trials than asked mean the search was interrupted.
        unfinished = [t for t in trials if not t.is_finished()]
        short = self.total is not None and len(trials) < self.total
        if self.running or unfinished or short:
            self.interrupted = True
            if self.parent_run_id is not None:
                self.client.set_tag(self.parent_run_id, STATE_TAG, "interrupted")
            self.close("KILLED")
            return
        try:
            self._settle(trials)
            self._log_best(trials)
            self._log_study()
            self._log_plots()
        finally:
            if self.parent_run_id is not None:
                self.client.set_tag(self.parent_run_id, STATE_TAG, "finished")
            self.close("FINISHED")

    def _settle(self, trials) -> None:
        """Close the runs an earlier (killed) driver left RUNNING for trials that ended."""
        from orchestrator.best import trial_runs

        by_id = {t.trial_id: t for t in trials}
        for run in trial_runs(self.client, self.experiment_id, self.parent_run_id):
            trial = by_id.get(run.data.tags.get(TRIAL_TAG))
            if run.info.status != "RUNNING" or trial is None or trial.trial_id in self.closed:
                continue
            if trial.status == "ERROR":
                self.on_trial_error(0, trials, trial)
            else:
                self.on_trial_complete(0, trials, trial)

    # -- end of search ----------------------------------------------------------------------

    def _log_best(self, trials) -> None:
        """The best kept checkpoint of all trials, as an artifact on the parent and its trial."""
        best = None
        for trial in trials:
            found = best_kept_checkpoint(trial, self.metric, self.mode)
            if found is None:
                continue
            better = best is None or (
                found[0] > best[0] if self.mode == "max" else found[0] < best[0]
            )
            if better:
                best = (found[0], found[1], trial)
        if best is None:
            logger.warning(
                "no trial reported %s with a checkpoint: no best checkpoint", self.metric
            )
            return
        value, checkpoint, trial = best
        child = self.child_run(trial)
        with checkpoint.as_directory() as folder:  # downloads first when storage is remote
            for run_id in (self.parent_run_id, child):
                self.client.log_artifacts(run_id, folder, "best_checkpoint")
        for key, tag in (
            ("orch.best_trial_id", trial.trial_id),
            ("orch.best_run_id", child),
            (CHECKPOINT_TAG, checkpoint.path),
        ):
            self.client.set_tag(self.parent_run_id, key, tag)
        self.client.log_metric(self.parent_run_id, f"best_{self.metric}", float(value))

    def _log_study(self) -> None:
        """Every Optuna trial (state, value, params, intermediate values) as JSON on the parent,
        so the study outlives the driver."""
        if self.study is None:
            return
        import json

        rows = [
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "params": t.params,
                "intermediate_values": {str(k): v for k, v in t.intermediate_values.items()},
            }
            for t in self.study().get_trials(deepcopy=False)
        ]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "optuna_trials.json"
            path.write_text(json.dumps(rows, indent=1))
            self.client.log_artifact(self.parent_run_id, str(path))

    def _log_plots(self) -> None:
        """Optimization history and parameter importances of the Optuna study, on the parent.

        Importances need two or more completed trials with varying parameters; a plot that
        cannot be drawn is skipped with a warning, never failing the search."""
        if self.study is None:
            return
        import matplotlib

        matplotlib.use("Agg")  # the driver may have no display
        import matplotlib.pyplot as plt
        import optuna.visualization.matplotlib as ovm
        from optuna.trial import TrialState

        study = self.study()
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        plots = {"optimization_history": (ovm.plot_optimization_history, 1)}
        plots["param_importances"] = (ovm.plot_param_importances, 2)
        for name, (plot, needed) in plots.items():
            if len(complete) < needed:
                logger.warning("%s plot skipped: needs %d completed trials", name, needed)
                continue
            try:
                with warnings.catch_warnings():
                    # Experimental-API notices, and importance caveats on tiny studies.
                    warnings.simplefilter("ignore")
                    axes = plot(study)
                figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / f"{name}.png"
                    figure.savefig(path, bbox_inches="tight", dpi=110)
                    self.client.log_artifact(self.parent_run_id, str(path), "plots")
                plt.close(figure)
            except Exception as error:  # plotting must never fail a finished search
                logger.warning("%s plot skipped: %s", name, error)
