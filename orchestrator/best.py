"""`orch best`: the best trial of a search, read from MLflow alone (Ray may be stopped).

The search is the latest parent run (``orch.kind = search``) of the experiment, or the one
named ``name``. Each child run's metric history is scanned for its best epoch by ``metric``;
the best child wins, and its dev and test metrics are read *at that epoch* (model selection
on dev, as in the paper), not at the last epoch.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import asdict, dataclass, field

from orchestrator.mlflow_logging import (
    CHECKPOINT_TAG,
    DEFAULT_EXPERIMENT,
    ERROR_TAG,
    FAILURE_TAG,
    KIND_TAG,
    PARENT_TAG,
    SEARCH_TAG,
    STATE_TAG,
    TRIAL_TAG,
)
from orchestrator.tracking import client_for, resolve_tracking_uri, sqlite_file

DEFAULT_METRIC = "dev_weighted_f1"
LOWER_IS_BETTER = ("loss", "mse", "mae", "error", "rmse")
RUN_OPTIONS = ("dataset", "data_dir", "max_dialogues")


class NoSearchError(LookupError):
    """No search (or no scored trial) where one was asked for."""


@dataclass
class BestTrial:
    search: str
    parent_run_id: str
    run_id: str
    trial_id: str
    state: str
    metric: str
    mode: str
    value: float
    epoch: int
    """``training_iteration`` of the best epoch (the MLflow step)."""
    params: dict
    dev: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    checkpoint: str | None = None
    """The checkpoint logged to MLflow (artifact URI), else where Ray kept it."""
    checkpoint_storage: str | None = None
    command: str = ""
    failed: list[dict] = field(default_factory=list)
    """The search's failed trials: ``{"trial_id", "run_id", "reason"}`` (one line each)."""

    def to_dict(self) -> dict:
        return asdict(self)


def failures(runs) -> list[dict]:
    """The failed trials among child ``runs``, with the one-line reason of each."""
    from orchestrator.mlflow_logging import failure_reason

    failed = []
    for run in runs:
        tags = run.data.tags
        if tags.get(STATE_TAG) != "failed":
            continue
        reason = tags.get(FAILURE_TAG) or failure_reason(tags.get(ERROR_TAG, ""))
        trial_id = tags.get(TRIAL_TAG, run.info.run_name)
        failed.append({"trial_id": trial_id, "run_id": run.info.run_id, "reason": reason})
    return sorted(failed, key=lambda f: f["trial_id"])


def failure_summary(failed: list[dict]) -> str:
    """``2 trials failed: out of memory (1), ValueError: ... (1)``, or "" when none did."""
    if not failed:
        return ""
    kinds: dict[str, int] = {}
    for failure in failed:
        reason = failure["reason"]
        kind = "out of memory" if reason.startswith("out of memory") else reason[:120]
        kinds[kind] = kinds.get(kind, 0) + 1
    counts = ", ".join(f"{kind} ({n})" for kind, n in sorted(kinds.items(), key=lambda x: -x[1]))
    return f"{len(failed)} trial{'s' if len(failed) > 1 else ''} failed: {counts}"


def default_mode(metric: str) -> str:
    return "min" if any(word in metric for word in LOWER_IS_BETTER) else "max"


def _better(a: float, b: float | None, mode: str) -> bool:
    return b is None or (a > b if mode == "max" else a < b)


