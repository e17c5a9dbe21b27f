"""Services the integration tests start and stop themselves: free ports, process groups.

Every service (a Ray node, an MLflow server) runs in its own session, so that stopping it
kills exactly the processes it spawned (raylet, GCS, uvicorn workers, ...) and nothing that
belongs to anyone else on the machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent  # the venv's ray, mlflow, orch


def free_port() -> int:
    """A TCP port nothing listens on right now (bound once to 127.0.0.1, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def orch(*args, cwd, env=None, timeout=300) -> subprocess.CompletedProcess:
    """``orch ARGS`` in a fresh interpreter, the way a user runs it; ``env`` is laid over this
    process's environment (a None value removes the variable)."""
    merged = {**os.environ, "RAY_AIR_NEW_OUTPUT": "0"}
    for key, value in (env or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *map(str, args)],
        cwd=cwd,
        env=merged,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def healthy(url: str) -> bool:
    """Whether an MLflow server at ``url`` answers its health check within 2 s."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start_group(command: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """Start ``command`` as the leader of a new session (and process group), output to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # Fields after the command name (which may hold spaces) start after the last ')'.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(stat.parent.name))
    return members


def stop_group(proc: subprocess.Popen, grace_s: float = 15.0) -> list[int]:
    """SIGTERM the process group led by ``proc``, SIGKILL what is left after ``grace_s``;
    returns the pids still alive after that (empty when all is gone)."""
    pgid = proc.pid  # start_new_session: the leader's pid is the group's id
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_members(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        time.sleep(1.0)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    return group_members(pgid)


def wait_for(predicate, timeout_s: float, what: str, log: Path | None = None) -> None:
    """Poll ``predicate`` until true; fail with the service's log tail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{what} not ready after {timeout_s:g} s\n{tail}")
