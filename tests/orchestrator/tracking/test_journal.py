"""A real `mlflow server` stopped in the middle of a search, for longer than the MLflow
client's retry window: the search keeps its writes in ./mlruns/journal, exits 0, and the
store ends complete (one run per trial, every epoch once, runs closed), either when the
server comes back during the search or, when it does not, after `orch sync NAME`.

The server (sqlite backend, served artifacts) binds 127.0.0.1 on a free port and is
restarted on the same port and store. ``ORCH_MLFLOW_JOURNAL=off`` in the environment runs
the same tests without the journal: the search then dies with MLflow's exception.
Each test prints its timeline (seconds since the search started).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.tracking.journal import Journal
from orchestrator.tracking.runs import KIND_TAG, PARENT_TAG, STATE_TAG, TRIAL_TAG
from tests.orchestrator.processes import orch, wait_for

pytestmark = pytest.mark.slow

TRIALS, EPOCHS = 6, 4
OUTAGE_S = 25  # far past the client's retry window below (about 1 s), as the issue measured
SHORT_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
DEFAULT_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": None,
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": None,
}
HANG_GUARD_S = 420  # the whole search on a busy 2-core machine; not a speed claim


def start_search(cwd: Path, name: str, url: str, retries: dict) -> subprocess.Popen:
    env = {**os.environ, "RAY_AIR_NEW_OUTPUT": "0", **retries}
    env = {k: v for k, v in env.items() if v is not None and k != "MLFLOW_TRACKING_URI"}
    args = [
        "search", "--dataset", "synthetic", "--quick", "--name", name, "--trials", TRIALS,
        "--epochs", EPOCHS, "--scheduler", "none", "--max-concurrent", 1,
        "--max-dialogues", 120, "--tracking-uri", url, "--storage", cwd / "ray",
    ]  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=open(cwd / "search.out", "w"),
        stderr=open(cwd / "search.err", "w"),
    )


def client(url: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=url)


def first_epoch_logged(url: str) -> bool:
    """Whether some trial run on the server holds a metric (the search is well under way)."""
    try:
        c = client(url)
        exp = c.get_experiment_by_name("orch-search")
        runs = exp and c.search_runs([exp.experiment_id], f"tags.`{KIND_TAG}` = 'trial'")
        return bool(runs) and any(r.data.metrics for r in runs)
    except Exception:  # noqa: BLE001 - not created yet
        return False


def wait_search(proc: subprocess.Popen, cwd: Path) -> tuple[int, str]:
    try:
        proc.wait(timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, (cwd / "search.err").read_text()


def store_contents(url: str, name: str) -> dict:
    """Parent and trial runs of search ``name`` on the server, with every metric's steps."""
    c = client(url)
    exp = c.get_experiment_by_name("orch-search")
    runs = c.search_runs([exp.experiment_id], max_results=500)
    parents = [r for r in runs if r.data.tags.get(KIND_TAG) == "search"]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parents[0].info.run_id]
    steps = {
        r.info.run_id: {
            key: sorted(m.step for m in c.get_metric_history(r.info.run_id, key))
            for key in r.data.metrics
        }
        for r in children
    }
    return {"parent": parents[0], "children": children, "steps": steps}


def reported_steps(result_json: Path) -> dict[str, list[int]]:
    """Metric -> the epochs at which the trial reported it (Tune's own record of the trial)."""
    from orchestrator.tracking.callback import RAY_KEYS

    steps: dict[str, list[int]] = {}
    for line in result_json.read_text().splitlines():
        result = json.loads(line)
        for key, value in result.items():
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if numeric and key not in RAY_KEYS:
                steps.setdefault(key, []).append(result["training_iteration"])
    return steps


def assert_complete(url: str, cwd: Path, name: str) -> dict:
    """One closed run per trial; each metric at every reported epoch exactly once."""
    found = store_contents(url, name)
    assert found["parent"].info.status == "FINISHED"
    assert found["parent"].data.tags.get(STATE_TAG) == "finished"
    trial_dirs = {p.name: p for p in (cwd / "ray" / name).iterdir() if p.is_dir()}
    by_trial = {r.data.tags[TRIAL_TAG]: r for r in found["children"]}
    assert len(found["children"]) == len(by_trial) == TRIALS
    assert set(by_trial) == set(trial_dirs)
    for trial_id, run in by_trial.items():
        assert run.info.status == "FINISHED" and run.data.tags[STATE_TAG] == "completed"
        history = found["steps"][run.info.run_id]
        expected = reported_steps(trial_dirs[trial_id] / "result.json")
        assert expected["dev_weighted_f1"] == list(range(1, EPOCHS + 1))
        assert history == expected, trial_id
    return found


def timeline(t0: float, **moments) -> str:
    return json.dumps({k: round(v - t0, 1) if v else None for k, v in moments.items()})


def search_through_outage(cwd: Path, name: str, server, env: dict, back_when) -> tuple:
    """A search whose server is stopped after its first epoch and started again once
    ``back_when(cwd)`` returns (the search must still run then); returns the exit code,
    stderr and the moments (time.time()) of the outage and of the search's end."""
    search = start_search(cwd, name, server.url, env)
    try:
        wait_for(lambda: first_epoch_logged(server.url), 300, "a first epoch on the server")
        server.stop()
        stopped = time.time()
        back_when(cwd)
        restarting = time.time()
        assert search.poll() is None, (cwd / "search.err").read_text()[-4000:]
        server.start()
        restarted = time.time()
        code, err = wait_search(search, cwd)
    finally:
        if search.poll() is None:
            search.kill()
    moments = dict(server_stopped=stopped, server_restarting=restarting, server_restarted=restarted)
    return code, err, {**moments, "search_exited": time.time()}


