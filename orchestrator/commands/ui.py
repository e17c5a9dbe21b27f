"""`orch ui`: the MLflow UI for the store `orch` writes to, on 127.0.0.1 by default."""

from __future__ import annotations

import os
import subprocess
import sys

import typer

from orchestrator.errors import USAGE, fail
from orchestrator.tracking import client_for, resolve_tracking_uri


def ui(
    tracking_uri: str | None = typer.Option(
        None, help="Store to browse \\[default: sqlite store under ./mlruns]."
    ),
    host: str = typer.Option("127.0.0.1", help="Address to bind; 0.0.0.0 exposes it."),
    port: int = typer.Option(5000, help="Port to serve on."),
) -> None:
    """Serve the MLflow UI for the searches and runs recorded by orch."""
    if not 0 < port < 65536:
        raise fail(f"--port must be in 1..65535, got {port}", USAGE)
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        raise fail(f"--tracking-uri {uri} is already a server: open it in a browser", USAGE)
    client_for(uri).search_experiments(max_results=1)  # create/migrate the store up front
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", uri,
        "--host", host,
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    print(f"MLflow UI for {uri} at http://{host}:{port} (Ctrl-C stops it)", file=sys.stderr)
    try:
        code = subprocess.call(command, env=env)
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)
