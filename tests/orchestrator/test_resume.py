"""`orch search --resume`: a search outlives its driver.

One search of the real trainable (synthetic, quick, 6 trials, 2 at a time, 3 epochs, no
early stopping so that the timing is predictable), driven by the real CLI in a subprocess:

1. SIGKILL the driver once a trial has finished and another is mid-run (as Tune's saved
   experiment state shows them);
2. the original command with ``--resume NAME`` added, and SIGTERM that driver once one more
   trial finished: it stops like Ctrl-C (exit 130, the resume command on stderr, nothing
   left RUNNING);
3. ``orch search --resume latest`` runs the search to its end.

Then: one parent run, exactly one child run per trial (6), none RUNNING, every epoch logged
once; finished trials were not run again, interrupted ones continued from their checkpoint;
the Optuna study lists 6 trials; at most ``keep_checkpoints`` checkpoints per trial on disk.

Without Ray: ASHA's rungs survive a searcher snapshot, and the MLflow callback keeps one run
per trial across an interrupt and a resumed driver (reopened runs, epochs logged once, the
run of a trial the saved state never knew deleted).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.orchestrator.processes import stop_group, wait_for

NAME = "killme"
TRIALS = 6
EPOCHS = 3


def start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """``orch ARGS`` in its own session (so that its Ray can be cleaned up), output to log."""
    # Tune snapshots the experiment (what a resume starts from) every >= 10 s; these trials'
    # epochs take a fraction of a second, so the snapshots come as often, relative to them,
    # as they would for real ones.
    env = {**os.environ, "RAY_AIR_NEW_OUTPUT": "0", "TUNE_GLOBAL_CHECKPOINT_S": "0.5"}
    for var in ("MLFLOW_TRACKING_URI", "ORCH_MLRUNS"):
        env.pop(var, None)
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", *args],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def snapshot(experiment: Path) -> dict[str, tuple[str, int]]:
    """Tune's latest saved experiment state: trial id -> (status, last epoch reported)."""
    files = sorted(glob.glob(str(experiment / "experiment_state-*.json")))
    if not files:
        return {}
    try:
        state = json.loads(Path(files[-1]).read_text())
    except (OSError, ValueError):  # caught mid-write
        return {}
    trials = {}
    for trial_json, meta_json in state["trial_data"]:
        trial, meta = json.loads(trial_json), json.loads(meta_json)
        epoch = int((meta.get("last_result") or {}).get("training_iteration") or 0)
        trials[trial["trial_id"]] = (trial["status"], epoch)
    return trials


def count(trials: dict, status: str) -> int:
    return sum(s == status for s, _ in trials.values())


def mid_run(trials: dict) -> bool:
    return any(s == "RUNNING" and 0 < e < EPOCHS for s, e in trials.values())


