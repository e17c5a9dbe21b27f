"""PRUNED for ASHA's early stops, COMPLETE otherwise: the searcher and scheduler without Ray's
controller (the end-to-end check is in test_search.py)."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler

from orchestrator.optuna_pruning import PruningASHA, PruningOptunaSearch
from orchestrator.strategies import SAMPLERS, SCHEDULERS, make_sampler


def space(trial):
    trial.suggest_float("x", 0.0, 1.0)
    return {"epochs": 3}


def searcher():
    return PruningOptunaSearch(
        space=space, metric="m", mode="max", sampler=make_sampler("random", 0)
    )


def result(value, step):
    return {"m": value, "training_iteration": step}


def test_pruned_trial_keeps_intermediate_values_including_the_stopping_one():
    s = searcher()
    config = s.suggest("t1")
    assert set(config) == {"x", "epochs"}
    s.on_trial_result("t1", result(0.3, 1))
    s.mark_pruned("t1")
    # Ray does not pass the result that triggered STOP to on_trial_result.
    s.on_trial_complete("t1", result=result(0.2, 2))
    (trial,) = s.study.trials
    assert trial.state == TrialState.PRUNED
    assert trial.intermediate_values == {1: 0.3, 2: 0.2}
    assert trial.value == 0.2


def test_unmarked_trial_is_complete_and_failed_trial_fails():
    s = searcher()
    s.suggest("a")
    s.suggest("b")
    for step in (1, 2):
        s.on_trial_result("a", result(0.1 * step, step))
    s.on_trial_complete("a", result=result(0.9, 3))  # STOP at max_t: its last value too
    s.on_trial_complete("b", error=True)
    a, b = s.study.trials
    assert a.state == TrialState.COMPLETE and a.value == 0.9
    assert a.intermediate_values == {1: 0.1, 2: 0.2, 3: 0.9}
    assert b.state == TrialState.FAIL
    s.on_trial_complete("a", result=result(0.5, 4))  # a second completion is ignored
    assert s.study.trials[0].value == 0.9


def test_searcher_pickles_with_its_record():
    s = searcher()
    s.suggest("t1")
    s.mark_pruned("t1")
    restored = pickle.loads(pickle.dumps(s.__dict__))
    assert restored["pruned_trials"] == {"t1"}


def fake_trial(trial_id):
    return SimpleNamespace(trial_id=trial_id)


def test_asha_reports_early_stops_only():
    pruned = []
    asha = PruningASHA(
        metric="m",
        mode="max",
        max_t=4,
        grace_period=1,
        reduction_factor=2,
        on_prune=pruned.append,
    )
    good, bad = fake_trial("good"), fake_trial("bad")
    for t in (good, bad):
        asha.on_trial_add(None, t)
    assert asha.on_trial_result(None, good, result(1.0, 1)) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, bad, result(0.1, 1)) == TrialScheduler.STOP
    assert asha.on_trial_result(None, good, result(1.0, 2)) == TrialScheduler.CONTINUE
    # Reaching max_t is STOP too, but the normal end of a trial.
    assert asha.on_trial_result(None, good, result(1.0, 4)) == TrialScheduler.STOP
    assert pruned == ["bad"] and asha.stopped_early == {"bad"}


@pytest.mark.parametrize(
    "name, cls",
    [
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
        ("gp", optuna.samplers.GPSampler),
    ],
)
def test_samplers_are_seeded(name, cls):
    def draw():
        study = optuna.create_study(sampler=make_sampler(name, 7))
        study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=3)
        return [t.params["x"] for t in study.trials]

    assert isinstance(make_sampler(name, 7), cls)
    assert draw() == draw()


def test_every_registered_strategy_builds():
    """A name in the registry is all ``--sampler`` / ``--scheduler`` accept, and each builds."""
    from types import SimpleNamespace

    from orchestrator.settings import SearchSettings

    assert set(SAMPLERS) == {"tpe", "random", "gp"} and set(SCHEDULERS) == {"asha", "none"}
    for name in SCHEDULERS:
        settings = SearchSettings(scheduler=name, metric="m")
        searcher = SimpleNamespace(mark_pruned=lambda trial_id: None, keep_state_of=lambda s: None)
        scheduler = SCHEDULERS[name](settings, searcher, 4)
        assert isinstance(scheduler, PruningASHA) == (name == "asha")
