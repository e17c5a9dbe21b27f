"""`orch search`: a Ray Tune search over DialogueTRM configs, recorded in MLflow.

The options are ``SearchSettings``' fields (generated, one to one) plus a few of the command
itself: ``--quick``, ``--dry-run``, ``--json`` and ``--resume``. The command turns what was
typed into settings, runs the preflight checks, and hands over to ``tuner.run_search``.
"""

from __future__ import annotations

import inspect
import json
import shlex
import sys

import typer

from orchestrator.driver import set_verbose
from orchestrator.errors import USAGE, fail
from orchestrator.options import dataclass_parameters, option_name, parse_value
from orchestrator.settings import SearchSettings, SettingsError, option_fields
from trainable.datasets.registry import dataset_help

# --quick: dialogues per split, enough for a tiny model to beat the majority class on MELD.
QUICK_DIALOGUES = 300
OPTIONS = [f.name for f in option_fields()]
RUN_PANEL = "Run"
# The help's sections, in order; a field not named here lands in "Other".
PANELS = {
    **dict.fromkeys(
        ("dataset", "space", "metric", "encoder", "freeze_encoder", "data_dir", "max_dialogues"),
        "What to search",
    ),
    **dict.fromkeys(("trials", "budget", "epochs"), "How long"),
    **dict.fromkeys(
        ("sampler", "startup_trials", "seed", "scheduler", "grace_period", "reduction_factor")
        + ("brackets", "tie_metric", "asha_tells", "warm_start", "enqueue"),
        "Strategy",
    ),
    **dict.fromkeys(
        ("max_concurrent", "cpus_per_trial", "gpu_memory_gb", "max_failures")
        + ("keep_checkpoints", "max_checkpoint_gb"),
        "Resources",
    ),
    **dict.fromkeys(("name", "storage", "tracking_uri", "address"), "Where it runs and records"),
}


def search(
    quick: bool = typer.Option(
        False,
        "--quick",
        help=f"Tiny encoder, {QUICK_DIALOGUES} dialogues per split, 2 epochs: a CPU smoke search.",
        rich_help_panel=RUN_PANEL,
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Check everything, print the plan, start nothing.",
        rich_help_panel=RUN_PANEL,
    ),
    json_out: bool = typer.Option(
        False, "--json", help="Print the best trial as one JSON line.", rich_help_panel=RUN_PANEL
    ),
    resume: str | None = typer.Option(
        None,
        help="Continue search NAME (or latest) where it stopped, with its own settings.",
        show_default=False,
        rich_help_panel=RUN_PANEL,
    ),
    verbose: bool = typer.Option(
        False, "--verbose", help="Show Ray's and MLflow's own logs.", rich_help_panel=RUN_PANEL
    ),
    **options,
) -> None:
    """Search DialogueTRM hyperparameters with Ray Tune, Optuna and ASHA; track it in MLflow."""
    set_verbose(verbose)
    given = {k: v for k, v in options.items() if v is not None}
    if quick:
        given.setdefault("space", "quick")
        given.setdefault("max_dialogues", QUICK_DIALOGUES)
    if resume is not None:
        return _resume(resume, given, json_out)
    if "dataset" not in given:
        raise fail("--dataset is required (or --resume NAME to continue a search)", USAGE)
    settings = _settings(given, command_line=shlex.join(["orch", *sys.argv[1:]]))
    _space(settings)  # a bad space fails before the data is read

    from orchestrator import preflight
    from trainable.datasets import DataError, load_dataset

    try:  # fail here, once, rather than in every trial
        splits = load_dataset(
            settings.dataset, settings.data_dir, max_dialogues=settings.max_dialogues
        )
    except DataError as error:
        raise fail(str(error)) from None
    settings.modalities = splits.modalities
    settings.train_dialogues = len(splits.train)
    space = _space(settings)  # again, now that the data's modalities and size are known
    _, constants = _describe(space)
    preflight.check_encoder(constants.get("encoder", "bert-base-uncased"))
    preflight.check_storage(settings.storage)
    preflight.check_disk(settings, space)
    preflight.check_services(settings.tracking_uri, settings.address)
    _check_prior(settings)
    settings.name = preflight.pick_name(settings, given.get("name"))
    if dry_run:
        return _plan(settings, space, splits, constants, json_out)
    preflight.join_ray(settings.address)

    from rich.console import Console

    from orchestrator.resources import cluster_gpus, gpu_share, probe_gpu_memory_gb

    err = Console(stderr=True)
    if cluster_gpus() > 0:
        settings.gpus_per_trial = gpu_share(settings.gpu_memory_gb, probe_gpu_memory_gb())
    else:
        preflight.cpu_warning(err, splits, constants, settings.max_t(constants))
    _run(settings, err, json_out)


