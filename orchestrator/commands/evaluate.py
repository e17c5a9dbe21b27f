"""`orch evaluate`: retrain a search's best config with several seeds, report mean and std."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import typer

from orchestrator.driver import set_verbose
from orchestrator.errors import RUNTIME, USAGE, fail


def evaluate(
    name: str = typer.Argument("latest", help="The search (its name, or latest)."),
    seeds: int = typer.Option(5, help="Seeds 0..N-1, one training each (the paper: 5)."),
    finetune: bool = typer.Option(
        False, "--finetune", help="Fine-tune the encoder even if the search screened it frozen."
    ),
    encoder_lr: float | None = typer.Option(
        None,
        help="Peak rate of the encoder when it trains [default with --finetune on a frozen "
        "screen: 3e-5; the layers above keep the searched --lr].",
    ),
    max_concurrent: int | None = typer.Option(None, help="Seeds training at once at most."),
    cpus_per_trial: float | None = typer.Option(
        None, help="CPUs per seed [default: the search's]."
    ),
    tracking_uri: str | None = typer.Option(
        None, help="MLflow tracking URI [default: sqlite store under ./mlruns]."
    ),
    address: str | None = typer.Option(None, help="Join a Ray cluster: auto or host:port."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
    verbose: bool = typer.Option(False, "--verbose", help="Show Ray's and MLflow's own logs."),
) -> None:
    """Retrain the best trial's config from scratch per seed; test each at its best dev epoch."""
    set_verbose(verbose)
    if seeds < 1:
        raise fail(f"--seeds must be >= 1, got {seeds}", USAGE)
    if encoder_lr is not None and not encoder_lr > 0:
        raise fail(f"--encoder-lr must be > 0, got {encoder_lr}", USAGE)
    if max_concurrent is not None and max_concurrent < 1:
        raise fail(f"--max-concurrent must be >= 1, got {max_concurrent}", USAGE)
    if cpus_per_trial is not None and not cpus_per_trial > 0:
        raise fail(f"--cpus-per-trial must be > 0, got {cpus_per_trial}", USAGE)
    from orchestrator import preflight
    from orchestrator.best import NoSearchError, best_trial
    from orchestrator.evaluation import evaluation_runs, trial_config
    from orchestrator.tracking.runs import fidelity, open_search, search_name

    preflight.check_services(tracking_uri, address)
    try:
        client, experiment_id, parent = open_search(tracking_uri, name)
    except NoSearchError as error:
        raise fail(f"orch evaluate {name}: {error}", USAGE) from None
    search = search_name(parent)
    try:
        best = best_trial(tracking_uri, name=search, command=False)
    except NoSearchError as error:
        raise fail(f"orch evaluate {search}: no finished trial to evaluate ({error})") from None
    config = trial_config(best.params, finetune, encoder_lr)
    fid = fidelity(config)
    runs = evaluation_runs(client, experiment_id, parent.info.run_id, fid)
    changed = sorted(
        key
        for run in runs.values()
        if run.info.status == "FINISHED"
        for key, value in config.items()
        if key != "seed" and run.data.params.get(key, "None") != str(value)
    )
    if changed:  # mean and std over seeds trained with different settings would mean nothing
        key = changed[0]
        raise fail(
            f"orch evaluate {search}: finished seeds were trained with another {key} "
            f"({_saved(runs, key)}); evaluate with the same --{key.replace('_', '-')} "
            "or delete those runs",
            USAGE,
        )
    todo = [s for s in range(seeds) if s not in runs or runs[s].info.status != "FINISHED"]
    for seed in todo:  # a seed stopped half way is trained again, from scratch
        if seed in runs:
            client.delete_run(runs[seed].info.run_id)
    if todo:
        _train(todo, config, parent, search, fid, client, experiment_id, tracking_uri, address,
               max_concurrent, cpus_per_trial)  # fmt: skip
    _report(client, experiment_id, parent, search, fid, best.metric, seeds, json_out)


def _saved(runs: dict, key: str) -> str:
    return next(r.data.params.get(key, "None") for r in runs.values())


def _train(todo, config, parent, search, fid, client, experiment_id, tracking_uri, address,
           max_concurrent, cpus_per_trial) -> None:  # fmt: skip
    from orchestrator import preflight
    from orchestrator.evaluation import EvaluationRecorder, run_seeds
    from orchestrator.settings import resolve_storage
    from trainable.tune_trainable import train_trial

    params = parent.data.params
    settings = SimpleNamespace(
        name=search,
        address=address,
        storage=resolve_storage(params.get("storage")),
        cpus_per_trial=cpus_per_trial or float(params.get("cpus_per_trial", 1.0)),
        gpus_per_trial=float(params.get("gpus_per_trial", 0.0)),
        max_concurrent=max_concurrent,
        max_failures=int(params.get("max_failures", 2)),
    )
    preflight.join_ray(address)
    recorder = EvaluationRecorder(
        client.tracking_uri, experiment_id, parent.info.run_id, search, fid
    )
    print(f"evaluating {search} ({fid}): seeds {', '.join(map(str, todo))}", file=sys.stderr)
    if not run_seeds(train_trial, config, todo, recorder, settings):
        again = f"orch evaluate {search}" + (" --finetune" if fid == "finetune" else "")
        error = fail(f"evaluation of {search} interrupted; finished seeds are kept", 130)
        print(f"continue with: {again} --seeds {max(todo) + 1}", file=sys.stderr)
        raise error


def _report(client, experiment_id, parent, search, fid, metric, seeds, json_out) -> None:
    from rich.console import Console
    from rich.table import Table

    from orchestrator.evaluation import evaluation_runs, log_summary, seed_result, summarise
    from orchestrator.tracking.writer import MlflowWriter

    runs = evaluation_runs(client, experiment_id, parent.info.run_id, fid)
    missing = [s for s in range(seeds) if s not in runs or runs[s].info.status != "FINISHED"]
    if missing:
        raise fail(f"seeds {missing} of {search} did not finish (see their MLflow runs)", RUNTIME)
    result = summarise(search, fid, metric, [seed_result(client, runs[s]) for s in range(seeds)])
    log_summary(MlflowWriter(client.tracking_uri), parent.info.run_id, result)
    if json_out:
        print(json.dumps(result.to_dict()))
        return
    shown = [
        k for k in ("weighted_f1", "weighted_acc", "macro_f1", "mean_pearson") if k in result.mean
    ]
    table = Table(title=f"{search}: best config, {seeds} seeds, {fid} (test at the best dev epoch)")
    for column in ("seed", "best epoch", *(f"test {k}" for k in shown)):
        table.add_column(column, justify="right")
    for s in result.seeds:
        table.add_row(str(s.seed), str(s.best_epoch), *(f"{s.test[k]:.2f}" for k in shown))
    table.add_row("mean ± std", "", *(f"{result.mean[k]:.2f} ± {result.std[k]:.2f}" for k in shown))
    console = Console()
    console.print(table)
    per_class = sorted(k for k in result.mean if k.startswith("f1_"))
    if per_class:
        console.print("per-class test F1: " + ", ".join(
            f"{k[3:]} {result.mean[k]:.1f} ± {result.std[k]:.1f}" for k in per_class
        ))  # fmt: skip
    from orchestrator.tracking.links import evaluation_links

    for line in evaluation_links(client.tracking_uri, parent.info.run_id):
        console.print(line, soft_wrap=True, highlight=False, markup=False)  # clickable: unwrapped
