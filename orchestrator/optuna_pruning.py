"""Optuna through Ray Tune, with ASHA's early stops told to the study as PRUNED.

Ray 2.60's ``OptunaSearch`` reports each result to the Optuna trial as an intermediate value
(``ot_trial.report(metric, training_iteration)``) and, when Tune ends a trial, tells the study
COMPLETE with the last result's metric. A trial that ASHA stopped after 1 of 10 epochs is then
a COMPLETE trial with a half-trained score, and TPE learns from it as if it were final.

Here the scheduler records which trials it stops early (a STOP before ``max_t``), and the
searcher tells those trials PRUNED instead; Optuna then keeps their intermediate values and
takes the last one as the pruned trial's value, which is what TPE expects of pruned trials.
That is ``--asha-tells pruned``; the default is Ray's COMPLETE, because on the replayed MELD
benchmark (README, Search efficiency) PRUNED never found better configs. The record of which
trials ASHA stopped is kept either way (MLflow's pruned state, ``orch best``'s counts).
Two Ray details this relies on (``tune/execution/tune_controller.py``):

- the result that triggers STOP is *not* passed to ``Searcher.on_trial_result``, so it is
  reported here before telling PRUNED, or the study would miss the last rung's value;
- the scheduler and searcher are the objects given to ``TuneConfig`` (not copies), both in
  the driver, so the scheduler can call the searcher directly. Both pickle together with the
  experiment state, so a restored search keeps the record.

Tune's experiment snapshots save the searcher (``OptunaSearch.save``: its whole ``__dict__``,
the study included) but never the scheduler, so a resumed search would start ASHA's rungs
empty. ``keep_state_of(scheduler)`` saves ASHA's rungs inside the searcher's snapshot and puts
them back into the live scheduler on restore.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler
from ray.tune.schedulers.async_hyperband import _Bracket
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

logger = logging.getLogger(__name__)


class PruningOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tells trials marked by the scheduler as PRUNED, not COMPLETE.

    ``tell_pruned=False`` tells them COMPLETE with their last score, as Ray does (they are
    still recorded as pruned for MLflow and the live table): the comparison that
    ``bench/search_efficiency.py`` measures. With a ``budget`` (trial-epochs), it suggests
    configs until ``trial_epochs`` (each trial's epochs, counted by
    ``compute_budget.EpochBudget`` and saved with the searcher's snapshots) sum to it."""

    def __init__(self, *args, tell_pruned: bool = True, budget: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.pruned_trials: set[str] = set()
        self.tell_pruned = tell_pruned
        self.budget = budget
        self.trial_epochs: dict[str, int] = {}
        self._last_step: dict[str, int] = {}
        self._scheduler: PruningASHA | None = None

    def keep_state_of(self, scheduler: PruningASHA) -> None:
        """Save ``scheduler``'s state with this searcher's snapshots, restore it with them."""
        self._scheduler = scheduler

    def set_rungs(self, rungs: list[int]) -> None:
        """Tell a rung-aware sampler (``--sampler bohb``) the epochs ASHA judges trials at."""
        if hasattr(self._sampler, "set_rungs"):
            self._sampler.set_rungs(rungs)

    def save(self, checkpoint_path: str):
        # OptunaSearch.save pickles __dict__: swap the scheduler for its state meanwhile.
        scheduler = getattr(self, "_scheduler", None)  # absent in searches pickled before it
        state = scheduler.get_state() if scheduler is not None else None
        self.__dict__.pop("_scheduler", None)
        self._scheduler_state = state
        try:
            super().save(checkpoint_path)
        finally:
            del self._scheduler_state
            self._scheduler = scheduler

    def restore(self, checkpoint_path: str):
        # The live scheduler (restored from tuner.pkl together with this searcher).
        scheduler = getattr(self, "_scheduler", None)
        super().restore(checkpoint_path)
        state = self.__dict__.pop("_scheduler_state", None)
        self._scheduler = scheduler
        if scheduler is not None and state is not None:
            scheduler.set_state(state)

    def suggest(self, trial_id: str):
        budget = getattr(self, "budget", None)
        if budget is not None and sum(self.trial_epochs.values()) >= budget:
            return Searcher.FINISHED
        return super().suggest(trial_id)

    @property
    def study(self) -> optuna.Study:
        """The Optuna study behind the search (in memory, in the driver)."""
        return self._ot_study

    def get_study(self) -> optuna.Study:
        """Same as ``study``, as a method: a picklable callable for callbacks."""
        return self._ot_study

    def mark_pruned(self, trial_id: str) -> None:
        self.pruned_trials.add(trial_id)

    def is_pruned(self, trial_id: str) -> bool:
        return trial_id in self.pruned_trials

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        step = result.get("training_iteration")
        last = self._last_step.get(trial_id)
        if step is not None and last is not None and step <= last:
            # A resumed trial repeats the epochs after its last saved checkpoint (Tune
            # registers a checkpoint after the result that carries it): Optuna has them.
            return
        super().on_trial_result(trial_id, result)
        self._last_step[trial_id] = step

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if error or trial_id in self._completed_trials:
            return super().on_trial_complete(trial_id, result=result, error=error)
        self._report_last(trial_id, result)
        if trial_id not in self.pruned_trials or not getattr(self, "tell_pruned", True):
            return super().on_trial_complete(trial_id, result=result, error=error)
        try:
            # No value with PRUNED: Optuna takes the last intermediate value as the value.
            self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
        except Exception as exc:  # same leniency as Ray's own tell (e.g. NaN values)
            logger.warning("could not tell trial %s as pruned: %s", trial_id, exc)
        self._completed_trials.add(trial_id)

    def _report_last(self, trial_id: str, result: dict | None) -> None:
        """Report the result that ended the trial as an intermediate value: a scheduler STOP
        (early, or at max_t) keeps it from on_trial_result (see module docstring)."""
        value = (result or {}).get(self.metric)
        step = (result or {}).get("training_iteration")
        if value is None or step is None or self._last_step.get(trial_id) == step:
            return
        if isinstance(self.metric, str):  # Optuna has no intermediate values for multi-objective
            self._ot_trials[trial_id].report(value, step)
            self._last_step[trial_id] = step


class PruningASHA(AsyncHyperBandScheduler):
    """ASHA that calls ``on_prune(trial_id)`` for each trial it stops before ``max_t``, and
    breaks ties at a rung by a second metric (``tie_metric``, e.g. dev loss).

    A STOP at ``max_t`` is the normal end of a trial, not a prune. Set ``max_t`` to the
    trial's epoch count, so that a trial's last epoch is never mistaken for an early stop.

    Ties: Ray's rung keeps a trial unless its value is strictly below the rung's cutoff, so
    when many trials share the cutoff value (after one epoch every config that predicts the
    majority class has the same weighted F1) none of them is stopped, and the rung cuts
    nothing. Here a rung records ``(metric, tie_metric)`` pairs, both signed so that larger
    is better, and compares them in that order: among trials equal on the metric, the one
    with the worse ``tie_metric`` is stopped. A result without ``tie_metric`` is recorded as
    its plain value (as Ray records it), which compares with a NaN tie value, and a NaN
    never stops a trial: without the tie metric the rule is exactly Ray's.
    """

    def __init__(
        self,
        *args,
        on_prune: Callable[[str], None] | None = None,
        tie_metric: str | None = None,
        tie_mode: str = "min",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self._bracket_rng = random.Random(seed)  # Ray draws brackets from numpy's global RNG
        self.on_prune = on_prune
        self.stopped_early: set[str] = set()
        self.tie_metric = tie_metric
        self._tie_op = -1.0 if tie_mode == "min" else 1.0
        self._brackets = [_TieBreakingBracket.like(b) for b in self._brackets]

    _STATE = (
        "_brackets", "_trial_info", "_counter", "_num_stopped", "stopped_early", "_bracket_rng"
    )  # fmt: skip

    def on_trial_add(self, tune_controller, trial) -> None:
        # Ray's rule (weight e^(rungs - most rungs): the bracket with most rungs most often),
        # drawn from this scheduler's seeded RNG instead of numpy's global one, so a search
        # with several brackets repeats.
        if not self._metric or not self._metric_op:
            raise ValueError(f"{type(self).__name__} needs a metric and a mode")
        sizes = [len(b._rungs) for b in self._brackets]
        weights = [math.exp(size - max(sizes)) for size in sizes]
        chosen = self._bracket_rng.choices(self._brackets, weights=weights)[0]
        self._trial_info[trial.trial_id] = chosen

    def get_state(self) -> dict:
        """The rungs (values recorded per trial) and counters: what a resumed search needs."""
        return {key: getattr(self, key) for key in self._STATE}

    def set_state(self, state: dict) -> None:
        for key in self._STATE:
            if key in state:
                setattr(self, key, state[key])
        # A search saved before rungs held pairs: same rungs, tie metric unknown (NaN).
        converted = {id(b): _TieBreakingBracket.like(b) for b in self._brackets}
        self._brackets = [converted[id(b)] for b in self._brackets]
        self._trial_info = {t: converted.get(id(b), b) for t, b in self._trial_info.items()}

    def _key(self, result: dict) -> float | tuple[float, float]:
        """What a rung records: the signed value, paired with the signed tie value when
        the result has one (a plain value otherwise, as Ray records it)."""
        value = self._metric_op * float(result[self._metric])
        tie_metric = getattr(self, "tie_metric", None)  # absent in searches pickled before
        tie = result.get(tie_metric) if tie_metric else None
        if tie is None or math.isnan(float(tie)):
            return value
        return value, self._tie_op * float(tie)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        # Ray's AsyncHyperBandScheduler.on_trial_result, recording _key(result) (a pair when
        # the result has a tie value) instead of the signed value.
        decision = TrialScheduler.CONTINUE
        if self._time_attr not in result or self._metric not in result:
            return decision
        if result[self._time_attr] >= self._max_t and self._stop_last_trials:
            decision = TrialScheduler.STOP
        else:
            bracket = self._trial_info[trial.trial_id]
            decision = bracket.on_result(trial, result[self._time_attr], self._key(result))
        if decision == TrialScheduler.STOP:
            self._num_stopped += 1
            if result[self._time_attr] < self._max_t:
                self.stopped_early.add(trial.trial_id)
                if self.on_prune is not None:
                    self.on_prune(trial.trial_id)
        return decision

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if self._time_attr not in result or self._metric not in result:
            return
        bracket = self._trial_info.pop(trial.trial_id)
        bracket.on_result(trial, result[self._time_attr], self._key(result))


class _TieBreakingBracket(_Bracket):
    """An ASHA bracket whose rungs hold ``(value, tie value)`` pairs (larger is better).

    The cutoff is Ray's: the ``1 - 1/rf`` quantile of the recorded values, interpolated
    linearly between the two recorded pairs around it. When those two share the value, the
    tie value is interpolated as well, and a trial equal to the cutoff on the value is
    stopped when its tie value is below it. Otherwise the cutoff's tie value is -inf: a
    trial is stopped when its value is below the cutoff, as in Ray."""

    @classmethod
    def like(cls, bracket: _Bracket) -> _TieBreakingBracket:
        """``bracket`` (Ray's, e.g. from a search saved before this class) as one of these:
        the same rungs, whose plain values read as pairs with a NaN tie value."""
        if isinstance(bracket, cls):
            return bracket
        new = cls.__new__(cls)
        new.__dict__.update(bracket.__dict__)
        return new

    def cutoff(self, recorded: dict) -> tuple[float, float] | None:
        pairs = sorted(p for p in map(_pair, recorded.values()) if not math.isnan(p[0]))
        if not pairs:
            return None
        # numpy's default ("linear") percentile: position q * (n - 1) in the sorted values.
        position = (1 - 1 / self.rf) * (len(pairs) - 1)
        low, high = pairs[math.floor(position)], pairs[math.ceil(position)]
        share = position - math.floor(position)
        if share == 0 or low == high:
            return low
        if low[0] == high[0]:
            return low[0], low[1] + share * (high[1] - low[1])
        return low[0] + share * (high[0] - low[0]), -math.inf

    def on_result(self, trial, cur_iter: int, cur_rew: float | tuple[float, float]) -> str:
        # Ray's _Bracket.on_result, comparing pairs (a NaN tie value compares False).
        decision = TrialScheduler.CONTINUE
        for milestone, recorded in self._rungs:
            if cur_iter >= milestone and trial.trial_id in recorded and not self._stop_last_trials:
                break
            if cur_iter < milestone or trial.trial_id in recorded:
                continue
            cutoff = self.cutoff(recorded)
            if cutoff is not None and _below(_pair(cur_rew), cutoff):
                decision = TrialScheduler.STOP
            recorded[trial.trial_id] = cur_rew
            break
        return decision

    def debug_str(self) -> str:
        rungs = " | ".join(f"Iter {m:.3f}: {self.cutoff(r)}" for m, r in self._rungs)
        return "Bracket: " + rungs


def _pair(value: float | tuple[float, float]) -> tuple[float, float]:
    """A recorded value as a pair: a plain value has no tie value (NaN)."""
    return value if isinstance(value, tuple) else (float(value), math.nan)


def _below(pair: tuple[float, float], cutoff: tuple[float, float]) -> bool:
    """``pair`` < ``cutoff`` in order (value, then tie value); NaNs never compare below."""
    if pair[0] != cutoff[0]:
        return pair[0] < cutoff[0]
    return pair[1] < cutoff[1]