def results(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("resume")
    experiment = root / "ray" / NAME
    args = [
        "search", "--dataset", "synthetic", "--quick", "--trials", str(TRIALS),
        "--max-concurrent", "2", "--max-dialogues", "200", "--epochs", str(EPOCHS),
        "--scheduler", "none", "--name", NAME, "--storage", str(root / "ray"),
    ]  # fmt: skip
    procs = []
    try:
        # 1. The driver dies without a word (SIGKILL) mid-search.
        log1 = root / "run1.log"
        first = start(args, root, log1)
        procs.append(first)
        wait_for(
            lambda: (
                count(snapshot(experiment), "TERMINATED") >= 1 and mid_run(snapshot(experiment))
            ),
            120,
            "a finished trial and one mid-run",
            log1,
        )
        os.kill(first.pid, signal.SIGKILL)
        killed_time = time.time()
        first.wait(timeout=30)
        stop_group(first)  # what fate-sharing left of its Ray
        killed_at = snapshot(experiment)

        # 2. Resumed by the original command plus --resume (the up arrow: options equal to
        # the saved settings are accepted), then stopped with SIGTERM once one more trial
        # is done.
        log2 = root / "run2.log"
        second = start([*args, "--resume", NAME], root, log2)
        procs.append(second)
        done = count(killed_at, "TERMINATED")
        wait_for(
            lambda: (
                count(snapshot(experiment), "TERMINATED") > done and mid_run(snapshot(experiment))
            ),
            120,
            "one more finished trial and one mid-run",
            log2,
        )
        second.send_signal(signal.SIGTERM)
        stopped_time = time.time()
        second_code = second.wait(timeout=60)
        stop_group(second)
        client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
        after_sigterm = [
            (r.data.tags.get("orch.kind"), r.info.status)
            for r in client.search_runs(
                [client.get_experiment_by_name("orch-search").experiment_id], max_results=100
            )
        ]
        stopped_at = snapshot(experiment)

        # 3. Resumed again, to the end.
        log3 = root / "run3.log"
        third = start(["search", "--resume", "latest", "--json"], root, log3)
        procs.append(third)
        third_code = third.wait(timeout=180)
    finally:
        for proc in procs:
            with contextlib.suppress(Exception):
                stop_group(proc)
    return {
        "root": root,
        "experiment": experiment,
        "client": client,
        "stops": [(killed_at, killed_time), (stopped_at, stopped_time)],
        "second": (second_code, log2.read_text()),
        "after_sigterm": after_sigterm,
        "third": (third_code, log3.read_text()),
    }


def runs(client, **filters):
    experiment = client.get_experiment_by_name("orch-search")
    return client.search_runs([experiment.experiment_id], max_results=200, **filters)


@pytest.mark.timeout(400)
def test_sigterm_stops_like_ctrl_c_and_prints_the_resume_command(resumed):
    code, log = resumed["second"]
    assert code == 130, log[-3000:]
    assert f"error: search {NAME} interrupted; its MLflow runs are closed" in log
    assert f"resume with: orch search --resume {NAME}" in log
    assert "Tuner.restore" not in log  # Ray's own advice is not shown
    statuses = resumed["after_sigterm"]
    assert ("search", "KILLED") in statuses
    assert not [s for s in statuses if s[1] == "RUNNING"], statuses


@pytest.mark.timeout(400)
def test_one_parent_and_one_closed_child_per_trial(resumed):
    code, log = resumed["third"]
    assert code == 0, log[-3000:]
    client = resumed["client"]
    found = runs(client)
    parents = [r for r in found if r.data.tags.get("orch.kind") == "search"]
    children = [r for r in found if r.data.tags.get("orch.kind") == "trial"]
    assert len(parents) == 1
    assert parents[0].info.status == "FINISHED" and parents[0].data.tags["orch.resumes"] == "2"
    assert len(children) == TRIALS
    assert len({c.data.tags["orch.trial_id"] for c in children}) == TRIALS
    assert all(c.info.status == "FINISHED" for c in children), [
        (c.info.run_name, c.info.status) for c in children
    ]
    assert {c.data.tags["orch.state"] for c in children} == {"completed"}
    for child in children:  # every epoch logged once, by whichever driver ran it
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "dev_weighted_f1")]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), (child.info.run_name, steps)
    best = json.loads(log.strip().splitlines()[-1])
    assert best["search"] == NAME and best["failed"] == []


@pytest.mark.timeout(400)
def test_finished_trials_are_not_rerun_and_running_ones_continue(resumed):
    """Checked on Ray's own per-trial log (result.json: one row per reported epoch, with the
    time and ``iterations_since_restore``) against the state saved at each stop."""
    experiment = resumed["experiment"]
    (killed_at, _), (stopped_at, _) = resumed["stops"]
    # What each stop waited for, so that the loop below checks something (an unreadable
    # experiment state reads as {}): a finished trial and one mid-run, then one more finished.
    assert count(killed_at, "TERMINATED") >= 1 and mid_run(killed_at), killed_at
    assert count(stopped_at, "TERMINATED") > count(killed_at, "TERMINATED"), stopped_at
    assert mid_run(stopped_at), stopped_at
    checked = {"finished": 0, "mid-run": 0}
    for snap, stop_time in resumed["stops"]:
        for trial_id, (status, epoch) in snap.items():
            rows = results(experiment / trial_id)
            assert {r["training_iteration"] for r in rows} == set(range(1, EPOCHS + 1))
            if status == "TERMINATED":  # finished before the stop: never started again
                assert max(r["timestamp"] for r in rows) <= stop_time, (trial_id, rows)
                checked["finished"] += 1
            elif 0 < epoch < EPOCHS:  # mid-run: continued from its last checkpoint
                checked["mid-run"] += 1
                restored = [
                    r["training_iteration"] for r in rows if r["iterations_since_restore"] == 1
                ]
                # Tune registers a checkpoint just after the result that carries it, so the
                # saved state may hold epoch N's result with epoch N-1's checkpoint: the trial
                # then continues at N (MLflow and Optuna keep each epoch once), else at N+1.
                assert len(restored) >= 2 and restored[-1] >= epoch, (trial_id, epoch, rows)
    assert checked["finished"] >= 3 and checked["mid-run"] >= 2, checked
    final = snapshot(experiment)
    assert len(final) == TRIALS and count(final, "TERMINATED") == TRIALS