@pytest.mark.timeout(HANG_GUARD_S + 200)
def test_outage_mid_search_is_replayed_when_the_server_returns(server, tmp_path):
    cwd, name = tmp_path / "project", "outage"
    cwd.mkdir()
    t0 = time.time()
    code, err, moments = search_through_outage(
        cwd, name, server, SHORT_RETRIES, lambda _: time.sleep(OUTAGE_S)
    )
    assert code == 0, err[-4000:]
    assert "Traceback" not in err, err[-4000:]
    journal = Journal(cwd / "mlruns" / "journal" / f"{name}.jsonl")
    kept = sorted(journal.ops.values(), key=lambda op: op["seq"])
    assert kept, "no write met the outage"
    assert not journal.pending()
    done = [json.loads(line) for line in journal.path.read_text().splitlines()]
    done_at = [r["at"] for r in done if "done" in r]
    assert not any("skipped" in r for r in done)
    assert_complete(server.url, cwd, name)
    assert "unreachable" in err and "answers again" in err
    print(
        "\ntimeline (s since the search started):",
        timeline(
            t0,
            **moments,
            first_write_kept=kept[0]["at"],
            last_write_kept=kept[-1]["at"],
            first_replayed=min(done_at),
            last_replayed=max(done_at),
        ),
        f"writes kept: {len(kept)}",
    )


@pytest.mark.timeout(HANG_GUARD_S + 300)
def test_server_back_while_the_finished_search_waits_for_it(server, tmp_path):
    """The search's trials end while the server is away; it waits for it (CI once met a
    search that ended while its server was restarting and left all writes to `orch sync`)."""
    cwd, name = tmp_path / "project", "late"
    cwd.mkdir()
    t0 = time.time()
    settle = {"ORCH_MLFLOW_SETTLE_S": "240"}  # ample for a restart on a busy machine

    def until_it_waits(cwd: Path) -> None:  # the trials are over; the search waits
        err = cwd / "search.err"
        wait_for(lambda: "waiting up to 240 s" in err.read_text(), HANG_GUARD_S, "the wait")

    code, err, moments = search_through_outage(
        cwd, name, server, {**SHORT_RETRIES, **settle}, until_it_waits
    )
    assert code == 0 and "Traceback" not in err, err[-4000:]
    assert not Journal(cwd / "mlruns" / "journal" / f"{name}.jsonl").pending()
    assert "answers again" in err and "unreachable since" not in err, err[-4000:]
    assert_complete(server.url, cwd, name)
    print("\ntimeline (s since the search started):", timeline(t0, **moments))


@pytest.mark.timeout(HANG_GUARD_S + 300)
def test_server_gone_until_the_end_then_orch_sync(server, tmp_path):
    """MLflow's default retries (minutes per call) must not stall or fail the search."""
    cwd, name = tmp_path / "project", "gone"
    cwd.mkdir()
    t0 = time.time()
    settle = {"ORCH_MLFLOW_SETTLE_S": "5"}  # the end's wait for the server, cut from 30 s
    search = start_search(cwd, name, server.url, {**DEFAULT_RETRIES, **settle})
    try:
        wait_for(lambda: first_epoch_logged(server.url), 300, "a first epoch on the server")
        server.stop()
        stopped = time.time()
        code, err = wait_search(search, cwd)
    finally:
        if search.poll() is None:
            search.kill()
    ended = time.time()
    assert code == 0, err[-4000:]
    assert "Traceback" not in err, err[-4000:]
    lines = [line for line in err.splitlines() if "unreachable since" in line]
    assert len(lines) == 1, err[-3000:]
    assert err.count("waiting up to 5 s for it before leaving") == 1, err[-3000:]
    path = cwd / "mlruns" / "journal" / f"{name}.jsonl"
    assert f"MLflow at {server.url} unreachable since" in lines[0]
    assert f"kept in {path}; run `orch sync {name}`" in lines[0]
    waiting = len(Journal(path).pending())
    assert waiting > 0

    # Still away: orch sync says so and keeps everything.
    still = orch("sync", name, cwd=cwd, timeout=120)
    assert still.returncode == 1 and still.stderr.startswith("error: MLflow at"), still.stderr
    assert len(Journal(path).pending()) == waiting

    server.start()
    restarted = time.time()
    synced = orch("sync", name, cwd=cwd, timeout=300)
    assert synced.returncode == 0, synced.stderr[-3000:]
    assert f"search {name}: {waiting} kept writes replayed" in synced.stdout
    assert not Journal(path).pending()
    before = assert_complete(server.url, cwd, name)

    again = orch("sync", name, cwd=cwd, timeout=120)
    assert again.returncode == 0 and "nothing to replay" in again.stdout, again.stderr
    after = store_contents(server.url, name)
    assert after["steps"] == before["steps"]
    assert {r.info.run_id for r in after["children"]} == {r.info.run_id for r in before["children"]}
    print(
        "\ntimeline (s since the search started):",
        timeline(t0, server_stopped=stopped, search_exited=ended, server_restarted=restarted),
        f"writes kept: {waiting}",
    )


@pytest.mark.timeout(60)
def test_sync_of_an_unknown_search_is_one_line(tmp_path):
    done = orch("sync", "nosuch", cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("error: no journal for search 'nosuch'"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
