"""The vocabulary of orch's MLflow runs, shared by every module that writes or reads them.

A search is one parent run (``orch.kind = search``, ``orch.search = NAME``) in the experiment
``orch-search``; each trial is a child run (``mlflow.parentRunId``, ``orch.trial_id``,
``orch.kind = trial``) whose ``orch.state`` says how it ended. This module holds the tag names,
the queries that find a search and its trials, what "better" means for a metric, and the
one-line failure reasons; it imports neither Ray nor the MLflow client at import time.
"""

from __future__ import annotations

import re
import sys

from orchestrator.tracking.store import client_for, resolve_tracking_uri, sqlite_file
from trainable.metrics import metric_mode

__all__ = ["metric_mode"]  # re-exported: the one function that decides a metric's direction

PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "orch.trial_id"
SEARCH_TAG = "orch.search"
KIND_TAG = "orch.kind"  # search | trial
STATE_TAG = "orch.state"  # trial: completed | pruned | failed | interrupted | lost
CHECKPOINT_TAG = "orch.best_checkpoint"  # where Ray keeps the run's best checkpoint
NODE_TAG = "orch.node_id"  # the Ray node that ran the trial (its latest attempt)
ERROR_TAG = "orch.error"  # a failed trial's error, traceback included
FAILURE_TAG = "orch.failure"  # ... and its reason in one line (``failure_reason``)
RESTARTS_TAG = "orch.restarts"  # how often Ray restarted the trial from a checkpoint
DRIVER_TAG = "orch.driver"  # host:pid of the driver that last ran the search
RESUMES_TAG = "orch.resumes"  # how often the search was resumed
FIDELITY_TAG = "orch.fidelity"  # frozen (a screen: encoder never trained) | finetune
# A trial's best value of the search's metric and its epoch, set when its run ends: `orch best`
# ranks a search's trials without reading each one's metric history.
BEST_VALUE_TAG, BEST_EPOCH_TAG = "orch.best_value", "orch.best_epoch"
EVICTED_TAG = "orch.evicted"  # checkpoints the disk budget deleted (``orchestrator.checkpoints``)
DISK_FULL = "disk full"  # how a failure reason starts when a checkpoint write found no space
DEFAULT_EXPERIMENT = "orch-search"
LATEST = "latest"


class NoSearchError(LookupError):
    """No search (or no scored trial) where one was asked for."""


def fidelity(config: dict) -> str:
    """``frozen`` when the config freezes the encoder (a screening fidelity), ``scratch`` for
    the tiny random-init encoder (nothing pretrained to fine-tune), else ``finetune``."""
    if str(config.get("freeze_encoder")) == "True":
        return "frozen"
    return "scratch" if config.get("encoder") == "tiny" else "finetune"


def better(a: float, b: float | None, mode: str) -> bool:
    """Whether ``a`` beats ``b`` (None: nothing yet) for a metric optimised in ``mode``."""
    return b is None or (a > b if mode == "max" else a < b)


# -- finding searches and trials -------------------------------------------------------------


def find_search(client, experiment_id: str, name: str | None):
    """The parent run of search ``name``, or of the latest search; NoSearchError naming a
    few recent searches when there is none (a typo becomes a one-step fix)."""
    query = f"tags.`{KIND_TAG}` = 'search'"
    if name:
        query += f" and tags.`{SEARCH_TAG}` = '{name}'"
    runs = client.search_runs(
        [experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1
    )
    if runs:
        return runs[0]
    if not name:
        raise NoSearchError("no search recorded yet")
    known = client.search_runs(
        [experiment_id],
        f"tags.`{KIND_TAG}` = 'search'",
        order_by=["attributes.start_time DESC"],
        max_results=5,
    )
    names = list(dict.fromkeys(search_name(r) for r in known))  # newest first
    hint = f"; recent searches: {', '.join(names)}" if names else ""
    raise NoSearchError(f"no search named {name!r}{hint}")


def open_search(
    tracking_uri: str | None, name: str | None, experiment: str = DEFAULT_EXPERIMENT
) -> tuple[object, str, object]:
    """``(client, experiment_id, parent run)`` of search ``name`` (None or ``latest``: the
    latest one). Looking never creates a store: a missing sqlite file is NoSearchError."""
    uri = resolve_tracking_uri(tracking_uri)
    name = None if name in (None, LATEST) else name
    wanted = f"no search named {name!r}" if name else "no search recorded yet"
    db = sqlite_file(uri)
    if db is not None and not db.exists():
        raise NoSearchError(f"{wanted} (no MLflow store at {db})")
    client = client_for(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise NoSearchError(f"{wanted} (no MLflow experiment {experiment!r})")
    return client, found.experiment_id, find_search(client, found.experiment_id, name)


def find_parent(tracking_uri: str | None, name: str | None, experiment: str = DEFAULT_EXPERIMENT):
    """The parent run of search ``name`` (None or ``latest``: the latest search)."""
    return open_search(tracking_uri, name, experiment)[2]


def search_exists(tracking_uri: str | None, name: str) -> bool:
    try:
        find_parent(tracking_uri, name)
    except NoSearchError:
        return False
    return True


def search_name(run) -> str:
    return run.data.tags.get(SEARCH_TAG, run.info.run_name)


def trial_runs(client, experiment_id: str, parent_run_id: str, state: str | None = None) -> list:
    """Every trial run of the search (not its evaluation runs), all pages; with ``state``,
    only those whose ``orch.state`` it is."""
    wanted = f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.`{KIND_TAG}` = 'trial'"
    if state is not None:
        wanted += f" and tags.`{STATE_TAG}` = '{state}'"
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], wanted, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


# -- why a trial failed ----------------------------------------------------------------------

_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?:\([\w.]+\))?: (.*\S)")


