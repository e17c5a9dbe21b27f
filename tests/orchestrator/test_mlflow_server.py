"""`orch search --tracking-uri` and `orch best --tracking-uri` against a real `mlflow server`
(sqlite backend, served artifacts) that the test starts on 127.0.0.1 and stops.

Everything is read back through the server only: runs with an ``MlflowClient`` on its URI,
the best checkpoint through its ``mlflow-artifacts:/`` URI; the search's own folder must hold
no ``mlruns``.
"""

from __future__ import annotations

import json
import os

import pytest

from orchestrator.tracking.runs import KIND_TAG, PARENT_TAG, STATE_TAG
from tests.orchestrator.processes import (
    BIN,
    free_port,
    healthy,
    orch,
    start_group,
    stop_group,
    wait_for,
)

pytestmark = pytest.mark.slow

TRIALS = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The server's URL; the server (its whole process group) is stopped at the end."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    # The job runner (MLflow 3.x) would start extra worker processes for nothing here.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = start_group(
        [
            str(BIN / "mlflow"), "server",
            "--backend-store-uri", f"sqlite:///{root / 'srv.db'}",
            "--artifacts-destination", str(root / "artifacts"),  # served: mlflow-artifacts:/
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        log,
        env,
    )  # fmt: skip
    try:
        wait_for(lambda: healthy(url), 60, "mlflow server", log)
        yield url
    finally:
        assert stop_group(proc) == [], "mlflow server processes left behind"


@pytest.fixture(scope="module")
def searched(server, tmp_path_factory):
    """A finished search recorded on the server; its best trial as `--json` printed it."""
    cwd = tmp_path_factory.mktemp("search")
    done = orch(
        "search", "--dataset", "synthetic", "--quick", "--trials", TRIALS,
        "--max-concurrent", 2, "--max-dialogues", 60, "--tracking-uri", server,
        "--storage", cwd / "ray", "--json",
        cwd=cwd, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (cwd / "mlruns").exists()  # nothing went to the embedded store
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(240)
def test_parent_and_every_trial_are_on_the_server_and_closed(server, searched):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=server)
    exp = client.get_experiment_by_name("orch-search")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get(KIND_TAG) == "search"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].info.run_id == searched["parent_run_id"]
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parents[0].info.run_id]
    # A healthy search: every trial FINISHED (ASHA's early stops too; KILLED is for
    # interruptions), its state agreeing with the epochs it logged through the server: 2
    # (quick) when completed, 1 when ASHA stopped it, which it never does to the first trial.
    assert [c.info.status for c in children] == ["FINISHED"] * TRIALS
    epochs = {"completed": [1, 2], "pruned": [1]}
    for child in children:
        history = client.get_metric_history(child.info.run_id, "dev_weighted_f1")
        assert [m.step for m in history] == epochs[child.data.tags[STATE_TAG]], child.info
    assert [c.data.tags[STATE_TAG] for c in children].count("completed") >= 1


@pytest.mark.timeout(120)
def test_best_checkpoint_downloads_from_the_server(server, searched, tmp_path):
    from mlflow.artifacts import download_artifacts

    uri = searched["checkpoint"]
    assert uri.startswith("mlflow-artifacts:/") and uri.endswith("/best_checkpoint")
    local = download_artifacts(uri, dst_path=str(tmp_path), tracking_uri=server)
    config = json.loads(open(os.path.join(local, "config.json")).read())
    assert config["dataset"] == "synthetic" and config["model"]["encoder"] == "tiny"
    assert os.path.getsize(os.path.join(local, "model.pt")) > 0


@pytest.mark.timeout(120)
def test_orch_best_reads_the_server(server, searched, tmp_path):
    done = orch("best", "--tracking-uri", server, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == searched
    assert not (tmp_path / "mlruns").exists()
