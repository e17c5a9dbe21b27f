"""One real Ray Tune search end to end: Optuna (enqueued points), ASHA, MLflow, live table.

Seven trials of a toy trainable, two at a time, four epochs each (ASHA rungs at 1 and 2):
- ``flaky`` (x = 1.0): fails once after epoch 2, resumes from its checkpoint, ends best;
- ``ok`` x = 1.0: completes (ties the flaky one on every rung, so ASHA keeps both);
- ``ok`` x = 0.2, 0.1, 0.15, 0.05: each reaches rung 1 below the cutoff the two x = 1.0 trials
  set there, so ASHA stops it: PRUNED in Optuna, FINISHED/pruned in MLflow;
- ``broken``: raises before reporting, is retried once, then FAILED everywhere.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState
from rich.console import Console

from orchestrator.best import NoSearchError, best_trial
from orchestrator.settings import SearchSettings
from orchestrator.tuner import run_search

pytestmark = pytest.mark.timeout(240)
METRIC = "dev_weighted_f1"
POINTS = [
    {"x": 1.0, "behaviour": "flaky"},
    {"x": 1.0, "behaviour": "ok"},
    {"x": 0.2, "behaviour": "ok"},
    {"x": 0.1, "behaviour": "ok"},
    {"x": 0.15, "behaviour": "ok"},
    {"x": 0.05, "behaviour": "ok"},
    {"x": 0.5, "behaviour": "broken"},
]


def toy_space(trial):
    trial.suggest_float("x", 0.0, 1.0)
    trial.suggest_categorical("behaviour", ["ok", "flaky", "broken"])
    return {"epochs": 4}


def toy_trainable(config):
    """Metric rises per epoch towards x; the flaky trial alone gets a bonus at its last epoch
    (after ASHA's last rung), so it is the unique best."""
    from ray import tune

    if config["behaviour"] == "broken":
        raise ValueError("broken trial: this config cannot train")
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start = json.loads((Path(folder) / "state.json").read_text())["epoch"]
    marker = Path(config["marker_dir"]) / "flaky-failed-once"
    for epoch in range(start + 1, config["epochs"] + 1):
        time.sleep(0.15)
        value = config["x"] * (1 - 0.5**epoch) + 0.001 * epoch
        if config["behaviour"] == "flaky" and epoch == config["epochs"]:
            value += 0.01
        metrics = {METRIC: value, "test_weighted_f1": value / 2, "dev_loss": 1 - value}
        with tempfile.TemporaryDirectory() as folder:
            state = {"epoch": epoch, "x": config["x"], "behaviour": config["behaviour"]}
            (Path(folder) / "state.json").write_text(json.dumps(state))
            tune.report(
                {**metrics, "epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(folder)
            )
        if config["behaviour"] == "flaky" and epoch == 2 and not marker.exists():
            marker.write_text("x")
            raise RuntimeError("flaky failure after epoch 2")


@pytest.fixture(scope="module")
def search(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    out = io.StringIO()
    settings = SearchSettings(
        space=toy_space,
        metric=METRIC,
        mode="max",
        trials=len(POINTS),
        sampler="random",
        seed=0,
        scheduler="asha",
        asha_tells="pruned",
        grace_period=1,
        reduction_factor=2,
        max_concurrent=2,
        storage=str(root / "ray"),
        name="toy-search",
        dataset="synthetic",
        tracking_uri=uri,
        max_failures=1,
        keep_checkpoints=2,
        constants={"marker_dir": str(root)},
        points_to_evaluate=POINTS,
        command_line="orch search --dataset synthetic --trials 7",
    )
    result = run_search(toy_trainable, settings, console=Console(file=out, width=140))
    from mlflow.tracking import MlflowClient

    return {
        "result": result,
        "uri": uri,
        "client": MlflowClient(uri),
        "live": out.getvalue(),
    }


def by_behaviour(study):
    return {(t.params["behaviour"], t.params["x"]): t for t in study.trials}


def runs(search):
    client = search["client"]
    experiment = client.get_experiment_by_name("orch-search")
    found = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in found if r.data.tags.get("orch.kind") == "search"]
    children = [r for r in found if r.data.tags.get("orch.kind") == "trial"]
    return parents, children


def test_optuna_sees_pruned_complete_and_failed(search):
    result = search["result"]
    trials = by_behaviour(result.study)
    assert len(result.study.trials) == len(POINTS)
    for key in [("flaky", 1.0), ("ok", 1.0)]:
        assert trials[key].state == TrialState.COMPLETE
        assert sorted(trials[key].intermediate_values) == [1, 2, 3, 4]
    for x in (0.2, 0.1, 0.15, 0.05):
        pruned = trials[("ok", x)]
        assert pruned.state == TrialState.PRUNED, x
        # Stopped at rung 1: the value that got it stopped is its intermediate value and value.
        assert list(pruned.intermediate_values) == [1]
        assert pruned.value == pytest.approx(x * 0.5 + 0.001)
    assert trials[("broken", 0.5)].state == TrialState.FAIL
    assert len(result.pruned) == 4


def test_one_parent_and_closed_child_per_trial(search):
    parents, children = runs(search)
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    params = parent.data.params
    assert params["dataset"] == "synthetic" and params["sampler"] == "random"
    assert params["scheduler"] == "asha" and params["space"] == "toy_space"
    assert params["command"] == "orch search --dataset synthetic --trials 7"
    # Restarts (flaky, broken) reuse their run: one child per trial, all closed.
    assert len(children) == len(POINTS)
    assert len({c.data.tags["orch.trial_id"] for c in children}) == len(POINTS)
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert all(c.info.run_name == c.data.tags["orch.trial_id"] for c in children)
    assert not [c for c in children if c.info.status == "RUNNING"]
    states = sorted((c.data.tags["orch.state"], c.info.status) for c in children)
    assert states == sorted(
        [("completed", "FINISHED")] * 2 + [("pruned", "FINISHED")] * 4 + [("failed", "FAILED")]
    )
    failed = next(c for c in children if c.data.tags["orch.state"] == "failed")
    assert "broken trial" in failed.data.tags["orch.error"]
    assert failed.data.params["behaviour"] == "broken"


def test_metric_history_per_epoch(search):
    client = search["client"]
    _, children = runs(search)
    for child in children:
        state = child.data.tags["orch.state"]
        history = client.get_metric_history(child.info.run_id, METRIC)
        steps = sorted(m.step for m in history)
        if state == "completed":
            assert steps == [1, 2, 3, 4], child.data.params  # flaky: 1, 2, then resumed 3, 4
        elif state == "pruned":
            assert steps == [1]
        else:
            assert steps == []
    flaky = next(c for c in children if c.data.params["behaviour"] == "flaky")
    assert flaky.data.tags["orch.restarts"] == "1"


def test_best_checkpoint_and_plots_on_parent(search, tmp_path):
    client = search["client"]
    parents, children = runs(search)
    parent = parents[0]
    flaky = next(c for c in children if c.data.params["behaviour"] == "flaky")
    assert parent.data.tags["orch.best_run_id"] == flaky.info.run_id
    assert parent.data.metrics[f"best_{METRIC}"] == pytest.approx(1 - 0.5**4 + 0.004 + 0.01)
    # Stored once (issue 18): an artifact of the trial's run, which the parent points to.
    assert client.list_artifacts(parent.info.run_id, "best_checkpoint") == []
    uri = f"{flaky.info.artifact_uri}/best_checkpoint"
    assert parent.data.tags["orch.best_checkpoint"] == uri
    folder = client.download_artifacts(flaky.info.run_id, "best_checkpoint", str(tmp_path))
    state = json.loads((Path(folder) / "state.json").read_text())
    assert state == {"epoch": 4, "x": 1.0, "behaviour": "flaky"}
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/optimization_history.png" in plots
    assert "plots/param_importances.png" in plots


def test_best_query_reads_mlflow(search):
    best = best_trial(search["uri"], command=False)
    assert best.search == "toy-search" and best.metric == METRIC and best.mode == "max"
    assert best.params["behaviour"] == "flaky" and best.epoch == 4
    assert best.dev["weighted_f1"] == pytest.approx(best.value)
    assert best.test["weighted_f1"] == pytest.approx(best.value / 2)
    assert best.checkpoint.endswith("/best_checkpoint")
    assert best.checkpoint_storage == best.checkpoint  # stored once: the tag names it
    assert json.loads(json.dumps(best.to_dict()))["trial_id"] == best.trial_id
    # Another metric, with its direction inferred: lowest dev loss is the same trial.
    by_loss = best_trial(search["uri"], name="toy-search", metric="dev_loss", command=False)
    assert by_loss.mode == "min" and by_loss.run_id == best.run_id
    with pytest.raises(NoSearchError):
        best_trial(search["uri"], name="no-such-search")


def test_live_table_and_ray_reporter_silent(search):
    live = search["live"]
    assert "toy-search: 7/7 trials done" in live
    assert "pruned" in live and "failed" in live and "completed" in live
    assert "Trial status" not in live  # Ray's reporter is off
