"""``--sampler bohb``: BOHB's rule on Optuna's TPE and orch's ASHA.

TPE behind ASHA (``--sampler tpe``) learns from each trial's *final* score, and most trials'
final score is the one ASHA stopped them at: a trial stopped after 1 epoch is ranked against
trials trained for 51 (``--asha-tells complete``), or kept out of the model's good/bad split
(``pruned``). BOHB (Falkner et al., 2018) instead keeps the scores per budget and models only
the largest budget that holds enough observations, so every config it compares was trained
equally long; it falls back to a smaller budget until a larger one fills, and draws a share
of configs at random so the model cannot lock onto a region the small budgets misjudge.

Here a budget is an ASHA rung: the epochs at which ASHA judges trials (grace * rf^k) and the
last epoch. A trial's score at rung r is its reported value at epoch r, read from the study's
intermediate values (orch's searcher reports every epoch to Optuna, the stopping one
included), never from the trial's final value. So a trial ASHA stopped at rung r counts at
rungs <= r only, whatever Optuna was told of it; a running trial counts at the rungs it has
passed. Each draw fits a TPE (multivariate, seeded from this sampler) on one rung's scores as
if they were complete trials of a study of their own, and proposes that TPE's next config.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import numpy as np
import optuna
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.trial import TrialState

# Trials whose intermediate values are scores: a failed trial's are too, but its failure
# may come from the config (out of memory), which its scores would not tell the model.
_SCORED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
RANDOM_FRACTION = 1 / 3  # BOHB's default share of random configs


class RungTPESampler(BaseSampler):
    """TPE over the scores of the highest ASHA rung that has ``min_points`` of them.

    ``min_points`` defaults to twice the space's dimension (BOHB asks for d + 1; TPE's split
    keeps ~10 % of them as "good", so fewer would leave one good config). ``rungs`` are
    the epochs scores are kept at (``set_rungs``; every epoch a trial reported when unset).
    ``last_draw`` says how the latest config was drawn: ``("model", rung)`` or
    ``("random", why)``."""

    def __init__(
        self,
        seed: int | None = None,
        min_points: int | None = None,
        random_fraction: float = RANDOM_FRACTION,
        rungs: Iterable[int] | None = None,
    ):
        if not 0 <= random_fraction <= 1:
            raise ValueError(f"random_fraction must be in [0, 1], got {random_fraction}")
        self._rng = np.random.RandomState(seed)
        self._random = RandomSampler(seed=seed)
        self.min_points = min_points
        self.random_fraction = random_fraction
        self.rungs: list[int] | None = None
        if rungs is not None:
            self.set_rungs(rungs)
        self.last_draw: tuple[str, object] = ("random", "no draw yet")
        self.draws: dict[str, int] = {}  # "random" / "rung R" -> configs drawn so (a report)

    def set_rungs(self, rungs: Iterable[int]) -> None:
        """The epochs at which scores are kept: ASHA's milestones and the last epoch."""
        self.rungs = sorted({int(r) for r in rungs})

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

    def scores(self, study: optuna.Study, space: dict) -> dict[int, list[tuple[dict, float]]]:
        """Rung -> (params, score at that rung) of every trial that reached it."""
        kept: dict[int, list[tuple[dict, float]]] = {}
        for trial in study.get_trials(deepcopy=False, states=_SCORED):
            if not all(name in trial.params for name in space):
                continue  # a trial of another shape (a conditional dimension it never drew)
            steps = trial.intermediate_values
            for rung in self.rungs if self.rungs is not None else steps:
                value = steps.get(rung)
                if value is not None and not math.isnan(value):
                    params = {name: trial.params[name] for name in space}
                    kept.setdefault(rung, []).append((params, value))
        return kept

    def ready_rung(self, study: optuna.Study, space: dict) -> int | None:
        """The highest rung holding enough scores to model, or None."""
        need = self.min_points or 2 * len(space)
        ready = [rung for rung, seen in self.scores(study, space).items() if len(seen) >= need]
        return max(ready, default=None)

    def infer_relative_search_space(self, study, trial) -> dict:
        # The dimensions every earlier trial drew alike (a define-by-run space shows itself
        # only through the trials that sampled it).
        space: dict | None = None
        for past in study.get_trials(deepcopy=False, states=_SCORED):
            if past.number == trial.number or not past.distributions:
                continue
            if space is None:
                space = dict(past.distributions)
            else:
                space = {k: d for k, d in space.items() if past.distributions.get(k) == d}
        return space or {}

    def sample_relative(self, study, trial, search_space: dict) -> dict:
        params = self._draw(study, search_space)
        kind, rung = self.last_draw
        key = f"rung {rung}" if kind == "model" else "random"
        self.draws[key] = self.draws.get(key, 0) + 1
        return params

    def _draw(self, study, search_space: dict) -> dict:
        if not search_space:
            self.last_draw = ("random", "no earlier trial")
            return {}
        if self._rng.random_sample() < self.random_fraction:
            self.last_draw = ("random", "random fraction")
            return {}
        rung = self.ready_rung(study, search_space)
        if rung is None:
            self.last_draw = ("random", "no rung has enough scores")
            return {}
        self.last_draw = ("model", rung)
        return self._propose(study, search_space, self.scores(study, search_space)[rung])

    def _propose(self, study, space: dict, seen: list[tuple[dict, float]]) -> dict:
        """TPE's next config, fitted on ``seen`` as the complete trials of a fresh study."""
        with warnings.catch_warnings():  # multivariate TPE is "experimental" in Optuna
            warnings.simplefilter("ignore")
            model = optuna.create_study(
                direction=study.direction,
                sampler=TPESampler(
                    seed=int(self._rng.randint(2**31 - 1)), n_startup_trials=0, multivariate=True
                ),
            )
            model.add_trials(
                [
                    optuna.trial.create_trial(params=params, distributions=space, value=value)
                    for params, value in seen
                ]
            )
            drawn = model.ask(space)
        return {name: drawn.params[name] for name in space}

    def sample_independent(self, study, trial, param_name, param_distribution):
        # Dimensions outside the relative space (and every dimension of a random draw).
        return self._random.sample_independent(study, trial, param_name, param_distribution)


def rung_epochs(scheduler, max_t: int) -> list[int]:
    """The epochs at which an ASHA scheduler (Ray's, or orch's ``PruningASHA``) judges
    trials, and ``max_t``, the top rung."""
    milestones = {int(m) for bracket in scheduler._brackets for m, _ in bracket._rungs}
    return sorted(m for m in milestones | {max_t} if m <= max_t)
