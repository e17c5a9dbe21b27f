"""What a finished search leaves on its MLflow parent run, from Tune's ``ResultGrid``.

Each trial's run is tagged with where its best checkpoint is; the best trial's best
checkpoint is moved (stored once) from Ray's storage to an artifact of that trial's run, which
the parent points to; the Optuna
study is saved as JSON and drawn as plots; then the parent is closed FINISHED. Nothing here
may fail a search that trained to its end: a missing piece is a warning.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import warnings
from pathlib import Path

from orchestrator.tracking import notes
from orchestrator.tracking.runs import CHECKPOINT_TAG, STATE_TAG

logger = logging.getLogger(__name__)


def result_trial_id(result) -> str:
    """A Result's trial id: reported with every result, else its folder's name (orch names
    trial folders by trial id)."""
    return str((result.metrics or {}).get("trial_id") or Path(result.path).name)


def best_checkpoint(result, metric: str, mode: str):
    """``(value, checkpoint)`` of the result's best kept checkpoint by ``metric``, or None."""
    best = None
    for checkpoint, metrics in result.best_checkpoints or []:
        value = metrics.get(metric)
        if not isinstance(value, int | float) or math.isnan(value):
            continue
        if best is None or (value > best[0] if mode == "max" else value < best[0]):
            best = (float(value), checkpoint)
    return best


def finish(recorder, results, study=None) -> None:
    """Record the end of a search that ran to its end, then close its parent FINISHED."""
    parent = recorder.parent_run_id
    try:
        runs = recorder.trial_run_ids()  # known locally while MLflow is away
        best = None
        for result in results:
            found = best_checkpoint(result, recorder.metric, recorder.mode)
            run_id = runs.get(result_trial_id(result))
            if found is None or run_id is None:
                continue
            recorder.writer.set_tags(run_id, {CHECKPOINT_TAG: found[1].path})
            if best is None or (
                found[0] > best[0] if recorder.mode == "max" else found[0] < best[0]
            ):
                best = (found[0], found[1], result_trial_id(result), run_id)
        if best is None:
            logger.warning("no trial reported %s with a checkpoint", recorder.metric)
        elif recorder.writer.offline or not _logged_best(recorder, best):
            _point_to_ray_copy(recorder, *best)
        if study is not None:
            log_study(recorder, study)
            log_plots(recorder, study)
    finally:
        notes.describe_end(recorder)  # the run's description: what won
        recorder.writer.set_tags(parent, {STATE_TAG: "finished"})
        recorder.close("FINISHED")


def _logged_best(recorder, best) -> bool:
    """``log_best``, unless MLflow's server went away meanwhile (False: its reads failed)."""
    from orchestrator.tracking.journal import quick_requests, unreachable

    try:
        with quick_requests():  # its reads: seconds, not MLflow's minutes of retries
            log_best(recorder, *best)
    except Exception as error:
        if not unreachable(error):
            raise
        return False
    return True


def _point_to_ray_copy(recorder, value: float, checkpoint, trial_id: str, run_id: str) -> None:
    """The parent's pointers to the best checkpoint, left in Ray's storage: with MLflow's
    server away, ``log_best`` cannot read what it needs to move it (these writes are kept)."""
    recorder.writer.set_tags(
        recorder.parent_run_id,
        {
            "orch.best_trial_id": trial_id,
            "orch.best_run_id": run_id,
            CHECKPOINT_TAG: checkpoint.path,
        },
    )
    recorder.writer.log_metrics(recorder.parent_run_id, {f"best_{recorder.metric}": value}, step=0)


BEST_ARTIFACT = "best_checkpoint"
SOURCE_TAG = "orch.best_checkpoint_source"  # the Ray folder the artifact was moved from


def log_best(recorder, value: float, checkpoint, trial_id: str, run_id: str) -> None:
    """The search's best checkpoint, stored once: moved from Ray's storage to an artifact
    of its trial's run (weights only; served by a remote tracking server like any artifact),
    and the parent points to it (``orch.best_run_id``, ``orch.best_checkpoint``).

    The Ray copy is deleted only once the upload succeeded; when it fails, both runs point
    at the Ray copy instead. A resumed search that ends again re-uploads only when its best
    checkpoint changed."""
    writer, parent, client = recorder.writer, recorder.parent_run_id, recorder.client
    run = client.get_run(run_id)
    where = f"{run.info.artifact_uri}/{BEST_ARTIFACT}"
    moved = run.data.tags.get(SOURCE_TAG) == checkpoint.path and BEST_ARTIFACT in {
        a.path for a in client.list_artifacts(run_id)
    }
    if not moved:
        try:
            with checkpoint.as_directory() as folder:  # downloads first when storage is remote
                # Nothing resumes a finished search's best: its optimizer state is not kept.
                (Path(folder) / "trainer.pt").unlink(missing_ok=True)
                writer.log_artifacts(run_id, folder, BEST_ARTIFACT)
            moved = True
        except Exception as error:  # noqa: BLE001 - the Ray copy stays; the search finished
            logger.warning("best checkpoint left in Ray's storage: upload failed: %s", error)
    if moved:
        writer.set_tags(run_id, {CHECKPOINT_TAG: where, SOURCE_TAG: checkpoint.path})
        try:
            checkpoint.filesystem.delete_dir(checkpoint.path)
        except FileNotFoundError:
            pass  # a resumed search that ended again: moved the first time
        except OSError as error:
            logger.warning("could not delete the Ray copy %s: %s", checkpoint.path, error)
    else:
        where = checkpoint.path
    writer.set_tags(
        parent,
        {"orch.best_trial_id": trial_id, "orch.best_run_id": run_id, CHECKPOINT_TAG: where},
    )
    writer.log_metrics(parent, {f"best_{recorder.metric}": value}, step=0)


def log_study(recorder, study) -> None:
    """Every Optuna trial (state, value, params, intermediate values) as JSON on the parent,
    so the study outlives the driver."""
    rows = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": t.params,
            "intermediate_values": {str(k): v for k, v in t.intermediate_values.items()},
        }
        for t in study.get_trials(deepcopy=False)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "optuna_trials.json"
        path.write_text(json.dumps(rows, indent=1))
        recorder.writer.log_artifact(recorder.parent_run_id, path)


def log_plots(recorder, study) -> None:
    """Optimization history (every trial, pruned ones too: ``history_plot``) and parameter
    importances of the study, on the parent.

    Importances need two or more completed trials with varying parameters; a plot that
    cannot be drawn is skipped with a warning."""
    import matplotlib

    matplotlib.use("Agg")  # the driver may have no display
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm
    from optuna.trial import TrialState

    from orchestrator.history_plot import draw_history, study_curves

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = Path(tmp) / "optimization_history.png"
            draw_history(study_curves(study), recorder.metric, recorder.mode, path)
            recorder.writer.log_artifact(recorder.parent_run_id, path, "plots")
        except Exception as error:  # plotting must never fail a finished search
            logger.warning("optimization_history plot skipped: %s", error)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        logger.warning("param_importances plot skipped: needs 2 completed trials")
        return
    try:
        with warnings.catch_warnings():
            # Experimental-API notices, and importance caveats on tiny studies.
            warnings.simplefilter("ignore")
            axes = ovm.plot_param_importances(study)
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "param_importances.png"
            figure.savefig(path, bbox_inches="tight", dpi=110)
            recorder.writer.log_artifact(recorder.parent_run_id, path, "plots")
        plt.close(figure)
    except Exception as error:  # plotting must never fail a finished search
        logger.warning("param_importances plot skipped: %s", error)