def _settings(values: dict, **extra) -> SearchSettings:
    try:
        return SearchSettings(**values, **extra)
    except SettingsError as error:
        raise fail(str(error), USAGE) from None


def _check_prior(settings: SearchSettings) -> None:
    """--warm-start / --enqueue name searches that exist: one error line before Ray starts."""
    from orchestrator import warm_start

    try:
        warm_start.check(settings)
    except SettingsError as error:
        raise fail(str(error), USAGE) from None


def _space(settings: SearchSettings):
    try:
        return settings.build_space()
    except SettingsError as error:
        raise fail(str(error), USAGE) from None


def _describe(space):
    from search_spaces import describe

    return describe(space)


def _plan(settings: SearchSettings, space, splits, constants: dict, json_out: bool) -> None:
    """``--dry-run``: what the search would do, from the settings it would run with."""
    from orchestrator import plan
    from orchestrator.disk import estimate_checkpoint_disk
    from orchestrator.preflight import cpu_trial_time

    trial_time = cpu_trial_time(splits, constants, settings.max_t(constants))
    disk = estimate_checkpoint_disk(settings, space)
    planned = plan.plan(settings, space, splits, constants, disk, trial_time)
    if json_out:
        print(json.dumps(planned))
        return
    print("\n".join(plan.lines(planned)))


def _run(settings: SearchSettings, console, json_out: bool) -> None:
    """Run (or resume) the search; on Ctrl-C or SIGTERM say how to resume it, exit 130."""
    from orchestrator.resume import resume_command
    from orchestrator.tuner import run_search
    from trainable.tune_trainable import train_trial

    if not settings.resume:
        goal = (
            f"budget {settings.budget} trial-epochs"
            if settings.budget
            else (f"{settings.trials} trials")
        )
        print(
            f"search {settings.name}: {goal}, {settings.sampler} + {settings.scheduler}, seed "
            f"{settings.seed} (--seed {settings.seed} draws the same configs again)",
            file=sys.stderr,
        )
    try:
        result = run_search(train_trial, settings, console=console)
    except KeyboardInterrupt:
        again = resume_command(settings.name, settings.tracking_uri, settings.address)
        error = fail(f"search {settings.name} interrupted; its MLflow runs are closed", 130)
        print(f"resume with: {again}", file=sys.stderr)
        raise error from None
    except SettingsError as error:  # --warm-start / --enqueue, read as the search starts
        raise fail(str(error), USAGE) from None
    _report(result, settings, json_out)


def _resume(wanted: str, given: dict, json_out: bool) -> None:
    """``orch search --resume NAME|latest``: continue a stopped search where it stopped."""
    from orchestrator import preflight
    from orchestrator.resume import changed_settings, live_driver
    from orchestrator.tracking.runs import (
        NoSearchError,
        find_parent,
        search_disk_full,
        search_name,
    )

    tracking_uri, address = given.get("tracking_uri"), given.get("address")
    preflight.check_services(tracking_uri, address)
    try:
        parent = find_parent(tracking_uri, wanted)
    except NoSearchError as error:
        raise fail(f"--resume {wanted}: {error}", USAGE) from None
    name, params = search_name(parent), parent.data.params
    typed = _settings(given)  # what was typed, resolved the way a new search resolves it
    changed = changed_settings({k: getattr(typed, k) for k in given}, params)
    if changed:
        differ = ", ".join(f"{option_name(k)} (was {params.get(k, 'unset')})" for k in changed)
        raise fail(
            f"--resume {wanted} continues search {name} with the settings it started with; "
            f"these differ: {differ}",
            USAGE,
        )
    # Trials whose checkpoint found the disk full ended the search as failed; once space is
    # freed, --resume continues them (the search is finished only without such trials).
    disk_full = search_disk_full(tracking_uri, parent)
    if parent.info.status == "FINISHED" and not disk_full:
        print(f"search {name} finished already; details: orch best --name {name}", file=sys.stderr)
        if json_out:
            _print_best(tracking_uri, name)
        return
    pid = live_driver(parent)
    if pid is not None:
        raise fail(f"search {name} is still running (driver pid {pid}); stop it first", USAGE)
    saved = {k: parse_value(SearchSettings, k, params[k]) for k in OPTIONS if k in params}
    if saved.get("budget") is not None:  # an older orch saved its default --trials beside it
        saved["trials"] = None
    where = {k: given[k] for k in ("storage", "tracking_uri", "address") if k in given}
    settings = _settings(
        {**saved, **where, "name": name},
        mode=params.get("mode"),
        gpus_per_trial=float(params.get("gpus_per_trial", 0.0)),
        resume=True,
        resume_failed=bool(disk_full),
    )
    from ray.tune import Tuner

    if not Tuner.can_restore(settings.experiment_path):
        raise fail(
            f"search {name}: no saved state under {settings.storage} (Tune's folder {name} "
            "moved? pass --storage WHERE)"
        )
    preflight.join_ray(settings.address)
    print(_resuming(tracking_uri, parent, settings), file=sys.stderr)
    from rich.console import Console

    _run(settings, Console(stderr=True), json_out)


