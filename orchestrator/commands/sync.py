"""`orch sync [NAME]`: send the MLflow writes a search kept while its server was away."""

from __future__ import annotations

import sys

import typer

from orchestrator.errors import USAGE, fail


def sync(
    name: str | None = typer.Argument(
        None, help="The search whose kept writes to send (default: every search keeping some)."
    ),
    tracking_uri: str | None = typer.Option(
        None,
        help="Send them here instead of the server they were meant for (the same store under "
        "another address). Credentials come from MLflow's variables (MLFLOW_TRACKING_TOKEN, ...).",
        show_default=False,
    ),
) -> None:
    """Replay the MLflow writes kept in ./mlruns/journal while the tracking server was away,
    in order; writes already replayed are not sent again."""
    from orchestrator.tracking.journal import journal_dir, journals
    from orchestrator.tracking.sync import describe, sync_journal

    try:
        found = journals(name)
    except LookupError as error:
        raise fail(str(error), USAGE) from None
    waiting = [j for j in found if j.pending()]
    if not waiting:
        what = f"search {name}" if name else f"journals in {journal_dir()}"
        print(f"nothing to replay: {what} kept no writes that are not on the server yet")
        return
    unreachable = []
    for journal in waiting:
        try:
            print(describe(sync_journal(journal, tracking_uri), journal.path))
        except ConnectionError as error:
            unreachable.append(str(error))
    for message in unreachable[:-1]:
        print(f"error: {message}", file=sys.stderr)
    if unreachable:
        raise fail(unreachable[-1])