@pytest.mark.timeout(400)
def test_optuna_history_is_kept(resumed, tmp_path):
    client = resumed["client"]
    parent = next(r for r in runs(client) if r.data.tags.get("orch.kind") == "search")
    path = client.download_artifacts(parent.info.run_id, "optuna_trials.json", str(tmp_path))
    study = json.loads(Path(path).read_text())
    assert len(study) == TRIALS
    assert {t["state"] for t in study} == {"COMPLETE"}
    assert sorted(t["number"] for t in study) == list(range(TRIALS))
    for trial in study:
        assert sorted(map(int, trial["intermediate_values"])) == list(range(1, EPOCHS + 1))


@pytest.mark.timeout(400)
def test_checkpoints_stay_bounded(resumed):
    trials = [trial for trial in resumed["experiment"].iterdir() if trial.is_dir()]
    assert len(trials) == TRIALS
    kept = {trial.name: len(list(trial.glob("checkpoint_*"))) for trial in trials}
    assert all(n <= 2 for n in kept.values()), kept
    # Every trial keeps one, but the best, whose checkpoint moved into MLflow (stored once).
    assert sorted(kept.values()).count(0) <= 1 and sum(kept.values()) >= TRIALS - 1, kept


def x_space(trial):
    trial.suggest_float("x", 0, 1)


def test_asha_rungs_are_saved_with_the_searcher(tmp_path):
    """Tune snapshots the searcher but not the scheduler; ASHA's rungs ride along."""
    from types import SimpleNamespace

    from orchestrator.optuna_pruning import PruningASHA, PruningOptunaSearch

    def pair():
        searcher = PruningOptunaSearch(space=x_space, metric="m", mode="max", seed=0)
        scheduler = PruningASHA(metric="m", mode="max", max_t=4, grace_period=1, reduction_factor=2)
        searcher.keep_state_of(scheduler)
        return searcher, scheduler

    searcher, scheduler = pair()
    for i, value in enumerate((0.9, 0.5, 0.1)):
        trial = SimpleNamespace(trial_id=f"t{i}")
        scheduler.on_trial_add(None, trial)
        searcher.suggest(trial.trial_id)
        scheduler.on_trial_result(None, trial, {"m": value, "training_iteration": 1})
    path = str(tmp_path / "searcher.pkl")
    searcher.save(path)
    assert searcher._scheduler is scheduler  # the live object is back after saving

    restored, fresh = pair()
    restored.restore(path)
    assert restored._scheduler is fresh
    assert fresh.stopped_early == scheduler.stopped_early == {"t1", "t2"}
    milestone, recorded = fresh._brackets[0]._rungs[-1]
    assert milestone == 1 and recorded == {"t0": 0.9, "t1": 0.5, "t2": 0.1}
    assert len(restored.study.trials) == 3


class FakeTrial:
    """What the MLflow callback reads of a Tune trial."""

    def __init__(self, trial_id: str, status: str = "RUNNING"):

        self.trial_id, self.status = trial_id, status
        self.config, self.path = {"lr": 1e-3}, f"/tmp/storage/{trial_id}"
        self.error_file = None
        self.num_failures = 0

    def is_finished(self) -> bool:
        return self.status in ("TERMINATED", "ERROR")


