"""The MLflow callback without Ray: reuse of runs on restart/resume, closing, pickling."""

from __future__ import annotations

from types import SimpleNamespace

import cloudpickle
import pytest

from orchestrator.tracking.callback import MlflowSearchCallback


def fake_trial(trial_id, config=None, failures=0):
    return SimpleNamespace(
        trial_id=trial_id,
        config=config or {"lr": 1e-3, "k": 3},
        path=f"/tmp/storage/{trial_id}",
        num_failures=failures,
    )


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


def callback(uri, **kwargs):
    return MlflowSearchCallback(
        "s1",
        "dev_weighted_f1",
        "max",
        tracking_uri=uri,
        parent_params={"dataset": "meld", "sampler": "tpe", "git_commit": None},
        **kwargs,
    )


@pytest.mark.parametrize("with_state", [False, True])
def test_trial_run_is_reused_on_restart_and_resume(uri, with_state):
    cb = callback(uri)
    parent = cb.open()
    assert cb.open() == parent  # idempotent
    saved = cloudpickle.dumps(cb)  # what Tuner() writes to tuner.pkl, before any trial
    trial = fake_trial("t1")
    cb.on_trial_start(0, [], trial)
    cb.on_trial_result(0, [], trial, {"dev_weighted_f1": 0.5, "training_iteration": 1, "pid": 9})
    cb.on_trial_recover(0, [], fake_trial("t1", failures=1))
    cb.on_trial_start(0, [], trial)  # Ray restarts it: same run
    assert len(cb.children) == 1

    # The driver dies; a resumed driver unpickles the callback (Tuner.restore), Tune gives it
    # the state of the last snapshot if there was one, and it finds the trial's run again.
    resumed = cloudpickle.loads(saved)
    if with_state:
        resumed.set_state(cloudpickle.loads(cloudpickle.dumps(cb.get_state())))
    resumed.resume()
    assert resumed.parent_run_id == parent
    assert resumed.child_run(trial) == cb.children["t1"]
    assert resumed.logged_step["t1"] == 1  # epoch 1 was logged by the earlier driver
    resumed.on_trial_result(0, [], trial, {"dev_weighted_f1": 0.6, "training_iteration": 2})
    resumed.on_trial_complete(0, [], trial)
    resumed.close()

    run = cb.client.get_run(cb.children["t1"])
    assert run.info.status == "FINISHED" and run.data.tags["orch.state"] == "completed"
    assert run.data.params == {"lr": "0.001", "k": "3"}
    assert "pid" not in run.data.metrics and run.data.tags["orch.restarts"] == "1"
    history = cb.client.get_metric_history(run.info.run_id, "dev_weighted_f1")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.6)]
    parent_run = cb.client.get_run(parent)
    assert parent_run.info.status == "FINISHED"
    assert parent_run.data.tags["orch.resumes"] == "1"
    assert "git_commit" not in parent_run.data.params  # None values are left out
    assert len(cb.client.search_runs([cb.experiment_id])) == 2


def test_close_kills_open_trials_and_marks_pruned(uri):
    cb = callback(uri, is_pruned=lambda trial_id: trial_id == "p")
    cb.open()
    for trial_id in ("p", "open"):
        cb.on_trial_start(0, [], fake_trial(trial_id))
    cb.on_trial_complete(0, [], fake_trial("p"))
    cb.close("KILLED")
    pruned = cb.client.get_run(cb.children["p"])
    left = cb.client.get_run(cb.children["open"])
    assert (pruned.info.status, pruned.data.tags["orch.state"]) == ("FINISHED", "pruned")
    assert (left.info.status, left.data.tags["orch.state"]) == ("KILLED", "interrupted")
    assert cb.client.get_run(cb.parent_run_id).info.status == "KILLED"


def test_default_store_is_sqlite_under_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("ORCH_MLRUNS", raising=False)
    cb = MlflowSearchCallback("s", "m", "max")
    cb.open()
    assert cb.tracking_uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    experiment = cb.client.get_experiment(cb.experiment_id)
    assert experiment.artifact_location.startswith((tmp_path / "mlruns" / "artifacts").as_uri())
    cb.close()


def test_node_id_is_a_tag_set_again_only_when_a_retry_moves(uri):
    cb = callback(uri)
    cb.open()
    trial = fake_trial("t1")
    cb.on_trial_start(0, [], trial)
    for step, node in ((1, "node-a"), (2, "node-a"), (3, "node-b")):
        cb.on_trial_result(
            0, [], trial, {"dev_weighted_f1": 0.5, "training_iteration": step, "node_id": node}
        )
    run = cb.client.get_run(cb.children["t1"])
    assert run.data.tags["orch.node_id"] == "node-b"  # the latest attempt's node
    assert "node_id" not in run.data.metrics  # a string is a tag, never a metric
    cb.close()


