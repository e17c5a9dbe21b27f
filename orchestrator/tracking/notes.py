"""The description of a search's parent run (``mlflow.note.content``, markdown): what was
searched and how, written when the search starts, and what won, added when it ends. The
MLflow UI shows it at the top of the run's page, so a search explains itself without
reading its 30 params. Nothing here may fail a search: a note that cannot be written is a
warning.
"""

from __future__ import annotations

import logging

from orchestrator.tracking import links
from orchestrator.tracking.runs import STATE_TAG, TRIAL_TAG, better, trial_runs

logger = logging.getLogger(__name__)

NOTE_TAG = "mlflow.note.content"
# Params every trial has that say nothing about the searched space.
NOT_SEARCHED = {"trial_id", "seed", "dataset", "data_dir", "max_dialogues", "encoder"}


def _given(params: dict, key: str):
    value = params.get(key)
    return None if value in (None, "None", "") else value


def search_note(name: str, params: dict, end: dict | None = None) -> str:
    """Markdown for search ``name`` from its parent ``params`` (values as given or as MLflow
    strings); ``end`` (``ending``) adds what was searched and what won."""
    metric, mode = params.get("metric", "dev_weighted_f1"), params.get("mode", "max")
    fid = "frozen encoder (a screening fidelity)" if params.get("fidelity") == "frozen" else None
    lines = [
        f"**orch search `{name}`** on **{params.get('dataset')}**"
        + (f", {fid}" if fid else "")
        + f": {'maximise' if mode == 'max' else 'minimise'} `{metric}`",
        "",
        f"- space: `{_given(params, 'space_bounded') or _given(params, 'space')}`",
    ]
    if end and end.get("searched"):
        lines.append(f"- searched: {', '.join(f'`{p}`' for p in end['searched'])}")
    strategy = f"- sampler: {params.get('sampler')}; scheduler: {params.get('scheduler')}"
    if params.get("scheduler") == "asha":
        strategy += (
            f" (grace period {params.get('grace_period')}, reduction factor "
            f"{params.get('reduction_factor')}, max {params.get('max_t')} epochs)"
        )
    lines.append(strategy)
    if _given(params, "budget"):
        lines.append(f"- budget: {params['budget']} trial-epochs")
    else:
        lines.append(f"- trials: {params.get('trials')}, {params.get('max_concurrent')} at a time")
    if _given(params, "command"):
        lines.append(f"- command: `{params['command']}`")
    if end:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(end["states"].items()))
        lines += ["", f"**Finished**: {end['trials']} trials ({counts})."]
        if end.get("best"):
            best = end["best"]
            epoch = f" at epoch {best['epoch']}" if best.get("epoch") is not None else ""
            lines.append(
                f"Best trial `{best['trial_id']}`: {metric} **{best['value']:.4g}**{epoch} "
                f"(run `{best['run_id']}`; `orch best --name {name}`)."
            )
    return "\n".join(lines)


def ending(runs: list, metric: str, mode: str) -> dict:
    """What the note says at the end, from the search's trial runs: their states, the params
    that differed between trials, and the best trial (``best_<metric>`` is each trial's best
    epoch so far, ``best_epoch`` where it was)."""
    states: dict[str, int] = {}
    values: dict[str, set] = {}
    best = None
    for run in runs:
        state = run.data.tags.get(STATE_TAG, run.info.status.lower())
        states[state] = states.get(state, 0) + 1
        for key, value in run.data.params.items():
            values.setdefault(key, set()).add(value)
        scores = run.data.metrics
        key = links.sort_metric(metric) if links.sort_metric(metric) in scores else metric
        if key in scores and better(scores[key], best["value"] if best else None, mode):
            epoch = scores.get("best_epoch") if key != metric else None
            best = {
                "trial_id": run.data.tags.get(TRIAL_TAG, run.info.run_name),
                "run_id": run.info.run_id,
                "value": scores[key],
                "epoch": None if epoch is None else int(epoch),
            }
    searched = sorted(k for k, v in values.items() if len(v) > 1 and k not in NOT_SEARCHED)
    return {"trials": len(runs), "states": states, "searched": searched, "best": best}


def describe_start(recorder) -> None:
    """The note and the trials' table view of a search that starts."""
    if getattr(recorder.writer, "offline", False):  # MLflow away: its writes wait in a journal
        return
    try:
        note = search_note(recorder.search_name, recorder.parent_params)
        recorder.writer.set_tags(recorder.parent_run_id, {NOTE_TAG: note})
        view = links.search_view(recorder.search_name, recorder.metric, recorder.mode)
        links.save_view(recorder.client, recorder.experiment_id, recorder.parent_run_id, view)
    except Exception as error:  # noqa: BLE001 - a description never fails a search
        logger.warning("search description not written: %s", error)


def describe_end(recorder) -> None:
    """The note of a search that ended: what was searched, how trials ended, the best one;
    its trials' table then shows the searched params too."""
    if getattr(recorder.writer, "offline", False):
        return
    try:
        client, parent = recorder.client, recorder.parent_run_id
        runs = trial_runs(client, recorder.experiment_id, parent)
        end = ending(runs, recorder.metric, recorder.mode)
        params = client.get_run(parent).data.params
        note = search_note(recorder.search_name, params, end)
        recorder.writer.set_tags(parent, {NOTE_TAG: note})
        view = links.search_view(
            recorder.search_name, recorder.metric, recorder.mode, end["searched"]
        )
        links.save_view(client, recorder.experiment_id, parent, view)
    except Exception as error:  # noqa: BLE001 - a description never fails a search
        logger.warning("search description not updated: %s", error)
