"""`orch search` end to end with the real trainable on a real local Ray, then `orch best`.

One search (5 trials of the quick space on 60 synthetic dialogues per split, 2 at a time) in a
fresh process, the way a user runs it, on the embedded defaults (no --storage, no
--tracking-uri); the assertions read what it left in MLflow and on disk.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from orchestrator.tracking.runs import KIND_TAG, PARENT_TAG, STATE_TAG
from orchestrator.tracking.store import client_for

TRIALS = 5


def orch(*args, cwd, timeout=600):
    env = {**os.environ, "RAY_AIR_NEW_OUTPUT": "0"}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    done = orch(
        "search",
        "--dataset", "synthetic", "--quick", "--trials", str(TRIALS),
        "--max-concurrent", "2", "--max-dialogues", "60", "--name", "smoke", "--json",
        "--asha-tells", "pruned",
        cwd=root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    STDERR["search"] = done.stderr
    client = client_for(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    return root, client, json.loads(done.stdout.strip().splitlines()[-1])


STDERR: dict[str, str] = {}  # what the fixture's search printed on stderr
# What Ray and MLflow say about themselves; shown with --verbose only (issue 17).
CHATTER = (
    "Token authentication is enabled",
    "Started a local Ray instance",
    "Creating initial MLflow database tables",
    "Updating database tables",
    "Failed to fetch metrics",
    "StarletteDeprecationWarning",
)


@pytest.mark.timeout(600)
def test_a_search_says_its_seed_and_holds_no_library_chatter(searched):
    err = STDERR["search"]
    assert [c for c in CHATTER if c in err] == []
    start = re.search(r"^search smoke: 5 trials, bohb \+ asha, seed (\d+) ", err, re.M)
    assert start, err[-2000:]
    seed = start.group(1)
    assert re.search(rf"^search smoke finished: .*trial-epochs; seed {seed}$", err, re.M), err


def _runs(client):
    exp = client.get_experiment_by_name("orch-search")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get(KIND_TAG) == "search"]
    children = [r for r in runs if PARENT_TAG in r.data.tags]
    return parents, children


@pytest.mark.timeout(600)
def test_one_parent_and_a_closed_child_per_trial(searched):
    _, client, _ = searched
    parents, children = _runs(client)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.params["dataset"] == "synthetic"
    assert len(children) == TRIALS
    assert all(c.data.tags[PARENT_TAG] == parents[0].info.run_id for c in children)
    # Healthy: every trial FINISHED (ASHA's early stops too; KILLED is for interruptions),
    # its state agreeing with the epochs it logged: 2 (quick) completed, 1 when ASHA stopped it.
    assert [c.info.status for c in children] == ["FINISHED"] * TRIALS
    for child in children:
        assert child.data.params["encoder"] == "tiny" and "lr" in child.data.params
        history = client.get_metric_history(child.info.run_id, "dev_weighted_f1")
        epochs = {"completed": 2, "pruned": 1}[child.data.tags[STATE_TAG]]
        assert [m.step for m in history] == list(range(1, epochs + 1))


@pytest.mark.timeout(600)
def test_asha_stops_are_pruned_in_the_optuna_study(searched, tmp_path):
    _, client, _ = searched
    parents, children = _runs(client)
    path = client.download_artifacts(parents[0].info.run_id, "optuna_trials.json", str(tmp_path))
    study = json.loads(open(path).read())
    states = sorted(t["state"] for t in study)
    pruned_runs = [c for c in children if c.data.tags[STATE_TAG] == "pruned"]
    assert states.count("PRUNED") == len(pruned_runs) >= 1
    assert states.count("COMPLETE") == TRIALS - len(pruned_runs)
    for trial in study:
        assert trial["intermediate_values"], trial  # what ASHA saw, kept for TPE
        if trial["state"] == "PRUNED":
            # Stopped before the last epoch; Optuna keeps the last value ASHA judged.
            last = trial["intermediate_values"][max(trial["intermediate_values"], key=int)]
            assert len(trial["intermediate_values"]) < 2 and trial["value"] == last
    assert [run.info.status for run in pruned_runs] == ["FINISHED"] * len(pruned_runs)


@pytest.mark.timeout(600)
def test_orch_best_matches_mlflow_and_its_checkpoint_reloads(searched, tmp_path):
    root, client, from_search = searched
    done = orch("best", "--json", cwd=root)
    assert done.returncode == 0, done.stderr
    best = json.loads(done.stdout)
    assert best == from_search
    _, children = _runs(client)
    top = max(
        m.value
        for c in children
        for m in client.get_metric_history(c.info.run_id, "dev_weighted_f1")
    )
    assert best["value"] == pytest.approx(top)
    assert best["command"].startswith("orch train ") and "--dataset synthetic" in best["command"]

    from mlflow.artifacts import download_artifacts

    from trainable.run import evaluate_checkpoint

    local = download_artifacts(
        best["checkpoint"], dst_path=str(tmp_path), tracking_uri=client.tracking_uri
    )
    dev = evaluate_checkpoint(local, max_dialogues=int(best["params"]["max_dialogues"]))
    assert dev["weighted_f1"] == pytest.approx(best["value"], abs=1e-6)

    human = orch("best", cwd=root)
    assert (
        human.returncode == 0 and "reproduce:" in human.stdout and best["trial_id"] in human.stdout
    )


@pytest.mark.timeout(600)
def test_a_project_folder_holds_everything_the_search_wrote(searched):
    """Trial checkpoints default into the project's mlruns/ (not ~/ray_results, which every
    folder on the machine would share), next to the MLflow store that records them."""
    root, client, best = searched
    assert (root / "mlruns" / "ray" / "smoke" / "tuner.pkl").is_file()
    parents, _ = _runs(client)
    assert parents[0].data.params["storage"] == str(root / "mlruns" / "ray")
    # The best checkpoint, stored once: an artifact of its trial's run, in the same folder.
    assert best["checkpoint"].startswith((root / "mlruns" / "artifacts").as_uri())
    assert best["checkpoint_storage"] == best["checkpoint"]
    assert sorted(p.name for p in root.iterdir()) == ["mlruns"]


BEST_IMPORTS = """
import json, sys
from orchestrator.cli import app
try:
    app(["best", "--json"], standalone_mode=False)
finally:
    heavy = sorted(m for m in ("torch", "ray", "transformers", "datasets") if m in sys.modules)
    print(json.dumps({"heavy": heavy}))
"""


@pytest.mark.timeout(600)
def test_orch_best_reads_mlflow_without_torch_or_ray(searched):
    root, _, best = searched
    done = subprocess.run(
        [sys.executable, "-c", BEST_IMPORTS], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert json.loads(lines[0]) == best  # it did the whole job
    assert json.loads(lines[-1]) == {"heavy": []}


def test_best_with_no_search_is_one_line(tmp_path):
    done = orch("best", cwd=tmp_path)
    assert done.returncode == 1
    assert (
        done.stderr.strip().startswith("error: no") and len(done.stderr.strip().splitlines()) == 1
    )