def test_metrics_reported_faster_than_flush_s_are_written_together(uri, monkeypatch):
    import orchestrator.tracking.callback as module

    clock = [1000.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    cb = callback(uri, flush_s=5.0)
    cb.open()
    trial = fake_trial("t1")
    cb.on_trial_start(0, [], trial)

    def steps():
        history = cb.client.get_metric_history(cb.children["t1"], "dev_weighted_f1")
        return [m.step for m in history]

    def report(step):
        cb.on_trial_result(0, [], trial, {"dev_weighted_f1": step / 10, "training_iteration": step})

    report(1)
    assert steps() == [1]  # nothing written for 5 s: written at once (a real epoch)
    clock[0] += 1.0
    report(2)
    report(3)
    cb.on_step_end(0, [])
    assert steps() == [1]  # within 5 s of the last write: waiting
    clock[0] += 5.0
    cb.on_step_end(0, [])  # due now, although no other result came
    assert steps() == [1, 2, 3]
    report(4)
    cb.on_checkpoint(0, [], trial, checkpoint=None)
    assert steps() == [1, 2, 3]  # a checkpoint alone writes nothing: it is no resume point
    cb.get_state()  # Tune writes an experiment snapshot, which a resume starts from
    assert steps() == [1, 2, 3, 4]
    report(5)
    cb.on_trial_complete(0, [], trial)  # a run's metrics are all in before it ends
    assert steps() == [1, 2, 3, 4, 5]
    assert cb.client.get_run(cb.children["t1"]).info.status == "FINISHED"
    assert cloudpickle.loads(cloudpickle.dumps(cb)).pending == {}
    cb.close()


def test_ended_trials_carry_their_best_and_orch_best_ranks_by_it(uri):
    from orchestrator.best import best_trial

    cb = callback(uri)
    cb.open()
    curves = {"a": [0.5, 0.7, 0.6], "b": [0.4, float("nan"), 0.65, 0.65], "c": [0.3]}
    for trial_id, values in curves.items():
        trial = fake_trial(trial_id)
        cb.on_trial_start(0, [], trial)
        for step, value in enumerate(values, 1):
            cb.on_trial_result(
                0, [], trial, {"dev_weighted_f1": value, "dev_loss": 1 - step / 10,
                               "training_iteration": step}
            )  # fmt: skip
        cb.on_trial_complete(0, [], trial)
    tags = {t: cb.client.get_run(cb.children[t]).data.tags for t in curves}
    assert (tags["a"]["orch.best_value"], tags["a"]["orch.best_epoch"]) == ("0.7", "2")
    assert (tags["b"]["orch.best_value"], tags["b"]["orch.best_epoch"]) == ("0.65", "3")
    found = best_trial(uri, name="s1")
    assert (found.trial_id, found.value, found.epoch) == ("a", 0.7, 2)

    # The tags are what it reads: changed, they change the answer ...
    cb.client.set_tag(cb.children["c"], "orch.best_value", "0.9")
    assert best_trial(uri, name="s1").trial_id == "c"
    # ... for the search's own metric; another metric is read from each run's history.
    other = best_trial(uri, name="s1", metric="dev_loss")
    assert (other.trial_id, other.value, other.epoch) == ("b", 0.6, 4)
    cb.close()


def test_a_finished_searchs_pointer_is_used_only_when_the_trial_agrees(uri):
    """A finished search's parent names its winner (orch.best_run_id, best_<metric>): orch best
    reads that run without ranking the others. A pointer the run's own end tags contradict,
    one naming a deleted run, or a search not finished falls back to ranking every trial."""
    from orchestrator.best import best_trial

    cb = callback(uri)
    cb.open()
    for trial_id, values in {"a": [0.5, 0.7], "b": [0.6, 0.65]}.items():
        trial = fake_trial(trial_id)
        cb.on_trial_start(0, [], trial)
        for step, value in enumerate(values, 1):
            cb.on_trial_result(0, [], trial, {"dev_weighted_f1": value, "training_iteration": step})
        cb.on_trial_complete(0, [], trial)
    client, parent = cb.client, cb.parent_run_id

    def point(trial_id, value, state="finished"):
        client.set_tag(parent, "orch.state", state)
        client.set_tag(parent, "orch.best_run_id", cb.children[trial_id])
        client.log_metric(parent, "best_dev_weighted_f1", value)

    point("b", 0.65)  # agrees with b's tags: believed, though a scored higher
    assert best_trial(uri, name="s1").trial_id == "b"
    point("b", 0.7)  # disagrees with b's own best (0.65): every trial ranked
    assert best_trial(uri, name="s1").trial_id == "a"
    point("b", 0.65, state="running")  # not finished: ranked
    assert best_trial(uri, name="s1").trial_id == "a"
    point("b", 0.65)
    client.delete_run(cb.children["b"])  # the named run is gone: ranked among those left
    assert best_trial(uri, name="s1").trial_id == "a"
    cb.close()
