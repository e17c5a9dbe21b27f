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


VERBOSE_ENV = "ORCH_VERBOSE"
_QUIETED = "ORCH_QUIETED_MLFLOW"  # MLFLOW_LOGGING_LEVEL is orch's default, not the user's


def set_verbose(verbose: bool) -> None:
    """What the libraries say about themselves (Ray's start-up and token notice, MLflow's
    store creation and migrations) is shown with ``--verbose`` only; orch's own lines and
    real warnings always are. Set before Ray or MLflow is imported: MLflow reads its level
    from the environment when it configures its loggers, and Ray workers inherit it."""
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
        if os.environ.pop(_QUIETED, None):  # undo the quiet default, not a user's own level
            os.environ.pop("MLFLOW_LOGGING_LEVEL", None)
        logging.getLogger("mlflow").setLevel(logging.INFO)
        return
    if "MLFLOW_LOGGING_LEVEL" not in os.environ:
        os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"
        os.environ[_QUIETED] = "1"
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # if MLflow was imported already


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def ray_logging_level() -> int:
    """The driver's "ray" logger level for ``ray.init``: INFO with --verbose, else ERROR
    (the token-authentication notice and "Started a local Ray instance" are warnings and
    infos about Ray itself, not the search)."""
    return logging.INFO if verbose() else logging.ERROR


class _DropTuneAdvice(logging.Filter):
    """Tune's own end-of-run advice that orch says better: how to resume (``Tuner.restore``
    in Python; orch prints the ``orch search --resume`` command) and "Trials did not
    complete" for failed trials (the summary and ``orch best`` list them with reasons)."""

    DROPPED = ("Experiment has been interrupted", "Trials did not complete")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.DROPPED)


class _DropUnstartedFetch(logging.Filter):
    """Tune's "Failed to fetch metrics for N trial(s)" after an interrupt, when every trial it
    names simply had not reported yet (no result file: nothing was lost); any other failure
    to read a trial's results still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        if not text.startswith("Failed to fetch metrics"):
            return True
        failures = text.splitlines()[1:]
        return not failures or not all("FileNotFoundError" in line for line in failures)


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
    fetch, unstarted = (
        logging.getLogger("ray.tune.analysis.experiment_analysis"),
        _DropUnstartedFetch(),
    )
    advice.addFilter(drop)
    fetch.addFilter(unstarted)
    try:
        yield
    finally:
        tune_logger.setLevel(level)
        advice.removeFilter(drop)
        fetch.removeFilter(unstarted)
