"""Faults inside a search, injected for real on a local Ray (2 CPUs):

- a trial's worker process is SIGKILLed in the middle of its second epoch: Ray retries it from
  its epoch-1 checkpoint, it finishes all epochs, and its MLflow run continues (one run);
- a trial's config cannot fit in memory (a 5 TB weight matrix: torch's allocator refuses
  it): the trial fails with the reason and the config, is not trained again on retry, and
  the search goes on; ``orch best`` counts it and says why;
- checkpoints on disk stay at ``num_to_keep`` per trial;
- eight trials at once, each reporting ~30 metrics per epoch, on the default sqlite store:
  no "database is locked", every history complete.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from orchestrator.best import best_trial, failure_summary
from orchestrator.settings import SearchSettings
from orchestrator.tracking.runs import failure_reason
from orchestrator.tuner import run_search
from tests.orchestrator.faults import (
    HUGE_FFN,
    fault_space,
    faulty_train_trial,
    sleepy_space,
    sleepy_trial,
)

METRIC = "dev_weighted_f1"
POINTS = [
    {"lr": 2e-3, "ffn_size": 128, "fault": "kill-mid-epoch"},
    {"lr": 2e-3, "ffn_size": HUGE_FFN, "fault": "none"},
    {"lr": 3e-3, "ffn_size": 128, "fault": "none"},
]


def children(client, name: str) -> list:
    experiment = client.get_experiment_by_name("orch-search")
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.`orch.search` = '{name}'", max_results=100
    )
    return [r for r in runs if r.data.tags.get("orch.kind") == "trial"]


def result_rows(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]


@pytest.fixture(scope="module")
def faulty(ray_local, tmp_path_factory):
    from mlflow.tracking import MlflowClient

    from trainable.features import default_cache_dir

    root = tmp_path_factory.mktemp("faults")
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    settings = SearchSettings(
        space=fault_space,
        metric=METRIC,
        mode="max",
        trials=len(POINTS),
        sampler="random",
        seed=0,
        scheduler="none",
        max_concurrent=2,
        storage=str(root / "ray"),
        name="faults",
        dataset="synthetic",
        tracking_uri=uri,
        max_failures=2,
        keep_checkpoints=2,
        constants={
            "max_dialogues": 60,
            "cache_dir": str(default_cache_dir()),
            "fault_dir": str(root),
        },
        points_to_evaluate=POINTS,
        reuse_actors=True,
        command_line="orch search (fault injection)",
    )
    result = run_search(faulty_train_trial, settings, console=Console(file=io.StringIO()))
    client = MlflowClient(uri)
    runs = {
        r.data.params["fault"] + "/" + r.data.params["ffn_size"]: r
        for r in children(client, "faults")
    }
    return {
        "root": root,
        "uri": uri,
        "client": client,
        "result": result,
        "runs": runs,
    }


@pytest.mark.timeout(180)
def test_killed_worker_resumes_from_its_checkpoint(faulty):
    root, client = faulty["root"], faulty["client"]
    run = faulty["runs"]["kill-mid-epoch/128"]
    trial_id = run.data.tags["orch.trial_id"]
    killed = json.loads((root / f"killed-{trial_id}").read_text())
    assert killed["epoch"] == 2  # the worker really died, in its second epoch
    assert run.info.status == "FINISHED" and run.data.tags["orch.state"] == "completed"
    assert run.data.tags["orch.restarts"] == "1"
    assert (
        len([c for c in children(client, "faults") if c.data.tags["orch.trial_id"] == trial_id])
        == 1
    )
    history = client.get_metric_history(run.info.run_id, METRIC)
    assert sorted(m.step for m in history) == [1, 2, 3]  # each epoch once
    # Ray's own log of the trial: epoch 1 by the first process, then 2 and 3 by the retry,
    # which restored epoch 1's checkpoint (iterations since restore restart at 1).
    rows = result_rows(root / "ray" / "faults" / trial_id)
    assert [r["training_iteration"] for r in rows] == [1, 2, 3]
    assert [r["iterations_since_restore"] for r in rows] == [1, 1, 2]
    assert rows[0]["pid"] == killed["pid"] and rows[1]["pid"] != killed["pid"]


@pytest.mark.timeout(180)
def test_out_of_memory_fails_the_trial_with_reason_and_config(faulty):
    root, client, result = faulty["root"], faulty["client"], faulty["result"]
    run = faulty["runs"][f"none/{HUGE_FFN}"]
    assert run.info.status == "FAILED" and run.data.tags["orch.state"] == "failed"
    reason = run.data.tags["orch.failure"]
    assert reason.startswith("out of memory (CPU: DefaultCPUAllocator: can't allocate memory")
    assert f"ffn_size={HUGE_FFN}" in reason and "lr=0.002" in reason
    assert "TrialOutOfMemory" in run.data.tags["orch.error"]
    # Retried as asked (max_failures=2), but each retry failed at once on the marker.
    trial_dir = root / "ray" / "faults" / run.data.tags["orch.trial_id"]
    assert (trial_dir / "out_of_memory.txt").read_text().startswith("out of memory")
    assert run.data.tags["orch.restarts"] == "2"
    # The search went on: the two other trials completed.
    states = sorted(c.data.tags["orch.state"] for c in children(client, "faults"))
    assert states == ["completed", "completed", "failed"]
    assert sorted(t.state.name for t in result.study.trials) == ["COMPLETE", "COMPLETE", "FAIL"]


@pytest.mark.timeout(180)
def test_orch_best_counts_failed_trials_and_why(faulty):
    best = best_trial(faulty["uri"], name="faults", command=False)
    assert [f["reason"][:13] for f in best.failed] == ["out of memory"]
    assert failure_summary(best.failed) == "1 trial failed: out of memory (1)"
    assert json.loads(json.dumps(best.to_dict()))["failed"][0]["trial_id"]

    from orchestrator.cli import app

    shown = CliRunner().invoke(app, ["best", "--name", "faults", "--tracking-uri", faulty["uri"]])
    assert shown.exit_code == 0, shown.output
    assert "1 trial failed: out of memory (1)" in shown.stdout
    assert f"ffn_size={HUGE_FFN}" in shown.stdout


@pytest.mark.timeout(180)
def test_checkpoints_on_disk_stay_bounded(faulty):
    folder = Path(faulty["root"]) / "ray" / "faults"
    kept = {
        trial.name: len(list(trial.glob("checkpoint_*")))
        for trial in folder.iterdir()
        if trial.is_dir()
    }
    assert len(kept) == len(POINTS)
    # 3 epochs reported, 2 kept; OOM: none; the best trial's best moved to its MLflow run
    # (stored once, issue 18), so it keeps 1 in Ray's storage.
    assert sorted(kept.values()) == [0, 1, 2], kept


@pytest.mark.timeout(120)
def test_eight_concurrent_trials_on_sqlite(ray_local, tmp_path, capfd, caplog):
    from mlflow.tracking import MlflowClient

    caplog.set_level(logging.WARNING)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"  # the default store's kind
    starts = tmp_path / "starts"
    starts.mkdir()
    settings = SearchSettings(
        space=sleepy_space,
        metric=METRIC,
        mode="max",
        trials=8,
        sampler="random",
        scheduler="none",
        max_concurrent=8,
        cpus_per_trial=0.25,  # 8 trials on the 2 CPUs of the test Ray
        storage=str(tmp_path / "ray"),
        name="eight",
        tracking_uri=uri,
        constants={"starts": str(starts), "together": 8},
        reuse_actors=True,
        keep_checkpoints=2,
    )
    result = run_search(sleepy_trial, settings, console=Console(file=io.StringIO()))
    assert len(result.results) == 8 and not any(r.error for r in result.results)
    # All eight ran at once: each waited for the eight to start before its first report.
    assert len(list(starts.iterdir())) == 8
    client = MlflowClient(uri)
    runs = children(client, "eight")
    assert len(runs) == 8
    for run in runs:
        assert run.info.status == "FINISHED"
        for key in ("dev_m0", "dev_m29", METRIC):
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
            assert steps == [1, 2, 3, 4], (run.info.run_name, key)
    # The latest checkpoint (last epoch, the worst) is gone once the search is over; the
    # search's best checkpoint moved to its MLflow run (stored once), from one trial only.
    kept = [
        sorted(c.name for c in trial.glob("checkpoint_*"))
        for trial in (tmp_path / "ray" / "eight").iterdir()
        if trial.is_dir()
    ]
    both = ["checkpoint_000001", "checkpoint_000002"]
    assert sum(k == both for k in kept) == 7, kept
    assert all(set(k) < set(both) for k in kept if k != both), kept
    out, err = capfd.readouterr()
    text = out + err + caplog.text
    assert "database is locked" not in text.lower()


def test_failure_reason_lines():
    traceback = (
        "Failure # 1 (occurred at 2026-11-24_17-26-54)\n"
        "\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=1, ip=127.0.0.1)\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 5, in f\n'
        "    raise TrialOutOfMemory(...)\n"
        "trainable.tune_trainable.TrialOutOfMemory: out of memory (CUDA: Tried to allocate "
        "2.00 GiB) with config k=14\n"
    )
    assert failure_reason(traceback) == (
        "out of memory (CUDA: Tried to allocate 2.00 GiB) with config k=14"
    )
    assert failure_reason('  File "x"\nValueError: bad value\n') == "ValueError: bad value"
    died = "The actor died unexpectedly before finishing this task.\n\tclass_name: ImplicitFunc"
    assert failure_reason(died) == "The actor died unexpectedly before finishing this task."
    ray_oom = (
        "ray.exceptions.OutOfMemoryError: Task was killed due to the node running low on memory."
    )
    assert failure_reason(ray_oom).startswith("out of memory (Ray's memory monitor")
    failed = [
        {"trial_id": "a", "reason": "out of memory (CPU: x) with config k=1"},
        {"trial_id": "b", "reason": "out of memory (CUDA: y) with config k=2"},
        {"trial_id": "c", "reason": "ValueError: bad value"},
    ]
    assert (
        failure_summary(failed) == "3 trials failed: out of memory (2), ValueError: bad value (1)"
    )
    assert failure_summary([]) == ""


def test_out_of_memory_is_recognised():
    import torch

    from trainable.tune_trainable import out_of_memory

    with pytest.raises(RuntimeError) as cpu:
        torch.empty(10**12)
    assert out_of_memory(cpu.value).startswith("CPU: DefaultCPUAllocator: can't allocate memory")
    assert out_of_memory(MemoryError()) == "CPU: MemoryError"
    assert out_of_memory(torch.OutOfMemoryError("CUDA out of memory.")).startswith("CUDA:")
    assert out_of_memory(RuntimeError("shape mismatch")) is None
    assert out_of_memory(ValueError("out of memory")) is None