def _resuming(tracking_uri: str | None, parent, settings: SearchSettings) -> str:
    """The line `orch search --resume` prints before it continues: what it continues."""
    from orchestrator.tracking.runs import STATE_TAG, trial_runs
    from orchestrator.tracking.store import client_for, resolve_tracking_uri

    client = client_for(resolve_tracking_uri(tracking_uri))
    runs = trial_runs(client, parent.info.experiment_id, parent.info.run_id)
    states: dict[str, int] = {}
    for run in runs:
        state = run.data.tags.get(STATE_TAG, "running")
        states[state] = states.get(state, 0) + 1
    so_far = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "no trial yet"
    if settings.budget is not None:
        goal = f"budget {settings.budget} trial-epochs"
    else:
        goal = f"{settings.trials} trials"
    return (
        f"resuming search {settings.name} ({goal}, seed {settings.seed}): {so_far} so far; "
        "unfinished trials continue from their last checkpoint"
    )


def _print_best(tracking_uri: str | None, name: str) -> None:
    from orchestrator.best import NoSearchError, best_trial

    try:
        print(json.dumps(best_trial(tracking_uri, name=name).to_dict()))
    except NoSearchError as error:
        raise fail(str(error)) from None


def _report(result, settings: SearchSettings, json_out: bool) -> None:
    from rich.console import Console

    from orchestrator.best import NoSearchError, best_trial, failure_summary

    out = Console(stderr=json_out)
    states: dict[str, int] = {}
    for r in result.results:
        trial_id = r.metrics.get("trial_id")
        state = "failed" if r.error else "pruned" if trial_id in result.pruned else "completed"
        states[state] = states.get(state, 0) + 1
    counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    spent = sum(int(r.metrics.get("training_iteration") or 0) for r in result.results)
    length = f"{spent} trial-epochs"
    if settings.budget is not None:  # the last trials finish their epochs: a little over
        length = f"budget {settings.budget} trial-epochs, {spent} spent"
    out.print(
        f"search [bold]{settings.name}[/] finished: {counts}; {length}; seed {settings.seed}",
        highlight=False,
    )
    if result.unsynced:  # the search succeeded; its record waits for `orch sync`
        print(result.unsynced, file=sys.stderr)
        if json_out:
            print(json.dumps({"name": settings.name, "unsynced": result.unsynced}))
        return
    try:
        best = best_trial(settings.tracking_uri, name=settings.name)
    except NoSearchError as error:
        raise fail(str(error)) from None
    if best.failed:
        out.print(failure_summary(best.failed), highlight=False, markup=False)
    out.print(
        f"best trial {best.trial_id}: {best.metric} {best.value:.4g} at epoch {best.epoch}\n"
        f"details: orch best --name {settings.name}"
    )
    _print_links(out, settings.tracking_uri, best.parent_run_id, best.run_id)
    if json_out:
        print(json.dumps(best.to_dict()))


def _print_links(out, tracking_uri: str | None, parent_run_id: str, run_id: str) -> None:
    """Links into the MLflow UI; a courtesy that never fails a finished search."""
    from orchestrator.tracking.links import trial_links
    from orchestrator.tracking.store import resolve_tracking_uri

    try:
        lines = trial_links(resolve_tracking_uri(tracking_uri), parent_run_id, run_id)
    except Exception as error:  # noqa: BLE001 - MLflow gone since the search ended
        lines = [f"MLflow UI: links unavailable ({str(error).splitlines()[0][:200]})"]
    for line in lines:  # one line each, unwrapped: the links must stay clickable
        out.print(line, soft_wrap=True, highlight=False, markup=False)


# One option per SearchSettings field, generated so the CLI and the settings cannot drift.
_base = [
    p
    for p in inspect.signature(search).parameters.values()
    if p.kind != inspect.Parameter.VAR_KEYWORD
]
search.__signature__ = inspect.Signature(
    dataclass_parameters(
        SearchSettings,
        only=OPTIONS,
        panel=PANELS,
        helps={"dataset": f"{dataset_help()}: the data, and the preset of space and metric."},
    )
    # The command's own (--quick, --dry-run, --json, --resume) after the settings.
    + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in _base]
)
