"""`orch evaluate` on a tiny real search: one run per seed under the search's parent, a mean
that is the seeds' average, and a second call that trains only what is missing."""

from __future__ import annotations

import json
import statistics

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.settings import SearchSettings
from orchestrator.tracking.runs import KIND_TAG, PARENT_TAG, find_parent
from orchestrator.tracking.store import client_for
from orchestrator.tuner import run_search
from trainable.tune_trainable import train_trial

runner = CliRunner()


@pytest.fixture(scope="module")
def searched(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    settings = SearchSettings(
        dataset="synthetic",
        space="quick",
        trials=2,
        epochs=2,
        max_dialogues=24,
        max_concurrent=2,
        scheduler="none",
        storage=str(root / "ray"),
        tracking_uri=uri,
        name="tiny",
        live=False,
    )
    run_search(train_trial, settings)
    return uri


def evaluate(uri: str, *args: str) -> dict:
    done = runner.invoke(app, ["evaluate", "tiny", "--tracking-uri", uri, "--json", *args])
    assert done.exit_code == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def evaluation_runs(uri: str) -> dict[int, object]:
    client = client_for(uri)
    parent = find_parent(uri, "tiny")
    runs = client.search_runs(
        [parent.info.experiment_id],
        f"tags.`{PARENT_TAG}` = '{parent.info.run_id}' and tags.`{KIND_TAG}` = 'evaluation'",
    )
    return {int(r.data.tags["orch.seed"]): r for r in runs}


@pytest.mark.timeout(600)
def test_seeds_mean_and_resume(searched):
    uri = searched
    first = evaluate(uri, "--seeds", "2")
    rows = first["seeds"]
    assert [r["seed"] for r in rows] == [0, 1] and first["fidelity"] == "scratch"
    f1 = [r["test"]["weighted_f1"] for r in rows]
    assert first["mean"]["weighted_f1"] == pytest.approx(statistics.fmean(f1))
    assert first["std"]["weighted_f1"] == pytest.approx(statistics.stdev(f1))
    assert all(r["best_epoch"] in (1, 2) for r in rows)
    assert any(k.startswith("f1_") for k in first["mean"])  # per-class F1 too
    runs = evaluation_runs(uri)
    assert sorted(runs) == [0, 1] and {r.info.status for r in runs.values()} == {"FINISHED"}
    assert {r.data.params["seed"] for r in runs.values()} == {"0", "1"}

    # The best trial itself is unchanged by the evaluation runs beside it.
    best = json.loads(runner.invoke(app, ["best", "--tracking-uri", uri, "--json"]).stdout)
    assert best["evaluation"]["scratch"]["seeds"] == 2
    assert best["evaluation"]["scratch"]["mean"]["weighted_f1"] == pytest.approx(
        first["mean"]["weighted_f1"]
    )

    # Seed 1 was interrupted (its run KILLED): asking for 3 seeds trains 1 again and 2 anew,
    # keeps seed 0 as it was.
    client_for(uri).set_terminated(runs[1].info.run_id, "KILLED")
    second = evaluate(uri, "--seeds", "3")
    again = evaluation_runs(uri)
    assert sorted(again) == [0, 1, 2]
    assert again[0].info.run_id == runs[0].info.run_id
    assert again[1].info.run_id != runs[1].info.run_id
    assert client_for(uri).get_run(runs[1].info.run_id).info.lifecycle_stage == "deleted"
    assert second["seeds"][0] == first["seeds"][0]
    # Training is seeded: seed 1 gives the same scores again.
    assert second["seeds"][1]["test"] == pytest.approx(first["seeds"][1]["test"])

    # Nothing left to train: the same answer, no new run.
    third = evaluate(uri, "--seeds", "3")
    assert third["mean"] == pytest.approx(second["mean"])
    assert {r.info.run_id for r in evaluation_runs(uri).values()} == {
        r.info.run_id for r in again.values()
    }

    # Seeds trained with other settings are not mixed into the same mean.
    mixed = runner.invoke(app, ["evaluate", "tiny", "--tracking-uri", uri, "--seeds", "4",
                                "--encoder-lr", "1e-3"])  # fmt: skip
    assert mixed.exit_code == 2 and "encoder_lr" in mixed.stderr and "None" in mixed.stderr
    assert sorted(evaluation_runs(uri)) == [0, 1, 2]  # nothing trained, nothing deleted


def test_finetuning_a_frozen_screen_keeps_its_lr_above_a_fine_tuning_encoder_rate():
    from orchestrator.evaluation import FINETUNE_ENCODER_LR, trial_config

    screened = {"lr": "0.0005", "k": "5", "freeze_encoder": "True", "encoder": "minilm"}
    config = trial_config(screened, finetune=True)
    assert config["freeze_encoder"] is False and config["lr"] == 5e-4 and config["k"] == 5
    assert config["encoder_lr"] == FINETUNE_ENCODER_LR
    assert trial_config(screened, finetune=True, encoder_lr=1e-5)["encoder_lr"] == 1e-5
    assert "encoder_lr" not in trial_config(screened, finetune=False)  # the screen as it ran
    finetuned = {"lr": "3e-05", "freeze_encoder": "False"}
    assert "encoder_lr" not in trial_config(finetuned, finetune=True)  # one rate, as searched