def test_mlflow_runs_across_an_interrupt_and_a_killed_driver(tmp_path):
    """The MLflow callback alone (no Ray): Ctrl-C, then a resumed driver restored from the
    callback as pickled in tuner.pkl, then the end of the search."""
    import cloudpickle

    from orchestrator.tracking.callback import MlflowSearchCallback

    def log(cb, trial, step, value):
        cb.on_trial_result(0, [], trial, {"dev_weighted_f1": value, "training_iteration": step})

    cb = MlflowSearchCallback(
        "s", "dev_weighted_f1", "max", tracking_uri=f"sqlite:///{tmp_path}/m.db"
    )
    cb.open()
    saved = cloudpickle.dumps(cb)  # what Tuner() writes to tuner.pkl
    cb.setup(total_num_samples=3)
    a, b, lost = FakeTrial("a"), FakeTrial("b"), FakeTrial("lost")
    for trial in (a, b, lost):
        cb.on_trial_start(0, [], trial)
    log(cb, a, 1, 0.5)
    a.status = "TERMINATED"
    cb.on_trial_complete(0, [], a)
    log(cb, b, 1, 0.6)
    log(cb, b, 2, 0.7)
    b.status = lost.status = "TERMINATED"  # Ctrl-C: Tune stops them without completing them
    cb.on_experiment_end([a, b, lost])
    client, runs = cb.client, dict(cb.children)
    assert cb.interrupted
    assert client.get_run(cb.parent_run_id).info.status == "KILLED"
    assert client.get_run(runs["b"]).data.tags["orch.state"] == "interrupted"

    # The resumed driver: its saved state knows a (finished) and b (at epoch 1), not "lost".
    resumed = cloudpickle.loads(saved)
    resumed.resume()
    resumed.setup(total_num_samples=3)
    b, c = FakeTrial("b"), FakeTrial("c")
    resumed.on_step_begin(0, [a, b])
    resumed.on_trial_start(0, [], b)
    run_b = client.get_run(runs["b"])
    assert run_b.info.status == "RUNNING" and "orch.state" not in run_b.data.tags
    log(resumed, b, 2, 0.7)  # epoch 2 again: the saved state predates it
    log(resumed, b, 3, 0.8)
    resumed.on_trial_start(0, [], c)
    log(resumed, c, 1, 0.4)
    for trial in (b, c):
        trial.status = "TERMINATED"
        resumed.on_trial_complete(0, [], trial)
    resumed.on_experiment_end([a, b, c])
    assert not resumed.interrupted
    assert client.get_run(resumed.parent_run_id).info.status == "RUNNING"  # reports come next
    resumed.close("FINISHED")

    assert client.get_run(resumed.parent_run_id).info.status == "FINISHED"
    assert resumed.parent_run_id == cb.parent_run_id
    history = client.get_metric_history(runs["b"], "dev_weighted_f1")
    assert [(m.step, m.value) for m in history] == [(1, 0.6), (2, 0.7), (3, 0.8)]
    gone = client.get_run(runs["lost"])
    assert gone.info.lifecycle_stage == "deleted" and gone.data.tags["orch.state"] == "lost"
    alive = client.search_runs([cb.experiment_id], "tags.`orch.kind` = 'trial'")
    assert sorted(r.data.tags["orch.trial_id"] for r in alive) == ["a", "b", "c"]
    assert {r.info.status for r in alive} == {"FINISHED"}


def test_restored_parts_finds_the_saved_searcher_and_callbacks(tmp_path):
    """The one private Ray route orch takes (``resume.restored_parts``): if a Ray upgrade
    moves what ``Tuner.restore`` unpickled, this fails here instead of in a user's resume."""
    from ray import tune

    from orchestrator.optuna_pruning import PruningOptunaSearch
    from orchestrator.resume import restored_parts
    from orchestrator.tracking.callback import MlflowSearchCallback

    def trainable(config):
        tune.report({"m": config["x"]})

    searcher = PruningOptunaSearch(space=x_space, metric="m", mode="max", seed=0)
    recorder = MlflowSearchCallback("s", "m", "max", tracking_uri=f"sqlite:///{tmp_path}/m.db")
    tune.Tuner(  # writes tuner.pkl; nothing runs, Ray is not started
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=1),
        run_config=tune.RunConfig(name="s", storage_path=str(tmp_path), callbacks=[recorder]),
    )
    callbacks, restored = restored_parts(tune.Tuner.restore(str(tmp_path / "s"), trainable))
    assert isinstance(restored, PruningOptunaSearch) and restored.metric == "m"
    assert [type(c) for c in callbacks] == [MlflowSearchCallback]
    assert callbacks[0].search_name == "s" and callbacks[0] is not recorder
