"""MLflow stores: the embedded default (sqlite under ./mlruns) or a server given by URI."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

DEFAULT_DIR = "mlruns"


def default_root() -> Path:
    return Path(os.environ.get("ORCH_MLRUNS", Path.cwd() / DEFAULT_DIR)).resolve()


def default_tracking_uri() -> str:
    return f"sqlite:///{default_root() / 'mlflow.db'}"


def resolve_tracking_uri(uri: str | None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Artifacts of the embedded sqlite store live beside it; a server decides its own."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        return (db.parent / "artifacts" / experiment).as_uri()
    return None


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///"))
    return None


def client_for(tracking_uri: str):
    """An MlflowClient on ``tracking_uri``; for a sqlite store, its folder is created and the
    client is made under a file lock beside the database.

    MLflow creates and migrates a sqlite store's tables when a client is made; two processes
    doing that at once on a new store and one dies (``table latest_metrics already exists``):
    two ``orch train`` started together in a fresh project did. Under the lock the first
    creates the tables and the others find them made (a file that exists may still be half
    set up, so the lock is taken every time; it costs a flock beside an engine set-up)."""
    from mlflow.tracking import MlflowClient

    db = sqlite_file(tracking_uri)
    if db is None:
        return MlflowClient(tracking_uri=tracking_uri)
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return MlflowClient(tracking_uri=tracking_uri)


# MLflow 3's UI opens an experiment in its GenAI view unless tagged a training experiment.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"


def mark_training(client, experiment) -> None:
    """Tag ``experiment`` (an MLflow Experiment) as a training experiment if it is not yet."""
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != TRAINING_KIND:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)


def experiment_id(client, tracking_uri: str, name: str) -> str:
    """The id of experiment ``name``, created if missing. Tagged as a training experiment
    (``mark_training``), an experiment made by an older orch included: MLflow's UI
    otherwise treats it as a GenAI one."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        mark_training(client, found)
        return found.experiment_id
    return client.create_experiment(
        name,
        artifact_location=artifact_location(tracking_uri, name),
        tags={EXPERIMENT_KIND_TAG: TRAINING_KIND},
    )


def check_tracking_uri(uri: str | None, timeout_s: float = 3.0) -> None:
    """Raise ConnectionError (one line) unless an http(s) tracking URI answers MLflow's REST
    API within ``timeout_s``; other stores (sqlite, file, databricks) are not probed.

    MLflow's client retries an unreachable server for minutes (MLFLOW_HTTP_REQUEST_MAX_RETRIES
    with exponential backoff); one short request up front fails a search before Ray starts
    and before anything is created. Credentials and TLS settings come from MLflow's own
    environment variables (MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME, ...)."""
    resolved = resolve_tracking_uri(uri)
    if not resolved.startswith(("http://", "https://")):
        return
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    label = f"--tracking-uri {resolved}" if uri else f"MLFLOW_TRACKING_URI={resolved}"
    try:
        response = http_request(
            get_default_host_creds(resolved),
            "/api/2.0/mlflow/experiments/search",
            "GET",
            max_retries=0,
            timeout=timeout_s,
            raise_on_status=False,
            params={"max_results": 1},
        )
    except Exception:  # noqa: BLE001 - MlflowException wrapping requests' connection errors
        raise ConnectionError(
            f"{label}: no MLflow server answers there within {timeout_s:g} s (start one with "
            "'mlflow server', or drop --tracking-uri for the local store under ./mlruns)"
        ) from None
    if response.status_code in (401, 403):
        raise ConnectionError(
            f"{label}: the server refused access (HTTP {response.status_code}); set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN"
        )
    if response.status_code != 200:
        raise ConnectionError(
            f"{label}: HTTP {response.status_code} from MLflow's REST API; is it an MLflow "
            "tracking server?"
        )
