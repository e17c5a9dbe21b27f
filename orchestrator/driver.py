"""The driver process while a search runs: signals and what Ray prints.

SIGTERM (a supervisor, ``timeout``, ``docker stop``) stops a search the way Ctrl-C does, so
that Tune saves its state and the search can be resumed; Ray's own reporting is turned off
so the live table is the only view of the search.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM runs Tune's SIGINT handler (the loop ends, the experiment state is saved,
    trials stop) instead of ``ray.init``'s ``sys.exit``. A second signal interrupts at once.
    Only the main thread can set signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum, frame):
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _DropTuneAdvice(logging.Filter):
    """Tune's own end-of-run advice that orch says better: how to resume (``Tuner.restore``
    in Python; orch prints the ``orch search --resume`` command) and "Trials did not
    complete" for failed trials (the summary and ``orch best`` list them with reasons)."""

    DROPPED = ("Experiment has been interrupted", "Trials did not complete")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.DROPPED)


@contextlib.contextmanager
def quiet_driver(live: bool):
    """Ray's own reporting off while the search runs.

    ``verbose=0`` alone still prints an experiment banner through Ray's new output engine;
    the legacy path (``RAY_AIR_NEW_OUTPUT=0``) honours it. The excessive-checkpoint warning
    fires when short epochs checkpoint often (tests, smoke runs), which is expected here."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's JSON/CSV loggers are passed explicitly (tuner.missing_loggers); not TensorBoard's.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    tune_logger = logging.getLogger("ray.tune")
    level = tune_logger.level
    if live:
        tune_logger.setLevel(logging.WARNING)
    advice, drop = logging.getLogger("ray.tune.tune"), _DropTuneAdvice()
    advice.addFilter(drop)
    try:
        yield
    finally:
        tune_logger.setLevel(level)
        advice.removeFilter(drop)
