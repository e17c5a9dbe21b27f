"""`orch search --address` on a real Ray cluster the test starts and stops: a `ray start --head`
node alone first, then with a second `ray start --address` node joined, 1 CPU each.

Both nodes run on this machine, so "which node ran a trial" is told by the Ray node id that
every trial reports (the child run's ``orch.node_id`` tag), not by an IP address.

Token authentication stays on: Ray 2.60 enables it for `ray start --head` whenever a token
exists (``~/.ray/auth_token``), but joins an explicit address with it only when
``RAY_AUTH_MODE=token`` is set, so a clean CI machine and a developer's machine would behave
differently. Every process of the test (both nodes, the drivers) therefore gets
``RAY_AUTH_MODE=token`` and a fresh random ``RAY_AUTH_TOKEN``: the cluster accepts only
them, and no token file is read or written.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from orchestrator.tracking.runs import KIND_TAG, NODE_TAG, PARENT_TAG, STATE_TAG
from orchestrator.tracking.store import client_for
from tests.orchestrator.processes import BIN, free_port, orch, start_group, stop_group, wait_for

pytestmark = pytest.mark.slow

NODE = [
    "--num-cpus", "1",
    "--object-store-memory", str(100 * 2**20),
    "--disable-usage-stats",
    "--block",
]  # fmt: skip
NODE_IDS = """
import json, ray
ray.init(address={address!r}, log_to_driver=False)
print(json.dumps(sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])))
"""


class Cluster:
    """A head node (and later a worker) started with `ray start --block`, each in its own
    process group, with Ray's files in a private temp dir."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Short and private: Ray's socket paths live below it (108-byte AF_UNIX limit), and
        # `ray start` writes "the current cluster" there instead of /tmp/ray, where another
        # Ray user's plain ray.init() would pick it up.
        self.temp_dir = tempfile.mkdtemp(prefix="orch-ray-", dir="/tmp")
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            # SIGTERM would otherwise drain each node for up to 30 s before it stops.
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.env.pop("RAY_ADDRESS", None)  # it would override --address
        self.nodes: list[subprocess.Popen] = []

    def _start(self, name: str, *args: str) -> None:
        log = self.root / f"{name}.log"
        self.nodes.append(start_group([str(BIN / "ray"), "start", *args, *NODE], log, self.env))
        wait_for(lambda: "Ray runtime started" in log.read_text(), 90, f"ray {name}", log)

    def start_head(self) -> None:
        # Ray maps 127.0.0.1 to this machine's routable address for a multi-node cluster and
        # its GCS listens on every interface: the token is what keeps others out.
        self._start(
            "head",
            "--head", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
            "--include-dashboard", "false", "--temp-dir", self.temp_dir,
        )  # fmt: skip

    def add_worker(self) -> None:
        self._start("worker", "--address", self.address, "--resources", '{"node2": 1}')
        wait_for(lambda: len(self.node_ids()) == 2, 60, "second node registered")

    def node_ids(self) -> list[str]:
        """Ids of the alive nodes, asked by a short-lived driver."""
        done = subprocess.run(
            [sys.executable, "-c", NODE_IDS.format(address=self.address)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def search(self, cwd: Path, trials: int) -> subprocess.CompletedProcess:
        cwd.mkdir()
        return orch(
            "search", "--dataset", "synthetic", "--quick", "--trials", trials,
            "--max-concurrent", 2, "--max-dialogues", 60, "--address", self.address,
            "--storage", cwd / "ray",
            cwd=cwd, env=self.env, timeout=240,
        )  # fmt: skip

    def stop(self) -> dict[int, list[int]]:
        """Stop every node (worker first); returns {node pid: pids left alive} for the
        nodes that left something behind, and checks no process still uses the temp dir."""
        left = {node.pid: stop_group(node) for node in reversed(self.nodes)}
        self.nodes.clear()
        left = {pid: alive for pid, alive in left.items() if alive}
        if using_temp_dir(self.temp_dir):  # escaped its group (setsid): still ours
            left[-1] = using_temp_dir(self.temp_dir)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return left


def using_temp_dir(temp_dir: str) -> list[int]:
    """Pids whose command line names ``temp_dir`` (Ray passes it to every node process)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if temp_dir.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start_head()
        yield cluster
    finally:
        cluster.stop()  # again after test_nodes_stop_cleanly: a no-op unless it failed


def search_runs(cwd: Path):
    """(parent, children) of the one search recorded under ``cwd/mlruns``."""
    client = client_for(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("orch-search")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get(KIND_TAG) == "search"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parents[0].info.run_id]
    return parents[0], children


def assert_closed(cwd: Path, parent, children, trials: int) -> None:
    """A healthy search: the parent and every trial FINISHED (ASHA's early stops too, tagged
    pruned; KILLED is for interruptions), each trial's state agreeing with the epochs it
    logged: 2 (quick) when completed, 1 when ASHA stopped it at its one rung, which never
    stops the first trial to reach it."""
    assert parent.info.status == "FINISHED"
    assert [c.info.status for c in children] == ["FINISHED"] * trials
    client = client_for(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    epochs = {"completed": [1, 2], "pruned": [1]}
    for child in children:
        history = client.get_metric_history(child.info.run_id, "dev_weighted_f1")
        assert [m.step for m in history] == epochs[child.data.tags[STATE_TAG]], child.info
    assert [c.data.tags[STATE_TAG] for c in children].count("completed") >= 1


@pytest.mark.timeout(150)
def test_search_joins_a_single_head_node(cluster, tmp_path):
    (head,) = cluster.node_ids()
    done = cluster.search(tmp_path / "one", trials=2)
    assert done.returncode == 0, done.stderr[-3000:]
    parent, children = search_runs(tmp_path / "one")
    assert_closed(tmp_path / "one", parent, children, 2)
    assert parent.data.params["storage"] == str(tmp_path / "one" / "ray")
    assert {c.data.tags[NODE_TAG] for c in children} == {head}


@pytest.mark.timeout(90)
def test_a_driver_without_the_token_is_told_why(cluster, tmp_path):
    # Ray retries for ~20 s and logs each try on stderr; orch's last line says what to set.
    env = {"RAY_AUTH_MODE": None, "RAY_AUTH_TOKEN": None, "RAY_AUTH_TOKEN_PATH": None}
    done = orch(
        "search", "--dataset", "synthetic", "--quick", "--trials", 1,
        "--address", cluster.address, "--storage", tmp_path / "ray",
        cwd=tmp_path, env=env, timeout=80,
    )  # fmt: skip
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: --address {cluster.address}: cannot join the Ray cluster")
    assert "RAY_AUTH_MODE=token" in last
    assert not any(tmp_path.iterdir())  # no MLflow store, no storage folder


@pytest.mark.timeout(150)
def test_trials_run_on_both_nodes(cluster, tmp_path):
    cluster.add_worker()
    nodes = set(cluster.node_ids())
    done = cluster.search(tmp_path / "two", trials=4)
    assert done.returncode == 0, done.stderr[-3000:]
    parent, children = search_runs(tmp_path / "two")
    assert_closed(tmp_path / "two", parent, children, 4)
    # 1 CPU per node and 2 trials at a time: the second trial can only run on the other node.
    assert {c.data.tags[NODE_TAG] for c in children} == nodes


@pytest.mark.timeout(60)
def test_nodes_stop_cleanly(cluster):
    assert cluster.stop() == {}
