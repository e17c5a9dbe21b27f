"""`orch best`: the winning trial of a search, read from MLflow only (Ray may be stopped)."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.errors import RUNTIME, USAGE, fail

SHOWN = ("weighted_f1", "weighted_acc", "macro_f1", "accuracy", "mean_pearson", "mse", "loss")
FIDELITIES = {
    "finetune": "fine-tuned encoder",
    "scratch": "encoder trained from scratch (the tiny random-init encoder)",
    "frozen": "[yellow]frozen encoder[/] (a screening score: only the layers above the encoder "
    "trained; fine-tune the config for the paper's protocol)",
}


def best(
    name: str | None = typer.Option(None, help="Search name [default: the latest search]."),
    metric: str | None = typer.Option(
        None, help="Rank trials by this metric [default: the search's, e.g. dev_weighted_f1]."
    ),
    tracking_uri: str | None = typer.Option(
        None, help="MLflow tracking URI [default: sqlite store under ./mlruns]."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show the best trial: config, dev and test scores, checkpoint, command to reproduce."""
    from orchestrator.best import (
        NoSearchError,
        best_trial,
        command_lines,
        failure_summary,
        shown_params,
    )
    from orchestrator.tracking.store import check_tracking_uri

    try:  # a dead server: one line in seconds, not minutes of MLflow's retries
        check_tracking_uri(tracking_uri)
    except ConnectionError as error:
        raise fail(str(error)) from None
    from orchestrator.tracking.sync import replay_pending

    replay_pending(tracking_uri)  # writes a search kept while the server was away come first
    try:
        found = best_trial(tracking_uri, name=name, metric=metric)
    except NoSearchError as error:
        hint = "" if name else ": run `orch search --dataset synthetic --quick` first"
        # No search by the name given is a usage error, as in `orch evaluate` and --resume.
        raise fail(f"{error}{hint}", USAGE if name else RUNTIME) from None
    if json_out:
        print(json.dumps(found.to_dict()))
        return
    # soft_wrap: a URI or a command is never broken mid-word, whatever the terminal's width.
    console = Console(soft_wrap=True)
    console.print(
        f"search [bold]{found.search}[/]: best trial [bold]{found.trial_id}[/] "
        f"({found.state}), {found.metric} [bold green]{found.value:.4g}[/] at epoch {found.epoch}"
    )
    scores = Table(title="scores at the best epoch (test uses the best-by-dev weights)")
    scores.add_column("metric")
    scores.add_column("dev", justify="right")
    scores.add_column("test", justify="right")
    for key in SHOWN:
        if key in found.dev or key in found.test:
            dev, test = found.dev.get(key), found.test.get(key)
            scores.add_row(
                key, "" if dev is None else f"{dev:.4g}", "" if test is None else f"{test:.4g}"
            )
    console.print(scores)
    for fid, summary in sorted(found.evaluation.items()):
        mean, std = summary["mean"], summary["std"]
        scores_text = ", ".join(
            f"{k} {mean[k]:.2f} ± {std[k]:.2f}"
            for k in ("weighted_f1", "weighted_acc", "mean_pearson")
            if k in mean
        )
        console.print(
            f"orch evaluate ({fid}, {summary['seeds']} seeds, test at the best dev epoch): "
            f"[bold]{scores_text}[/]"
        )
    console.print(f"fidelity: {FIDELITIES.get(found.fidelity, found.fidelity)}")
    config = Table(title="config", show_header=False)
    config.add_column("param", style="cyan")
    config.add_column("value")
    for key, value in shown_params(found.params).items():  # rounded here; --json has all
        config.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(config)
    console.print("checkpoint:")
    console.print(f"  {found.checkpoint or 'not logged'}", highlight=False, markup=False)
    console.print(f"MLflow run: {found.run_id} (parent {found.parent_run_id})")
    from orchestrator.tracking.links import trial_links
    from orchestrator.tracking.store import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    for line in trial_links(uri, found.parent_run_id, found.run_id):
        console.print(line, soft_wrap=True, highlight=False, markup=False)  # clickable: unwrapped
    if found.failed:
        console.print(f"[yellow]{escape(failure_summary(found.failed))}[/]", highlight=False)
        for failure in found.failed[:10]:
            console.print(
                f"  {failure['trial_id']}: {failure['reason']}", highlight=False, markup=False
            )
        if len(found.failed) > 10:
            console.print(f"  ... {len(found.failed) - 10} more (orch.failure tags in MLflow)")
    console.print("reproduce:")
    command = "\n".join("  " + line for line in command_lines(found.command))
    console.print(command, highlight=False, markup=False)
