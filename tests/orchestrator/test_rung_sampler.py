"""``--sampler bohb`` (orchestrator/rung_sampler.py): scores kept per ASHA rung, the highest
rung with enough of them modelled, a trial stopped at rung r never counted above r, random
draws while no rung is ready."""

from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from orchestrator.optuna_pruning import PruningOptunaSearch
from orchestrator.rung_sampler import RungTPESampler
from orchestrator.strategies import make_sampler

SPACE = {"x": FloatDistribution(0.0, 1.0), "y": FloatDistribution(0.0, 1.0)}  # needs 4 scores
RUNGS = [1, 3, 9]


def past(x, scores: dict[int, float], state=TrialState.PRUNED):
    """A finished trial with its per-epoch scores; COMPLETE trials get their last score as
    value, as Ray tells Optuna of a trial ASHA stopped (``--asha-tells complete``)."""
    value = scores[max(scores)]
    return create_trial(
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        params={"x": x, "y": 0.5},
        distributions=SPACE,
        intermediate_values=scores,
    )


def study_with(trials, **kwargs) -> tuple[optuna.Study, RungTPESampler]:
    sampler = RungTPESampler(seed=0, rungs=RUNGS, **{"random_fraction": 0.0, **kwargs})
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.add_trials(trials)
    return study, sampler


def draw(study, n=1) -> list[float]:
    xs = []
    for _ in range(n):
        trial = study.ask()
        xs.append(trial.suggest_float("x", 0.0, 1.0))
        trial.suggest_float("y", 0.0, 1.0)
        study.tell(trial, state=TrialState.FAIL)  # a draw, not a score: the model ignores it
    return xs


def test_a_rung_is_modelled_once_it_has_enough_scores():
    # Rung 1: 10 trials, the good ones near x = 0.1. Rung 3: the 3 that went on, best near 0.9.
    low = [past(0.05 + 0.01 * i, {1: 0.9}) for i in range(5)]
    low += [past(0.6 + 0.05 * i, {1: 0.2}) for i in range(2)]
    went_on = [past(x, {1: 0.5, 3: s}) for x, s in ((0.9, 0.95), (0.2, 0.1), (0.5, 0.3))]
    study, sampler = study_with(low + went_on)
    assert {r: len(s) for r, s in sampler.scores(study, SPACE).items()} == {1: 10, 3: 3}
    xs = draw(study, 8)
    assert sampler.last_draw == ("model", 1)  # 3 scores at rung 3 < 2 x 2 dimensions
    assert sum(x < 0.35 for x in xs) >= 6  # drawn where rung 1's good configs are

    study.add_trial(past(0.15, {1: 0.6, 3: 0.05}))  # the 4th score at rung 3
    xs = draw(study, 8)
    assert sampler.last_draw == ("model", 3)
    assert sum(x > 0.65 for x in xs) >= 6  # now where rung 3's best config is

    # min_points overrides 2 x dims; a rung with fewer is never modelled.
    study, sampler = study_with(low + went_on, min_points=11)
    draw(study)
    assert sampler.last_draw == ("random", "no rung has enough scores")


def test_a_trial_stopped_at_rung_r_is_never_counted_at_a_higher_rung():
    # Through orch's searcher, as Ray calls it: ASHA stops t0 at epoch 3 and Optuna is told
    # COMPLETE with its epoch-3 score (Ray's rule, orch's default --asha-tells complete).
    def space(trial):
        trial.suggest_float("x", 0.0, 1.0)
        trial.suggest_float("y", 0.0, 1.0)

    searcher = PruningOptunaSearch(
        space=space, metric="m", mode="max", sampler=make_sampler("bohb", 0), tell_pruned=False
    )
    searcher.set_rungs(RUNGS)
    searcher.suggest("t0")
    sampler = searcher.study.sampler
    assert isinstance(sampler, RungTPESampler) and sampler.rungs == RUNGS
    for epoch, score in ((1, 0.4), (2, 0.6)):
        searcher.on_trial_result("t0", {"m": score, "training_iteration": epoch})
    searcher.mark_pruned("t0")
    searcher.on_trial_complete("t0", result={"m": 0.99, "training_iteration": 3})
    (t0,) = searcher.study.trials
    assert t0.state == TrialState.COMPLETE and t0.value == 0.99  # what plain TPE would see
    seen = sampler.scores(searcher.study, SPACE)
    assert [s for _, s in seen[1]] == [0.4] and [s for _, s in seen[3]] == [0.99]
    assert 9 not in seen  # never a top-rung score

    # Many trials stopped at rung 3 with high scores, 4 trained to the top with low ones:
    # the top rung is modelled, on its own 4 scores only.
    stopped = [past(0.9, {1: 0.8, 3: 0.99}, TrialState.COMPLETE) for _ in range(12)]
    tops = [0.2, 0.3, 0.4, 0.5]
    full = [past(0.1 * i, {1: 0.3, 3: 0.3, 9: s}, TrialState.COMPLETE) for i, s in enumerate(tops)]
    study, sampler = study_with(stopped + full)
    assert [s for _, s in sampler.scores(study, SPACE)[9]] == tops
    draw(study)
    assert sampler.last_draw == ("model", 9)


def test_with_no_rung_ready_it_draws_exactly_random_search():
    def draws(sampler, n=6):
        study = optuna.create_study(direction="maximize", sampler=sampler)
        out = []
        for i in range(n):
            trial = study.ask()
            out.append((trial.suggest_float("x", 0.0, 1.0), trial.suggest_float("y", 0.0, 1.0)))
            trial.report(0.1 * i, 1)
            study.tell(trial, 0.1 * i)
        return out

    random = draws(optuna.samplers.RandomSampler(seed=5))
    unready = RungTPESampler(seed=5, rungs=RUNGS, random_fraction=0.0, min_points=100)
    assert draws(unready) == random
    assert unready.last_draw == ("random", "no rung has enough scores")
    # Rung 1 ready (4 scores >= 2 x 2 dimensions) from the 5th draw on: the model proposes.
    random_8 = draws(optuna.samplers.RandomSampler(seed=5), 8)
    ready = RungTPESampler(seed=5, rungs=RUNGS, random_fraction=0.0)
    modelled = draws(ready, 8)
    assert modelled[:4] == draws(optuna.samplers.RandomSampler(seed=5), 4)
    assert all(m != r for m, r in zip(modelled[4:], random_8[4:], strict=True))
    assert ready.last_draw == ("model", 1)
    # BOHB's random fraction: every draw random at 1, however ready a rung is.
    always = RungTPESampler(seed=5, rungs=RUNGS, random_fraction=1.0)
    assert draws(always, 8) == random_8
    assert always.last_draw == ("random", "random fraction")
