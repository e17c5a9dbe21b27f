"""``--budget``: a search that samples configs until it has spent N trial-epochs.

A trial-epoch is one epoch one trial reported (one ``training_iteration``); a search's cost
is their sum over trials, whatever ASHA stopped early. With a fixed number of trials, what
ASHA saves is simply not spent; with a budget the search spends it on new configs.

How it ends: ``EpochBudget`` is a Tune ``Stopper``, called with every result before the
scheduler sees it. It counts each trial's epochs into the searcher
(``PruningOptunaSearch.trial_epochs``), and once the sum reaches the budget it stops every
trial at its next result; the searcher then suggests nothing more (``Searcher.FINISHED``)
and Tune ends when the last trial has stopped. Each trial stopped this way goes through
Tune's normal end of a trial (scheduler, searcher, MLflow callback), marked pruned when it
had epochs left: a budget is a total, not a promise to each trial. At most one epoch per
trial running at once is spent beyond the budget. Not Tune's ``stop_all``: that ends the
loop without telling the searcher or the callbacks that the running trials ended.

The count lives in the searcher, which Tune saves with every experiment snapshot (a stopper
is restored only as it was pickled when the search started), so a resumed search goes on
from what it had spent.

Tune counts ``num_samples=-1`` (no trial count) as ``sys.maxsize`` trials; the MLflow
callback and the live table read that as no total (``runs.trial_count``), or the callback
would take the search for one that ran fewer trials than asked (interrupted).
"""

from __future__ import annotations

from ray.tune.stopper import Stopper


class EpochBudget(Stopper):
    """Stop every trial once the trials' reported epochs sum to ``budget``."""

    def __init__(self, budget: int, searcher, max_t: int):
        self.budget = budget
        self.searcher = searcher  # the PruningOptunaSearch that keeps the count
        self.max_t = max_t

    def __call__(self, trial_id: str, result: dict) -> bool:
        step = result.get("training_iteration")
        if step is None:
            return False
        counts = self.searcher.trial_epochs
        counts[trial_id] = max(counts.get(trial_id, 0), int(step))
        if sum(counts.values()) < self.budget:
            return False
        if step < self.max_t:
            self.searcher.mark_pruned(trial_id)  # cut short: a partial score, as ASHA's
        return True

    def stop_all(self) -> bool:
        return False  # trials stop one by one, each told (see the module docstring)


def spent(searcher) -> int:
    """Trial-epochs the search has spent so far."""
    return sum(getattr(searcher, "trial_epochs", {}).values())
