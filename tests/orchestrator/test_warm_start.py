"""--warm-start NAME and --enqueue paper|NAME (orchestrator/warm_start.py) through the real
run_search, replaying the small committed table (tests/data/tiny_curves.json) under a space
wide enough to hold the paper's recipe; bad names through the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

from orchestrator.optuna_pruning import PruningOptunaSearch
from orchestrator.replay import replay_trial
from orchestrator.settings import SearchSettings
from orchestrator.strategies import make_sampler
from orchestrator.warm_start import PAPER, fit, warm_trials

TABLE = Path(__file__).resolve().parents[1] / "data" / "tiny_curves.json"


class Space:
    """The table's dimensions over ranges that hold the paper's values (the replay snaps
    each to its grid), plus inter_layers (not in the table: a dimension it ignores)."""

    def __init__(self, dropout_high: float = 0.3):
        self.dropout_high = dropout_high
        self.__name__ = f"wide(dropout<={dropout_high})"

    def __call__(self, trial) -> dict:
        trial.suggest_float("lr", 1e-6, 1e-2, log=True)
        trial.suggest_int("warmup_steps", 0, 2000)
        trial.suggest_int("k", 1, 16)
        trial.suggest_int("intra_layers", 1, 6)
        trial.suggest_int("inter_layers", 1, 4)
        trial.suggest_float("dropout", 0.0, self.dropout_high)
        return {"table": str(TABLE), "epochs": 3}


def settings(tmp_path, name, **values) -> SearchSettings:
    return SearchSettings(
        metric="dev_weighted_f1", mode="max", max_concurrent=1, storage=str(tmp_path / "ray"),
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", name=name, live=False,
        scheduler="none", **values,
    )  # fmt: skip


def parent_params(tmp_path, name) -> dict:
    from orchestrator.tracking.runs import find_parent

    return find_parent(f"sqlite:///{tmp_path / 'mlflow.db'}", name).data.params


def test_a_warm_started_tpe_search_models_from_its_first_trial(
    ray_local, tmp_path, monkeypatch, capsys
):
    from orchestrator.tuner import run_search

    run_search(replay_trial, settings(tmp_path, "earlier", space=Space(), trials=20, seed=1))
    # Narrower now: the earlier configs with dropout > 0.25 no longer fit and are skipped.
    narrow = settings(tmp_path, "later", space=Space(0.25), trials=2, seed=2, sampler="tpe",
                      warm_start="earlier")  # fmt: skip
    told, skipped = warm_trials(narrow, narrow.build_space())
    assert len(told) + skipped == 20 and skipped >= 1 and len(told) >= 10
    assert all(t.state == TrialState.COMPLETE and len(t.intermediate_values) == 3 for t in told)

    # TPE falls back to its random sampler for its first 10 (--startup-trials) trials: not
    # one random draw once the earlier search's trials are told.
    random_draws = []
    original = optuna.samplers.RandomSampler.sample_independent

    def counted(self, study, trial, name, distribution):
        if isinstance(study.sampler, optuna.samplers.TPESampler):  # not a space's probe draw
            random_draws.append(name)
        return original(self, study, trial, name, distribution)

    monkeypatch.setattr(optuna.samplers.RandomSampler, "sample_independent", counted)
    capsys.readouterr()
    result = run_search(replay_trial, narrow)
    assert random_draws == []
    warm = [t for t in result.study.trials if t.user_attrs.get("warm_start") == "earlier"]
    assert len(warm) == len(told) and result.study.trials[len(told)].number == len(told)
    err = capsys.readouterr().err
    assert f"--warm-start earlier: {len(told)} finished trials told to the sampler, " in err
    params = parent_params(tmp_path, "later")
    assert params["warm_start"] == "earlier" and params["warm_start_told"] == str(len(told))
    assert params["warm_start_skipped"] == str(skipped)

    # The control: without the warm start the same search's first trial is a random draw.
    cold = PruningOptunaSearch(space=Space(0.25), metric="dev_weighted_f1", mode="max",
                               sampler=make_sampler("tpe", 2, 10))  # fmt: skip
    cold.suggest("t0")
    assert random_draws  # lr, warmup_steps, ... each drawn at random


def test_enqueue_paper_makes_the_recipe_trial_0_and_enqueue_name_its_best(ray_local, tmp_path):
    from orchestrator.best import best_trial, typed
    from orchestrator.tuner import run_search

    first = run_search(
        replay_trial, settings(tmp_path, "first", space=Space(), trials=3, enqueue="paper")
    )
    assert first.study.trials[0].params == PAPER  # every dimension of the recipe in range
    assert parent_params(tmp_path, "first")["enqueue"] == "paper"

    best = best_trial(f"sqlite:///{tmp_path / 'mlflow.db'}", name="first")
    rerun = run_search(
        replay_trial, settings(tmp_path, "rerun", space=Space(), trials=1, enqueue="first")
    )
    assert rerun.study.trials[0].params == {k: typed(best.params[k]) for k in PAPER}


def test_fit_skips_configs_that_no_longer_fit():
    space = Space(0.25)
    inside = {"lr": 1e-4, "warmup_steps": 3, "k": 2, "intra_layers": 1, "inter_layers": 1,
              "dropout": 0.2, "cache_dir": "/x"}  # fmt: skip
    params, distributions = fit(space, inside)
    assert params == {k: v for k, v in inside.items() if k != "cache_dir"}
    assert set(distributions) == set(params)
    assert fit(space, {**inside, "dropout": 0.3}) is None  # out of range now
    assert fit(space, {k: v for k, v in inside.items() if k != "k"}) is None  # lacks k


def orch(*args, cwd):
    env = {**os.environ, "RAY_AIR_NEW_OUTPUT": "0"}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_bad_names_are_one_error_line_naming_the_option(tmp_path):
    base = ["search", "--dataset", "synthetic", "--quick", "--trials", "1"]
    for option, value, expected in (
        ("--warm-start", "nosuch", "error: --warm-start nosuch: no search named 'nosuch'"),
        ("--enqueue", "nosuch", "error: --enqueue nosuch: no search named 'nosuch'"),
        ("--sampler", "nosuch", "error: --sampler 'nosuch' is unknown; expected one of"),
    ):
        done = orch(*base, option, value, cwd=tmp_path)
        assert done.returncode == 2, done.stderr[-2000:]
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(expected), done.stderr[-2000:]
    assert "bohb" in orch(*base, "--sampler", "nosuch", cwd=tmp_path).stderr
