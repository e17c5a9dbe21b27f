"""The search history counts pruned trials with the best value they reached."""

from __future__ import annotations

import optuna

from orchestrator.history_plot import TrialCurve, draw_history, history, study_curves


def test_history_counts_pruned_trials_and_compute():
    trials = [
        TrialCurve("complete", (40.0, 45.0, 44.0)),
        TrialCurve("pruned", (30.0,)),
        TrialCurve("pruned", (41.0, 47.0)),  # the search's best was stopped at a rung
        TrialCurve("failed", ()),
    ]
    h = history(trials, "max")
    assert h.best == [45.0, 30.0, 47.0, None]
    assert h.running_best == [45.0, 45.0, 47.0, 47.0]
    assert h.cumulative_epochs == [3, 4, 6, 6]
    assert history(trials, "min").running_best == [40.0, 30.0, 30.0, 30.0]


def test_study_curves_read_intermediate_values_in_trial_order(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for values, state in (([1.0, 2.0], "complete"), ([3.0], "pruned")):
        trial = study.ask()
        for step, value in enumerate(values, start=1):
            trial.report(value, step)
        if state == "complete":
            study.tell(trial, values[-1])
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    curves = study_curves(study)
    assert curves == [TrialCurve("complete", (1.0, 2.0)), TrialCurve("pruned", (3.0,))]
    path = draw_history(curves, "dev_weighted_f1", "max", tmp_path / "h.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
