"""The embedded sqlite store: made once, even by processes that start together."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import time

OPEN = (
    "import sys; from orchestrator.tracking.store import client_for; "
    "client_for(sys.argv[1]).search_experiments(max_results=1)"
)


def test_a_new_store_is_created_under_the_lock_by_one_process_at_a_time(tmp_path):
    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}"
    with open(f"{db}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process is creating the store
        waiting = subprocess.Popen([sys.executable, "-c", OPEN, uri], stderr=subprocess.PIPE)
        time.sleep(5)  # ample time to import MLflow and create the tables, had it not waited
        assert waiting.poll() is None and not db.exists()
    assert waiting.wait(timeout=120) == 0, waiting.stderr.read().decode()[-2000:]
    assert db.exists()


def test_processes_opening_a_new_store_together_all_succeed(tmp_path):
    """Two `orch train` started at once in a fresh project: one died on MLflow's table
    creation (``table latest_metrics already exists``) before the lock."""
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    procs = [
        subprocess.Popen([sys.executable, "-c", OPEN, uri], stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    for proc in procs:
        assert proc.wait(timeout=180) == 0, proc.stderr.read().decode()[-2000:]
