"""How a search picks configs (Optuna samplers) and stops trials (Tune schedulers), by name.

One entry per strategy: ``--sampler`` and ``--scheduler`` accept exactly these keys, and a new
strategy is one more entry. Builders import Optuna and Ray when called, so naming and
validating a strategy stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable


def _tpe(seed: int | None, startup_trials: int):
    import optuna

    # Optuna 5: multivariate, with the constant liar for trials running in parallel.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials)


def _random(seed: int | None, startup_trials: int):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)  # every trial is a startup trial


def _gp(seed: int | None, startup_trials: int):
    import optuna

    # Gaussian process; needs torch and scipy
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup_trials)


def _bohb(seed: int | None, startup_trials: int):
    from orchestrator.rung_sampler import RungTPESampler

    # BOHB's rule: no startup count; a rung is modelled once it holds 2 x dims scores.
    return RungTPESampler(seed=seed)


SAMPLERS: dict[str, Callable] = {"tpe": _tpe, "random": _random, "gp": _gp, "bohb": _bohb}
"""Sampler name -> ``f(seed, startup_trials)`` returning a seeded Optuna sampler."""


def _asha(settings, searcher, max_t: int):
    from orchestrator.optuna_pruning import PruningASHA
    from orchestrator.rung_sampler import rung_epochs
    from orchestrator.tracking.runs import metric_mode

    tie_metric = settings.tie_break
    scheduler = PruningASHA(
        metric=settings.metric,
        mode=settings.mode,
        max_t=max_t,
        grace_period=min(settings.grace_period, max_t),
        reduction_factor=settings.reduction_factor,
        brackets=settings.brackets,
        seed=settings.seed,
        on_prune=searcher.mark_pruned,
        tie_metric=tie_metric,
        tie_mode=metric_mode(tie_metric) if tie_metric else "min",
    )
    searcher.keep_state_of(scheduler)  # ASHA's rungs are saved with the searcher
    searcher.set_rungs(rung_epochs(scheduler, max_t))  # where a rung-aware sampler keeps scores
    return scheduler


def _none(settings, searcher, max_t: int):
    from ray.tune.schedulers import FIFOScheduler

    searcher.set_rungs([max_t])  # no early stops: every score is a full trial's
    return FIFOScheduler()


SCHEDULERS: dict[str, Callable] = {"asha": _asha, "none": _none}
"""Scheduler name -> ``f(settings, searcher, max_t)`` returning a Tune scheduler."""


def make_sampler(name: str, seed: int | None, startup_trials: int = 10):
    return SAMPLERS[name](seed, startup_trials)


def make_scheduler(name: str, settings, searcher, max_t: int):
    return SCHEDULERS[name](settings, searcher, max_t)
