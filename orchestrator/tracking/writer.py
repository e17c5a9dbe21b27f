"""The one MLflow writer of orch: `orch train`'s run and every run of a search go through it.

Everything is written through an ``MlflowClient`` with explicit run ids, so no fluent "active
run" leaks between runs; the client is created on first use, so a writer pickles (Ray saves
the search's callbacks in ``tuner.pkl``) and reconnects wherever it is unpickled.
"""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path

from orchestrator.tracking import journal as journal_mod
from orchestrator.tracking.store import client_for, experiment_id, resolve_tracking_uri

logger = logging.getLogger(__name__)

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
    """Creates, fills and closes runs in one tracking store.

    With ``journal`` (a file path) and a tracking server, a write that cannot reach the server
    is kept in that journal, and so is every write after it until the journal is replayed in
    order (``orchestrator.tracking.journal``): an outage never fails or stalls the caller."""

    journal = None  # class default: a writer pickled by an older orch keeps no journal

    def __init__(self, tracking_uri: str | None = None, journal: str | Path | None = None):
        self._uri = resolve_tracking_uri(tracking_uri)
        self._client = None
        self.journal = str(journal) if journal else None
        self.search = Path(journal).stem if journal else None

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

    # A client holding an SQLAlchemy engine cannot be pickled, nor can the probe's thread:
    # the unpickled writer reconnects and reads its journal again.
    def __getstate__(self):
        return {**self.__dict__, "_client": None, "_kept": None, "_probe": None}

    # -- the journal ------------------------------------------------------------------------

    _kept = None  # the loaded Journal, once journaling is on
    _probe = None  # the Probe waiting for the server while writes are kept

    def _journal(self):
        """The loaded journal, or None when this writer writes straight through."""
        if not self.journal or not journal_mod.journaled(self._uri):
            return None
        if self._kept is None:
            self._kept = journal_mod.Journal(self.journal)
            if self._kept.pending():  # left by an earlier driver: replay before anything new
                self._probe = journal_mod.Probe(self._uri, first_s=0.0)
        return self._kept

    @property
    def journal_on(self) -> bool:
        """Whether a write that cannot reach the server would be kept (a server URI and a
        journal), not raised."""
        return bool(self.journal) and journal_mod.journaled(self._uri)

    @property
    def offline(self) -> bool:
        """Whether writes are being kept (the server was away at the last try)."""
        kept = self._journal()
        return kept is not None and bool(kept.pending())

    def waiting(self) -> int:
        """How many writes are kept, not yet on the server."""
        kept = self._journal()
        return len(kept.pending()) if kept is not None else 0

    def resolve(self, run_id: str) -> str:
        """The real id of a run created offline and replayed since (else ``run_id``)."""
        kept = self._journal()
        return kept.ids.get(run_id, run_id) if kept is not None else run_id

    def _write(self, op: dict):
        kept = self._journal()
        if kept is None:
            return journal_mod.apply(self.client, op, {})
        self.poll()
        if not kept.pending():
            try:
                with journal_mod.quick_requests():
                    return journal_mod.apply(self.client, op, kept.ids)
            except Exception as error:
                if not journal_mod.unreachable(error):
                    raise
                self._away(error)
        if op["op"] == "create_run":
            op = {**op, "placeholder": journal_mod.new_placeholder()}
        kept.keep(op, self.search, self._uri)
        return op.get("placeholder")

    def _away(self, error: BaseException) -> None:
        if self._probe is None:
            logger.warning(
                "MLflow at %s unreachable (%s); keeping writes in order in %s until it answers",
                journal_mod.public_uri(self._uri),
                type(error).__name__,
                self.journal,
            )
            self._probe = journal_mod.Probe(self._uri)

    def poll(self) -> None:
        """Replay the journal if the probe heard the server since the last look."""
        kept = self._journal()
        if kept is None or self._probe is None or not self._probe.answered.is_set():
            return
        self._probe = None
        self.replay()

    def replay(self) -> int:
        """Replay the waiting writes in order; stops (and probes again) if the server goes
        away again. A write the server refuses for good is skipped with a warning, so one
        bad write cannot hold the rest back. Returns how many were replayed."""
        kept, replayed = self._journal(), 0
        if kept is None:
            return 0
        waiting = kept.pending()
        with journal_mod.quick_requests():
            for op in waiting:
                try:
                    run_id = journal_mod.apply(self.client, op, kept.ids)
                except Exception as error:
                    if journal_mod.unreachable(error):
                        self._away(error)
                        return replayed
                    logger.warning(
                        "MLflow refused kept write %s (%s): %s", op["seq"], op["op"], error
                    )
                    kept.settle(op, error=f"{type(error).__name__}: {error}")
                    continue
                kept.settle(op, run_id=run_id)
                replayed += 1
        if waiting:
            logger.warning(
                "MLflow at %s answers again: %d kept writes replayed from %s",
                journal_mod.public_uri(self._uri),
                replayed,
                self.journal,
            )
        return replayed

    def settle(self, wait_s: float = 0.0) -> str | None:
        """At the end: if writes are kept, ask the server again (every ``SETTLE_EVERY_S`` for
        up to ``wait_s`` seconds: a server being restarted is back in seconds, and replaying
        now spares the user `orch sync`). None when all reached the server, else the line
        telling the user where they are and how to send them."""
        kept = self._journal()
        if kept is None or not kept.pending():
            return None
        if self._probe is not None:  # this loop asks from here on
            self._probe.stop()
            self._probe = None
        deadline, told = time.monotonic() + wait_s, False
        while True:
            if journal_mod.answers(self._uri, timeout_s=journal_mod.SETTLE_TIMEOUT_S):
                self.replay()  # a server gone again mid-replay: asked again below
                if not kept.pending():
                    return None
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not told:
                logger.warning(
                    "MLflow at %s unreachable; waiting up to %g s for it before leaving "
                    "%d kept writes to `orch sync` (%s sets how long)",
                    journal_mod.public_uri(self._uri),
                    wait_s,
                    len(kept.pending()),
                    journal_mod.SETTLE_VAR,
                )
                told = True
            time.sleep(min(journal_mod.SETTLE_EVERY_S, left))
        if self._probe is not None:
            self._probe.stop()
            self._probe = None
        return (
            f"MLflow at {journal_mod.public_uri(self._uri)} unreachable since "
            f"{journal_mod.clock(kept.since())}; {len(kept.pending())} writes kept in "
            f"{kept.path}; run `orch sync {kept.search}`"
        )

    def run_status(self, run_id: str) -> str | None:
        """The run's status, or None when the server cannot tell now (writes are kept)."""
        if self._journal() is None:
            return self.client.get_run(run_id).info.status
        if self.offline:
            return None
        try:
            with journal_mod.quick_requests():
                return self.client.get_run(self.resolve(run_id)).info.status
        except Exception as error:
            if journal_mod.unreachable(error):
                return None
            raise

    # -- writes -----------------------------------------------------------------------------

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
        """The new run's id (a ``journal-`` placeholder when it was created offline)."""
        op = {
            "op": "create_run",
            "experiment_id": experiment,
            "name": name,
            "tags": {str(k): str(v) for k, v in (tags or {}).items()},
            "start_time": int(time.time() * 1000),
        }
        run_id = self._write(op)
        if params:
            self.log_params(run_id, params)
        return run_id

    def log_params(self, run_id: str, params: dict) -> None:
        """``params`` (None values skipped), cut to MLflow's value limit, in batches."""
        items = [[str(k), str(v)[:MAX_PARAM]] for k, v in params.items() if v is not None]
        for start in range(0, len(items), PARAMS_PER_BATCH):
            chunk = items[start : start + PARAMS_PER_BATCH]
            self._write({"op": "log_batch", "run": run_id, "params": chunk})

    def log_metrics(self, run_id: str, values: dict, step: int) -> None:
        """The numeric entries of ``values`` at ``step``, in one batch (or a few)."""
        self.log_metric_list(run_id, metrics_at(values, step))

    def log_metric_list(self, run_id: str, metrics: list) -> None:
        """MLflow ``Metric``s (any steps) of one run: one commit per 1000."""
        rows = [[m.key, m.value, m.timestamp, m.step] for m in metrics]
        for start in range(0, len(rows), METRICS_PER_BATCH):
            chunk = rows[start : start + METRICS_PER_BATCH]
            self._write({"op": "log_batch", "run": run_id, "metrics": chunk})

    def set_tags(self, run_id: str, tags: dict) -> None:
        """All of ``tags`` in one write (one commit, not one per tag)."""
        if not tags:
            return
        if len(tags) == 1:  # MLflow's set_tag: it also renames the run for mlflow.runName
            ((key, value),) = tags.items()
            self._write({"op": "set_tag", "run": run_id, "key": key, "value": str(value)[:MAX_TAG]})
            return
        rows = [[str(k), str(v)[:MAX_TAG]] for k, v in tags.items()]
        self._write({"op": "log_batch", "run": run_id, "tags": rows})

    def delete_tag(self, run_id: str, key: str) -> None:
        self._write({"op": "delete_tag", "run": run_id, "key": key})

    def end_run(self, run_id: str, status: str = "FINISHED", tags: dict | None = None) -> None:
        """Tag and terminate ``run_id`` (FINISHED, FAILED or KILLED)."""
        if tags:
            self.set_tags(run_id, tags)
        end = int(time.time() * 1000)  # the real end, not when a replay gets to it
        self._write({"op": "set_terminated", "run": run_id, "status": status, "end_time": end})

    def reopen(self, run_id: str) -> None:
        self._write({"op": "update_run", "run": run_id, "status": "RUNNING"})

    def delete_run(self, run_id: str) -> None:
        self._write({"op": "delete_run", "run": run_id})

    def log_artifacts(self, run_id: str, folder: str | Path, path: str | None = None) -> None:
        self._write({"op": "log_artifacts", "run": run_id, "local": str(folder), "path": path})

    def log_artifact(self, run_id: str, file: str | Path, path: str | None = None) -> None:
        self._write({"op": "log_artifact", "run": run_id, "local": str(file), "path": path})
