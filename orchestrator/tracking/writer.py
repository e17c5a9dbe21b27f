"""The one MLflow writer of orch: `orch train`'s run and every run of a search go through it.

Everything is written through an ``MlflowClient`` with explicit run ids, so no fluent "active
run" leaks between runs; the client is created on first use, so a writer pickles (Ray saves
the search's callbacks in ``tuner.pkl``) and reconnects wherever it is unpickled.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from orchestrator.tracking.store import client_for, experiment_id, resolve_tracking_uri

MAX_PARAM = 6000  # MLflow's limit on a param value
MAX_TAG = 8000
PARAMS_PER_BATCH = 100  # MLflow takes at most 100 params in one log_batch
METRICS_PER_BATCH = 1000


def numeric(values: dict) -> dict[str, float]:
    """The numbers among ``values`` (bools and strings are not metrics)."""
    return {
        k: float(v)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def metrics_at(values: dict, step: int) -> list:
    """The numeric entries of ``values`` as MLflow ``Metric``s at ``step``, stamped now."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, v, now, step) for k, v in numeric(values).items()]


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


class MlflowWriter:
    """Creates, fills and closes runs in one tracking store."""

    def __init__(self, tracking_uri: str | None = None):
        self._uri = resolve_tracking_uri(tracking_uri)
        self._client = None

    @property
    def tracking_uri(self) -> str:
        return self._uri

    @tracking_uri.setter
    def tracking_uri(self, uri: str) -> None:
        """Point at the same store under another address (a resumed search's --tracking-uri)."""
        self._uri, self._client = resolve_tracking_uri(uri), None

    @property
    def client(self):
        if self._client is None:
            self._client = client_for(self._uri)
        return self._client

    # A client holding an SQLAlchemy engine cannot be pickled; the unpickled writer reconnects.
    def __getstate__(self):
        return {**self.__dict__, "_client": None}

    def experiment(self, name: str) -> str:
        """The id of experiment ``name``, created (with artifacts beside sqlite) if missing."""
        return experiment_id(self.client, self._uri, name)

    def start_run(
        self,
        experiment: str,
        name: str | None = None,
        tags: dict | None = None,
        params: dict | None = None,
    ) -> str:
        run = self.client.create_run(experiment, run_name=name, tags=tags or {})
        if params:
            self.log_params(run.info.run_id, params)
        return run.info.run_id

    def log_params(self, run_id: str, params: dict) -> None:
        """``params`` (None values skipped), cut to MLflow's value limit, in batches."""
        from mlflow.entities import Param

        items = [Param(str(k), str(v)[:MAX_PARAM]) for k, v in params.items() if v is not None]
        for start in range(0, len(items), PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[start : start + PARAMS_PER_BATCH])

    def log_metrics(self, run_id: str, values: dict, step: int) -> None:
        """The numeric entries of ``values`` at ``step``, in one batch (or a few)."""
        self.log_metric_list(run_id, metrics_at(values, step))

    def log_metric_list(self, run_id: str, metrics: list) -> None:
        """MLflow ``Metric``s (any steps) of one run: one commit per 1000."""
        for start in range(0, len(metrics), METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=metrics[start : start + METRICS_PER_BATCH])

    def set_tags(self, run_id: str, tags: dict) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, str(value)[:MAX_TAG])

    def end_run(self, run_id: str, status: str = "FINISHED", tags: dict | None = None) -> None:
        """Tag and terminate ``run_id`` (FINISHED, FAILED or KILLED)."""
        if tags:
            self.set_tags(run_id, tags)
        self.client.set_terminated(run_id, status)

    def reopen(self, run_id: str) -> None:
        self.client.update_run(run_id, status="RUNNING")

    def log_artifacts(self, run_id: str, folder: str | Path, path: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(folder), path)

    def log_artifact(self, run_id: str, file: str | Path, path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(file), path)
