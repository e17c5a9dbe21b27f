"""Links into the MLflow UI that open its classic runs view, not the GenAI pages.

MLflow 3.17's UI starts in a GenAI mode (a traces overview, "Detect Issues", an assistant)
unless the link asks for ``workflowType=machine_learning``; every link orch prints is built
here and carries it. Experiments orch writes to are also tagged ``mlflow.experimentKind =
custom_model_development`` (``store.experiment_id``), the kind the UI shows and offers for
training experiments.

The runs table shows only the columns of the browser's saved view (by default: run name,
created, dataset; no metric) and has no URL parameter for columns. A *shared view* does: the
link's ``viewStateShareKey=KEY`` makes the UI read the experiment tag
``mlflow.sharedViewState.KEY``, a JSON object of search facets (``searchFilter``,
``orderByKey``, ``orderByAsc``) and UI state (``selectedColumns``, ...). Each search gets one
(``save_view``): its trials, best first, with the search metric, best epoch and state.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote, urlencode

from orchestrator.tracking.runs import KIND_TAG, SEARCH_TAG, STATE_TAG
from orchestrator.tracking.store import sqlite_file

WORKFLOW = {"workflowType": "machine_learning"}
VIEW_TAG = "mlflow.sharedViewState."
BEST_RUN_TAG = "orch.best_run_id"
UI_ENV = "ORCH_UI_URL"  # where the UI of the default store is served, when not orch ui's default
DEFAULT_UI = "http://127.0.0.1:5000"  # `orch ui` with its default --port
MAX_PARAM_COLUMNS = 8  # the searched parameters shown beside the metrics


def ui_marker(tracking_uri: str) -> Path | None:
    """Where a running ``orch ui`` for a sqlite store says its address: ``ui.json`` beside
    the database (git-ignored with it); None for other stores."""
    db = sqlite_file(tracking_uri)
    return db.parent / "ui.json" if db is not None else None


def running_ui(tracking_uri: str) -> str | None:
    """The address of the ``orch ui`` serving ``tracking_uri`` now, if one does (its marker
    names a live process); a stale marker is ignored."""
    marker = ui_marker(tracking_uri)
    try:
        seen = json.loads(marker.read_text()) if marker is not None else None
        os.kill(int(seen["pid"]), 0)  # ProcessLookupError: that orch ui is gone
        return str(seen["url"])
    except PermissionError:  # alive, another user's
        return str(seen["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ui_base(tracking_uri: str) -> str:
    """Where the UI for ``tracking_uri`` is: a tracking server serves its own UI; the embedded
    store is served by ``orch ui``: ``$ORCH_UI_URL`` when set, else the address of the one
    running (whatever its --port), else its default address."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    base = os.environ.get(UI_ENV) or running_ui(tracking_uri) or DEFAULT_UI
    return base.rstrip("/")


def served_by_orch(tracking_uri: str) -> bool:
    """Whether the user has to start ``orch ui`` for the links to open."""
    return not tracking_uri.startswith(("http://", "https://"))


def view_key(parent_run_id: str) -> str:
    return f"orch-{parent_run_id}"


def sort_metric(metric: str) -> str:
    """The column a search's trials are ranked by: trials log ``best_<metric>`` (the best epoch
    so far) for dev metrics; other metrics only as they are."""
    return f"best_{metric}" if metric.startswith("dev_") else metric


def trials_filter(search: str) -> str:
    return f"tags.`{SEARCH_TAG}` = '{search}' and tags.`{KIND_TAG}` = 'trial'"


def search_view(search: str, metric: str, mode: str, params: list[str] = ()) -> dict:
    """The shared view of a search's trials: best first, its metric, best epoch, state and the
    parameters that were searched. Keys as the UI stores them (column ids are
    ``metrics.`name```, ``params.`name```, ``tags.`name```)."""
    ranked = f"metrics.`{sort_metric(metric)}`"
    columns = [ranked, "metrics.`best_epoch`", f"tags.`{STATE_TAG}`"]
    columns += [f"params.`{p}`" for p in list(params)[:MAX_PARAM_COLUMNS]]
    return {
        "searchFilter": trials_filter(search),
        "orderByKey": ranked,
        "orderByAsc": mode == "min",
        "selectedColumns": columns,
        # Without an order the table puts tags after every param: state would be off-screen.
        "columnOrder": columns,
    }


