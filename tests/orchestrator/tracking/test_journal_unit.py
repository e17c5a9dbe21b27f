"""The journal on its own: the file, the writer keeping writes when its server is away, and
replays into a real (sqlite) MLflow store that follow the journal's order and never repeat.

"Away" is a closed port on 127.0.0.1; a replay goes to an embedded sqlite store by giving
the writer that store's client (``writer._client``): the replay code does not care which
store answers, and the real server is tested in ``test_journal.py``.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import time

import pytest
import requests
from mlflow.exceptions import MlflowException, RestException
from mlflow.tracking import MlflowClient

from orchestrator.tracking import journal as journal_mod
from orchestrator.tracking.journal import Journal, public_uri, quick_requests, unreachable
from orchestrator.tracking.writer import MlflowWriter
from tests.orchestrator.processes import free_port, orch


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCH_MLRUNS", str(tmp_path / "mlruns"))
    monkeypatch.delenv(journal_mod.SWITCH, raising=False)
    monkeypatch.setattr(journal_mod, "PROBE_S", 3600.0)  # the tests decide when it answers
    return tmp_path


@pytest.fixture
def away(project):
    """A writer whose server does not answer (a closed port), journaling search ``s1``."""
    uri = f"http://127.0.0.1:{free_port()}"
    return MlflowWriter(uri, journal=journal_mod.journal_path("s1"))


@pytest.fixture
def store(project):
    """A real store to replay into, with an experiment."""
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'store.db'}")
    return client, client.create_experiment("e", artifact_location=(project / "a").as_uri())


def fill(writer: MlflowWriter, experiment: str, artifact) -> tuple[str, str]:
    """A parent and a child run, the way a search writes them, made while away."""
    parent = writer.start_run(experiment, "search", {"orch.kind": "search"}, {"lr": 0.1})
    child = writer.start_run(experiment, "t1", {"mlflow.parentRunId": parent, "orch.kind": "t"})
    for step in (1, 2, 3):
        writer.log_metrics(child, {"f1": step / 10, "note": "text"}, step)
    writer.set_tags(parent, {"orch.best_run_id": child})
    writer.log_artifact(parent, artifact, "plots")
    writer.end_run(child, "FINISHED", {"orch.state": "completed"})
    writer.end_run(parent, "FINISHED")
    return parent, child


def test_writes_to_an_absent_server_are_kept_in_order_without_stalling(away, project):
    start = time.monotonic()
    run = away.start_run("0", "r", {"a": "b"}, {"p": 1})
    away.log_metrics(run, {"m": 1.0}, 1)
    away.end_run(run, "FINISHED")
    # Refused connections with quick retries: seconds, not MLflow's ~4 minutes per call.
    assert time.monotonic() - start < 20
    assert run.startswith(journal_mod.PLACEHOLDER) and away.offline
    kept = Journal(journal_mod.journal_path("s1"))
    assert [op["op"] for op in kept.pending()] == [
        "create_run",
        "log_batch",
        "log_batch",
        "set_terminated",
    ]
    assert [op["seq"] for op in kept.pending()] == [1, 2, 3, 4]
    assert kept.header["search"] == "s1" and kept.uri == away.tracking_uri
    assert away.settle().endswith(f"4 writes kept in {kept.path}; run `orch sync s1`")


def test_replay_maps_placeholders_keeps_order_and_never_repeats(away, store, project):
    client, experiment = store
    artifact = project / "plot.txt"
    artifact.write_text("drawn")
    parent, child = fill(away, experiment, artifact)
    artifact.unlink()  # the original was temporary: the journal holds its own copy
    assert away.waiting() == 11

    away._client = client
    assert away.replay() == 11 and away.waiting() == 0
    real_parent, real_child = away.resolve(parent), away.resolve(child)
    assert not real_parent.startswith(journal_mod.PLACEHOLDER)
    run = client.get_run(real_child)
    assert run.info.status == "FINISHED" and run.data.tags["orch.state"] == "completed"
    assert run.data.tags["mlflow.parentRunId"] == real_parent  # placeholder in a tag mapped
    assert run.data.tags[journal_mod.JOURNAL_TAG] == child
    assert client.get_run(real_parent).data.tags["orch.best_run_id"] == real_child
    assert client.get_run(real_parent).data.params == {"lr": "0.1"}
    assert [m.step for m in client.get_metric_history(real_child, "f1")] == [1, 2, 3]
    assert [a.path for a in client.list_artifacts(real_parent, "plots")] == ["plots/plot.txt"]
    assert not any((away._journal().files).iterdir())  # copies go once replayed

    # A second writer on the same journal (orch sync run again) has nothing left to send.
    again = MlflowWriter(away.tracking_uri, journal=away.journal)
    again._client = client
    assert again.waiting() == 0 and again.replay() == 0
    runs = client.search_runs([experiment])
    assert len(runs) == 2


def test_a_replay_cut_short_continues_without_duplicate_runs(away, store, project):
    client, experiment = store
    run = away.start_run(experiment, "r", {"k": "v"})
    away.log_metrics(run, {"m": 1.0}, 1)
    kept = away._journal()
    create = kept.pending()[0]
    # A crash after the server made the run, before the journal recorded it:
    journal_mod.apply(client, create, {})
    away._client = client
    assert away.replay() == 2
    runs = client.search_runs([experiment])
    assert len(runs) == 1 and runs[0].info.run_id == away.resolve(run)
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "m")] == [1]


def test_a_write_the_server_refuses_is_skipped_not_blocking(away, store):
    client, experiment = store
    run = away.start_run(experiment, "r")
    away.log_params(run, {"p": 1})
    away.log_params(run, {"p": 2})  # MLflow refuses to change a logged param
    away.set_tags(run, {"t": "after"})
    away._client = client
    assert away.replay() == 3 and away.waiting() == 0
    lines = [json.loads(x) for x in open(away.journal).read().splitlines()]
    skipped = [x for x in lines if "skipped" in x]
    assert len(skipped) == 1 and "param" in skipped[0]["error"].lower()
    assert client.get_run(away.resolve(run)).data.tags["t"] == "after"


def test_a_line_cut_by_a_crash_is_ignored_and_appending_goes_on(away, project):
    away.start_run("0", "r")
    with open(away.journal, "a") as out:
        out.write('{"seq": 2, "op": "set_')  # the process died mid-append
    kept = Journal(away.journal)
    assert len(kept.pending()) == 1
    kept.keep({"op": "set_tag", "run": "x", "key": "k", "value": "v"}, "s1", away.tracking_uri)
    reread = Journal(away.journal)
    assert [op["seq"] for op in reread.pending()] == [1, 2]


def test_no_credentials_in_the_journal(project):
    uri = f"http://alice:s3cret@127.0.0.1:{free_port()}"
    writer = MlflowWriter(uri, journal=journal_mod.journal_path("s2"))
    run = writer.start_run("0", "r")
    writer.log_params(run, {"command": f"orch search --tracking-uri {uri}"})
    text = open(writer.journal).read()
    assert "s3cret" not in text and "alice" not in text
    assert public_uri(uri) == uri.replace("alice:s3cret@", "")


def test_only_servers_are_journaled_and_the_switch_turns_it_off(project, monkeypatch):
    sqlite = MlflowWriter(f"sqlite:///{project / 'x.db'}", journal=journal_mod.journal_path("s"))
    assert sqlite._journal() is None
    monkeypatch.setenv(journal_mod.SWITCH, "off")
    server = MlflowWriter(f"http://127.0.0.1:{free_port()}", journal=journal_mod.journal_path("s"))
    with quick_requests(), pytest.raises(MlflowException):
        server.start_run("0", "r")
    assert not journal_mod.journal_path("s").exists()


def test_which_errors_mean_the_server_is_away():
    refused = MlflowException(
        "API request to http://h/api/2.0/mlflow/runs/create failed with exception "
        "HTTPConnectionPool(host='h', port=1): Max retries exceeded"
    )
    assert unreachable(refused)
    assert unreachable(MlflowException("API request to endpoint /x failed with error code 503"))
    assert unreachable(requests.ConnectionError("reset"))
    assert not unreachable(RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "x"}))
    assert not unreachable(MlflowException("API request to endpoint /x failed with error code 404"))
    assert not unreachable(ValueError("bug"))


def test_quick_requests_lowers_retries_and_restores_the_users(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", raising=False)
    with quick_requests():
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"  # the user's lower value
        assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == str(journal_mod.QUICK_BACKOFF)
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    assert "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR" not in os.environ


class _Answers(http.server.BaseHTTPRequestHandler):
    """Answers the probe's GET as a server would once back (the replay itself goes to the
    sqlite store through ``writer._client``)."""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"experiments": []}')

    def log_message(self, *args):
        pass


def test_settle_waits_for_a_server_that_comes_back_and_replays(away, store, monkeypatch):
    client, experiment = store
    run = away.start_run(experiment, "r")
    away.log_metrics(run, {"m": 1.0}, 1)
    away.end_run(run, "FINISHED")
    away._client = client
    monkeypatch.setattr(journal_mod, "SETTLE_EVERY_S", 0.1)
    port = int(away.tracking_uri.rsplit(":", 1)[1])
    started: list = []  # the server, once it is back
    back = threading.Timer(1.0, lambda: started.append(serve(port)))
    back.start()
    try:
        start = time.monotonic()
        assert away.settle(wait_s=60) is None  # the server came back within the wait
        waited = time.monotonic() - start
    finally:
        back.join()
        for server in started:
            server.shutdown()
            server.server_close()
    assert 1.0 <= waited < 30
    assert away.waiting() == 0 and not away._probe
    real = client.get_run(away.resolve(run))
    assert real.info.status == "FINISHED" and real.data.metrics == {"m": 1.0}


def serve(port: int) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_settle_gives_up_after_its_wait_and_names_orch_sync(away, monkeypatch, caplog):
    away.start_run("0", "r")
    monkeypatch.setattr(journal_mod, "SETTLE_EVERY_S", 0.1)
    start = time.monotonic()
    assert away.settle(wait_s=0).endswith(f"1 writes kept in {away.journal}; run `orch sync s1`")
    assert time.monotonic() - start < 5  # no wait asked: one refused probe
    start = time.monotonic()
    with caplog.at_level("WARNING"):
        note = away.settle(wait_s=1.0)
    assert 1.0 <= time.monotonic() - start < 10
    assert note.endswith(f"1 writes kept in {away.journal}; run `orch sync s1`")
    waiting = [r.getMessage() for r in caplog.records if "waiting up to" in r.getMessage()]
    assert len(waiting) == 1 and "ORCH_MLFLOW_SETTLE_S" in waiting[0]
    assert away.waiting() == 1


@pytest.mark.parametrize("raw", ["soon", "-1", "nan"])
def test_a_bad_settle_wait_is_refused(monkeypatch, raw):
    monkeypatch.setenv(journal_mod.SETTLE_VAR, raw)
    with pytest.raises(ValueError, match=f"ORCH_MLFLOW_SETTLE_S='{raw}': expected seconds"):
        journal_mod.settle_s()


def test_the_settle_wait_defaults_and_can_be_zero(monkeypatch):
    monkeypatch.delenv(journal_mod.SETTLE_VAR, raising=False)
    assert journal_mod.settle_s() == journal_mod.SETTLE_S == 30.0
    monkeypatch.setenv(journal_mod.SETTLE_VAR, "0")
    assert journal_mod.settle_s() == 0.0


@pytest.mark.parametrize("command", ["search", "train"])
def test_a_bad_settle_wait_fails_the_command_before_anything_is_written(tmp_path, command):
    args = ["--dataset", "synthetic", "--max-dialogues", 20]
    args += ["--quick", "--trials", 1, "--storage", tmp_path / "ray"] if command == "search" else []
    done = orch(command, *args, cwd=tmp_path, env={journal_mod.SETTLE_VAR: "soon"}, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == (
        "error: ORCH_MLFLOW_SETTLE_S='soon': expected seconds, a number >= 0"
    ), done.stderr[-2000:]
    assert not any(tmp_path.iterdir())  # no MLflow store, no Ray storage
