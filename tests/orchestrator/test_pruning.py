"""PRUNED for ASHA's early stops, COMPLETE otherwise: the searcher and scheduler without Ray's
controller (the end-to-end check is in test_search.py)."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from orchestrator.optuna_pruning import PruningASHA, PruningOptunaSearch
from orchestrator.rung_sampler import rung_epochs
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


def test_a_restored_searcher_still_tells_its_pruned_trials_pruned(tmp_path):
    # Tune snapshots the searcher with save() and a resumed search restore()s a fresh one:
    # a trial marked before the snapshot and completed after it is PRUNED, not COMPLETE.
    s = searcher()
    for trial_id in ("t1", "t2"):
        s.suggest(trial_id)
        s.on_trial_result(trial_id, result(0.3, 1))
    s.mark_pruned("t1")
    s.save(str(tmp_path / "searcher.pkl"))
    restored = searcher()
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.is_pruned("t1") and not restored.is_pruned("t2")
    restored.on_trial_result("t1", result(0.3, 1))  # a resumed trial repeats epoch 1: ignored
    restored.on_trial_complete("t1", result=result(0.2, 2))
    restored.on_trial_complete("t2", result=result(0.6, 2))
    t1, t2 = restored.study.trials
    assert t1.state == TrialState.PRUNED and t1.intermediate_values == {1: 0.3, 2: 0.2}
    assert t2.state == TrialState.COMPLETE and t2.value == 0.6


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


@pytest.mark.parametrize("name", ["tpe", "gp"])
def test_startup_trials_are_random_then_the_model_proposes(name):
    def draw(sampler, n=6):
        study = optuna.create_study(sampler=sampler)
        study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.3) ** 2, n_trials=n)
        return [t.params["x"] for t in study.trials]

    random = draw(make_sampler("random", 7))
    modelled = draw(make_sampler(name, 7, startup_trials=3))
    # The first 3 come from the sampler's own seeded random sampler, the next from its model.
    assert modelled[:3] == random[:3]
    assert modelled[3:] != random[3:]
    assert draw(make_sampler(name, 7, startup_trials=6)) == random


def test_every_registered_strategy_builds():
    """A name in the registry is all ``--sampler`` / ``--scheduler`` accept, and each builds."""
    from types import SimpleNamespace

    from orchestrator.settings import SearchSettings

    assert set(SAMPLERS) == {"tpe", "random", "gp", "bohb"}
    assert set(SCHEDULERS) == {"asha", "none"}
    for name in SCHEDULERS:
        settings = SearchSettings(scheduler=name, metric="m")
        rungs = []
        searcher = SimpleNamespace(
            mark_pruned=lambda trial_id: None, keep_state_of=lambda s: None, set_rungs=rungs.append
        )
        scheduler = SCHEDULERS[name](settings, searcher, 4)
        assert isinstance(scheduler, PruningASHA) == (name == "asha")
        # The epochs a rung-aware sampler keeps scores at: ASHA's milestones (grace 1, rf 3)
        # and the last epoch; without early stops, the last epoch only.
        assert rungs == ([[1, 3, 4]] if name == "asha" else [[4]])


def tie_asha(**kwargs):
    return PruningASHA(
        metric="m", mode="max", max_t=9, grace_period=1, reduction_factor=3, **kwargs
    )


def tied(loss, value=40.0, step=1):
    return {"m": value, "dev_loss": loss, "training_iteration": step}


def test_ties_at_a_rung_are_cut_by_dev_loss():
    """Six trials with the same score after one epoch: Ray's rule stops none of them (none
    is below the cutoff, which is their shared value); the tie-break stops those whose dev
    loss is worse than the rung's cutoff loss, and tells the searcher they were pruned."""
    losses = {"t1": 1.0, "t2": 1.5, "t3": 0.5, "t4": 1.2, "t5": 0.4, "t6": 0.9}
    pruned = []
    asha = tie_asha(on_prune=pruned.append, tie_metric="dev_loss", tie_mode="min")
    plain = AsyncHyperBandScheduler(
        metric="m", mode="max", max_t=9, grace_period=1, reduction_factor=3
    )
    decisions, plain_decisions = {}, {}
    for trial_id, loss in losses.items():
        trial = fake_trial(trial_id)
        asha.on_trial_add(None, trial)
        plain.on_trial_add(None, trial)
        decisions[trial_id] = asha.on_trial_result(None, trial, tied(loss))
        plain_decisions[trial_id] = plain.on_trial_result(None, trial, tied(loss))
    assert set(plain_decisions.values()) == {TrialScheduler.CONTINUE}
    stopped = {t for t, d in decisions.items() if d == TrialScheduler.STOP}
    # t2: worse than t1's 1.0; t4: 1.2 is worse than the 2/3 quantile of {1.0, 1.5, 0.5}
    # (0.833); t6: 0.9 is worse than that of {1.0, 1.5, 0.5, 1.2, 0.4} (0.56).
    assert stopped == {"t2", "t4", "t6"} and set(pruned) == stopped
    # A higher score still wins whatever its loss: the tie metric only orders equals.
    late = fake_trial("t7")
    asha.on_trial_add(None, late)
    assert asha.on_trial_result(None, late, tied(9.0, value=41.0)) == TrialScheduler.CONTINUE


