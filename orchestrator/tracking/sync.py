"""Sending the writes a search kept in its journal (``tracking.journal``) to MLflow later:
``orch sync [NAME]``, and any ``orch`` command that checked the same server answers."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from orchestrator.tracking.journal import Journal, answers, journals, public_uri
from orchestrator.tracking.store import resolve_tracking_uri
from orchestrator.tracking.writer import MlflowWriter


@dataclass
class Synced:
    search: str
    uri: str
    replayed: int
    refused: int  # writes the server turned down for good (recorded as skipped)
    left: int  # still kept: the server went away again


def sync_journal(journal: Journal, tracking_uri: str | None = None) -> Synced:
    """Replay ``journal``'s waiting writes to ``tracking_uri`` (default: the server they were
    meant for); ConnectionError (one line) when no server answers there."""
    uri = tracking_uri or journal.uri
    if not uri:
        raise ConnectionError(f"{journal.path} names no tracking server; pass --tracking-uri")
    waiting = len(journal.pending())
    if waiting and not answers(uri):
        raise ConnectionError(
            f"MLflow at {public_uri(uri)} does not answer; {waiting} writes of search "
            f"{journal.search} stay kept in {journal.path}"
        )
    writer = MlflowWriter(uri, journal=journal.path)
    replayed = writer.replay() if waiting else 0
    left = writer.waiting()
    if not left:  # `orch train` kept its checkpoint files here for a kept upload: done with
        shutil.rmtree(Path(journal.path).with_suffix(".files"), ignore_errors=True)
    refused = waiting - replayed - left
    return Synced(journal.search, public_uri(uri), replayed, refused, left)


def describe(synced: Synced, path) -> str:
    what = "run" if synced.search.startswith("train-") else "search"  # orch train's journals
    line = f"{what} {synced.search}: {synced.replayed} kept writes replayed to {synced.uri}"
    if synced.refused:
        line += f"; {synced.refused} refused by the server (reasons in {path})"
    if synced.left:
        line += f"; {synced.left} still kept (the server went away again)"
    return line


def replay_pending(tracking_uri: str | None) -> None:
    """Before a command uses a server that answers, send what earlier searches of this
    project kept for that server; one line on stderr per journal. Never raises: the
    command itself matters more, and ``orch sync`` can say what went wrong."""
    uri = resolve_tracking_uri(tracking_uri)
    if not uri.startswith(("http://", "https://")):
        return
    try:
        waiting = [j for j in journals() if j.pending() and j.uri == public_uri(uri)]
        for journal in waiting:
            print(describe(sync_journal(journal, uri), journal.path), file=sys.stderr)
    except Exception as error:  # noqa: BLE001 - reported, never fatal here
        print(f"warning: kept MLflow writes not replayed: {error}", file=sys.stderr)