def save_view(client, experiment_id: str, parent_run_id: str, view: dict) -> None:
    """Store ``view`` as the search's shared view (replacing an earlier one)."""
    key = VIEW_TAG + view_key(parent_run_id)
    client.set_experiment_tag(experiment_id, key, json.dumps(view))


def _url(base: str, path: str, params: dict) -> str:
    return f"{base}/#/experiments/{path}?{urlencode(params, quote_via=quote)}"


def runs_url(base: str, experiment_id: str, facets: dict | None = None) -> str:
    """The experiment's runs table, with search facets (``searchFilter``, ``orderByKey``,
    ``orderByAsc``) or a ``viewStateShareKey``. The UI ignores a share key when facets are in
    the URL too: give one or the other."""
    return _url(base, f"{experiment_id}/runs", {**WORKFLOW, **(facets or {})})


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """A run's page (its description, metrics, params, artifacts)."""
    return _url(base, f"{experiment_id}/runs/{run_id}", WORKFLOW)


def search_runs_url(base: str, experiment, parent) -> str:
    """The runs table of one search's trials: its shared view when the search saved one, else
    the same filter and order as URL facets (columns then are the browser's own)."""
    if VIEW_TAG + view_key(parent.info.run_id) in experiment.tags:
        return runs_url(
            base, experiment.experiment_id, {"viewStateShareKey": view_key(parent.info.run_id)}
        )
    metric = parent.data.params.get("metric", "dev_weighted_f1")
    facets = {
        "searchFilter": trials_filter(parent.data.tags.get(SEARCH_TAG, parent.info.run_name)),
        "orderByKey": f"metrics.`{sort_metric(metric)}`",
        "orderByAsc": str(parent.data.params.get("mode") == "min").lower(),
    }
    return runs_url(base, experiment.experiment_id, facets)


def search_links(client, base: str, experiment_id: str, parent) -> list[tuple[str, str]]:
    """``(label, url)`` of a search: its trials' table, its run (the description says what was
    searched and what won) and its best trial's run, once the search knows it."""
    experiment = client.get_experiment(experiment_id)
    links = [
        ("trials", search_runs_url(base, experiment, parent)),
        ("search run", run_url(base, experiment_id, parent.info.run_id)),
    ]
    best = parent.data.tags.get(BEST_RUN_TAG)
    if best:
        links.append(("best trial", run_url(base, experiment_id, best)))
    return links


def trial_links(tracking_uri: str, parent_run_id: str, run_id: str | None) -> list[str]:
    """Lines for a terminal: the UI's page of run ``run_id`` (a search's best trial) and the
    search's trials, best first; where the UI is, if orch ui has to serve it."""
    from orchestrator.tracking.store import client_for

    client = client_for(tracking_uri)
    parent = client.get_run(parent_run_id)
    experiment = client.get_experiment(parent.info.experiment_id)
    base = ui_base(tracking_uri)
    where = " (serve it with `orch ui`)" if served_by_orch(tracking_uri) else ""
    lines = [f"MLflow UI{where}:"]
    if run_id:
        lines.append(f"  best trial: {run_url(base, experiment.experiment_id, run_id)}")
    lines.append(f"  trials, best first: {search_runs_url(base, experiment, parent)}")
    return lines


def evaluation_links(tracking_uri: str, parent_run_id: str) -> list[str]:
    """Lines for a terminal after ``orch evaluate``: the search's run, where the seed means
    are logged (``eval_*``), and the seeds' runs."""
    from orchestrator.tracking.store import client_for

    client = client_for(tracking_uri)
    parent = client.get_run(parent_run_id)
    experiment_id, base = parent.info.experiment_id, ui_base(tracking_uri)
    search = parent.data.tags.get(SEARCH_TAG, parent.info.run_name)
    seeds = {
        "searchFilter": f"tags.`{SEARCH_TAG}` = '{search}' and tags.`{KIND_TAG}` = 'evaluation'"
    }
    where = " (serve it with `orch ui`)" if served_by_orch(tracking_uri) else ""
    return [
        f"MLflow UI{where}:",
        f"  search run (eval_* means): {run_url(base, experiment_id, parent_run_id)}",
        f"  seed runs: {runs_url(base, experiment_id, seeds)}",
    ]
