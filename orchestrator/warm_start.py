"""``--warm-start NAME`` and ``--enqueue paper|NAME``: what earlier work tells a new search.

``--warm-start NAME`` tells the sampler every finished trial of search NAME (same MLflow store)
before it draws its first config: each trial's config, its per-epoch scores of ``--metric`` as
intermediate values, and its last score as its value, told the way this search tells its own
trials (an ASHA-stopped trial COMPLETE, or PRUNED with ``--asha-tells pruned``). TPE then
models from the first trial (its startup trials are already there) and ``bohb`` finds its
rungs filled. A config that no longer fits the space (a dimension it lacks or a value out of
its range now) is skipped and counted.

``--enqueue paper`` runs the paper's recipe first (Section 5.2: lr 6e-6, warmup 1,200 steps,
K 14, 6 intra and 4 inter layers, dropout 0.1; only the dimensions the space has, a value
outside its range drawn instead), ``--enqueue NAME`` the best config of search NAME.

Both are read through a ``FixedTrial`` run of the space: the space itself says which
dimensions it draws and in which range, define-by-run conditions included.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import optuna
from optuna.trial import FixedTrial, FrozenTrial, TrialState, create_trial

from orchestrator.settings import SearchSettings, SettingsError

PAPER = {"lr": 6e-6, "warmup_steps": 1200, "k": 14, "intra_layers": 6, "inter_layers": 4,
         "dropout": 0.1}  # fmt: skip
"""DialogueTRM's recipe (paper, Section 5.2) in this project's dimension names."""


@dataclass
class Prior:
    """What a search starts from: trials to tell the sampler, configs to run first."""

    trials: list[FrozenTrial] = field(default_factory=list)
    skipped: int = 0
    points: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def params(self) -> dict:
        """What the parent run records besides the options themselves."""
        told = {"warm_start_told": len(self.trials), "warm_start_skipped": self.skipped}
        return {**told, "enqueued": self.points} if self.points else told


def fit(space, params: dict) -> tuple[dict, dict] | None:
    """``(params, distributions)`` of ``params`` drawn through ``space``, typed as the space
    draws them; None when the space asks for a dimension ``params`` lacks or a value falls
    outside its range."""
    trial = FixedTrial(params)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FixedTrial's out-of-range warning: checked below
            space(trial)
    except ValueError:  # a dimension the params lack (FixedTrial says so)
        return None
    drawn = {}
    for name, dist in trial.distributions.items():
        try:
            internal = dist.to_internal_repr(trial.params[name])
        except (ValueError, TypeError):  # not one of a categorical's choices
            return None
        if not dist._contains(internal):
            return None
        drawn[name] = dist.to_external_repr(internal)
    return drawn, dict(trial.distributions)


def dimensions(space, draws: int = 32) -> dict:
    """Name -> distribution of every dimension ``space`` drew in ``draws`` random configs
    (the last range seen, for a range that depends on earlier draws)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(draws):
            trial = study.ask()
            space(trial)
            seen.update(trial.distributions)
            study.tell(trial, state=TrialState.FAIL)
    return seen


def _search(settings: SearchSettings, option: str, name: str):
    """(client, trial runs) of search ``name`` in the settings' store; SettingsError naming
    ``option`` when there is no such search."""
    from orchestrator.tracking.runs import NoSearchError, open_search, trial_runs

    try:
        client, experiment_id, parent = open_search(
            settings.tracking_uri, name, settings.experiment
        )
    except NoSearchError as error:
        raise SettingsError(f"{option} {name}: {error}") from None
    return client, trial_runs(client, experiment_id, parent.info.run_id)


def check(settings: SearchSettings) -> None:
    """SettingsError (naming the option) when a search named by --warm-start or --enqueue is
    not in the store: before the data is loaded or Ray started."""
    if settings.warm_start:
        _search(settings, "--warm-start", settings.warm_start)
    if settings.enqueue and settings.enqueue != "paper":
        _search(settings, "--enqueue", settings.enqueue)


def warm_trials(settings: SearchSettings, space) -> tuple[list[FrozenTrial], int]:
    """The finished trials of search ``settings.warm_start`` as Optuna trials of ``space``,
    and how many were skipped (no longer in the space, or no score of --metric)."""
    from orchestrator.best import typed
    from orchestrator.tracking.runs import STATE_TAG

    client, runs = _search(settings, "--warm-start", settings.warm_start)
    told, skipped = [], 0
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        state = run.data.tags.get(STATE_TAG)  # orch's own record of how the trial ended
        if state not in ("completed", "pruned"):  # failed, interrupted, lost or running
            continue
        fitted = fit(space, {k: typed(v) for k, v in run.data.params.items()})
        history = client.get_metric_history(run.info.run_id, settings.metric) if fitted else []
        scores = {int(m.step): m.value for m in history if not math.isnan(m.value)}
        if fitted is None or not scores:
            skipped += 1
            continue
        pruned = state == "pruned" and settings.asha_tells == "pruned"
        params, distributions = fitted
        told.append(
            create_trial(
                state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
                value=scores[max(scores)],  # Ray's rule: the last score (PRUNED: Optuna's)
                params=params,
                distributions=distributions,
                intermediate_values=scores,
                user_attrs={"warm_start": settings.warm_start, "run_id": run.info.run_id},
            )
        )
    return told, skipped


def enqueued(settings: SearchSettings, space) -> tuple[list[dict], list[str]]:
    """The configs ``--enqueue`` runs first (only the space's dimensions, in range), and a
    note for each value left to the sampler."""
    from orchestrator.best import best_trial, typed
    from orchestrator.tracking.runs import NoSearchError

    if settings.enqueue == "paper":
        wanted, source = dict(PAPER), "the paper's recipe"
    else:
        try:
            best = best_trial(settings.tracking_uri, name=settings.enqueue, command=False)
        except NoSearchError as error:
            raise SettingsError(f"--enqueue {settings.enqueue}: {error}") from None
        wanted = {k: typed(v) for k, v in best.params.items()}
        source = f"search {settings.enqueue}'s best trial {best.trial_id}"
    dims = dimensions(space)
    point, notes = {}, []
    for name, value in wanted.items():
        dist = dims.get(name)
        if dist is None:
            continue  # not a dimension of this space (a constant, or another space's)
        try:
            inside = dist._contains(dist.to_internal_repr(value))
        except (ValueError, TypeError):
            inside = False
        if inside:
            point[name] = value
        else:
            notes.append(f"--enqueue {settings.enqueue}: {name}={value} is outside the space "
                         f"({dist}); drawn instead")  # fmt: skip
    if not point:
        notes.append(f"--enqueue {settings.enqueue}: the space has none of {source}'s "
                     "dimensions; nothing enqueued")  # fmt: skip
        return [], notes
    return [point], notes


def prior(settings: SearchSettings, space) -> Prior:
    """What ``--warm-start`` and ``--enqueue`` give a new search over ``space``."""
    result = Prior()
    if settings.warm_start:
        result.trials, result.skipped = warm_trials(settings, space)
        result.notes.append(
            f"--warm-start {settings.warm_start}: {len(result.trials)} finished trials told to "
            f"the sampler, {result.skipped} skipped (no longer in the space, or no "
            f"{settings.metric})"
        )
    if settings.enqueue:
        result.points, notes = enqueued(settings, space)
        result.notes += notes
    return result
