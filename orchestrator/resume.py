"""Finding searches again: by name or the latest, for `orch search --resume` and for names.

A search is its MLflow parent run (``orch.kind = search``, ``orch.search = NAME``) plus Tune's
experiment folder ``<storage_path>/<NAME>``; the parent's params record ``storage_path``, so
the name alone leads to both. Nothing here creates a store that does not exist yet.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import time
from pathlib import Path

from orchestrator.best import NoSearchError, find_search
from orchestrator.mlflow_logging import DEFAULT_EXPERIMENT, DRIVER_TAG, SEARCH_TAG
from orchestrator.tracking import client_for, resolve_tracking_uri, sqlite_file

LATEST = "latest"


def find_parent(tracking_uri: str | None, name: str | None, experiment: str = DEFAULT_EXPERIMENT):
    """The parent run of search ``name`` (None or ``latest``: the latest search).

    Raises NoSearchError naming a few recent searches when there is no such search."""
    uri = resolve_tracking_uri(tracking_uri)
    name = None if name in (None, LATEST) else name
    wanted = f"no search named {name!r}" if name else "no search recorded yet"
    db = sqlite_file(uri)
    if db is not None and not db.exists():  # looking must not create an empty store
        raise NoSearchError(f"{wanted} (no MLflow store at {db})")
    client = client_for(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise NoSearchError(f"{wanted} (no MLflow experiment {experiment!r})")
    return find_search(client, found.experiment_id, name)


def search_exists(tracking_uri: str | None, name: str) -> bool:
    try:
        find_parent(tracking_uri, name)
    except NoSearchError:
        return False
    return True


def search_name(run) -> str:
    return run.data.tags.get(SEARCH_TAG, run.info.run_name)


def fresh_name(prefix: str, taken) -> str:
    """``prefix-YYYYmmdd-HHMMSS``, with ``-2``, ``-3``... when ``taken(name)`` says so."""
    base = f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, n = base, 1
    while taken(name):
        n += 1
        name = f"{base}-{n}"
    return name


def live_driver(run) -> int | None:
    """The pid of the driver still running search ``run`` on this machine, else None.

    A RUNNING parent is either a live search or one whose driver was killed (SIGKILL, power
    loss); the driver tag (``host:pid``) tells them apart on the same machine."""
    if run.info.status != "RUNNING":
        return None
    host, _, pid = run.data.tags.get(DRIVER_TAG, "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return None
    with contextlib.suppress(OSError):
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"orch" in command:
            return int(pid)
    return None


def resume_command(name: str, tracking_uri: str | None = None, address: str | None = None) -> str:
    words = ["orch", "search", "--resume", name]
    if tracking_uri:
        words += ["--tracking-uri", tracking_uri]
    if address:
        words += ["--address", address]
    return shlex.join(words)
