"""What a search keeps on disk (issue 18): optimizer state only where a trial may resume, a
disk budget that evicts the worst ended trials first, the best checkpoint stored once, the
estimate before a search starts, and a full disk failing one trial cleanly.

The budget search uses a toy trainable writing ``model.pt`` / ``trainer.pt`` of known sizes
(random bytes, so copies are told apart by hash); the disk-full search runs the real
``train_trial`` (tiny encoder, synthetic data) with its storage on a tmpfs of a few MB.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from ray.tune import Callback
from rich.console import Console
from typer.testing import CliRunner

from orchestrator.settings import SearchSettings
from orchestrator.tracking.runs import EVICTED_TAG, FAILURE_TAG, STATE_TAG
from orchestrator.tuner import run_search

METRIC = "dev_weighted_f1"
WEIGHTS, RESUME = 40_000, 80_000  # bytes of the toy model.pt and trainer.pt
XS = [0.9, 0.8, 0.7, 0.3, 0.2, 0.1]  # trial quality, best first; enqueued in this order


def toy_space(trial):
    trial.suggest_float("x", 0.0, 1.0)
    return {"epochs": 3}


def toy_trainable(config):
    """Metric rises per epoch towards x; every epoch a checkpoint with both files."""
    from ray import tune

    for epoch in range(1, config["epochs"] + 1):
        time.sleep(0.1)
        value = config["x"] * (1 - 0.5**epoch)
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "model.pt").write_bytes(os.urandom(WEIGHTS))
            (Path(folder) / "trainer.pt").write_bytes(os.urandom(RESUME))
            (Path(folder) / "state.json").write_text(json.dumps({"epoch": epoch}))
            tune.report(
                {METRIC: value, "dev_loss": 1 - value, "epoch": epoch},
                checkpoint=tune.Checkpoint.from_directory(folder),
            )


class RunningLatestKept(Callback):
    """After every driver step (the janitor's run first), each running trial's latest
    checkpoint must still be on disk, whole."""

    def __init__(self):
        self.checked, self.missing = 0, []

    def on_step_end(self, iteration, trials, **info):
        for trial in trials:
            latest = trial.run_metadata.checkpoint_manager.latest_checkpoint_result
            if trial.status == "RUNNING" and latest is not None:
                self.checked += 1
                if not (Path(latest.checkpoint.path) / "trainer.pt").is_file():
                    self.missing.append(latest.checkpoint.path)


def files_by_hash(root: Path, name: str) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for path in root.rglob(name):
        found.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), []).append(path)
    return found


@pytest.fixture(scope="module")
def budgeted(ray_local, tmp_path_factory):
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("budget")
    mlruns = root / "mlruns"
    uri = f"sqlite:///{mlruns / 'mlflow.db'}"
    watcher = RunningLatestKept()
    # Room for the 3 protected bests and 2 running trials' latest, not for every trial.
    budget_gb = (3 * WEIGHTS + 2 * (WEIGHTS + RESUME) + 20_000) / 1e9
    settings = SearchSettings(
        space=toy_space,
        metric=METRIC,
        mode="max",
        trials=len(XS),
        scheduler="none",
        # One at a time, in the enqueued order: which trials have ended when the budget is
        # crossed is then the same on any machine (two at once, a loaded box reordered them).
        max_concurrent=1,
        storage=str(mlruns / "ray"),
        name="budget",
        tracking_uri=uri,
        keep_checkpoints=2,
        max_checkpoint_gb=budget_gb,
        points_to_evaluate=[{"x": x} for x in XS],
        command_line="orch search (disk budget)",
    )
    result = run_search(
        toy_trainable, settings, console=Console(file=io.StringIO()), callbacks=[watcher]
    )
    client = MlflowClient(uri)
    runs = {
        float(r.data.params["x"]): r
        for r in client.search_runs(
            [client.get_experiment_by_name("orch-search").experiment_id], max_results=50
        )
        if r.data.tags.get("orch.kind") == "trial"
    }
    return {"root": root, "mlruns": mlruns, "client": client, "result": result, "uri": uri,
            "runs": runs, "watcher": watcher, "budget": budget_gb * 1e9}  # fmt: skip


@pytest.mark.timeout(240)
def test_ended_trials_keep_no_optimizer_state(budgeted):
    ray_dir = budgeted["mlruns"] / "ray" / "budget"
    assert list(ray_dir.rglob("model.pt")), "no checkpoint kept at all"
    assert list(ray_dir.rglob("trainer.pt")) == []
    # ... but while trials ran, their latest kept it (the one a retry resumes from).
    assert budgeted["watcher"].checked > 0 and budgeted["watcher"].missing == []


@pytest.mark.timeout(240)
def test_budget_evicts_the_worst_ended_trials_first(budgeted):
    runs, ray_dir = budgeted["runs"], budgeted["mlruns"] / "ray" / "budget"
    evicted = {x for x, r in runs.items() if EVICTED_TAG in r.data.tags}
    assert evicted, "the budget never evicted anything"
    for x in evicted:
        assert "over --max-checkpoint-gb" in runs[x].data.tags[EVICTED_TAG]

    def states(x):  # epochs of the trial's checkpoints still in Ray's storage
        trial = ray_dir / runs[x].data.tags["orch.trial_id"]
        return sorted(
            json.loads(p.read_text())["epoch"] for p in trial.glob("checkpoint_*/state.json")
        )

    # The first bad trial to end went whole before any good trial lost a checkpoint.
    assert states(0.3) == [] and 0.3 in evicted
    # The best three trials keep their best (epoch 3; the best's moved to MLflow).
    assert 3 in states(0.8) and 3 in states(0.7)
    kept = sum(p.stat().st_size for p in ray_dir.rglob("checkpoint_*/*") if p.is_file())
    assert kept <= budgeted["budget"]


@pytest.mark.timeout(240)
def test_best_checkpoint_is_stored_once(budgeted):
    client, runs = budgeted["client"], budgeted["runs"]
    best = runs[0.9]
    copies = files_by_hash(budgeted["mlruns"], "model.pt")
    assert all(len(paths) == 1 for paths in copies.values()), copies
    parent = client.get_run(best.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["orch.best_run_id"] == best.info.run_id
    where = parent.data.tags["orch.best_checkpoint"]
    assert where == f"{best.info.artifact_uri}/best_checkpoint"
    assert client.list_artifacts(parent.info.run_id, "best_checkpoint") == []
    folder = client.download_artifacts(best.info.run_id, "best_checkpoint")
    assert sorted(p.name for p in Path(folder).iterdir()) == ["model.pt", "state.json"]
    assert json.loads((Path(folder) / "state.json").read_text()) == {"epoch": 3}

    from orchestrator.best import best_trial

    assert best_trial(budgeted["uri"], command=False).checkpoint == where


# -- the estimate and the options ------------------------------------------------------------


def test_estimate_of_the_paper_model_and_refusals(tmp_path):
    from orchestrator.disk import estimate_checkpoint_disk
    from search_spaces import bounded

    settings = SearchSettings(dataset="meld", space="paper", storage=str(tmp_path), trials=40)
    settings.modalities = ("u", "a", "v")
    space = bounded("paper", 11.0, modalities=settings.modalities)
    found = estimate_checkpoint_disk(settings, space, concurrent=1)
    # BERT-base with the paper's layers: the README's 238 M parameters (IEMOCAP-shaped).
    assert 2.2e8 < found.parameters < 2.6e8
    width = 4 if found.precision == "fp32" else 2
    assert found.weights_bytes == pytest.approx(found.stored_parameters * width, rel=0.01)
    assert found.total_bytes > 40 * found.weights_bytes
    assert any("checkpoints: up to" in line for line in found.lines())
    small = SearchSettings(
        dataset="meld", space="paper", storage=str(tmp_path), max_checkpoint_gb=1.0
    )
    small.modalities = settings.modalities
    problem = estimate_checkpoint_disk(small, space, concurrent=1).problem()
    assert problem.startswith("--max-checkpoint-gb 1 cannot hold")


@pytest.mark.parametrize("value", ["-1", "0", "nan"])
def test_bad_budget_is_a_usage_error(tmp_path, value):
    from orchestrator.cli import app

    done = CliRunner().invoke(
        app,
        ["search", "--dataset", "synthetic", "--quick", "--max-checkpoint-gb", value,
         "--storage", str(tmp_path / "ray"), "--dry-run"],
    )  # fmt: skip
    assert done.exit_code == 2, done.output
    assert "error: --max-checkpoint-gb must be > 0" in done.output
    assert not (tmp_path / "ray").exists()


def test_search_too_big_for_its_budget_is_refused(tmp_path):
    from orchestrator.cli import app

    done = CliRunner().invoke(
        app,
        ["search", "--dataset", "synthetic", "--quick", "--max-checkpoint-gb", "0.001",
         "--storage", str(tmp_path / "ray"), "--tracking-uri",
         f"sqlite:///{tmp_path / 'mlflow.db'}", "--dry-run"],
    )  # fmt: skip
    assert done.exit_code == 2, done.output
    assert "error: --max-checkpoint-gb 0.001 cannot hold" in done.output
    assert not (tmp_path / "ray").exists() and not (tmp_path / "mlflow.db").exists()


# -- a full disk ----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 96 MB tmpfs (a loop-mounted ext4 image where tmpfs is refused); skipped, saying
    why, where this process may not mount."""
    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def full_disk_space(trial) -> dict:
    """Tiny models whose checkpoint size depends on one knob: ``ffn_size``."""
    trial.suggest_categorical("ffn_size", [128, 4096])
    return {
        "encoder": "tiny", "hidden_size": 64, "intra_heads": 2, "inter_heads": 2,
        "intra_layers": 1, "inter_layers": 1, "k": 2, "max_length": 64, "epochs": 3,
        "batch_size": 8, "warmup_steps": 2, "lr": 2e-3,
    }  # fmt: skip


@pytest.mark.timeout(300)
def test_full_disk_fails_the_trial_cleanly_and_resume_continues_it(ray_local, small_disk, tmp_path):
    """Trial A (small) ends; trial B's (4096-wide feed-forward: ~29 MB a checkpoint with its
    optimizer state) first checkpoint fits and its second does not. B fails with the reason,
    no half-written folder stays, the search ends; a ballast file is deleted and --resume
    continues B from its epoch-1 checkpoint to the end."""
    from mlflow.tracking import MlflowClient

    from orchestrator.tracking.runs import search_disk_full
    from trainable.features import default_cache_dir
    from trainable.tune_trainable import train_trial

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * 50_000_000)  # leaves ~46 MB: 1.5 of B's checkpoints
    common = dict(
        space=full_disk_space, metric=METRIC, mode="max", trials=2, sampler="random",
        scheduler="none", max_concurrent=1, storage=str(small_disk / "ray"), name="full",
        dataset="synthetic", tracking_uri=uri, max_failures=0, keep_checkpoints=1,
        max_checkpoint_gb=1.0,
        constants={"max_dialogues": 60, "cache_dir": str(default_cache_dir())},
        command_line="orch search (full disk)",
    )  # fmt: skip
    points = [{"ffn_size": 128}, {"ffn_size": 4096}]
    run_search(
        train_trial,
        SearchSettings(**common, points_to_evaluate=points),
        console=Console(file=io.StringIO()),
    )
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("orch-search").experiment_id
    runs = {
        r.data.params["ffn_size"]: r
        for r in client.search_runs([experiment], "tags.`orch.kind` = 'trial'")
    }
    small, big = runs["128"], runs["4096"]
    assert small.data.tags[STATE_TAG] == "completed"  # the search went on
    assert big.data.tags[STATE_TAG] == "failed" and big.info.status == "FAILED"
    assert big.data.tags[FAILURE_TAG].startswith("disk full: the checkpoint of epoch 2")
    trial_dir = small_disk / "ray" / "full" / big.data.tags["orch.trial_id"]
    assert sorted(p.name for p in trial_dir.glob("checkpoint_*")) == ["checkpoint_000000"]
    assert (trial_dir / "checkpoint_000000" / "trainer.pt").is_file()  # it may resume
    assert not list((small_disk / "ray").rglob(".*.tmp-*"))
    parent = client.get_run(big.data.tags["mlflow.parentRunId"])
    assert search_disk_full(uri, parent) == [big.data.tags["orch.trial_id"]]

    ballast.unlink()  # space freed
    run_search(
        train_trial,
        SearchSettings(**common, resume=True, resume_failed=True),
        console=Console(file=io.StringIO()),
    )
    big = client.get_run(big.info.run_id)
    assert big.data.tags[STATE_TAG] == "completed" and big.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(big.info.run_id, METRIC))
    assert steps == [1, 2, 3]  # epoch 1 from before, 2 and 3 after the resume
    assert not list((small_disk / "ray").rglob("trainer.pt"))
