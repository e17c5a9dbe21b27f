"""`orch ui` really serves the MLflow UI for the default store, on 127.0.0.1, and stops.

Stopping means the whole server: ``python -m mlflow ui`` and the uvicorn it runs. A signal
sent to the ``orch ui`` process alone (a supervisor's SIGTERM, a SIGINT by pid) must leave
no process and no bound port behind once ``orch ui`` has exited.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from orchestrator.tracking.links import DEFAULT_UI, ui_base, ui_marker
from tests.orchestrator.processes import free_port, start_group, wait_for

STARTUP_S = 90  # the server starts in a few seconds; this only bounds a broken start


@pytest.mark.timeout(120)
def test_orch_ui_serves_the_store(tmp_path):
    port = free_port()
    env = {**os.environ, "ORCH_MLRUNS": str(tmp_path / "mlruns")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "ui", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=10"
        deadline, body = time.time() + 90, None
        while time.time() < deadline and body is None:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    body = json.loads(response.read())
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                time.sleep(0.5)
        assert body is not None, "the UI did not answer within 90 s"
        assert [e["name"] for e in body["experiments"]] == ["Default"]
        assert (tmp_path / "mlruns" / "mlflow.db").exists()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


# -- helpers: processes seen through /proc, the UI's REST API without proxies ----------------


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def descendants(pid: int) -> dict[int, str]:
    """Live descendants of ``pid`` (whatever their session), with their command lines."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := proc_stat(int(entry.name))) and stat[0] != "Z":
            parents[int(entry.name)] = stat[1]
    found, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in found:
                found[child] = cmdline(child) or ""
                frontier.append(child)
    return found


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def get_json(url: str) -> tuple[int, dict]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 direct
    with opener.open(url, timeout=10) as response:
        return response.status, json.loads(response.read())


def start_ui(tmp_path: Path, uri: str) -> tuple[subprocess.Popen, int, Path]:
    """``orch ui`` on a free port, output to a log; returns once the UI printed its links."""
    port, log = free_port(), tmp_path / "ui.log"
    command = [sys.executable, "-m", "orchestrator.cli", "ui", "--port", str(port)]
    proc = start_group([*command, "--tracking-uri", uri], log, env=dict(os.environ))

    def ready():
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        text = log.read_text(errors="replace")
        return listening(port) and ("searches: " in text or "no search recorded yet" in text)

    try:
        wait_for(ready, STARTUP_S, "orch ui", log)
    except BaseException:
        stop_everything(proc)
        raise
    return proc, port, log


