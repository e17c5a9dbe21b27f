"""`orch ui`: the MLflow UI for the store `orch` writes to, on 127.0.0.1 by default.

The server (``python -m mlflow ui``, which runs uvicorn under it) is started in a session of
its own, so that whatever stops ``orch ui`` stops exactly the server's processes and nothing
else: Ctrl-C at the terminal and SIGINT or SIGTERM sent to ``orch ui`` alone (a supervisor,
``timeout``, ``docker stop``) become a SIGTERM to the server's whole process group; what is
still there after ``GRACE_S`` is killed, as is everything at once on a second signal. A server
that outlived its ``orch ui`` would keep the port.

Exit status: 0 when the server was stopped by SIGINT or SIGTERM (stopping a server on request
is its normal end, as for uvicorn and ``mlflow ui`` themselves), else the server's own status.

Quiet by default: the server logs a line per request (~300 for one page of the UI) and a
Starlette deprecation warning, which would bury the links; they go to ``ui.log`` beside the
sqlite store (its last lines are shown if the server fails), without the access log.
``--verbose`` shows everything on the terminal, as ``mlflow ui`` does.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import typer

from orchestrator.errors import USAGE, fail
from orchestrator.tracking import links as ui_links
from orchestrator.tracking.runs import DEFAULT_EXPERIMENT, KIND_TAG, SEARCH_TAG
from orchestrator.tracking.store import (
    client_for,
    mark_training,
    resolve_tracking_uri,
    sqlite_file,
)

GRACE_S = 10.0  # from the forwarded signal to SIGKILL
POLL_S = 0.3
LOG_TAIL = 20  # lines of ui.log shown when the server fails
# uvicorn: no line per request, warnings and errors only. MLflow's own log config stays.
QUIET_UVICORN = "--no-access-log --log-level warning"
# Raised by mlflow's FastAPI app at import (starlette.middleware.wsgi); nothing a user can fix.
QUIET_WARNINGS = "ignore:starlette.middleware.wsgi is deprecated"


def ui(
    tracking_uri: str | None = typer.Option(
        None, help="Store to browse [default: sqlite store under ./mlruns]."
    ),
    host: str = typer.Option("127.0.0.1", help="Address to bind; 0.0.0.0 exposes it."),
    port: int = typer.Option(5000, help="Port to serve on."),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Show the server's log here (every request)."
    ),
) -> None:
    """Serve the MLflow UI for the searches and runs recorded by orch, and print the link to the
    latest search. Ctrl-C or SIGTERM stop the server and all its processes (exit 0)."""
    if not 0 < port < 65536:
        raise fail(f"--port must be in 1..65535, got {port}", USAGE)
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        raise fail(f"--tracking-uri {uri} is already a server: open it in a browser", USAGE)
    client = client_for(uri)
    client.search_experiments(max_results=1)  # create/migrate the store up front
    # A server already on the port would answer the readiness probe: links to the wrong store.
    busy = port_taken(host, port)
    if busy:
        raise fail(f"cannot serve on {host}:{port}: {busy}; pick another --port")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", uri,
        "--host", host,
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    log = None
    if not verbose:
        command += ["--uvicorn-opts", QUIET_UVICORN]
        warnings = [w for w in (env.get("PYTHONWARNINGS"), QUIET_WARNINGS) if w]
        env["PYTHONWARNINGS"] = ",".join(warnings)
        log = server_log(uri)
    base = base_url(host, port)
    where = f"; server log: {log}" if log else ""
    print(f"MLflow UI for {uri} at {base} (Ctrl-C stops it{where})", file=sys.stderr, flush=True)
    marker = ui_links.ui_marker(uri)  # so `orch best`/`search` link here, whatever the port

    def announce() -> list[str]:
        if marker is not None:
            marker.write_text(json.dumps({"url": base, "pid": os.getpid()}) + "\n")
        return links(client, base)

    try:
        code = serve(command, env, lambda: answers(reachable(host), port), announce, log=log)
    finally:
        if marker is not None and ui_links.running_ui(uri) == base:  # ours, not a newer one's
            marker.unlink(missing_ok=True)
    raise typer.Exit(code)


def server_log(uri: str) -> Path:
    """``ui.log`` beside the sqlite store (git-ignored with it), else in the working folder."""
    db = sqlite_file(uri)
    return (db.parent if db is not None else Path.cwd()) / "ui.log"


def serve(command: list[str], env: dict, ready, announce, log: Path | None = None) -> int:
    """Run the server until it ends or a signal stops it; return the exit status.

    ``announce()`` gives the lines printed once ``ready()`` says the server answers. With
    ``log``, the server's output goes there instead of to the terminal."""
    received: list[int] = []
    server: list[subprocess.Popen] = []  # set once started; the handler may run before

    # SIGINT is passed on as SIGTERM: mlflow relays what it gets to uvicorn, and a SIGINT
    # that reaches uvicorn twice (group + relay) makes it force-quit with a traceback; a
    # repeated SIGTERM is a plain graceful stop.
    def on_signal(signum, _frame):
        received.append(signum)
        if server:  # a second signal does not wait for the grace period
            signal_group(server[0].pid, signal.SIGKILL if len(received) > 1 else signal.SIGTERM)

    # Before Popen: a signal in between must not kill orch and orphan the server.
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with open(log, "wb") if log else contextlib.nullcontext() as out:
            proc = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                start_new_session=True,
            )
        server.append(proc)
        if received:
            signal_group(proc.pid, signal.SIGTERM)
        announced = False
        while not received and proc.poll() is None:
            if not announced and ready():
                announced = True
                if proc.poll() is None and not received:
                    print("\n".join(announce()), flush=True)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=POLL_S)
        if not received:  # the server ended by itself: take down what it left behind
            signal_group(proc.pid, signal.SIGTERM)
        if not wait_group(proc, GRACE_S):
            print(
                f"warning: the MLflow UI did not stop within {GRACE_S:g} s; killed it",
                file=sys.stderr,
                flush=True,
            )
            signal_group(proc.pid, signal.SIGKILL)
            wait_group(proc, GRACE_S)
        code = proc.wait()
        code = 128 - code if code < 0 else code  # killed by signal N: the shell's 128 + N
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        return 0
    if code != 0:
        if log is not None:
            lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL:]
            print("\n".join(lines), file=sys.stderr)
        print(f"error: the MLflow UI exited with status {code}", file=sys.stderr, flush=True)
    return code


def signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to process group ``pgid`` (the server's session), if it still exists."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def group_alive(pgid: int) -> bool:
    """Whether a live process is left in group ``pgid``. Zombies do not count: an orphan
    whose new parent (a container's pid 1) never reaps it is gone all the same."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():  # not Linux: a zombie counts as alive
        return True
    for stat in proc.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # Fields after the command name (which may hold spaces) start after the last ')'.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
    return False


def wait_group(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait until the server's group is gone (reaping the leader); False on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        proc.poll()  # reap the leader, so that it does not linger as a zombie
        if not group_alive(proc.pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def port_taken(host: str, port: int) -> str | None:
    """Why the server could not bind ``host:port`` (None: it can). SO_REUSEADDR as uvicorn
    sets it, so that connections of a server stopped a moment ago do not count."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as error:
        return error.strerror or str(error)
    return None


def reachable(host: str) -> str:
    """The host to connect to: a wildcard bind is reached on loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def base_url(host: str, port: int) -> str:
    host = reachable(host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def answers(host: str, port: int) -> bool:
    """Whether the server accepts connections: uvicorn listens only once the app has started.
    A TCP connect, not a request, keeps the probe out of the server's access log."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def links(client, base: str) -> list[str]:
    """Where to look, in MLflow's classic runs view: every run of orch's searches, and the
    latest search's trials (best first), its run and its best trial's run.

    An experiment or search recorded by an older orch is brought up to date first: tagged as
    a training experiment, and the search given its trials' table view."""
    try:
        experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
        if experiment is None or experiment.lifecycle_stage != "active":
            return [f"MLflow UI: {base} (no search recorded yet)"]
        mark_training(client, experiment)
        latest = client.search_runs(
            [experiment.experiment_id],
            f"tags.`{KIND_TAG}` = 'search'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if latest:
            heal_view(client, experiment, latest[0])
            found = ui_links.search_links(client, base, experiment.experiment_id, latest[0])
    except Exception as error:  # noqa: BLE001 - the links are a courtesy; the server runs on
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return [f"MLflow UI: {base} (could not look up the searches: {first})"]
    lines = [f"searches: {ui_links.runs_url(base, experiment.experiment_id)}"]
    if latest:
        run = latest[0]
        name = run.data.tags.get(SEARCH_TAG, run.info.run_name)
        lines.append(f"latest search {name}, trials best first: {found[0][1]}")
        lines += [f"  {label}: {url}" for label, url in found[1:]]
    else:
        lines.append("no search recorded yet")
    return lines


def heal_view(client, experiment, parent) -> None:
    """Give a search recorded before orch saved views its trials' table view."""
    from orchestrator.tracking.notes import ending
    from orchestrator.tracking.runs import trial_runs

    key = ui_links.VIEW_TAG + ui_links.view_key(parent.info.run_id)
    if key in experiment.tags:
        return
    params = parent.data.params
    metric, mode = params.get("metric", "dev_weighted_f1"), params.get("mode", "max")
    runs = trial_runs(client, experiment.experiment_id, parent.info.run_id)
    searched = ending(runs, metric, mode)["searched"]
    name = parent.data.tags.get(SEARCH_TAG, parent.info.run_name)
    view = ui_links.search_view(name, metric, mode, searched)
    ui_links.save_view(client, experiment.experiment_id, parent.info.run_id, view)
