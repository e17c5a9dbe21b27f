"""A search's optimisation history, pruned trials included.

Optuna's own history plot draws COMPLETE trials only, and with ASHA most trials end PRUNED:
a search whose best trial was stopped at a late rung would show a best value below the one
it reports. Here every trial counts with the best value it reached, marked by how it ended,
against the trial number and against the compute spent so far (cumulative trial-epochs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TrialCurve:
    """One trial: how it ended and its metric at each reported epoch, in order."""

    state: str
    """complete, pruned, failed, ... (any label; the plot colours the first three)."""
    values: tuple[float, ...]
    """The search metric per reported epoch."""


@dataclass(frozen=True)
class History:
    best: list[float | None]
    """Each trial's best value (None: it reported nothing)."""
    running_best: list[float | None]
    """The best value of the search after each trial, in trial order."""
    cumulative_epochs: list[int]
    """Trial-epochs spent up to and including each trial."""


def history(trials: list[TrialCurve], mode: str) -> History:
    """Per-trial best, running best and cumulative trial-epochs of ``trials`` (in order)."""
    pick = max if mode == "max" else min
    best, running, cumulative, so_far, spent = [], [], [], None, 0
    for trial in trials:
        value = pick(trial.values) if trial.values else None
        if value is not None:
            so_far = value if so_far is None else pick(so_far, value)
        spent += len(trial.values)
        best.append(value)
        running.append(so_far)
        cumulative.append(spent)
    return History(best, running, cumulative)


COLOURS = {
    "complete": "tab:blue",
    "completed": "tab:blue",
    "pruned": "tab:orange",
    "failed": "tab:red",
}


def draw_history(trials: list[TrialCurve], metric: str, mode: str, path: Path) -> Path:
    """Save the two-panel history of ``trials`` as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # the driver may have no display
    import matplotlib.pyplot as plt

    h = history(trials, mode)
    figure, (by_trial, by_compute) = plt.subplots(1, 2, figsize=(11, 4.2))
    for state in dict.fromkeys(t.state for t in trials):
        mine = [i for i, t in enumerate(trials) if t.state == state and h.best[i] is not None]
        if mine:
            colour = COLOURS.get(state, "tab:gray")
            by_trial.scatter(mine, [h.best[i] for i in mine], s=18, label=state, color=colour)
    done = [i for i, r in enumerate(h.running_best) if r is not None]
    if done:
        best = [h.running_best[i] for i in done]
        by_trial.step(done, best, where="post", color="black", lw=1.2, label="best so far")
        by_compute.step([h.cumulative_epochs[i] for i in done], best, where="post", color="black")
    by_trial.set(xlabel="trial (start order)", ylabel=f"{metric} (best epoch)")
    by_trial.legend(fontsize=8)
    by_compute.set(xlabel="trial-epochs spent", ylabel=f"best {metric} so far")
    for axes in (by_trial, by_compute):
        axes.grid(alpha=0.3)
    figure.suptitle(f"{len(trials)} trials, {h.cumulative_epochs[-1] if trials else 0} epochs")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def study_curves(study) -> list[TrialCurve]:
    """The curves of an Optuna study's trials (intermediate values by step, trial order)."""
    return [
        TrialCurve(
            state=t.state.name.lower().replace("fail", "failed"),
            values=tuple(v for _, v in sorted(t.intermediate_values.items())),
        )
        for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    ]