def find_search(client, experiment_id: str, name: str | None):
    """The parent run of search ``name``, or of the latest search."""
    query = f"tags.`{KIND_TAG}` = 'search'"
    if name:
        query += f" and tags.`{SEARCH_TAG}` = '{name}'"
    runs = client.search_runs(
        [experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1
    )
    if not runs:
        if not name:
            raise NoSearchError("no search recorded yet")
        # Naming a few searches that do exist turns a typo into a one-step fix.
        known = client.search_runs(
            [experiment_id],
            f"tags.`{KIND_TAG}` = 'search'",
            order_by=["attributes.start_time DESC"],
            max_results=5,
        )
        names = sorted({r.data.tags.get(SEARCH_TAG, r.info.run_name) for r in known})
        hint = f"; recent searches: {', '.join(names)}" if names else ""
        raise NoSearchError(f"no search named {name!r}{hint}")
    return runs[0]


def trial_runs(client, experiment_id: str, parent_run_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id],
            f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
            max_results=1000,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def best_step(client, run_id: str, metric: str, mode: str) -> tuple[float, int] | None:
    """(value, step) of the run's best value of ``metric``; the earliest step on ties."""
    best = None
    for point in sorted(client.get_metric_history(run_id, metric), key=lambda m: m.step):
        if math.isnan(point.value):
            continue
        if best is None or _better(point.value, best[0], mode):
            best = (point.value, point.step)
    return best


def metrics_at(client, run, step: int) -> tuple[dict, dict]:
    """The run's dev_* and test_* metrics at ``step`` (the last value logged there)."""
    dev, test = {}, {}
    for key in run.data.metrics:
        prefix = "dev_" if key.startswith("dev_") else "test_" if key.startswith("test_") else ""
        if not prefix:
            continue
        values = [
            m.value for m in client.get_metric_history(run.info.run_id, key) if m.step == step
        ]
        if values:
            (dev if prefix == "dev_" else test)[key[len(prefix) :]] = values[-1]
    return dev, test


def train_command(params: dict) -> str:
    """The ``orch train`` command line that retrains a trial's config (MLflow params are
    strings; only options ``orch train`` has are kept)."""
    from orchestrator.commands.train import MODEL_FIELDS, TRAIN_FIELDS
    from orchestrator.options import option_name

    # Trials start from the dataclass defaults (the paper's), so the command does too.
    words = ["orch", "train", "--preset", "paper"]
    for key in (*RUN_OPTIONS, *MODEL_FIELDS, *TRAIN_FIELDS):
        value = params.get(key)
        if value is None or value == "None":
            continue
        if value in ("True", "False"):
            flag = key.replace("_", "-")
            words.append(f"--{flag}" if value == "True" else f"--no-{flag}")
        else:
            words += [option_name(key), value]
    return shlex.join(words)


def best_trial(
    tracking_uri: str | None = None,
    name: str | None = None,
    metric: str | None = None,
    mode: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    command: bool = True,
) -> BestTrial:
    """The best trial of the latest search (or of search ``name``) by ``metric``.

    ``metric`` defaults to the search's own metric (else dev weighted F1); ``mode`` to the
    search's mode for its own metric, else ``min`` for losses and errors and ``max`` otherwise.
    Raises NoSearchError when there is no such search or no trial reported the metric.
    """
    uri = resolve_tracking_uri(tracking_uri)
    db = sqlite_file(uri)
    # With --name, the message names the search asked for, whatever else is missing.
    wanted = f"no search named {name!r}" if name else "no search recorded yet"
    if db is not None and not db.exists():  # reading must not create an empty store
        raise NoSearchError(f"{wanted} (no MLflow store at {db})")
    client = client_for(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise NoSearchError(f"{wanted} (no MLflow experiment {experiment!r})")
    parent = find_search(client, found.experiment_id, name)
    search_metric = parent.data.params.get("metric", DEFAULT_METRIC)
    metric = metric or search_metric
    if mode is None:
        own = metric == search_metric and parent.data.params.get("mode")
        mode = own or default_mode(metric)

    best = None
    runs = trial_runs(client, found.experiment_id, parent.info.run_id)
    failed = failures(runs)
    for run in runs:
        if metric not in run.data.metrics:
            continue
        scored = best_step(client, run.info.run_id, metric, mode)
        if scored is not None and (best is None or _better(scored[0], best[0], mode)):
            best = (scored[0], scored[1], run)
    search = parent.data.tags.get(SEARCH_TAG, parent.info.run_name)
    if best is None:
        why = f" ({failure_summary(failed)})" if failed else ""
        raise NoSearchError(f"no trial of search {search!r} reported {metric!r}{why}")
    value, step, run = best

    dev, test = metrics_at(client, run, step)
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    artifact = f"{run.info.artifact_uri}/best_checkpoint" if "best_checkpoint" in logged else None
    storage = run.data.tags.get(CHECKPOINT_TAG)
    params = dict(run.data.params)
    return BestTrial(
        search=search,
        parent_run_id=parent.info.run_id,
        run_id=run.info.run_id,
        trial_id=run.data.tags.get(TRIAL_TAG, run.info.run_name),
        state=run.data.tags.get(STATE_TAG, run.info.status.lower()),
        metric=metric,
        mode=mode,
        value=value,
        epoch=int(step),
        params=params,
        dev=dev,
        test=test,
        checkpoint=artifact or storage,
        checkpoint_storage=storage,
        command=train_command(params) if command else "",
        failed=failed,
    )
