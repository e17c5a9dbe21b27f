"""Continuing a stopped search: names, the driver that may still run it, what it was started
with, and the one place orch reaches into Ray's private API.

A search is its MLflow parent run (``orchestrator.tracking.runs``) plus Tune's experiment folder
``<storage>/<NAME>``; the parent's params record the settings it started with, ``storage``
included, so the name alone leads to both.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import time
from pathlib import Path

from orchestrator.tracking.runs import DRIVER_TAG

# What may change when a search is resumed: where things are, not what the search is.
MAY_CHANGE_ON_RESUME = ("storage", "tracking_uri", "address")


def fresh_name(prefix: str, taken) -> str:
    """``prefix-YYYYmmdd-HHMMSS``, with ``-2``, ``-3``... when ``taken(name)`` says so."""
    base = f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, n = base, 1
    while taken(name):
        n += 1
        name = f"{base}-{n}"
    return name


def live_driver(run) -> int | None:
    """The pid of the driver still running search ``run`` on this machine, else None.

    A RUNNING parent is either a live search or one whose driver was killed (SIGKILL, power
    loss); the driver tag (``host:pid``) tells them apart on the same machine."""
    if run.info.status != "RUNNING":
        return None
    host, _, pid = run.data.tags.get(DRIVER_TAG, "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return None
    with contextlib.suppress(OSError):
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"orch" in command:
            return int(pid)
    return None


def resume_command(name: str, tracking_uri: str | None = None, address: str | None = None) -> str:
    words = ["orch", "search", "--resume", name]
    if tracking_uri:
        words += ["--tracking-uri", tracking_uri]
    if address:
        words += ["--address", address]
    return shlex.join(words)


def changed_settings(given: dict, saved: dict) -> list[str]:
    """Names among ``given`` (settings a user typed again) whose values differ from the
    search's ``saved`` params (MLflow strings); where-things-are settings may differ."""
    return [
        name
        for name, value in given.items()
        if name not in MAY_CHANGE_ON_RESUME and str(value) != saved.get(name)
    ]


def restored_parts(tuner) -> tuple[list, object]:
    """The callbacks and the searcher of a restored Tuner (Ray 2.60: ``TunerInternal``).

    Private API, because ``Tuner.restore`` takes no callbacks and hands nothing it unpickled
    back; tests/orchestrator/test_resume.py fails loudly if a Ray upgrade moves them."""
    internal = tuner._local_tuner  # noqa: SLF001
    return internal.get_run_config().callbacks, internal._tune_config.search_alg  # noqa: SLF001
