"""MLflow stores: the embedded default (sqlite under ./mlruns) or a server given by URI."""

from __future__ import annotations

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
    """An MlflowClient on ``tracking_uri``; creates the sqlite folder for the default store."""
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri)


def experiment_id(client, tracking_uri: str, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(tracking_uri, name))