def failure_reason(text: str) -> str:
    """One line saying why a trial failed, from Ray's error text (a traceback, or a message
    about a dead worker): the exception's line without its module path, ``out of memory
    (...) with config ...`` for TrialOutOfMemory, else the text's first line."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    found = [m for m in map(_EXCEPTION_LINE.match, lines) if m]
    if found:
        name, message = found[-1].group(1).rsplit(".", 1)[-1], found[-1].group(2)
        if name in ("TrialOutOfMemory", "CheckpointWriteFailed"):
            reason = message  # "out of memory (...)", "disk full: ...": already one line
        elif name == "OutOfMemoryError" and "low on memory" in message:
            reason = f"out of memory (Ray's memory monitor killed the worker: {message})"
        else:
            reason = f"{name}: {message}"
    else:
        reason = lines[0].strip() if lines else "unknown error"
    return reason[:500]


def failures(runs) -> list[dict]:
    """The failed trials among child ``runs``: ``{"trial_id", "run_id", "reason"}`` each."""
    failed = []
    for run in runs:
        tags = run.data.tags
        if tags.get(STATE_TAG) != "failed":
            continue
        reason = tags.get(FAILURE_TAG) or failure_reason(tags.get(ERROR_TAG, ""))
        trial_id = tags.get(TRIAL_TAG, run.info.run_name)
        failed.append({"trial_id": trial_id, "run_id": run.info.run_id, "reason": reason})
    return sorted(failed, key=lambda f: f["trial_id"])


def disk_full_failures(runs) -> list[str]:
    """Trial ids of the failed trials among ``runs`` whose checkpoint write found the disk
    full: ``orch search --resume`` continues them once space is freed."""
    return [f["trial_id"] for f in failures(runs) if f["reason"].startswith(DISK_FULL)]


def search_disk_full(tracking_uri: str | None, parent) -> list[str]:
    """``disk_full_failures`` of the search whose parent run is ``parent``."""
    client = client_for(resolve_tracking_uri(tracking_uri))
    return disk_full_failures(trial_runs(client, parent.info.experiment_id, parent.info.run_id))


def failure_summary(failed: list[dict]) -> str:
    """``2 trials failed: out of memory (1), ValueError: ... (1)``, or "" when none did."""
    if not failed:
        return ""
    kinds: dict[str, int] = {}
    for failure in failed:
        reason = failure["reason"]
        kind = next((k for k in ("out of memory", DISK_FULL) if reason.startswith(k)), None)
        kind = kind or reason[:120]
        kinds[kind] = kinds.get(kind, 0) + 1
    counts = ", ".join(f"{kind} ({n})" for kind, n in sorted(kinds.items(), key=lambda x: -x[1]))
    return f"{len(failed)} trial{'s' if len(failed) > 1 else ''} failed: {counts}"


def trial_count(tune_setup_info: dict) -> int | None:
    """The trials a search runs, from Tune's ``setup`` info; None when a ``--budget`` ends it
    instead (Tune counts ``num_samples=-1`` as ``sys.maxsize`` trials)."""
    total = tune_setup_info.get("total_num_samples")
    return total if total and total < sys.maxsize else None
