"""``--keep-checkpoints N`` kept by orch's janitor rather than Tune's ``num_to_keep`` (issue 18,
scale): each trial ends with its N best checkpoints; Tune no longer writes a full experiment
snapshot at every checkpoint; and a dropped checkpoint's folder outlives every snapshot that
names it, so a driver that dies between two snapshots resumes from folders that exist.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from ray.tune import Callback
from rich.console import Console

from orchestrator.settings import SearchSettings
from orchestrator.tuner import run_search
from tests.orchestrator.test_checkpoint_disk import METRIC, toy_space, toy_trainable

XS = [0.9, 0.5, 0.2]


def checkpoint_paths(trials) -> set[str]:
    """Every checkpoint folder Tune's bookkeeping names right now."""
    named = set()
    for trial in trials:
        manager = trial.run_metadata.checkpoint_manager
        results = [*manager.best_checkpoint_results, manager.latest_checkpoint_result]
        named.update(r.checkpoint.path for r in results if r is not None)
    return named


def resumed_from(trials) -> set[str]:
    """The checkpoints a driver restarted now would resume from: each unended trial's latest."""
    latest = (t.run_metadata.checkpoint_manager.latest_checkpoint_result for t in trials
              if t.status != "TERMINATED")  # fmt: skip
    return {r.checkpoint.path for r in latest if r is not None}


class SnapshotWatcher(Callback):
    """Tune asks callbacks for their state while it writes an experiment snapshot: note what
    the snapshot names then, and after every step check that all of it is still on disk, and
    that the checkpoints it resumes from still hold their optimizer state (``trainer.pt``).
    The latter is checked again as the next snapshot is written: a strip done the moment a
    checkpoint is superseded would be seen there, before that snapshot forgets it."""

    def __init__(self):
        self.snapshots, self.checkpoints, self.checked = 0, 0, 0
        self.trials, self.named, self.missing = [], set(), []
        self.resumable, self.stripped = set(), []

    def check_resumable(self):
        for path in self.resumable:
            self.checked += 1
            if not (Path(path) / "trainer.pt").is_file():
                self.stripped.append(path)

    def setup(self, **info):
        self.snapshots = 0

    def on_trial_start(self, iteration, trials, trial, **info):
        self.trials = trials

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self.checkpoints += 1

    def get_state(self):
        self.check_resumable()
        self.snapshots += 1
        self.named = checkpoint_paths(self.trials)
        self.resumable = resumed_from(self.trials)
        return {"snapshots": self.snapshots}

    def on_step_end(self, iteration, trials, **info):
        self.trials = trials
        for path in self.named:
            self.checked += 1
            if not Path(path).is_dir():
                self.missing.append(path)
        self.check_resumable()


def search(tmp_path: Path, keep: int, watcher: Callback) -> Path:
    settings = SearchSettings(
        space=toy_space,
        metric=METRIC,
        mode="max",
        trials=len(XS),
        scheduler="none",
        max_concurrent=1,
        storage=str(tmp_path / "ray"),
        name="keep",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        keep_checkpoints=keep,
        points_to_evaluate=[{"x": x} for x in XS],
        command_line="orch search (keep)",
    )
    run_search(toy_trainable, settings, console=Console(file=io.StringIO()), callbacks=[watcher])
    return tmp_path / "ray" / "keep"


def epochs_kept(experiment: Path) -> list[list[int]]:
    """Per trial folder (sorted), the epochs of its checkpoints still on disk."""
    import json

    return [
        sorted(json.loads(p.read_text())["epoch"] for p in trial.glob("checkpoint_*/state.json"))
        for trial in sorted(t for t in experiment.iterdir() if t.is_dir())
    ]


@pytest.mark.timeout(240)
def test_each_trial_keeps_its_best_two_and_snapshots_are_not_forced(ray_local, tmp_path):
    watcher = SnapshotWatcher()
    experiment = search(tmp_path, keep=2, watcher=watcher)
    kept = epochs_kept(experiment)
    # Each trial's metric rises per epoch: its best two are epochs 2 and 3. The search's
    # best trial has its best checkpoint moved into MLflow (stored once), so it shows one.
    assert sorted(kept) == [[2], [2, 3], [2, 3]], kept
    # 9 checkpoints. Tune's num_to_keep=2 forced a snapshot after every second one of a
    # trial (5 in all, seen); now: the first, the last, and one per >= 10 s between.
    assert watcher.checkpoints == 9
    assert watcher.snapshots <= 3, watcher.snapshots


@pytest.mark.timeout(240)
def test_no_snapshot_names_a_deleted_checkpoint(ray_local, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "0")  # a snapshot at every driver step
    watcher = SnapshotWatcher()
    experiment = search(tmp_path, keep=1, watcher=watcher)
    assert watcher.snapshots > 9 and watcher.checked > 0
    assert watcher.missing == []
    assert watcher.stripped == []
    # ... and what was dropped did go: one checkpoint per trial (the best's moved to MLflow).
    assert sorted(epochs_kept(experiment)) == [[], [3], [3]]


def test_a_restored_janitor_strips_what_no_trial_resumes_from(tmp_path):
    """Strips queued when the driver died are not in the snapshot: once restored, the janitor
    strips every checkpoint but an unended trial's latest, after the next snapshot."""
    from types import SimpleNamespace

    from ray.tune import Checkpoint

    from orchestrator.checkpoints import CheckpointJanitor

    def result(name: str):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.pt").write_bytes(b"w")
        (folder / "trainer.pt").write_bytes(b"adam")
        return SimpleNamespace(checkpoint=Checkpoint.from_directory(str(folder)), metrics={})

    class Trial:  # the fields of a Tune trial the janitor reads; hashable, as Tune's are
        def __init__(self, status, *results):
            self.status, self.storage = status, None
            manager = SimpleNamespace(_checkpoint_results=list(results),
                                      latest_checkpoint_result=results[-1])  # fmt: skip
            self.run_metadata = SimpleNamespace(checkpoint_manager=manager)

    trials = [Trial("PENDING", result("a1"), result("a2")), Trial("TERMINATED", result("b1")),
              Trial("ERROR", result("c1"), result("c2"))]  # fmt: skip
    janitor = CheckpointJanitor(METRIC, "max", budget_bytes=None)
    janitor.set_state({"evicted": {}, "doomed": []})

    def whole() -> list[str]:
        return sorted(p.parent.name for p in tmp_path.glob("*/trainer.pt"))

    janitor.on_step_end(0, trials)
    assert whole() == ["a1", "a2", "b1", "c1", "c2"]  # the restored snapshot may name them
    janitor.get_state()
    janitor.on_step_end(1, trials)
    assert whole() == ["a2", "c2"]
    weights = sorted(p.parent.name for p in tmp_path.glob("*/model.pt"))
    assert weights == ["a1", "a2", "b1", "c1", "c2"]
