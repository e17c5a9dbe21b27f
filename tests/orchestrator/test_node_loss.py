"""A Ray worker node dies under a running trial: the trial goes on on the other node.

A two-node cluster on loopback (the head and one worker, 1 CPU each, see test_cluster.py),
a search of two trials at once (one per node) on shared storage. Once the worker's trial has
reported an epoch (and with it a checkpoint), the worker's whole process group is killed
(SIGKILL: a machine gone, not a clean shutdown). Ray marks the node dead, Tune restarts the
trial from its last checkpoint on the head, and the search ends as if nothing happened: one
MLflow run per trial, every epoch logged once, the restart counted in ``orch.restarts``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.tracking.runs import NODE_TAG, RESTARTS_TAG, STATE_TAG
from orchestrator.tracking.store import client_for
from tests.orchestrator.processes import wait_for
from tests.orchestrator.test_cluster import Cluster, search_runs

pytestmark = pytest.mark.slow

EPOCHS = 6


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path)
    # A dead node is declared after 3 missed 1 s health checks instead of Ray's ~30 s.
    cluster.env |= {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
    try:
        cluster.start_head()
        (head,) = cluster.node_ids()
        cluster.add_worker()
        (worker,) = set(cluster.node_ids()) - {head}
        yield cluster, head, worker
    finally:
        cluster.stop()


def worker_epochs(cwd: Path, worker: str) -> int:
    """Epochs the trial running on ``worker`` has logged so far (0 before any)."""
    db = cwd / "mlruns" / "mlflow.db"
    if not db.exists():
        return 0
    with contextlib.suppress(Exception):  # the store may be mid-creation
        client = client_for(f"sqlite:///{db}")
        experiment = client.get_experiment_by_name("orch-search")
        if experiment is None:
            return 0
        for run in client.search_runs([experiment.experiment_id], max_results=50):
            if run.data.tags.get(NODE_TAG) == worker:
                return len(client.get_metric_history(run.info.run_id, "dev_weighted_f1"))
    return 0


@pytest.mark.timeout(600)
def test_a_trial_on_a_lost_node_continues_on_the_other(cluster, tmp_path):
    cluster, head, worker = cluster
    worker_node = cluster.nodes[-1]
    cwd = tmp_path / "search"
    cwd.mkdir()
    env = {**cluster.env, "RAY_AIR_NEW_OUTPUT": "0"}
    search = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "search", "--dataset", "synthetic",
         "--quick", "--trials", "2", "--max-concurrent", "2", "--max-dialogues", "60",
         "--epochs", str(EPOCHS), "--scheduler", "none", "--max-failures", "2",
         "--address", cluster.address, "--storage", str(cwd / "ray"), "--name", "lost"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: worker_epochs(cwd, worker) >= 1, 300, "an epoch on the worker node")
        os.killpg(worker_node.pid, signal.SIGKILL)  # the machine is gone
        lost_at = worker_epochs(cwd, worker)
        out, err = search.communicate(timeout=420)
    finally:
        if search.poll() is None:
            search.kill()
    assert search.returncode == 0, err[-3000:]
    assert lost_at < EPOCHS  # it was mid-trial
    parent, children = search_runs(cwd)
    assert parent.info.status == "FINISHED"
    assert len(children) == 2  # one run per trial, the restarted one included
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]
    assert sorted(c.data.tags[STATE_TAG] for c in children) == ["completed", "completed"]
    client = client_for(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    restarted = [c for c in children if c.data.tags.get(RESTARTS_TAG, "0") != "0"]
    assert [c.data.tags[RESTARTS_TAG] for c in restarted] == ["1"]
    assert restarted[0].data.tags[NODE_TAG] == head  # where it ended
    for child in children:  # every epoch once: the restart resumed, it did not start over
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "dev_weighted_f1")]
        assert steps == list(range(1, EPOCHS + 1)), (child.info.run_name, steps)
