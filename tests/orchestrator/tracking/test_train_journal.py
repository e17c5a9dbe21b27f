"""`orch train` against a real `mlflow server` that is stopped after the first epoch and stays
away: the run finishes (exit 0), its writes and its best checkpoint are kept under
./mlruns/journal, and `orch sync NAME` puts the whole run on the server once it is back."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from orchestrator.tracking.journal import Journal
from tests.orchestrator.processes import orch, wait_for
from tests.orchestrator.tracking.test_journal import DEFAULT_RETRIES, HANG_GUARD_S, client

pytestmark = pytest.mark.slow
EPOCHS = 8  # long enough that the server is gone well before the run ends


def train_runs(url: str) -> list:
    exp = client(url).get_experiment_by_name("orch-train")
    return client(url).search_runs([exp.experiment_id]) if exp else []


def epoch_logged(url: str) -> bool:
    try:
        return any(run.data.metrics for run in train_runs(url))
    except Exception:  # noqa: BLE001 - the experiment is not there yet
        return False


@pytest.mark.timeout(HANG_GUARD_S + 300)
def test_orch_train_keeps_its_writes_through_an_outage_then_orch_sync(server, tmp_path):
    cwd = tmp_path / "project"
    cwd.mkdir()
    env = {**os.environ, **DEFAULT_RETRIES}
    env = {k: v for k, v in env.items() if v is not None and k != "MLFLOW_TRACKING_URI"}
    args = ["train", "--dataset", "synthetic", "--encoder", "tiny", "--epochs", EPOCHS,
            "--max-dialogues", 120, "--tracking-uri", server.url, "--json"]  # fmt: skip
    with open(cwd / "train.out", "w") as out, open(cwd / "train.err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *map(str, args)],
                                cwd=cwd, env=env, stdout=out, stderr=err)  # fmt: skip
        try:
            wait_for(lambda: epoch_logged(server.url), 300, "a first epoch on the server")
            server.stop()
            proc.wait(timeout=HANG_GUARD_S)
        finally:
            if proc.poll() is None:
                proc.kill()
    stderr = (cwd / "train.err").read_text()
    assert proc.returncode == 0, stderr[-4000:]
    assert "Traceback" not in stderr, stderr[-4000:]
    found = re.search(r"run `orch sync (train-[\w-]+)`", stderr)
    assert found, stderr[-3000:]
    name = found.group(1)
    journal = cwd / "mlruns" / "journal" / f"{name}.jsonl"
    files = journal.with_suffix(".files")
    result = json.loads((cwd / "train.out").read_text().strip().splitlines()[-1])
    assert result["checkpoint"] == str(files / "best") and (files / "best").is_dir()
    assert not (files / "last").exists()  # only what a kept upload needs stays
    assert result["tracking"] == f"kept in {journal}"
    waiting = len(Journal(journal).pending())
    assert waiting > 0

    server.start()
    synced = orch("sync", name, cwd=cwd, timeout=300)
    assert synced.returncode == 0, synced.stderr[-3000:]
    assert f"run {name}: {waiting} kept writes replayed" in synced.stdout
    (run,) = train_runs(server.url)
    assert run.info.status == "FINISHED"
    history = client(server.url).get_metric_history(run.info.run_id, "dev_weighted_f1")
    assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))  # every epoch, once
    assert [a.path for a in client(server.url).list_artifacts(run.info.run_id)] == [
        "best_checkpoint"
    ]
    assert not files.exists()  # synced: the kept checkpoint is gone from the journal folder
