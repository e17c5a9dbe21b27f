"""A search's MLflow writes, kept in order on local disk while the tracking server is away.

MLflow's client retries an unreachable server for about four minutes (7 retries with
exponential backoff) and then raises, which ended a search with a traceback and most of its
runs missing. With a journal the driver neither stalls nor fails: a write that meets a
connection-type error is appended (JSON lines, fsync'd) to ``mlruns/journal/<search>.jsonl``
under the project folder, every later write queues behind it in the same order, and the
writes are replayed once the server answers a cheap probe again, by the search itself or by
``orch sync``.

The file is append-only: a header, one line per write (``seq``, ``op`` and its arguments,
``at``), and one line per write replayed (``done``, with the real run id of a run created
offline) or given up (``skipped``, when the server refuses it for good). Progress lives in
the file, so a replay that stops half-way (the server goes again, the process is killed)
continues where it stopped and a finished one replays nothing. Runs created offline get a
placeholder id (``journal-...``) that later writes use; a replay maps it to the real id and
tags the run ``orch.journal_run`` with it, so a run created just before a crash is found
again instead of created twice. A batch of metrics replayed twice is stored once: SQL-backed
servers drop a metric identical to one they hold (same key, value, step and timestamp).

Nothing secret is written: the tracking URI is recorded without user info, and credentials
stay in MLflow's environment variables (``MLFLOW_TRACKING_TOKEN``, ...).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from orchestrator.tracking.store import check_tracking_uri, default_root

PLACEHOLDER = "journal-"  # run ids made offline; never a real MLflow run id (32 hex digits)
JOURNAL_TAG = "orch.journal_run"  # a run created by a replay: the placeholder it stood for
SWITCH = "ORCH_MLFLOW_JOURNAL"  # "off": MLflow's own retries only, as before the journal
# Journaled calls give up fast (under ~2 s on a refused connection): the journal, not
# MLflow's four minutes of retries, covers an outage, so the driver never stalls on one.
QUICK_RETRIES, QUICK_BACKOFF = 2, 1
PROBE_S = 5.0  # how often a background thread asks an absent server whether it is back
PROBE_TIMEOUT_S = 3.0
# At the end of a search or training run, how long to wait for an absent server (a restart
# takes seconds to a minute) before leaving the kept writes to `orch sync`; the user can
# change it, 0 gives up at once. Probes then come every SETTLE_EVERY_S, each allowed
# SETTLE_TIMEOUT_S: nothing else waits on them, and a server just restarted answers slowly.
SETTLE_VAR, SETTLE_S = "ORCH_MLFLOW_SETTLE_S", 30.0
SETTLE_EVERY_S, SETTLE_TIMEOUT_S = 2.0, 10.0


def journal_dir() -> Path:
    return default_root() / "journal"


def journal_path(search: str) -> Path:
    return journal_dir() / f"{search}.jsonl"


def journaled(uri: str) -> bool:
    """Whether writes to ``uri`` go through a journal: servers only (a local sqlite store is
    not "away"), unless ``ORCH_MLFLOW_JOURNAL=off``."""
    return uri.startswith(("http://", "https://")) and os.environ.get(SWITCH, "") != "off"


def public_uri(uri: str) -> str:
    """``uri`` without user info (``http://user:secret@host`` -> ``http://host``)."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


_USERINFO = re.compile(r"([a-z][a-z0-9+.-]*://)[^/@\s\"']+@", re.IGNORECASE)
_SERVER_TROUBLE = re.compile(r"failed with (exception|timeout exception|error code (429|5\d\d))")


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the server could not be reached or could not answer now
    (refused or reset connection, timeout, 429/5xx without an MLflow error body), rather than
    that it refused the write itself (an MLflow error, which a replay would meet again)."""
    import requests
    from mlflow.exceptions import MlflowException, RestException

    if isinstance(error, requests.HTTPError):  # the artifact upload's own status check
        status = error.response.status_code if error.response is not None else 0
        return status == 429 or status >= 500
    if isinstance(error, requests.ConnectionError | requests.Timeout | ConnectionError):
        return True
    if isinstance(error, MlflowException) and not isinstance(error, RestException):
        message = str(error.message)
        return message.startswith("API request to") and bool(_SERVER_TROUBLE.search(message))
    return False


@contextlib.contextmanager
def quick_requests():
    """MLflow's HTTP retries cut to ``QUICK_RETRIES`` (or fewer, if the user set fewer) for
    the calls inside. MLflow reads these variables on every request and offers no per-call
    setting; only the driver's main thread makes MLflow calls, so swapping them is safe."""
    names = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": QUICK_RETRIES,
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": QUICK_BACKOFF,
    }
    saved = {name: os.environ.get(name) for name in names}
    for name, quick in names.items():
        try:
            mine = int(saved[name]) if saved[name] is not None else quick
        except ValueError:
            mine = quick
        os.environ[name] = str(min(mine, quick))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Journal:
    """One search's journal file: what is written, what is replayed, the ids runs got."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.files = self.path.with_suffix(".files")  # artifacts copied while offline
        self.header: dict = {}
        self.ops: dict[int, dict] = {}  # seq -> write
        self.settled: set[int] = set()  # seqs replayed or given up
        self.ids: dict[str, str] = {}  # placeholder -> real run id
        self._torn = False  # the last line was cut short (a crash mid-append)
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        text = self.path.read_text()
        self._torn = bool(text) and not text.endswith("\n")
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash: its write was never acknowledged
            if "journal" in record:
                self.header = record
            elif "seq" in record:
                self.ops[record["seq"]] = record
            elif "done" in record or "skipped" in record:
                seq = record.get("done", record.get("skipped"))
                self.settled.add(seq)
                placeholder = self.ops.get(seq, {}).get("placeholder")
                if placeholder and record.get("run_id"):
                    self.ids[placeholder] = record["run_id"]

    @property
    def search(self) -> str:
        return self.header.get("search") or self.path.stem

    @property
    def uri(self) -> str | None:
        return self.header.get("uri")

    def pending(self) -> list[dict]:
        return [self.ops[s] for s in sorted(self.ops) if s not in self.settled]

    def since(self) -> float | None:
        """When the oldest write still waiting was made."""
        waiting = self.pending()
        return waiting[0]["at"] if waiting else None

    def _append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as out:
            if self._torn:  # end the cut line, so this record stands on a line of its own
                out.write("\n")
                self._torn = False
            # A URI with user info may sit in a param (the search's command line): not on disk.
            line = _USERINFO.sub(r"\1", json.dumps(record, separators=(",", ":")))
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())

    def keep(self, op: dict, search: str, uri: str) -> dict:
        """Append write ``op`` (artifacts are copied first: the originals may be temporary)."""
        if not self.header:
            self.header = {"journal": 1, "search": search, "uri": public_uri(uri)}
            self._append({**self.header, "created": time.time()})
        seq = max(self.ops, default=0) + 1
        op = {**op, "seq": seq, "at": time.time()}
        if op["op"] in ("log_artifact", "log_artifacts"):
            source, target = Path(op["local"]), self.files / str(seq)
            if source.is_dir():
                shutil.copytree(source, target)
            else:
                target.mkdir(parents=True)
                shutil.copy2(source, target / source.name)
                target = target / source.name
            op["local"] = str(target)
        self._append(op)
        self.ops[seq] = op
        return op

    def settle(self, op: dict, run_id: str | None = None, error: str | None = None) -> None:
        """Record ``op`` as replayed (with the run id it created) or, with ``error``, given up."""
        seq = op["seq"]
        record = {"skipped": seq, "error": error[:500]} if error else {"done": seq}
        if run_id and op.get("placeholder"):
            record["run_id"] = run_id
            self.ids[op["placeholder"]] = run_id
        self._append({**record, "at": time.time()})
        self.settled.add(seq)
        if op["op"] in ("log_artifact", "log_artifacts"):
            shutil.rmtree(self.files / str(seq), ignore_errors=True)


def new_placeholder() -> str:
    return PLACEHOLDER + uuid.uuid4().hex[:24]


class Unresolved(LookupError):
    """A write to a run whose creation was given up: it can never be replayed."""


def apply(client, op: dict, ids: dict[str, str]):
    """Perform write ``op`` with ``client``; returns the run id for ``create_run``."""
    from mlflow.entities import Metric, Param, RunTag

    def real(value):
        return ids.get(value, value) if isinstance(value, str) else value

    kind = op["op"]
    if kind == "create_run":
        tags = {k: real(v) for k, v in op["tags"].items()}
        placeholder = op.get("placeholder")
        if placeholder:  # created by an earlier replay that stopped before recording it?
            found = client.search_runs(
                [op["experiment_id"]], f"tags.`{JOURNAL_TAG}` = '{placeholder}'", max_results=1
            )
            if found:
                return found[0].info.run_id
            tags[JOURNAL_TAG] = placeholder
        run = client.create_run(
            op["experiment_id"], start_time=op["start_time"], tags=tags, run_name=op["name"]
        )
        return run.info.run_id
    run_id = real(op["run"])
    if run_id.startswith(PLACEHOLDER):
        raise Unresolved(f"run {run_id} was never created")
    if kind == "log_batch":
        metrics = [Metric(*m) for m in op.get("metrics", [])]
        params = [Param(*p) for p in op.get("params", [])]
        tags = [RunTag(k, real(v)) for k, v in op.get("tags", [])]
        client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
    elif kind == "set_tag":
        client.set_tag(run_id, op["key"], real(op["value"]))
    elif kind == "delete_tag":
        client.delete_tag(run_id, op["key"])
    elif kind == "set_terminated":
        client.set_terminated(run_id, op["status"], op["end_time"])
    elif kind == "update_run":
        client.update_run(run_id, status=op["status"])
    elif kind == "log_artifacts":
        client.log_artifacts(run_id, op["local"], op["path"])
    elif kind == "log_artifact":
        client.log_artifact(run_id, op["local"], op["path"])
    elif kind == "delete_run":
        client.delete_run(run_id)
    else:
        raise ValueError(f"unknown journal write {kind!r}")
    return None


class Probe:
    """A daemon thread asking the server every ``PROBE_S`` seconds, one short request each
    time, whether it answers again; ``answered`` is then set and the thread ends. The driver
    replays on its own thread when it next writes or polls: it is never blocked by a probe."""

    def __init__(self, uri: str, every_s: float | None = None, first_s: float | None = None):
        self.answered = threading.Event()
        self._stop = threading.Event()
        self._uri = uri
        self._every = PROBE_S if every_s is None else every_s
        self._first = self._every if first_s is None else first_s
        self._thread = threading.Thread(target=self._run, name="orch-mlflow-probe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        wait = self._first
        while not self._stop.wait(wait):
            if answers(self._uri):
                self.answered.set()
                return
            wait = self._every

    def stop(self) -> None:
        self._stop.set()


def settle_s() -> float:
    """Seconds to wait for the server at the end (``ORCH_MLFLOW_SETTLE_S``, default 30)."""
    raw = os.environ.get(SETTLE_VAR, "").strip()
    if not raw:
        return SETTLE_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        raise ValueError(f"{SETTLE_VAR}={raw!r}: expected seconds, a number >= 0")
    return value


def answers(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    try:
        check_tracking_uri(uri, timeout_s=timeout_s)
    except ConnectionError:
        return False
    return True


def journals(name: str | None = None) -> list[Journal]:
    """The project's journals (``name``: that search's only); LookupError naming the ones
    that exist when ``name`` has none."""
    folder = journal_dir()
    found = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if name is None:
        return [Journal(p) for p in found]
    wanted = [Journal(p) for p in found if p.stem == name]
    if not wanted:
        known = ", ".join(p.stem for p in found) or "none"
        raise LookupError(f"no journal for search {name!r} in {folder} (journals: {known})")
    return wanted


def clock(timestamp: float | None) -> str:
    return time.strftime("%H:%M", time.localtime(timestamp or time.time()))
