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

from orchestrator.tracking.runs import (
    BEST_EPOCH_TAG,
    BEST_VALUE_TAG,
    CHECKPOINT_TAG,
    DEFAULT_EXPERIMENT,
    FIDELITY_TAG,
    STATE_TAG,
    TRIAL_TAG,
    NoSearchError,
    better,
    failure_summary,
    failures,
    fidelity,
    metric_mode,
    open_search,
    search_name,
    trial_runs,
)

DEFAULT_METRIC = "dev_weighted_f1"


def logged_summaries(parent) -> dict:
    """``{fidelity: {"seeds", "mean", "std"}}`` from a parent run's ``eval_*`` metrics
    (written by ``orch evaluate``; see ``orchestrator.evaluation``)."""
    found: dict = {}
    for key, value in parent.data.metrics.items():
        if not key.startswith("eval_"):
            continue
        fid, _, rest = key[len("eval_") :].partition("_")
        entry = found.setdefault(fid, {"seeds": 0, "mean": {}, "std": {}})
        if rest == "seeds":
            entry["seeds"] = int(value)
        elif rest.endswith(("_mean", "_std")):
            name, _, kind = rest.rpartition("_")
            entry[kind][name] = value
    return found


RUN_OPTIONS = ("dataset", "data_dir", "max_dialogues")

__all__ = ["BestTrial", "NoSearchError", "best_trial", "failure_summary"]


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
    fidelity: str = "finetune"
    """``frozen``: a screening score (the encoder never trained), not the paper's protocol."""
    evaluation: dict = field(default_factory=dict)
    """``orch evaluate``'s seed-averaged test scores by fidelity: seeds, mean, std."""

    def to_dict(self) -> dict:
        """JSON-ready, params typed (MLflow keeps them as strings: ``"k": "8"``)."""
        return {**asdict(self), "params": shown_params(self.params)}


INTERNAL_PARAMS = ("cache_dir",)
"""Run plumbing the trials get, not part of a config (the driver's feature-cache folder)."""


def typed(text: str):
    """A param's value from MLflow's string: bool, None, int, float, else the string."""
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def shown_params(params: dict) -> dict:
    """A trial's config as a user reads it: typed, without orch's own plumbing."""
    return {k: typed(v) for k, v in sorted(params.items()) if k not in INTERNAL_PARAMS}


def command_lines(command: str, width: int = 78) -> list[str]:
    """``command`` as shell lines of at most ``width`` characters joined by backslashes, an
    option and its value never split: it pastes back into a shell whole."""
    words = shlex.split(command)
    pairs, i = [], 0
    while i < len(words):  # "--name value" stays together
        takes = (
            words[i].startswith("--") and i + 1 < len(words) and not words[i + 1].startswith("--")
        )
        pairs.append(shlex.join(words[i : i + 1 + takes]))
        i += 1 + takes
    lines = [pairs[0]]
    for pair in pairs[1:]:
        if len(lines[-1]) + 1 + len(pair) + 2 > width:
            lines.append("  " + pair)
        else:
            lines[-1] += " " + pair
    return [line + " \\" for line in lines[:-1]] + [lines[-1]]


def best_step(client, run_id: str, metric: str, mode: str) -> tuple[float, int] | None:
    """(value, step) of the run's best value of ``metric``; the earliest step on ties."""
    best = None
    for point in sorted(client.get_metric_history(run_id, metric), key=lambda m: m.step):
        if math.isnan(point.value):
            continue
        if better(point.value, best[0] if best else None, mode):
            best = (point.value, point.step)
    return best


def tagged_best(run) -> tuple[float, int] | None:
    """(value, step) from the run's end tags (``orch.best_value``, ``orch.best_epoch``)."""
    tags = run.data.tags
    try:
        return float(tags[BEST_VALUE_TAG]), int(tags[BEST_EPOCH_TAG])
    except (KeyError, ValueError):
        return None


def pointed_best(client, parent, metric: str) -> tuple[float, int, object] | None:
    """``(value, step, run)`` of the trial a finished search's parent names as its best
    (``orch.best_run_id``, and ``best_<metric>`` the value), when that run's own end tags
    agree; None for a search still running or interrupted, or one without the pointer."""
    tags = parent.data.tags
    run_id, value = tags.get("orch.best_run_id"), parent.data.metrics.get(f"best_{metric}")
    if tags.get(STATE_TAG) != "finished" or run_id is None or value is None:
        return None
    try:
        run = client.get_run(run_id)
    except Exception:  # noqa: BLE001 - purged meanwhile: rank every trial instead
        return None
    if run.info.lifecycle_stage != "active":  # deleted (MLflow keeps it until a gc)
        return None
    scored = tagged_best(run)
    if scored is None or scored[0] != value:
        return None
    return scored[0], scored[1], run


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
    from orchestrator.options import MODEL_FIELDS, TRAIN_FIELDS, option_name

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
    # With --name, the message names the search asked for, whatever else is missing.
    client, experiment_id, parent = open_search(tracking_uri, name, experiment)
    search_metric = parent.data.params.get("metric", DEFAULT_METRIC)
    metric = metric or search_metric
    if mode is None:
        own = metric == search_metric and parent.data.params.get("mode")
        mode = own or metric_mode(metric)

    # An ended trial's run carries its best of the search's own metric and mode: one query
    # for the whole search instead of one metric history per trial (1,000 trials: seconds).
    own = metric == search_metric and mode == parent.data.params.get("mode", mode)
    best = pointed_best(client, parent, metric) if own else None
    if best is not None:  # a finished search names its winner: no need to load every trial
        failed = failures(trial_runs(client, experiment_id, parent.info.run_id, "failed"))
    else:
        runs = trial_runs(client, experiment_id, parent.info.run_id)
        failed = failures(runs)
    for run in runs if best is None else ():
        if metric not in run.data.metrics:
            continue
        scored = (own and tagged_best(run)) or best_step(client, run.info.run_id, metric, mode)
        if scored is not None and better(scored[0], best[0] if best else None, mode):
            best = (scored[0], scored[1], run)
    search = search_name(parent)
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
        # Searches before the "scratch" label tagged the tiny encoder "finetune".
        fidelity=(
            run.data.tags.get(FIDELITY_TAG)
            if run.data.tags.get(FIDELITY_TAG, "finetune") != "finetune"
            else fidelity(params)
        ),
        evaluation=logged_summaries(parent),
    )
