"""Optuna through Ray Tune, with ASHA's early stops told to the study as PRUNED.

Ray 2.60's ``OptunaSearch`` reports each result to the Optuna trial as an intermediate value
(``ot_trial.report(metric, training_iteration)``) and, when Tune ends a trial, tells the study
COMPLETE with the last result's metric. A trial that ASHA stopped after 1 of 10 epochs is then
a COMPLETE trial with a half-trained score, and TPE learns from it as if it were final.

Here the scheduler records which trials it stops early (a STOP before ``max_t``), and the
searcher tells those trials PRUNED instead; Optuna then keeps their intermediate values and
takes the last one as the pruned trial's value, which is what TPE expects of pruned trials.
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
from collections.abc import Callable

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

logger = logging.getLogger(__name__)


class PruningOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tells trials marked by the scheduler as PRUNED, not COMPLETE."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pruned_trials: set[str] = set()
        self._last_step: dict[str, int] = {}
        self._scheduler: PruningASHA | None = None

    def keep_state_of(self, scheduler: PruningASHA) -> None:
        """Save ``scheduler``'s state with this searcher's snapshots, restore it with them."""
        self._scheduler = scheduler

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
        if trial_id not in self.pruned_trials:
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
    """ASHA that calls ``on_prune(trial_id)`` for each trial it stops before ``max_t``.

    A STOP at ``max_t`` is the normal end of a trial, not a prune. Set ``max_t`` to the
    trial's epoch count, so that a trial's last epoch is never mistaken for an early stop.
    """

    def __init__(self, *args, on_prune: Callable[[str], None] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.on_prune = on_prune
        self.stopped_early: set[str] = set()

    _STATE = ("_brackets", "_trial_info", "_counter", "_num_stopped", "stopped_early")

    def get_state(self) -> dict:
        """The rungs (values recorded per trial) and counters: what a resumed search needs."""
        return {key: getattr(self, key) for key in self._STATE}

    def set_state(self, state: dict) -> None:
        for key in self._STATE:
            if key in state:
                setattr(self, key, state[key])

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and result.get(self._time_attr, 0) < self._max_t:
            self.stopped_early.add(trial.trial_id)
            if self.on_prune is not None:
                self.on_prune(trial.trial_id)
        return decision