def stop_everything(proc: subprocess.Popen, server: dict[int, str] | None = None) -> None:
    """Test cleanup whatever `orch ui` did: kill it, what runs below it, and the server
    processes seen earlier (orphans, should orch have left them)."""
    doomed = dict(server or {})
    if proc.poll() is None:
        doomed.update(descendants(proc.pid))
        doomed[proc.pid] = ""
    for pid, cmd in doomed.items():
        if alive(pid) and (not cmd or cmdline(pid) == cmd):  # never a pid reused by someone else
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def record_searches(uri: str) -> tuple[str, str]:
    """The store as `orch search` leaves it: experiment orch-search, two search parent runs
    (the later one created first), a newer trial run. Returns (experiment id, latest run id)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.create_experiment("orch-search")
    now = int(time.time() * 1000)

    def run(kind: str, name: str, start_ms: int) -> str:
        tags = {"orch.kind": kind, "orch.search": name}
        created = client.create_run(experiment, start_time=start_ms, tags=tags, run_name=name)
        client.set_terminated(created.info.run_id)
        return created.info.run_id

    latest = run("search", "second", now - 60_000)
    run("search", "first", now - 3_600_000)
    run("trial", "second", now)  # newer, but a trial: not the search's link
    return experiment, latest


# -- stopping: SIGTERM or SIGINT to the orch pid alone takes the whole server down ----------


@pytest.mark.timeout(180)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_to_orch_alone_stops_the_server_and_its_children(tmp_path, signum):
    """Covers the links too: the SIGTERM case with searches recorded, SIGINT without."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with_searches = signum == signal.SIGTERM
    if with_searches:
        experiment, latest = record_searches(uri)
    proc, port, log = start_ui(tmp_path, uri)
    server: dict[int, str] = {}
    try:
        server = descendants(proc.pid)
        # mlflow ui and the uvicorn it runs: the grandchild must go too.
        assert any("uvicorn" in cmd for cmd in server.values()), server

        base = f"http://127.0.0.1:{port}"
        output = log.read_text(errors="replace")
        if with_searches:
            # MLflow's classic runs view (not its GenAI pages), the search's trials first.
            classic = "workflowType=machine_learning"
            runs = f"{base}/#/experiments/{experiment}/runs"
            assert f"searches: {runs}?{classic}\n" in output, output
            view = f"viewStateShareKey=orch-{latest}"
            link = f"latest search second, trials best first: {runs}?{classic}&{view}\n"
            assert link in output, output
            assert f"  search run: {runs}/{latest}?{classic}\n" in output, output
            assert "GET /" not in output  # quiet: no request log between the links
            status, body = get_json(
                f"{base}/api/2.0/mlflow/experiments/get?experiment_id={experiment}"
            )
            assert status == 200 and body["experiment"]["name"] == "orch-search"
            status, body = get_json(f"{base}/api/2.0/mlflow/runs/get?run_id={latest}")
            assert status == 200 and body["run"]["data"]["tags"]
        else:
            assert f"MLflow UI: {base} (no search recorded yet)\n" in output, output
        # While it runs, links orch prints for this store point at this port, not 5000's.
        assert ui_base(uri) == base and json.loads(ui_marker(uri).read_text())["pid"] == proc.pid

        os.kill(proc.pid, signum)  # the orch process only, not its group
        code = proc.wait(timeout=60)  # orch's grace before SIGKILL is 10 s: a hang guard

        # orch ui has exited: by then nothing of the server may be left.
        assert code == 0, log.read_text(errors="replace")[-3000:]
        assert [pid for pid in server if alive(pid)] == [], server
        assert not listening(port)
        with socket.socket() as sock:  # the port can be served again at once
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
        output = log.read_text(errors="replace")
        assert "Traceback" not in output, output[-3000:]
        assert "did not stop within" not in output, output[-3000:]  # no SIGKILL was needed
        assert not ui_marker(uri).exists() and ui_base(uri) == DEFAULT_UI
    finally:
        stop_everything(proc, server)


def test_links_follow_a_running_orch_ui_and_ignore_a_stale_one(tmp_path, monkeypatch):
    monkeypatch.delenv("ORCH_UI_URL", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    marker = ui_marker(uri)
    assert marker == tmp_path / "ui.json" and ui_base(uri) == DEFAULT_UI
    marker.write_text(json.dumps({"url": "http://127.0.0.1:5123", "pid": os.getpid()}))
    assert ui_base(uri) == "http://127.0.0.1:5123"
    monkeypatch.setenv("ORCH_UI_URL", "http://elsewhere:80/")  # the user's word wins
    assert ui_base(uri) == "http://elsewhere:80"
    monkeypatch.delenv("ORCH_UI_URL")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    marker.write_text(json.dumps({"url": "http://127.0.0.1:5123", "pid": int(gone.stdout)}))
    assert ui_base(uri) == DEFAULT_UI  # that orch ui has exited
    marker.write_text("{half a file")
    assert ui_base(uri) == DEFAULT_UI
    assert ui_base("http://server:5000/") == "http://server:5000"  # a server serves its own


@pytest.mark.timeout(60)
def test_port_in_use_fails_before_starting_a_server(tmp_path):
    """Another server on the port would answer in place of ours, with the wrong store."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "ui", "--port", str(port)],
            env={**os.environ, "ORCH_MLRUNS": str(tmp_path / "mlruns")},
            capture_output=True,
            text=True,
            timeout=50,
        )
    assert done.returncode == 1, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: cannot serve on 127.0.0.1:{port}: "), done.stderr
    assert "pick another --port" in lines[-1] and "Traceback" not in done.stderr
    assert "MLflow UI for" not in done.stderr  # no server was started
