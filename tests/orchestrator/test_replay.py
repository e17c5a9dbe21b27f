"""Replaying recorded curves (``orchestrator.replay``) and ``--budget`` through the real
``run_search`` on the small committed table (tests/data/tiny_curves.json, 48 configs of a
tiny model on synthetic data, 9 epochs each; built by bench/tabulate_curves.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest

from orchestrator.replay import ReplaySpace, TableError, load_table, replay, replay_trial
from orchestrator.settings import SearchSettings, SettingsError

TABLE = Path(__file__).resolve().parents[1] / "data" / "tiny_curves.json"


def test_replay_reports_exactly_the_stored_curves():
    data = json.loads(TABLE.read_text())
    assert len(data["configs"]) == 48 and data["provenance"]["runs"][0]["command"]
    for key, entry in list(data["configs"].items())[:5]:
        reports = []
        got = replay({**entry["params"], "table": str(TABLE)}, reports.append)
        assert got == key
        assert [r["epoch"] for r in reports] == list(range(1, data["epochs"] + 1))
        for name in ("dev_weighted_f1", "dev_loss", "test_weighted_f1"):
            assert [r[name] for r in reports] == entry["curves"][name]
    reports = []
    replay({**entry["params"], "table": str(TABLE), "epochs": 3}, reports.append)
    assert len(reports) == 3  # a search with fewer epochs replays a prefix


def test_snapping_is_deterministic_and_nearest():
    table = load_table(TABLE)
    # lr is log-gridded (3e-4, 2e-3, 1e-2): 9e-4 is nearer 2e-3 on a log scale (linearly,
    # 3e-4).
    config = {"lr": 9e-4, "warmup_steps": 12, "k": 2, "intra_layers": 2, "dropout": 0.2}
    point = table.snap(config)
    assert point == {"lr": 2e-3, "warmup_steps": 20, "k": 1, "intra_layers": 2, "dropout": 0.3}
    assert all(table.snap(dict(config)) == point for _ in range(3))
    # Exactly between two values (k=2 of 1, 3; warmup 10 of 0, 20): the lower, always.
    assert table.snap({**config, "warmup_steps": 10})["warmup_steps"] == 0
    # Outside the grid: its edge.
    assert table.snap({**config, "lr": 1.0, "dropout": -1})["lr"] == 1e-2
    # Every config the replay space samples lands on a grid point the table has.
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    space = ReplaySpace(TABLE)
    for _ in range(30):
        trial = study.ask()
        constants = space(trial)
        key, curves = table.curves({**trial.params, **constants})
        assert len(curves["dev_weighted_f1"]) == table.epochs == constants["epochs"]
        study.tell(trial, 0.0)
    with pytest.raises(TableError, match="tiny_curves.json: the config has no k"):
        table.snap({"lr": 1e-3, "warmup_steps": 0, "intra_layers": 1, "dropout": 0.0})


def test_a_table_that_is_not_one_is_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"grid": {}}')
    with pytest.raises(TableError, match="bad.json: not a curve table"):
        load_table(bad)


def settings(tmp_path, **values) -> SearchSettings:
    return SearchSettings(
        space=ReplaySpace(TABLE), metric="dev_weighted_f1", mode="max", max_concurrent=2,
        storage=str(tmp_path / "ray"), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        name="replayed", live=False, **values,
    )  # fmt: skip


def test_budget_not_trials_ends_the_search(ray_local, tmp_path):
    """--budget 60 (40 trials of up to 9 epochs would spend up to 360 trial-epochs):
    the search samples configs until 60 trial-epochs are spent, stops, and its MLflow
    parent is FINISHED."""
    from orchestrator.tracking.runs import KIND_TAG
    from orchestrator.tracking.store import client_for
    from orchestrator.tuner import run_search

    result = run_search(replay_trial, settings(tmp_path, budget=60, seed=3, sampler="random"))
    spent = sum(r.metrics["training_iteration"] for r in result.results)
    # Stopping takes effect at the next step of Tune's loop: at most one more epoch per
    # trial running at once (2) may arrive after the one that spent the budget.
    assert 60 <= spent <= 62
    assert 60 / 9 < len(result.results) < 40  # more configs than 60 epochs' worth of full ones
    client = client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("orch-search").experiment_id],
        filter_string=f"tags.`{KIND_TAG}` = 'search'",
    )
    assert parent.info.status == "FINISHED" and parent.data.params["budget"] == "60"
    pruned = {r.metrics["trial_id"] for r in result.results} & result.pruned
    assert pruned  # ASHA stopped some; the budget went on new configs instead


def test_budget_is_validated_by_its_option_name():
    with pytest.raises(SettingsError, match="^--budget must be >= 1, got 0"):
        SearchSettings(metric="m", budget=0)
    assert SearchSettings(metric="m", budget=5).num_samples == -1
    assert SearchSettings(metric="m", trials=7).num_samples == 7
    with pytest.raises(SettingsError, match="^--asha-tells 'maybe' is unknown"):
        SearchSettings(metric="m", asha_tells="maybe")
    assert SearchSettings(metric="m", tie_metric="none").tie_break is None
    assert not math.isnan(load_table(TABLE).best())