@pytest.mark.filterwarnings("ignore:All-NaN slice")  # Ray's own ASHA, on all-NaN rungs
def test_tie_metric_lost_in_a_result_changes_nothing():
    """Without the tie metric (or without tie_metric) decisions are exactly Ray's, ties and
    NaNs included."""
    rng = np.random.default_rng(3)
    values = rng.choice([0.1, 0.2, 0.3, float("nan")], size=(30, 3))
    mine = tie_asha(tie_metric="dev_loss")
    ray_asha = AsyncHyperBandScheduler(
        metric="m", mode="max", max_t=9, grace_period=1, reduction_factor=3
    )
    for i, row in enumerate(values):
        trial = fake_trial(f"t{i}")
        mine.on_trial_add(None, trial)
        ray_asha.on_trial_add(None, trial)
        for step, value in zip((1, 3, 9), row, strict=True):
            got = mine.on_trial_result(None, trial, result(float(value), step))
            want = ray_asha.on_trial_result(None, trial, result(float(value), step))
            assert got == want, (i, step)
            if got == TrialScheduler.STOP:
                break


def test_rungs_survive_a_snapshot_and_old_snapshots_load():
    """The state a resumed search restores decides like the live scheduler; a state saved
    before rungs held pairs (plain floats) loads and keeps Ray's rule for those values."""
    live = tie_asha(tie_metric="dev_loss")
    for trial_id, loss in (("a", 1.0), ("b", 0.5), ("c", 0.7)):
        live.on_trial_add(None, fake_trial(trial_id))
        live.on_trial_result(None, fake_trial(trial_id), tied(loss))
    restored = tie_asha(tie_metric="dev_loss")
    restored.set_state(pickle.loads(pickle.dumps(live.get_state())))
    for scheduler in (live, restored):
        scheduler.on_trial_add(None, fake_trial("d"))
    assert restored.on_trial_result(None, fake_trial("d"), tied(0.9)) == TrialScheduler.STOP
    assert live.on_trial_result(None, fake_trial("d"), tied(0.9)) == TrialScheduler.STOP

    old = AsyncHyperBandScheduler(metric="m", mode="max", max_t=9, grace_period=1,
                                  reduction_factor=3)  # fmt: skip
    for trial_id, value in (("a", 0.2), ("b", 0.4)):
        old.on_trial_add(None, fake_trial(trial_id))
        old.on_trial_result(None, fake_trial(trial_id), result(value, 1))
    state = {k: getattr(old, k) for k in ("_brackets", "_trial_info", "_counter", "_num_stopped")}
    upgraded = tie_asha(tie_metric="dev_loss")
    upgraded.set_state(pickle.loads(pickle.dumps(state)))
    upgraded.on_trial_add(None, fake_trial("c"))
    assert upgraded.on_trial_result(None, fake_trial("c"), tied(0.1, value=0.3)) == "STOP"
    upgraded.on_trial_complete(None, fake_trial("a"), result(0.5, 3))  # old trial info works


def test_brackets_are_drawn_by_rays_weights_from_the_seed():
    """--brackets 3 (grace 1, rf 3, 27 epochs): bracket s first judges at 3^s epochs. Trials
    join brackets by Ray's weights (e^(rungs - most rungs): 0.67, 0.24, 0.09), from the
    search's seed: the same seed repeats the draws, also across a snapshot, and a trial in
    bracket 1 or 2 is never stopped at epoch 1."""

    def asha(seed):
        return PruningASHA(metric="m", mode="max", max_t=27, grace_period=1,
                           reduction_factor=3, brackets=3, seed=seed)  # fmt: skip

    def draws(scheduler, ids):
        for trial_id in ids:
            scheduler.on_trial_add(None, fake_trial(trial_id))
        return [scheduler._brackets.index(scheduler._trial_info[t]) for t in ids]

    first, again, other = asha(7), asha(7), asha(8)
    ids = [f"t{i}" for i in range(600)]
    chosen = draws(first, ids)
    assert chosen == draws(again, ids) and chosen != draws(other, ids)
    shares = [chosen.count(b) / len(ids) for b in range(3)]
    assert shares == pytest.approx([0.665, 0.245, 0.090], abs=0.05)
    assert [[m for m, _ in b._rungs] for b in first._brackets] == [
        [27, 9, 3, 1],
        [27, 9, 3],
        [27, 9],
    ]
    assert rung_epochs(first, 27) == [1, 3, 9, 27]

    restored = asha(0)
    restored.set_state(pickle.loads(pickle.dumps(first.get_state())))
    assert draws(restored, ["n1", "n2", "n3"]) == draws(first, ["n1", "n2", "n3"])

    # Each epoch-1 score below the last: bracket 0 stops such trials, brackets 1-2 never do.
    for i, trial_id in enumerate(ids[:60]):
        decision = first.on_trial_result(None, fake_trial(trial_id), result(-float(i), 1))
        if chosen[i] > 0:
            assert decision == TrialScheduler.CONTINUE
    bracket0 = [t for t, b in zip(ids[:60], chosen, strict=False) if b == 0]
    assert first.stopped_early and first.stopped_early <= set(bracket0)


def test_asha_tells_complete_keeps_the_partial_score_as_final():
    s = PruningOptunaSearch(
        space=space, metric="m", mode="max", sampler=make_sampler("random", 0), tell_pruned=False
    )
    s.suggest("t1")
    s.on_trial_result("t1", result(0.3, 1))
    s.mark_pruned("t1")
    s.on_trial_complete("t1", result=result(0.2, 2))
    (trial,) = s.study.trials
    assert trial.state == TrialState.COMPLETE and trial.value == 0.2
    assert s.is_pruned("t1")  # MLflow and the live table still say pruned
